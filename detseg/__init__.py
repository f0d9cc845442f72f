"""detseg: object detection and segmentation with convolutional networks.

The library never imports typer; the command line lives in ``detseg.cli``.
Heavy submodules (torch models, predictor) are imported lazily so that
``import detseg`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Predictor": ("detseg.engine.predictor", "Predictor"),
    "ModelSpec": ("detseg.spec", "ModelSpec"),
    "build_model": ("detseg.models", "build_model"),
    "list_models": ("detseg.models", "list_models"),
    "build_backbone": ("detseg.backbones", "build_backbone"),
    "list_backbones": ("detseg.backbones", "list_backbones"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'detseg' has no attribute {name!r}")
