"""``filters``: the first convolution's kernels, tiled in a grid."""

from __future__ import annotations

import numpy as np
from torch import nn

from detseg.errors import UsageError
from detseg.explain.base import Explanation, register_method
from detseg.explain.pictures import GRID_MAX_MAPS, normalize, tile_grid


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """Name and module of the first ``Conv2d`` in definition order."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise UsageError("this model has no Conv2d layer, so there are no filters to show")


@register_method("filters", summary="the first convolution's kernels",
                 tasks=("detect", "instance", "semantic"))
def filter_grid(model: nn.Module, image_rgb: np.ndarray,
                max_filters: int = GRID_MAX_MAPS) -> Explanation:
    """The first convolution's kernels (at most ``max_filters``), each scaled to [0, 1] on its
    own, on a canvas of the image's size (the image itself is not used); RGB when the layer
    reads 3 channels, else the mean over input channels in grey."""
    name, conv = first_conv(model)
    weight = conv.weight.detach().float().cpu()[:max_filters]
    tiles = []
    for kernel in weight:
        if kernel.shape[0] == 3:
            rgb = normalize(kernel.permute(1, 2, 0).numpy())
            tiles.append((rgb * 255).round().astype(np.uint8))
        else:
            gray = (normalize(kernel.mean(0).numpy()) * 255).round().astype(np.uint8)
            tiles.append(np.repeat(gray[..., None], 3, axis=2))
    height, width = image_rgb.shape[:2]
    stem = "filters_" + name.replace(".", "-")
    return Explanation("filters", {stem: tile_grid(tiles, height, width, square=True)},
                       layers=[name])
