"""``occlusion``: how much a target's score drops when a grey patch covers each place."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from detseg.errors import UsageError
from detseg.explain.base import Explanation, ModelRunner, register_method, to_tensor
from detseg.explain.pictures import overlay
from detseg.explain.targets import ScoreFunction, resolve_target

#: the grey the patch is filled with (RGB in [0, 1])
OCCLUSION_FILL = 0.5


def _positions(length: int, patch: int, stride: int) -> list[int]:
    """Patch starts every ``stride`` pixels, the last one flush with the edge."""
    last = length - patch
    positions = list(range(0, last + 1, stride))
    if positions[-1] != last:
        positions.append(last)
    return positions


def occlusion_map(score: ScoreFunction, image: Tensor, patch: int, stride: int,
                  batch_size: int = 8, fill: float = OCCLUSION_FILL) -> np.ndarray:
    """Score drop per pixel, ``[H, W]`` float32: for every ``patch x patch`` square of grey
    ``fill`` (placed every ``stride`` pixels, edges included) on ``image [3, H, W]`` in [0, 1],
    ``score(clean) - score(occluded)``, averaged over the squares covering each pixel. ``score``
    takes ``[B, 3, H, W]`` images; ``batch_size`` occluded images go through it at once."""
    if patch < 1 or stride < 1 or batch_size < 1:
        raise UsageError(f"patch, stride and batch_size must be >= 1, got {patch}, {stride} "
                         f"and {batch_size}")
    _, height, width = image.shape
    patch = min(patch, height, width)
    spots = [(y, x) for y in _positions(height, patch, stride)
             for x in _positions(width, patch, stride)]
    drops: list[float] = []
    with torch.no_grad():
        base = float(score(image[None])[0])
        for start in range(0, len(spots), batch_size):
            chunk = spots[start:start + batch_size]
            batch = image[None].repeat(len(chunk), 1, 1, 1)
            for k, (y, x) in enumerate(chunk):
                batch[k, :, y:y + patch, x:x + patch] = fill
            drops.extend((base - score(batch)).float().cpu().tolist())
    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.float64)
    for (y, x), drop in zip(spots, drops, strict=True):
        total[y:y + patch, x:x + patch] += drop
        count[y:y + patch, x:x + patch] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


@register_method("occlusion", summary="heatmap of the target's score drop when a grey patch "
                 "covers each place", tasks=("detect", "instance", "semantic"),
                 options=("target", "patch", "stride"))
def occlusion(model: nn.Module, image_rgb: np.ndarray, target: str | int | None = None,
              patch: int | None = None, stride: int | None = None,
              batch_size: int = 8) -> Explanation:
    """Occlusion-sensitivity heatmap of ``target`` (see ``detseg.explain.targets``) over the
    image (red = occluding it there lowers the score most). ``patch`` side in pixels (default
    1/8 of the shorter side, at least 4); ``stride`` in pixels (default half the patch)."""
    runner = ModelRunner(model)
    image = to_tensor(image_rgb)
    tgt = resolve_target(runner, image, target)
    patch = patch if patch is not None else max(4, min(image_rgb.shape[:2]) // 8)
    stride = stride if stride is not None else max(1, patch // 2)
    heat = occlusion_map(tgt.score_function(runner), image, patch, stride, batch_size)
    # the picture smooths the patch-grid steps (sigma = half the stride); the heatmap stays raw
    shown = cv2.GaussianBlur(np.clip(heat, 0, None), (0, 0), sigmaX=max(stride / 2, 0.5))
    shown = shown / shown.max() if shown.max() > 0 else shown
    picture = tgt.mark(overlay(image_rgb, shown))
    return Explanation("occlusion", {f"occlusion_{tgt.stem()}": picture}, target=tgt,
                       heatmap=heat)
