"""Exported models (ONNX Runtime, TorchScript) as first-class weights.

    model = load_exported("runs/export/exp/ssd.onnx")   # a RuntimeModel, with .spec
    Predictor(model)                                     # or --weights ssd.onnx in any command

``detseg.runtime.files`` tells exported files from checkpoints by content,
``detseg.runtime.session`` runs a file in its runtime, ``detseg.runtime.model`` puts it behind
the PyTorch model's interface so the task adapters drive it unchanged, and
``detseg.runtime.tracing`` holds what ``detseg.export`` changes while tracing torchvision
detectors (an exact resize scale, a faster RoIAlign level merge).
"""

from __future__ import annotations

from pathlib import Path

from detseg.runtime.files import exported_format
from detseg.runtime.model import RuntimeModel
from detseg.runtime.session import RUNTIME_OF_FORMAT, GraphSession

__all__ = ["RUNTIME_OF_FORMAT", "GraphSession", "RuntimeModel", "exported_format",
           "load_exported"]


def load_exported(path: str | Path, threads: int | None = None) -> RuntimeModel:
    """The exported model in ``path`` (ONNX or TorchScript, by content) on the CPU.

    ``threads``: intra-op threads (default: torch's thread count).

    Raises:
        WeightsError: a missing, corrupt or truncated file, one without detseg metadata, or
            onnxruntime not installed; one line naming the file.
    """
    return RuntimeModel(GraphSession(path, threads=threads))
