"""The one weights policy every command follows when it is given a model and/or weights.

- a preset name alone (``fasterrcnn_resnet50_fpn_v2``) means its DEFAULT pretrained weights
  (offline, the weights layer raises its clear download error);
- a family name alone (``faster_rcnn``) has no trained weights: commands that need a trained
  model (``detect``, ``segment``, ``eval``, ``explain``) refuse it; commands that measure the
  architecture (``benchmark``, ``summary``, ``export``) build it randomly initialised;
- ``weights="none"`` asks for random initialisation explicitly;
- a detseg checkpoint or manifest name alone rebuilds its model from the spec it carries.
"""

from __future__ import annotations

from torch import nn

from detseg.errors import UsageError
from detseg.models import build_model, model_info


def load_model(model: str | None, weights: str | None = None, backbone: str | None = None,
               *, need_trained: bool = True) -> nn.Module:
    """Build ``model`` with ``weights`` by the policy above.

    Raises:
        UsageError: neither is given, or a family without weights where ``need_trained``.
    """
    if model is None and weights is None:
        raise UsageError("give a model name or weights (a detseg checkpoint carries its model)")
    if model is not None and weights is None:
        if model_info(model)["kind"] == "preset":
            weights = "DEFAULT"
        elif need_trained:
            raise UsageError(
                f"model {model!r} is a family without trained weights: give weights (a "
                f"checkpoint, or a manifest name from `detseg weights list`), or "
                f"weights 'none' to run it randomly initialised")
    return build_model(model, backbone=backbone, weights=weights)


def model_task(model: str | None, weights: str | None) -> str:
    """``detect``, ``instance`` or ``semantic`` for a model name or a detseg checkpoint."""
    if model is not None:
        return str(model_info(model)["task"])
    if weights is None:
        raise UsageError("give a model name, or weights of a detseg checkpoint")
    from detseg.weights import resolve_weights

    spec = resolve_weights(weights).spec
    if spec is None:
        raise UsageError(f"weights {weights}: not a detseg checkpoint; name the model too")
    return spec.task


def training_weights(model: str | None, weights: str | None) -> str | None:
    """The weights a training run starts from, by the same policy: a preset alone fine-tunes
    its DEFAULT weights, ``"none"`` (any case) starts from random initialisation."""
    if weights is not None and weights.lower() == "none":
        return None
    if weights is None and model is not None and model_info(model)["kind"] == "preset":
        return "DEFAULT"
    return weights
