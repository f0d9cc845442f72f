"""The backbone registry: each backbone module registers its builders here, next to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detseg.registry import Registry

#: name -> builder ``(pretrained: bool = False) -> Backbone``; meta: ``pretrained`` (ImageNet
#: weights exist), ``channels``, ``strides``, ``source``, optionally ``weights`` (enum name)
BACKBONES: Registry[Callable[..., Any]] = Registry("backbone")


def register_backbone(name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a backbone builder under ``name`` with its metadata."""
    return BACKBONES.register(name, **meta)
