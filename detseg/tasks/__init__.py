"""Task adapters: the one contract per task (``detect``, ``instance``, ``semantic``) through
which the Predictor, evaluation, training, export, explain and benchmark run a model.

    adapter = task_adapter(model)            # by model.spec.task
    predictions = adapter.predict(model, images, InferenceSettings(conf=0.3))

See ``detseg.tasks.base`` for the contract.
"""

from __future__ import annotations

from torch import nn

from detseg.spec import ModelSpec, model_spec
from detseg.tasks.base import (
    MAX_IMGSZ,
    MIN_IMGSZ,
    TASK_ADAPTERS,
    InferenceSettings,
    Prepared,
    TaskAdapter,
    float_image,
    total_loss,
)
from detseg.tasks.detection import DetectionAdapter, InstanceAdapter
from detseg.tasks.semantic import SemanticAdapter

__all__ = [
    "MAX_IMGSZ",
    "MIN_IMGSZ",
    "TASK_ADAPTERS",
    "DetectionAdapter",
    "InferenceSettings",
    "InstanceAdapter",
    "Prepared",
    "SemanticAdapter",
    "TaskAdapter",
    "float_image",
    "task_adapter",
    "total_loss",
]

for _adapter in (DetectionAdapter, InstanceAdapter, SemanticAdapter):
    TASK_ADAPTERS.add(_adapter.name, _adapter, fitness_key=_adapter.fitness_key)


def task_adapter(spec_or_model: ModelSpec | nn.Module) -> TaskAdapter:
    """A fresh adapter for a spec's task (a module is read through its ``.spec``)."""
    spec = spec_or_model if isinstance(spec_or_model, ModelSpec) else model_spec(spec_or_model)
    return TASK_ADAPTERS.get(spec.task).builder(spec)
