"""``gradcam``: Grad-CAM (Selvaraju et al. 2017) of a detection or a segmentation class.

Channel weights are the spatial mean of d(score)/d(activation); the map is
``ReLU(sum_k w_k A_k)``, scaled to [0, 1] and resized to the image.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detseg.errors import UsageError
from detseg.explain.base import Explanation, ModelRunner, register_method, to_tensor
from detseg.explain.layers import capture, default_layer
from detseg.explain.pictures import normalize, overlay
from detseg.explain.targets import resolve_target


@register_method("gradcam", summary="Grad-CAM of a detection or a segmentation class",
                 tasks=("detect", "instance", "semantic"), options=("target", "layer"))
def grad_cam(model: nn.Module, image_rgb: np.ndarray, target: str | int | None = None,
             layer: str | None = None) -> Explanation:
    """Grad-CAM of ``target`` (see ``detseg.explain.targets``) at ``layer`` (default: the
    deepest backbone stage whose activations the target's score depends on); the heatmap is
    ``H x W`` in [0, 1]."""
    runner = ModelRunner(model)
    image = to_tensor(image_rgb)
    tgt = resolve_target(runner, image, target)
    score_of = tgt.score_function(runner)
    names = [layer or default_layer(model)]
    with torch.enable_grad():
        captured, score = capture(model, names, lambda: score_of(image[None])[0])
        acts = {name: act for name, act in captured.items() if act.dim() == 4 and
                act.requires_grad}
        if not acts:
            raise UsageError(f"layer {names[0]!r} gives no differentiable feature maps")
        grads = torch.autograd.grad(score, list(acts.values()), allow_unused=True)
    chosen = None
    for name, act, grad in reversed(list(zip(acts, acts.values(), grads, strict=True))):
        if grad is not None and float(grad.abs().sum()) > 0:
            chosen = (name, act.detach()[0].float(), grad[0].float())
            break
    if chosen is None:
        raise UsageError(f"the target's score does not depend on layer {names[0]!r}; pick "
                         "another with --layer")
    name, act, grad = chosen
    weights = grad.mean(dim=(1, 2))
    cam = F.relu((weights[:, None, None] * act).sum(0)).cpu().numpy()
    cam = normalize(cam) if cam.max() > 0 else cam
    height, width = image_rgb.shape[:2]
    cam = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    picture = tgt.mark(overlay(image_rgb, cam))
    stem = f"gradcam_{tgt.stem()}_{name.replace(':', '_').replace('.', '-')}"
    return Explanation("gradcam", {stem: picture}, target=tgt, layers=[name], heatmap=cam)
