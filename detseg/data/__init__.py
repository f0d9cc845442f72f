"""Datasets (COCO, VOC, YOLO, mask folders, synthetic shapes), transforms and I/O.

``build_dataset(kind, root, split, task, transforms)`` is the one entry point; the format
modules are imported on demand so ``import detseg.data`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

DATASET_KINDS = ("coco", "voc", "yolo", "masks", "shapes")


def build_dataset(kind: str, root: str | Path, split: str = "val", task: str = "detect",
                  transforms: Callable | None = None, **options: Any):
    """Open a dataset of ``kind`` (coco | voc | yolo | masks | shapes) under ``root``.

    ``options``: ``ann_file=``, ``images_dir=`` (coco); ``mask_type=`` (masks);
    ``year=`` (voc). Shapes trees are read as COCO for ``detect``/``instance`` and through
    their class-index PNGs for ``semantic``. Returns a ``RecordDataset`` yielding
    ``(image, target)`` (see ``detseg.data.base``).
    """
    from detseg.errors import UsageError

    if kind == "coco":
        from detseg.data.coco import CocoDataset

        return CocoDataset(root, split, task, transforms, **options)
    if kind == "shapes":
        root = Path(root)
        if task == "semantic":
            from detseg.data.maskfolder import MaskFolderDataset

            return MaskFolderDataset(root, split, task, transforms, mask_type="class")
        from detseg.data.coco import CocoDataset

        return CocoDataset(root, split, task, transforms,
                           ann_file=root / "annotations" / f"instances_{split}.json",
                           images_dir=root / "images" / split)
    if kind == "masks":
        from detseg.data.maskfolder import MaskFolderDataset

        return MaskFolderDataset(root, split, task, transforms, **options)
    if kind == "voc":
        from detseg.data.voc import VocDataset

        return VocDataset(root, split, task, transforms, **options)
    if kind == "yolo":
        from detseg.data.yolo import YoloDataset

        return YoloDataset(root, split, task, transforms, **options)
    raise UsageError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")


def collate(batch: list[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """DataLoader ``collate_fn``: ``[(image, target), ...]`` -> ``(images, targets)`` lists."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets


__all__ = ["DATASET_KINDS", "build_dataset", "collate"]
