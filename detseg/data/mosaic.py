"""Mosaic augmentation (YOLOv4 / YOLOv5 style) for detection and instance training sets.

A mosaic sample is four training images, each resized so its longer side is ``size``, placed
around a random centre of a ``2 size`` x ``2 size`` grey canvas (the first image up and left of
the centre, the others clockwise); a window of ``size / g`` pixels around the canvas centre
(``g`` a random zoom in ``scale``, plus a small random shift) is cut and resized to ``size`` x
``size``. Boxes and instance masks move with their pixels; an object cut to less than
``min_visible`` of its placed area, or to under 2 pixels, is dropped. The dataset's own
augmentation pipeline then runs on the mosaic as on any sample.

YOLO recipes turn mosaic off for the last epochs (``enabled = False``) so the model ends on
images as inference sees them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from detseg.errors import UsageError

GREY = 114  # canvas fill, as YOLO letterboxes
_PER_BOX = ("labels", "iscrowd", "area")


class MosaicDataset(Dataset):
    """``dataset`` (a detection or instance ``RecordDataset``) with mosaic samples.

    ``transforms`` (set as on the dataset) runs after the mosaic; the wrapped dataset's own is
    cleared so it yields raw samples. Other attributes (``class_names``, ``records`` ...) are
    the wrapped dataset's.

    Args:
        size: side of a mosaic sample in pixels (the training input size).
        p: probability that a sample is a mosaic (else the plain image).
        scale: range of the zoom ``g`` applied to the four-image canvas.
        min_visible: smallest kept fraction of an object's placed box area.
    """

    def __init__(self, dataset: Any, size: int, p: float = 1.0,
                 scale: tuple[float, float] = (0.5, 1.5), min_visible: float = 0.2) -> None:
        if dataset.task not in ("detect", "instance"):
            raise UsageError(f"mosaic augments detection and instance data, not {dataset.task}")
        if size < 8:
            raise UsageError(f"mosaic size must be at least 8 pixels, got {size}")
        if not 0.0 <= p <= 1.0:
            raise UsageError(f"mosaic probability must be in [0, 1], got {p}")
        self.dataset, self.size, self.p = dataset, size, p
        self.scale, self.min_visible = scale, min_visible
        self.enabled = True
        self.transforms = dataset.transforms
        dataset.transforms = None

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        if self.enabled and len(self.dataset) > 0 and float(torch.rand(())) < self.p:
            others = torch.randint(len(self.dataset), (3,)).tolist()
            image, target = self.mosaic([self.dataset[i] for i in [index, *others]])
        else:
            image, target = self.dataset[index]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def mosaic(self, samples: list[tuple[Any, dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
        """Four raw ``(image uint8 3 x H x W, target)`` samples -> one ``size`` x ``size``
        sample (the first sample's ``image_id``)."""
        s = self.size
        canvas = torch.full((3, 2 * s, 2 * s), GREY, dtype=torch.uint8)
        cx, cy = (int(torch.randint(s // 2, 3 * s // 2 + 1, ())) for _ in range(2))
        placed = []
        for k, (image, target) in enumerate(samples):
            image, target = _resize_longer(image, target, s)
            h, w = image.shape[-2:]
            x0 = cx - w if k in (0, 3) else cx
            y0 = cy - h if k in (0, 1) else cy
            _paste(canvas, image, x0, y0)
            placed.append(_shift(target, x0, y0, 2 * s))
        target = _concat(placed, samples[0][1], 2 * s)
        zoom = float(torch.empty(()).uniform_(*self.scale))
        window = max(8, round(s / zoom))
        shift = (torch.rand(2) * 0.2 - 0.1) * s
        left = round(s + float(shift[0]) - window / 2)
        top = round(s + float(shift[1]) - window / 2)
        image = F.crop(tv_tensors.Image(canvas), top, left, window, window)
        image[:, _outside(top, window, 2 * s), :] = GREY
        image[:, :, _outside(left, window, 2 * s)] = GREY
        image = F.resize(image, [s, s], antialias=True)
        target = _window(target, top, left, window, s, self.min_visible)
        return image, target


def _resize_longer(image: Any, target: dict[str, Any], side: int) -> tuple[Any, dict[str, Any]]:
    h, w = image.shape[-2:]
    factor = side / max(h, w)
    size = [max(1, round(h * factor)), max(1, round(w * factor))]
    out = dict(target)
    out["boxes"] = F.resize(target["boxes"], size)
    if "masks" in target:
        out["masks"] = F.resize(target["masks"], size)
    if "area" in target:
        out["area"] = target["area"] * factor * factor
    return F.resize(image, size, antialias=True), out


def _paste(canvas: torch.Tensor, image: torch.Tensor, x0: int, y0: int) -> None:
    """Copy ``image`` into ``canvas`` with its top-left corner at ``(x0, y0)``, clipped."""
    h, w = image.shape[-2:]
    side = canvas.shape[-1]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, side), min(y0 + h, side)
    canvas[:, cy0:cy1, cx0:cx1] = image[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def _shift(target: dict[str, Any], x0: int, y0: int, side: int) -> dict[str, Any]:
    """Boxes (and masks) of an image pasted at ``(x0, y0)`` on a ``side`` x ``side`` canvas."""
    out = dict(target)
    out["boxes"] = F.crop(target["boxes"], -y0, -x0, side, side)
    if "masks" in target:
        out["masks"] = F.crop(target["masks"], -y0, -x0, side, side)
    return out


def _concat(placed: list[dict[str, Any]], first: dict[str, Any], side: int) -> dict[str, Any]:
    boxes = torch.cat([t["boxes"].as_subclass(torch.Tensor) for t in placed])
    out: dict[str, Any] = {"image_id": first.get("image_id"), "boxes": tv_tensors.BoundingBoxes(
        boxes, format="XYXY", canvas_size=(side, side))}
    for key in _PER_BOX:
        if key in first:
            out[key] = torch.cat([t[key] for t in placed])
    if "masks" in first:
        out["masks"] = tv_tensors.Mask(torch.cat([t["masks"] for t in placed]))
    return out


def _outside(start: int, length: int, side: int) -> list[int]:
    """Indices of a ``length`` window starting at ``start`` that fall off ``[0, side)``."""
    return [i for i in range(length) if not 0 <= start + i < side]


def _window(target: dict[str, Any], top: int, left: int, window: int, size: int,
            min_visible: float) -> dict[str, Any]:
    """``target`` cut to the window and resized to ``size``; objects mostly cut off dropped."""
    placed = target["boxes"].as_subclass(torch.Tensor)
    cut = F.clamp_bounding_boxes(F.crop(target["boxes"], top, left, window, window))
    cut = F.resize(cut, [size, size])
    factor = size / window
    wh = (cut[:, 2:] - cut[:, :2]).as_subclass(torch.Tensor)
    placed_area = ((placed[:, 2:] - placed[:, :2]).prod(dim=1) * factor * factor).clamp(min=1e-6)
    keep = (wh.min(dim=1).values >= 2) & (wh.prod(dim=1) >= min_visible * placed_area)
    out: dict[str, Any] = {"image_id": target.get("image_id"),
                           "boxes": tv_tensors.wrap(cut[keep], like=cut)}
    for key in _PER_BOX:
        if key in target:
            out[key] = target[key][keep]
    if "area" in out:
        out["area"] = wh.prod(dim=1)[keep].float()
    if "masks" in target:
        masks = F.crop(target["masks"][keep], top, left, window, window)
        out["masks"] = tv_tensors.Mask(F.resize(masks, [size, size]))
    return out
