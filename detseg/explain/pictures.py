"""Pictures of explanations: heatmap colours and overlays, and grids of tiles.

Every picture is an ``H x W x 3`` uint8 RGB array; heatmaps are ``H x W`` floats in [0, 1].
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: most feature maps or filters shown in one grid
GRID_MAX_MAPS = 64


def normalize(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1] (all zeros when they are constant)."""
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def colorize(heat: np.ndarray) -> np.ndarray:
    """``H x W`` float in [0, 1] -> ``H x W x 3`` uint8 RGB (jet colormap)."""
    gray = np.clip(heat * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(image_rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """Blend a [0, 1] heatmap (any size; resized) over the image, more opaque where hotter
    (opacity ``alpha * (0.2 + 0.8 * heat)``), so cold areas keep showing the image."""
    height, width = image_rgb.shape[:2]
    if heat.shape != (height, width):
        heat = cv2.resize(heat.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    opacity = (alpha * (0.2 + 0.8 * np.clip(heat, 0, 1)))[..., None]
    blended = (1 - opacity) * image_rgb.astype(np.float32) + opacity * colorize(heat)
    return blended.round().astype(np.uint8)


def tile_grid(tiles: list[np.ndarray], height: int, width: int, square: bool = False,
              gap: int = 1) -> np.ndarray:
    """Tile RGB uint8 pictures in a near-square grid on a ``height x width`` dark canvas.

    ``square`` keeps tiles square (centred grid); otherwise cells take the canvas' aspect.
    ``gap`` is the dark space in pixels between cells.
    """
    canvas = np.full((height, width, 3), 24, np.uint8)
    if not tiles:
        return canvas
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    cell_h, cell_w = height // rows, width // cols
    if square:
        cell_h = cell_w = min(cell_h, cell_w)
    top = (height - rows * cell_h) // 2
    left = (width - cols * cell_w) // 2
    inner_h, inner_w = max(1, cell_h - gap), max(1, cell_w - gap)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        interp = cv2.INTER_NEAREST if tile.shape[0] < inner_h else cv2.INTER_AREA
        resized = cv2.resize(tile, (inner_w, inner_h), interpolation=interp)
        y, x = top + r * cell_h, left + c * cell_w
        canvas[y:y + inner_h, x:x + inner_w] = resized
    return canvas
