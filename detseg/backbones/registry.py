"""The backbone registry: each backbone module registers its builders here, next to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detseg.registry import Registry

#: name -> builder ``(pretrained: bool = False) -> Backbone``; meta: ``pretrained`` (ImageNet
#: weights exist), ``channels``, ``strides``, ``source``, optionally ``weights`` (enum name) and
#: ``output_strides`` (the deepest strides it can be built with, e.g. ``[16, 32]``; default
#: ``[32]``: builders then take ``output_stride`` too)
BACKBONES: Registry[Callable[..., Any]] = Registry("backbone")


def register_backbone(name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a backbone builder under ``name`` with its metadata."""
    return BACKBONES.register(name, **meta)
