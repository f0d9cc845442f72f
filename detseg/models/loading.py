"""The one weights policy every command follows when it is given a model and/or weights.

- a preset name alone (``fasterrcnn_resnet50_fpn_v2``) means its DEFAULT pretrained weights
  (offline, the weights layer raises its clear download error);
- a family name alone (``faster_rcnn``) has no trained weights: commands that need a trained
  model (``detect``, ``segment``, ``eval``, ``explain``) refuse it; commands that measure the
  architecture (``benchmark``, ``summary``, ``export``) build it randomly initialised;
- ``weights="none"`` asks for random initialisation explicitly;
- a detseg checkpoint or manifest name alone rebuilds its model from the spec it carries;
- an exported model (``.onnx``, ``.torchscript``, or a TorchScript export under another name:
  recognised by content) runs through ``detseg.runtime`` (detect, segment, eval, explain,
  track, benchmark), its spec read from the file; commands that need the PyTorch module
  (train, export, summary: ``exported=False``) refuse it in one line.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from detseg.errors import UsageError
from detseg.models import build_model, model_info
from detseg.runtime import RUNTIME_OF_FORMAT, exported_format
from detseg.spec import ModelSpec


def exported_file(weights: str | None) -> Path | None:
    """The exported model file ``weights`` names (ONNX or TorchScript, by content), else
    ``None`` (a checkpoint, a manifest name, an enum, ``none``...)."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    return path if exported_format(path) is not None else None


def _refuse_exported(weights: str, path: Path, what: str) -> UsageError:
    runtime = RUNTIME_OF_FORMAT[str(exported_format(path))]
    return UsageError(f"--weights {weights}: an exported model (runs in {runtime}); {what} "
                      f"needs the PyTorch checkpoint it was exported from")


def load_model(model: str | None, weights: str | None = None, backbone: str | None = None,
               *, need_trained: bool = True, exported: bool = True) -> nn.Module:
    """Build ``model`` with ``weights`` by the policy above. An exported file comes back as a
    ``detseg.runtime.RuntimeModel`` (its ``spec`` from the file), or is refused where
    ``exported`` is False (the caller needs the PyTorch module).

    Raises:
        UsageError: neither is given, a family without weights where ``need_trained``, an
            exported file without ``exported``, or a model/backbone the file is not.
        WeightsError: an exported file that cannot be run (corrupt, no detseg metadata,
            onnxruntime missing).
    """
    if model is None and weights is None:
        raise UsageError("give a model name or weights (a detseg checkpoint carries its model)")
    path = exported_file(weights)
    if path is not None and weights is not None:
        if not exported:
            raise _refuse_exported(weights, path, "this command")
        return _load_exported(model, weights, backbone, path)
    if model is not None and weights is None:
        if model_info(model)["kind"] == "preset":
            weights = "DEFAULT"
        elif need_trained:
            raise UsageError(
                f"model {model!r} is a family without trained weights: give weights (a "
                f"checkpoint, or a manifest name from `detseg weights list`), or "
                f"weights 'none' to run it randomly initialised")
    return build_model(model, backbone=backbone, weights=weights)


def _load_exported(model: str | None, weights: str, backbone: str | None,
                   path: Path) -> nn.Module:
    from detseg.runtime import load_exported

    loaded = load_exported(path)
    spec = loaded.spec
    if model is not None and model not in (spec.family, model_info(model)["family"]):
        raise UsageError(f"--weights {weights} is a {spec.family} model, not {model}")
    if backbone is not None and backbone != spec.backbone:
        raise UsageError(f"--weights {weights} is over backbone {spec.backbone}, not "
                         f"{backbone}")
    return loaded


def model_task(model: str | None, weights: str | None) -> str:
    """``detect``, ``instance`` or ``semantic`` for a model name or a detseg checkpoint."""
    if model is not None:
        return str(model_info(model)["task"])
    if weights is None:
        raise UsageError("give a model name, or weights of a detseg checkpoint")
    return checkpoint_spec(weights).task


def checkpoint_spec(weights: str) -> ModelSpec:
    """The ``ModelSpec`` the detseg checkpoint ``weights`` carries (what training rebuilds when
    no model is named); ``UsageError`` for an exported model or weights without a spec."""
    path = exported_file(weights)
    if path is not None:
        raise _refuse_exported(weights, path, "training")
    from detseg.weights import resolve_weights

    spec = resolve_weights(weights).spec
    if spec is None:
        raise UsageError(f"weights {weights}: not a detseg checkpoint; name the model too")
    return spec


def training_weights(model: str | None, weights: str | None) -> str | None:
    """The weights a training run starts from, by the same policy: a preset alone fine-tunes
    its DEFAULT weights, ``"none"`` (any case) starts from random initialisation; an exported
    model is refused (``UsageError``)."""
    path = exported_file(weights)
    if path is not None and weights is not None:
        raise _refuse_exported(weights, path, "training")
    if weights is not None and weights.lower() == "none":
        return None
    if weights is None and model is not None and model_info(model)["kind"] == "preset":
        return "DEFAULT"
    return weights
