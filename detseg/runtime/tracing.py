"""How detseg traces torchvision detectors for export, so a runtime can feed the graph exactly.

Two torchvision functions are swapped while a graph is traced (``tracing_patches``); eager
PyTorch is untouched and the graph computes the same values:

- the resize of ``GeneralizedRCNNTransform``: torchvision traces its scale as ``float / tensor``,
  which torch computes as ``float * (1 / tensor)``: ``427 * (1 / 427) = 0.99999994`` in float32,
  so an image whose longer side is already ``max_size`` loses a row and a column in the graph
  (the PyTorch model keeps it at scale 1). Here the scale is a true float32 division, so a
  picture already at the model's working size passes unchanged (``detseg.runtime.model``
  relies on that to resize pictures as PyTorch does);
- the merge of multi-scale RoIAlign levels: torchvision traces a ``ScatterElements`` over the
  whole ``[K, C, h, w]`` output, which ONNX Runtime runs about ten times slower than the
  ``Gather`` with the inverse order used here (150 ms of a 300 ms tiny Faster R-CNN).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def merge_levels_by_gather(levels: Tensor, per_level: list[Tensor]) -> Tensor:
    """RoIAlign outputs of each pyramid level (``per_level[k]``: the boxes with ``levels ==
    k``, in box order) -> ``[K, C, h, w]`` in box order: concatenated, then gathered with the
    inverse order."""
    order = torch.cat([torch.where(levels == k)[0] for k in range(len(per_level))])
    inverse = torch.zeros_like(order).scatter(0, order, torch.arange(order.numel()))
    return torch.cat(per_level)[inverse]


def resize_by_true_division(original: Any) -> Any:
    """torchvision's ``_resize_image_and_masks`` whose traced scale (shorter side to
    ``min_size``, longer side at most ``max_size``) is a float32 division of tensors; other
    calls (eager, fixed size, with targets) go to ``original``."""

    def resize(image: Tensor, self_min_size: int, self_max_size: int,
               target: dict[str, Tensor] | None = None,
               fixed_size: tuple[int, int] | None = None) -> Any:
        if not torch.jit.is_tracing() or fixed_size is not None or target is not None:
            return original(image, self_min_size, self_max_size, target, fixed_size)
        shape = torch._shape_as_tensor(image)[-2:].to(torch.float32)
        scale = torch.minimum(torch.tensor(float(self_min_size)) / shape.min(),
                              torch.tensor(float(self_max_size)) / shape.max())
        resized = F.interpolate(image[None], scale_factor=scale,  # type: ignore[arg-type]
                                mode="bilinear", recompute_scale_factor=True,
                                align_corners=False)[0]
        return resized, target

    return resize


@contextlib.contextmanager
def tracing_patches() -> Iterator[None]:
    """Swap in ``merge_levels_by_gather`` and ``resize_by_true_division`` while tracing."""
    from torchvision.models.detection import transform
    from torchvision.ops import poolers

    merge, resize = poolers._onnx_merge_levels, transform._resize_image_and_masks
    poolers._onnx_merge_levels = merge_levels_by_gather
    transform._resize_image_and_masks = resize_by_true_division(resize)
    try:
        yield
    finally:
        poolers._onnx_merge_levels = merge
        transform._resize_image_and_masks = resize
