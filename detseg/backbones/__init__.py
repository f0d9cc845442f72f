"""One backbone registry shared by every model family.

``build_backbone(name)`` returns a ``Backbone``: ``forward(x) -> OrderedDict`` of feature maps
keyed ``"s2"`` .. ``"s32"`` (as the network has them), with ``channels`` and ``strides``.
Each backbone module registers its builders in ``BACKBONES`` (``backbones/registry.py``):
``tiny`` (ours, ``tiny.py``) and the torchvision networks of ``TORCHVISION_NETS``
(``torchvision_nets.py``); ``timm/<name>`` works too when timm is installed.
"""

from __future__ import annotations

import fnmatch
from functools import cache
from typing import Any

import detseg.backbones.tiny  # noqa: F401  (registers ``tiny``)
from detseg.backbones.base import Backbone, stride_key
from detseg.backbones.registry import BACKBONES
from detseg.backbones.timm_nets import TIMM_PREFIX, build_timm_backbone, list_timm_backbones
from detseg.backbones.torchvision_nets import TORCHVISION_NETS, torchvision_backbone_params
from detseg.errors import RegistryError

__all__ = [
    "BACKBONES",
    "Backbone",
    "backbone_info",
    "build_backbone",
    "list_backbones",
    "output_strides",
    "stride_key",
]

def build_backbone(name: str, pretrained: bool = False, output_stride: int = 32) -> Backbone:
    """The backbone ``name`` (random init, or ImageNet weights with ``pretrained=True``).

    ``output_stride=16`` dilates the last stage so the deepest map is at stride 16, for the
    backbones whose ``backbone_info(name)["output_strides"]`` lists 16.
    """
    supported = output_strides(name)
    if output_stride not in supported:
        raise RegistryError(f"backbone {name!r} cannot be built at output_stride={output_stride} "
                            f"(it supports {', '.join(map(str, supported))})")
    if name.startswith(TIMM_PREFIX):
        return build_timm_backbone(name, pretrained)
    entry = BACKBONES.get(name)
    if output_stride == 32:
        return entry.builder(pretrained=pretrained)
    return entry.builder(pretrained=pretrained, output_stride=output_stride)


def output_strides(name: str) -> list[int]:
    """The deepest strides backbone ``name`` can be built with (``[16, 32]`` where it dilates
    its last stage; timm backbones: ``[32]``)."""
    if name.startswith(TIMM_PREFIX):
        return [32]
    return list(BACKBONES.get(name).meta.get("output_strides", [32]))


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered names matching ``pattern``; ``timm/...`` patterns list timm's models."""
    if pattern.startswith(TIMM_PREFIX):
        return list_timm_backbones(pattern[len(TIMM_PREFIX):])
    return [n for n in BACKBONES.names() if fnmatch.fnmatchcase(n, pattern)]


@cache
def _param_count(name: str) -> int:
    """Parameters of backbone ``name``; leaves the global random state untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        if name in TORCHVISION_NETS:
            return torchvision_backbone_params(name)
        with torch.device("meta"):
            return sum(p.numel() for p in build_backbone(name).parameters())


def backbone_info(name: str) -> dict[str, Any]:
    """``{name, params (millions), channels, strides, output_strides, pretrained}`` without a
    forward pass."""
    if name.startswith(TIMM_PREFIX):
        backbone = build_backbone(name)
        params = sum(p.numel() for p in backbone.parameters())
        return {"name": name, "params": round(params / 1e6, 2), "channels": backbone.channels,
                "strides": backbone.strides, "output_strides": [32], "pretrained": True}
    meta = BACKBONES.get(name).meta
    return {
        "name": name,
        "params": round(_param_count(name) / 1e6, 2),
        "channels": list(meta["channels"]),
        "strides": list(meta["strides"]),
        "output_strides": output_strides(name),
        "pretrained": bool(meta["pretrained"]),
    }
