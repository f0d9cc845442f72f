"""Reading a synthetic shapes tree (written by ``detseg.data.shapes.generate_shapes``).

The tree holds the same truth in several formats; detseg reads its COCO JSON for
``detect``/``instance`` and its class-index PNGs (``masks/<split>/`` + ``classes.txt``) for
``semantic``. Kept apart from the generator so that generating does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from detseg.data.base import TASKS, RecordDataset
from detseg.data.coco import CocoDataset
from detseg.data.formats import DATASET_FORMATS
from detseg.data.maskfolder import MaskFolderDataset


def shapes_splits(path: Path, options: dict[str, Any]) -> list[str]:
    """The splits with an ``annotations/instances_<split>.json``."""
    return sorted(p.stem.removeprefix("instances_")
                  for p in (path / "annotations").glob("instances_*.json"))


def looks_like_shapes(path: Path) -> bool:
    """A folder with ``annotations/``, ``masks/`` and ``data.yaml`` side by side."""
    return path.is_dir() and (path / "annotations").is_dir() and (path / "masks").is_dir() \
        and (path / "data.yaml").is_file()


@DATASET_FORMATS.register(
    "shapes", tasks=TASKS, read_task="instance", options=(), splits=shapes_splits,
    recognize=looks_like_shapes, guess_rank=0,
    summary="the synthetic shapes set (detseg dataset shapes): COCO JSON, class-index "
            "masks and YOLO labels of the same images")
def build_shapes(root: str | Path, split: str = "val", task: str = "detect",
                 transforms: Callable | None = None) -> RecordDataset:
    """COCO for ``detect``/``instance``, the class-index masks for ``semantic``."""
    root = Path(root)
    if task == "semantic":
        return MaskFolderDataset(root, split, task, transforms, mask_type="class")
    return CocoDataset(root, split, task, transforms,
                       ann_file=root / "annotations" / f"instances_{split}.json",
                       images_dir=root / "images" / split)
