"""What every dataset format shares: image records, targets as ``tv_tensors``, COCO export.

A format module (``coco``, ``voc``, ``yolo``, ``maskfolder``) only parses its files into
``ImageRecord``s; ``RecordDataset`` turns them into ``(image, target)`` pairs:

- tasks ``detect`` / ``instance``: ``image`` is a ``tv_tensors.Image`` (uint8 ``3 x H x W``),
  ``target`` holds ``boxes`` (``BoundingBoxes`` xyxy float32 pixels), ``labels`` (int64,
  1..K, 0 = background), ``iscrowd`` (int64), ``area`` (float32), ``image_id`` (int) and, for
  ``instance``, ``masks`` (``Mask`` uint8 ``N x H x W``). Crowd regions are kept, flagged by
  ``iscrowd``; ``drop_crowd`` removes them before training.
- task ``semantic``: ``target`` is ``{"mask": Mask int64 H x W (255 = ignore), "image_id"}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset
from torchvision import tv_tensors

from detseg.data.io import read_image
from detseg.data.masks import decode_segmentation, encode_rle
from detseg.errors import DatasetError, UsageError

TASKS = ("detect", "instance", "semantic")
IGNORE_INDEX = 255


@dataclass
class Instance:
    """One annotated object.

    Attributes:
        box: ``(x0, y0, x1, y1)`` float pixels (pixel edges).
        label: contiguous training label, 1..K.
        iscrowd: 1 for a crowd region (or a VOC "difficult" object), else 0.
        area: mask area in pixels where known, else the box area.
        segmentation: a COCO segmentation (polygon list or RLE dict), or ``None``.
        mask_value: pixel value of this instance in the record's ``instance_png``, or ``None``.
        source_id: the annotation's id in the source files, when it has one.
    """

    box: tuple[float, float, float, float]
    label: int
    iscrowd: int = 0
    area: float = 0.0
    segmentation: Any = None
    mask_value: int | None = None
    source_id: int | None = None


@dataclass
class ImageRecord:
    """One image and its annotations.

    ``semantic_png`` is a class-index PNG (semantic task); ``instance_png`` holds instance ids
    (pixel value ``Instance.mask_value``). ``file_name`` is the path written into COCO exports.
    """

    path: Path
    image_id: int
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)
    semantic_png: Path | None = None
    instance_png: Path | None = None
    file_name: str = ""


def read_index_png(path: Path) -> np.ndarray:
    """A single-channel PNG (grayscale or palette) as its raw ``H x W`` index values."""
    try:
        with PILImage.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise DatasetError(f"{path}: mask PNG has mode {img.mode}; expected a "
                                   "single-channel class-index or palette PNG")
            return np.asarray(img).astype(np.int64)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read mask ({err})") from err


def safe_join(root: Path, name: str) -> Path:
    """``root / name``, refusing names that leave ``root`` (absolute or with ``..``)."""
    if not name:
        raise DatasetError("empty file name")
    joined = os.path.normpath(os.path.join(root, name))
    base = os.path.normpath(root)
    if os.path.isabs(name) or not (joined == base or joined.startswith(base + os.sep)):
        raise DatasetError(f"file name {name!r} resolves outside the image folder {root}")
    return Path(joined)


def to_image_tensor(rgb: np.ndarray) -> tv_tensors.Image:
    """``H x W x 3`` uint8 RGB -> ``tv_tensors.Image`` uint8 ``3 x H x W``."""
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))))


def drop_crowd(target: dict[str, Any]) -> dict[str, Any]:
    """A copy of a detection target without its crowd regions (``iscrowd == 1``)."""
    if "iscrowd" not in target:
        return target
    keep = target["iscrowd"] == 0
    out = dict(target)
    for key in ("boxes", "labels", "iscrowd", "area", "masks"):
        if key in out:
            value = out[key][keep]
            out[key] = tv_tensors.wrap(value, like=target[key]) \
                if isinstance(target[key], tv_tensors.TVTensor) else value
    return out


class RecordDataset(Dataset):
    """A dataset over ``ImageRecord``s (see the module docstring for what it yields).

    Attributes:
        class_names: names by label, ``class_names[0]`` is ``"__background__"`` (detection)
            or ``"background"`` (semantic).
        category_ids: the source's category id per label, ``0`` for background.
        records: the parsed images.
        task: ``detect``, ``instance`` or ``semantic``.
        warnings: problems skipped while parsing (one line each).
        left_out: objects (annotations, label lines) skipped while parsing.
        source: where the images were looked for, for messages ("0 images found: ...").
    """

    def __init__(self, records: list[ImageRecord], names: list[str], category_ids: list[int],
                 task: str = "detect", transforms: Callable | None = None,
                 semantic_lut: np.ndarray | None = None, source: str = "") -> None:
        if task not in TASKS:
            raise UsageError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        self.records = records
        self.task = task
        self.transforms = transforms
        background = "background" if task == "semantic" else "__background__"
        self.class_names = [background, *names]
        self.category_ids = [0, *category_ids]
        self.semantic_lut = semantic_lut
        self.warnings: list[str] = []
        self.left_out = 0
        self.source = source

    @property
    def num_classes(self) -> int:
        """Number of labels, background included."""
        return len(self.class_names)

    @property
    def image_paths(self) -> list[Path]:
        return [r.path for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        record = self.records[index]
        rgb = read_image(record.path)
        image = to_image_tensor(rgb)
        height, width = rgb.shape[:2]
        if self.task == "semantic":
            target = {"mask": tv_tensors.Mask(torch.from_numpy(
                self.semantic_mask(record, height, width))), "image_id": record.image_id}
        else:
            target = self.detection_target(record, height, width)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def detection_target(self, record: ImageRecord, height: int, width: int) -> dict[str, Any]:
        """Boxes, labels, crowd flags, areas (and masks for ``instance``) of one record."""
        inst = record.instances
        boxes = np.array([i.box for i in inst], dtype=np.float32).reshape(-1, 4)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY",
                                              canvas_size=(height, width)),
            "labels": torch.tensor([i.label for i in inst], dtype=torch.int64),
            "iscrowd": torch.tensor([i.iscrowd for i in inst], dtype=torch.int64),
            "area": torch.tensor([i.area for i in inst], dtype=torch.float32),
            "image_id": record.image_id,
        }
        if self.task == "instance":
            masks = self.instance_masks(record, height, width)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        return target

    def instance_masks(self, record: ImageRecord, height: int, width: int) -> np.ndarray:
        """``N x H x W`` uint8 masks; an instance without a segmentation fills its box."""
        masks = np.zeros((len(record.instances), height, width), dtype=np.uint8)
        ids = read_index_png(record.instance_png) if record.instance_png else None
        if ids is not None and ids.shape != (height, width):
            raise DatasetError(f"{record.instance_png}: mask is {ids.shape[1]}x{ids.shape[0]}, "
                               f"image is {width}x{height}")
        for k, inst in enumerate(record.instances):
            if inst.mask_value is not None and ids is not None:
                masks[k] = ids == inst.mask_value
            elif inst.segmentation is not None:
                try:
                    masks[k] = decode_segmentation(inst.segmentation, height, width)
                except ValueError as err:
                    raise DatasetError(f"{record.path}: annotation {inst.source_id}: {err}") \
                        from err
            else:
                x0, y0, x1, y1 = (int(round(v)) for v in inst.box)
                masks[k, max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 1
        return masks

    def semantic_mask(self, record: ImageRecord, height: int, width: int) -> np.ndarray:
        """``H x W`` int64 class indices (255 = ignore).

        Read from the record's class-index PNG when it has one (mapped through
        ``semantic_lut`` if set); otherwise painted from the instances, larger ones first,
        crowd regions as ignore.
        """
        if record.semantic_png is not None:
            mask = read_index_png(record.semantic_png)
            if mask.shape != (height, width):
                raise DatasetError(f"{record.semantic_png}: mask is {mask.shape[1]}x"
                                   f"{mask.shape[0]}, image is {width}x{height}")
            if self.semantic_lut is not None:
                mask = self.semantic_lut[np.clip(mask, 0, len(self.semantic_lut) - 1)]
            return mask.astype(np.int64)
        mask = np.zeros((height, width), dtype=np.int64)
        masks = self.instance_masks(record, height, width)
        order = sorted(range(len(record.instances)), key=lambda k: -int(masks[k].sum()))
        for k in order:
            inst = record.instances[k]
            mask[masks[k] > 0] = IGNORE_INDEX if inst.iscrowd else inst.label
        return mask

    def to_coco(self) -> dict[str, Any]:
        """COCO ground truth of this dataset: category ids are the source's, image ids match
        the targets' ``image_id``. Segmentations are included where the source has them (and,
        for task ``instance``, encoded as RLE from instance PNGs, or the box itself for an object
        the source gives only a box, as ``instance_masks`` does for training)."""
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for record in self.records:
            images.append({"id": record.image_id, "width": record.width,
                           "height": record.height,
                           "file_name": record.file_name or record.path.name})
            ids = None
            if self.task == "instance" and record.instance_png is not None:
                ids = read_index_png(record.instance_png)
            for inst in record.instances:
                x0, y0, x1, y1 = inst.box
                ann = {"id": len(annotations) + 1, "image_id": record.image_id,
                       "category_id": self.category_ids[inst.label],
                       "bbox": [x0, y0, x1 - x0, y1 - y0], "area": inst.area,
                       "iscrowd": inst.iscrowd}
                if inst.segmentation is not None:
                    ann["segmentation"] = inst.segmentation
                elif ids is not None and inst.mask_value is not None:
                    ann["segmentation"] = encode_rle(ids == inst.mask_value)
                elif self.task == "instance":  # a box-only object is its box, as in training
                    ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                annotations.append(ann)
        pairs = zip(self.category_ids[1:], self.class_names[1:], strict=True)
        categories = [{"id": cid, "name": name} for cid, name in pairs]
        return {"images": images, "annotations": annotations, "categories": categories}
