"""``activations``: the feature maps of a layer, tiled in a grid, strongest channels first."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from detseg.errors import UsageError
from detseg.explain.base import Explanation, ModelRunner, register_method, to_tensor
from detseg.explain.layers import capture, default_layer
from detseg.explain.pictures import GRID_MAX_MAPS, colorize, normalize, tile_grid


@register_method("activations", summary="feature maps of a layer (default: each backbone "
                 "stage), strongest channels first", tasks=("detect", "instance", "semantic"),
                 options=("layer",))
def activation_grids(model: nn.Module, image_rgb: np.ndarray, layer: str | None = None,
                     max_maps: int = GRID_MAX_MAPS) -> Explanation:
    """One grid per feature map ``layer`` outputs on the image (a backbone: one per stage),
    of at most ``max_maps`` channels ranked by mean absolute activation, each channel scaled
    to [0, 1] on its own. Grids have the image's size ``H x W``."""
    runner = ModelRunner(model)
    names = [layer or default_layer(model)]
    image = to_tensor(image_rgb)
    with torch.no_grad():
        captured, _ = capture(model, names, lambda: runner.forward(image[None]))
    height, width = image_rgb.shape[:2]
    pictures = {}
    for name, act in captured.items():
        if act.dim() != 4:
            raise UsageError(f"layer {name!r} outputs shape {list(act.shape)}, not feature maps")
        maps = act[0].float().cpu()
        strength = maps.abs().mean(dim=(1, 2))
        order = strength.argsort(descending=True)[:max_maps]
        tiles = [colorize(normalize(maps[k].numpy())) for k in order]
        stem = "activations_" + name.replace(":", "_").replace(".", "-")
        pictures[stem] = tile_grid(tiles, height, width)
    if not pictures:
        raise UsageError(f"layer {names[0]!r} did not run on this image")
    return Explanation("activations", pictures, layers=list(captured))
