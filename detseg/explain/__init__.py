"""See what a CNN learned: one explain method per module, each registered in
``EXPLAIN_METHODS`` with ``register_method`` next to its function.

Every module in this folder is imported here, so adding a method is adding one file::

    # detseg/explain/brightness.py
    @register_method("brightness", summary="...", tasks=("semantic",), options=("target",))
    def brightness(model: nn.Module, image_rgb: np.ndarray,
                   target: str | None = None) -> Explanation: ...

``explain(model, image_rgb, method, **options)`` runs a method by name. Methods feed the model
through its task adapter (``detseg.explain.base.ModelRunner``) and explain a ``Target``
(``detseg.explain.targets``).
"""

from __future__ import annotations

import importlib
import pkgutil

from detseg.explain.base import (
    EXPLAIN_METHODS,
    ExplainMethod,
    Explanation,
    ModelRunner,
    explain,
    register_method,
)
from detseg.explain.layers import list_layers

__all__ = [
    "EXPLAIN_METHODS",
    "ExplainMethod",
    "Explanation",
    "ModelRunner",
    "explain",
    "list_layers",
    "register_method",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
