"""The backbone contract shared by every feature extractor in the registry.

A backbone maps an image batch ``x: Tensor[N, 3, H, W]`` (normalized RGB) to an ordered dict of
feature maps keyed by stride name (``"s2"``, ``"s4"``, ... ``"s32"``), shallow to deep; the map
at stride ``s`` is about ``H / s`` by ``W / s``. ``channels[i]`` and ``strides[i]`` describe the
``i``-th map.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (no bias), BatchNorm, ReLU; keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def stride_key(stride: int) -> str:
    """The feature-dict key of the map at ``stride`` (``8 -> "s8"``)."""
    return f"s{stride}"


class Backbone(nn.Module):
    """Base class of registry backbones: ``forward(x) -> OrderedDict[str, Tensor]``.

    Subclasses set ``channels`` and ``strides`` (same order as the returned maps).
    """

    channels: list[int]
    strides: list[int]

    @property
    def keys(self) -> list[str]:
        """Feature-dict keys in output order (``["s2", ..., "s32"]``)."""
        return [stride_key(s) for s in self.strides]

    def channels_at(self, key: str) -> int:
        """Channels of the map named ``key``."""
        return self.channels[self.keys.index(key)]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
