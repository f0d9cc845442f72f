"""Optional ``timm/<name>`` backbones through timm's ``features_only`` models.

timm is an optional dependency (``pip install 'detseg[timm]'``); without it these names raise a
``RegistryError`` that says how to install it. Feature maps keep timm's reductions as strides.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

from detseg.backbones.base import Backbone, stride_key
from detseg.errors import RegistryError

TIMM_PREFIX = "timm/"


def timm_available() -> bool:
    """Whether timm can be imported."""
    return importlib.util.find_spec("timm") is not None


def _import_timm() -> Any:
    if not timm_available():
        raise RegistryError(
            "timm backbones need the timm package: pip install 'detseg[timm]' (or pip install timm)"
        )
    import timm

    return timm


class TimmBackbone(Backbone):
    """A timm ``features_only`` model; maps keyed by their reduction (``"s4"`` for 4)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        info: Any = model.feature_info  # timm's FeatureInfo (timm has no type hints)
        self.channels = list(info.channels())
        self.strides = list(info.reduction())
        if len(set(self.strides)) != len(self.strides):
            raise RegistryError(f"timm model has repeated feature strides {self.strides}")

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.model(x)
        return OrderedDict((stride_key(s), m) for s, m in zip(self.strides, maps, strict=True))


def build_timm_backbone(name: str, pretrained: bool = False) -> TimmBackbone:
    """``timm/<model>``: timm's ``features_only`` model (its own pretrained download)."""
    timm = _import_timm()
    model_name = name[len(TIMM_PREFIX):]
    if model_name not in timm.list_models():
        raise RegistryError(f"unknown timm model {model_name!r} (see timm.list_models())")
    return TimmBackbone(timm.create_model(model_name, pretrained=pretrained, features_only=True))


def list_timm_backbones(pattern: str = "*") -> list[str]:
    """``timm/<model>`` names matching ``pattern`` (given without the prefix)."""
    timm = _import_timm()
    return [TIMM_PREFIX + n for n in timm.list_models(pattern)]
