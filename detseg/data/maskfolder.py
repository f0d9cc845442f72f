"""Image + mask folders: ``images/`` and ``masks/`` with matching stems, names in classes.txt.

Two kinds of mask PNG are read:

- class-index masks (semantic): pixel value = class index (0 = background, 255 = ignore),
  ``classes.txt`` lists one name per line, line ``i`` naming value ``i``. For detection
  tasks each 8-connected region of one class becomes an instance.
- instance-id masks: 0 = background, ``k`` = instance ``k``; all instances share one class
  (the first foreground name of ``classes.txt``, else ``"object"``).

Layouts accepted: ``root/images/{split}`` + ``root/masks/{split}``, or ``root/images`` +
``root/masks`` when there are no split folders.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from detseg.data.base import ImageRecord, Instance, RecordDataset, read_index_png
from detseg.data.io import IMAGE_SUFFIXES, image_size
from detseg.data.masks import encode_rle, mask_box
from detseg.errors import DatasetError

MASK_TYPES = ("class", "instance")


def read_class_names(path: Path) -> list[str]:
    """Non-empty lines of a ``classes.txt`` (line ``i`` names value ``i``)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def mask_folder_paths(root: Path, split: str) -> tuple[Path, Path]:
    """``(images folder, masks folder)`` with or without split subfolders."""
    for images, masks in ((root / "images" / split, root / "masks" / split),
                          (root / "images", root / "masks")):
        if images.is_dir() and masks.is_dir():
            return images, masks
    raise DatasetError(f"{root}: expected images/ and masks/ folders "
                       f"(or images/{split} and masks/{split})")


def _instances_from_mask(ids: np.ndarray, mask_type: str) -> list[Instance]:
    """Instances of one mask: instance ids, or connected regions per class."""
    instances = []
    if mask_type == "instance":
        for value in np.unique(ids):
            if value == 0 or value == 255:
                continue
            m = ids == value
            instances.append(Instance(box=mask_box(m), label=1, area=float(m.sum()),
                                      mask_value=int(value)))
        return instances
    for value in np.unique(ids):
        if value == 0 or value == 255:
            continue
        n, labels = cv2.connectedComponents((ids == value).astype(np.uint8), connectivity=8)
        for k in range(1, n):
            m = labels == k
            instances.append(Instance(box=mask_box(m), label=int(value), area=float(m.sum()),
                                      segmentation=encode_rle(m)))
    return instances


class MaskFolderDataset(RecordDataset):
    """Images with class-index or instance-id PNG masks (see the module docstring).

    ``mask_type`` ``None`` means class-index masks for the semantic task and for folders whose
    ``classes.txt`` names more than one foreground class, instance-id masks otherwise.
    """

    def __init__(self, root: str | Path, split: str = "val", task: str = "semantic",
                 transforms: Callable | None = None, mask_type: str | None = None) -> None:
        root = Path(root)
        self.images_dir, self.masks_dir = mask_folder_paths(root, split)
        classes_file = next((p for p in (root / "classes.txt", self.masks_dir / "classes.txt")
                             if p.is_file()), None)
        names = read_class_names(classes_file) if classes_file else []
        if mask_type is None:
            mask_type = "class" if task == "semantic" or len(names) > 2 else "instance"
        if mask_type not in MASK_TYPES:
            raise DatasetError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
        self.mask_type = mask_type
        warnings = []
        images = sorted(p for p in self.images_dir.rglob("*")
                        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        records = []
        for k, path in enumerate(images):
            rel = path.relative_to(self.images_dir)
            mask_path = self.masks_dir / rel.with_suffix(".png")
            if not mask_path.is_file():
                warnings.append(f"{path}: no mask {mask_path}, image skipped")
                continue
            width, height = image_size(path)
            record = ImageRecord(path=path, image_id=k + 1, width=width, height=height,
                                 file_name=rel.as_posix())
            if task == "semantic":
                record.semantic_png = mask_path
            else:
                ids = read_index_png(mask_path)
                record.instances = _instances_from_mask(ids, mask_type)
                if mask_type == "instance":
                    record.instance_png = mask_path
            records.append(record)
        if mask_type == "instance":
            fg = names[1:2] or ["object"]
        else:
            if names:
                top = 0
            elif task == "semantic":  # no classes.txt: the largest value found names the count
                top = max((int(v) for r in records for v in np.unique(read_index_png(
                    r.semantic_png)) if v != 255), default=0)
            else:
                top = max((i.label for r in records for i in r.instances), default=0)
            fg = names[1:] if names else [f"class{i}" for i in range(1, top + 1)]
            if top >= len(fg) + 1:
                fg = fg + [f"class{i}" for i in range(len(fg) + 1, top + 1)]
        super().__init__(records, fg, list(range(1, len(fg) + 1)), task=task,
                         transforms=transforms)
        self.warnings = warnings
