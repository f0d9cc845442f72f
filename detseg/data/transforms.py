"""Training and evaluation pipelines on ``torchvision.transforms.v2``.

Boxes (``BoundingBoxes``) and masks (``Mask``) move with the pixels. Every pipeline ends
with float images in [0, 1]; normalization belongs to the models (detectors normalize
inside; semantic training calls ``normalize`` with the spec's mean and std).

Presets (train; evaluation pipelines only convert, plus a resize for semantic ``imgsz``):

- ``none``: nothing but the float conversion.
- ``light``: horizontal flip, scale jitter (0.75-1.33x), mild colour jitter.
- ``strong``: photometric distortion, zoom-out (SSD, up to 3x), random IoU crop (SSD)
  for detection or random crops for semantic, horizontal flip, scale jitter (0.5-2x).

Detection pipelines end with ``SanitizeBoundingBoxes`` (drops boxes smaller than 1 px and
their labels, crowd flags, areas and masks). Semantic pipelines fill new pixels of the mask
with 255 (ignore). Given ``imgsz``, they resize every image to ``imgsz`` x ``imgsz``, training
ones too before the preset's scale jitter (so objects keep the scale they have in evaluation
and inference), and crop or pad augmented training samples back to that size; ``crop``
instead trains on windows of the full-resolution image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from detseg.data.base import IGNORE_INDEX
from detseg.errors import UsageError

PRESETS = ("none", "light", "strong")
_ZOOM_FILL = (124, 116, 104)  # ImageNet mean in uint8, as SSD pads


def _per_box(inputs: Any) -> tuple[torch.Tensor, ...]:
    """Per-box tensors SanitizeBoundingBoxes must filter along with the boxes."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) and len(inputs) > 1 else inputs
    return tuple(target[k] for k in ("labels", "iscrowd", "area") if k in target)


def _resize(inpt: Any, size: list[int], call_kernel: Any) -> Any:
    """Resize one input so that masks stay aligned with the exactly scaled boxes.

    Instance masks (``N x H x W``) that shrink keep every output pixel the shape touches
    (max pooling), so thin parts never vanish and the mask's box stays within a pixel of the
    scaled box; otherwise masks use centred nearest-neighbour sampling ("nearest-exact";
    torch's plain "nearest" shifts content by up to one source pixel).
    """
    if not isinstance(inpt, tv_tensors.Mask):
        return call_kernel(F.resize, inpt, size=size, antialias=True)
    flat = inpt.as_subclass(torch.Tensor)
    squeeze = flat.ndim == 2
    batch = flat[None] if squeeze else flat
    if batch.shape[0] == 0:
        out = batch.new_zeros((0, *size))
    elif not squeeze and size[0] <= batch.shape[-2] and size[1] <= batch.shape[-1]:
        pooled = torch.nn.functional.adaptive_max_pool2d(batch[None].float(), size)[0]
        out = pooled.to(batch.dtype)
    else:
        out = F.resize_image(batch, size=size, interpolation=v2.InterpolationMode.NEAREST_EXACT,
                             antialias=False)
    return tv_tensors.wrap(out[0] if squeeze else out, like=inpt)


class RandomScale(v2.Transform):
    """Resize by a random factor in ``scale_range`` (relative to the input size)."""

    def __init__(self, scale_range: tuple[float, float], max_side: int = 4096) -> None:
        super().__init__()
        self.scale_range = scale_range
        self.max_side = max_side

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        lo, hi = self.scale_range
        factor = lo + (hi - lo) * float(torch.rand(()))
        factor = min(factor, self.max_side / max(height, width))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resize(inpt, params["size"], self._call_kernel)


class ResizeTo(v2.Transform):
    """Resize to a fixed ``(height, width)``; masks as in ``RandomScale``."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = list(size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resize(inpt, self.size, self._call_kernel)


class IoUCrop(v2.RandomIoUCrop):
    """SSD's random IoU crop with ``RandomIoUCrop``'s rules, but each attempt draws its
    ``trials`` candidate crops at once (the stock one loops over them with tiny tensor ops,
    which dominates the strong pipeline), and images without boxes are left as they are
    (the stock one would loop until it drew its "keep everything" option)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        boxes = next(i for i in flat_inputs if isinstance(i, tv_tensors.BoundingBoxes))
        if boxes.shape[0] == 0:
            return {}
        orig_h, orig_w = v2.query_size(flat_inputs)
        xyxy = F.convert_bounding_box_format(boxes.as_subclass(torch.Tensor), boxes.format,
                                             tv_tensors.BoundingBoxFormat.XYXY).float()
        cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
        cy = (xyxy[:, 1] + xyxy[:, 3]) / 2
        box_area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
        while True:
            min_iou = self.options[int(torch.randint(len(self.options), (1,)))]
            if min_iou >= 1.0:
                return {}
            r = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(self.trials, 2)
            new_w = (orig_w * r[:, 0]).long()
            new_h = (orig_h * r[:, 1]).long()
            aspect = new_w / new_h.clamp(min=1)
            ok = (new_h > 0) & (aspect >= self.min_aspect_ratio) \
                & (aspect <= self.max_aspect_ratio)
            r = torch.rand(self.trials, 2)
            left = ((orig_w - new_w) * r[:, 0]).long()
            top = ((orig_h - new_h) * r[:, 1]).long()
            right, bottom = left + new_w, top + new_h
            ok &= (left != right) & (top != bottom)
            within = (left[:, None] < cx) & (cx < right[:, None]) \
                & (top[:, None] < cy) & (cy < bottom[:, None])
            inter_w = (torch.minimum(xyxy[:, 2], right[:, None])
                       - torch.maximum(xyxy[:, 0], left[:, None])).clamp(min=0)
            inter_h = (torch.minimum(xyxy[:, 3], bottom[:, None])
                       - torch.maximum(xyxy[:, 1], top[:, None])).clamp(min=0)
            inter = inter_w * inter_h
            iou = inter / (box_area + (new_w * new_h)[:, None] - inter).clamp(min=1e-9)
            ok &= within.any(dim=1)
            ok &= torch.where(within, iou, -1.0).amax(dim=1) >= min_iou
            if ok.any():
                t = int(ok.nonzero()[0])
                return {"top": int(top[t]), "left": int(left[t]), "height": int(new_h[t]),
                        "width": int(new_w[t]), "is_within_crop_area": within[t]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params:
            return inpt
        return super().transform(inpt, params)


def _light_ops() -> list[Any]:
    """The ``light`` preset, the same for detection and semantic targets."""
    return [v2.RandomHorizontalFlip(0.5), RandomScale((0.75, 1.33)),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)]


def _detection(preset: str, train: bool) -> list[Any]:
    ops: list[Any] = []
    if train and preset == "light":
        ops += _light_ops()
    elif train and preset == "strong":
        ops += [v2.RandomPhotometricDistort(p=0.5),
                v2.RandomZoomOut(fill={tv_tensors.Image: _ZOOM_FILL, "others": 0},
                                 side_range=(1.0, 3.0), p=0.5),
                IoUCrop(),
                v2.RandomHorizontalFlip(0.5),
                RandomScale((0.5, 2.0))]
    ops += [v2.ClampBoundingBoxes(), v2.ToDtype(torch.float32, scale=True),
            v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_per_box)]
    return ops


def _semantic(preset: str, train: bool, imgsz: int | None, crop: int | None) -> list[Any]:
    """Evaluation resizes to ``imgsz``; training does too (so objects have the scale they will
    have at inference), then augments and crops back to ``imgsz``. With ``crop``, training
    skips that resize and crops ``crop`` x ``crop`` windows from the full-resolution image."""
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
    ops: list[Any] = []
    if imgsz is not None and not (train and crop):
        ops.append(ResizeTo((imgsz, imgsz)))
    if train and preset == "light":
        ops += _light_ops()
    elif train and preset == "strong":
        ops += [v2.RandomPhotometricDistort(p=0.5),
                v2.RandomZoomOut(fill=fill, side_range=(1.0, 2.0), p=0.3),
                v2.RandomHorizontalFlip(0.5),
                RandomScale((0.5, 2.0))]
    window = crop if train and crop else (imgsz if train and preset != "none" else None)
    if window is not None:
        ops.append(v2.RandomCrop(window, pad_if_needed=True, fill=fill))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    return ops


def build_transforms(preset: str = "none", train: bool = True, task: str = "detect",
                     imgsz: int | None = None, crop: int | None = None) -> v2.Compose:
    """A ``v2.Compose`` taking and returning ``(image, target)`` (see the module docstring).

    ``task``: ``detect`` / ``instance`` (targets with ``boxes``, ``labels``[, ``masks``]) or
    ``semantic`` (target ``{"mask": Mask H x W}``). ``imgsz`` and ``crop`` only matter for
    ``semantic`` (see ``_semantic``).
    """
    if preset not in PRESETS:
        raise UsageError(f"augmentation preset must be one of {', '.join(PRESETS)}, "
                         f"got {preset!r}")
    if task == "semantic":
        return v2.Compose(_semantic(preset, train, imgsz, crop))
    if task not in ("detect", "instance"):
        raise UsageError(f"unknown task {task!r}")
    return v2.Compose(_detection(preset, train))


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(images - mean) / std`` per channel for a ``N x 3 x H x W`` or ``3 x H x W`` float
    batch in [0, 1] (the spec's ``mean``/``std``)."""
    shape = (-1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images - mean_t) / std_t
