"""Naming a model's layers and catching what they output during a forward pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from detseg.errors import UsageError
from detseg.summary import feature_extractor


def list_layers(model: nn.Module) -> list[tuple[str, str, int]]:
    """``(name, type, parameters)`` of every named submodule, in definition order."""
    return [(name, type(module).__name__, sum(p.numel() for p in module.parameters()))
            for name, module in model.named_modules() if name]


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name is a ``UsageError`` with close names."""
    modules = dict(model.named_modules())
    if name not in modules:
        close = [n for n in modules if n and name in n][:5]
        hint = f"; did you mean {', '.join(close)}" if close else ""
        raise UsageError(f"no layer named {name!r}{hint} (see --layer list)")
    return modules[name]


def default_layer(model: nn.Module) -> str:
    """The module making the feature maps (the detseg backbone, or a preset's ``backbone``)."""
    name, _ = feature_extractor(model)
    if not name:
        raise UsageError("this model has no backbone module; choose a layer with --layer "
                         "(see --layer list)")
    return name


def capture(model: nn.Module, names: list[str], run: Callable[[], Any],
            ) -> tuple[dict[str, Tensor], Any]:
    """Run ``run()`` with forward hooks on the layers ``names``; returns each layer's first
    output and ``run``'s result. A dict output (a backbone's stages) is expanded to
    ``<name>:<key>`` entries."""
    captured: dict[str, Tensor] = {}
    hooks = []

    def keep(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, dict):
                for key, value in output.items():
                    captured.setdefault(f"{name}:{key}", value)
            elif isinstance(output, Tensor):
                captured.setdefault(name, output)
        return hook

    for name in names:
        hooks.append(find_layer(model, name).register_forward_hook(keep(name)))
    try:
        result = run()
    finally:
        for handle in hooks:
            handle.remove()
    return captured, result
