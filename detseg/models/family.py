"""What a model family is: a default backbone, default options, and a builder from a spec.

A family builder takes the backbone module and a ``ModelSpec`` whose ``options`` are complete
(every default filled in by ``Family.resolve_options``), so a spec stored in a checkpoint
rebuilds the same network even if a default changes later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from detseg.backbones import Backbone
from detseg.errors import ModelBuildError
from detseg.registry import Registry
from detseg.spec import ModelSpec

#: every model family, filled by the modules of ``detseg.models.families`` as they are imported
FAMILIES: Registry[Family] = Registry("model family")
Builder = Callable[[Backbone, ModelSpec], nn.Module]


@dataclass(frozen=True)
class Family:
    """A model family registered in ``detseg.models``.

    Attributes:
        name: registry name (``faster_rcnn``).
        task: ``detect``, ``instance`` or ``semantic``.
        default_backbone: backbone used when none is given.
        input_size: default ``ModelSpec.input_size`` (shorter side for R-CNNs, square side for
            SSD, training crop for semantic models).
        defaults: ``(backbone_info, input_size) -> options`` with every option's default.
        build: ``(backbone, spec) -> nn.Module``.
        summary: one line for listings.
        backbone_options: names of options passed on to ``build_backbone`` when the model is
            built (``output_stride`` for DeepLabV3+).
    """

    name: str
    task: str
    default_backbone: str
    input_size: int
    defaults: Callable[[dict[str, Any], int], dict[str, Any]]
    build: Callable[[Backbone, ModelSpec], nn.Module]
    summary: str
    backbone_options: tuple[str, ...] = ()

    def resolve_options(
        self, backbone_info: dict[str, Any], input_size: int, options: dict[str, Any]
    ) -> dict[str, Any]:
        """``options`` over the defaults; an unknown option is a ``ModelBuildError``."""
        defaults = self.defaults(backbone_info, input_size)
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ModelBuildError(
                f"{self.name} has no option {', '.join(unknown)} "
                f"(options: {', '.join(sorted(defaults)) or 'none'})"
            )
        return {**defaults, **options}


def require_strides(backbone_info: dict[str, Any], strides: list[int], family: str) -> None:
    """Raise ``ModelBuildError`` unless the backbone has feature maps at every stride given."""
    missing = [s for s in strides if s not in backbone_info["strides"]]
    if missing:
        raise ModelBuildError(
            f"{family} needs feature maps at strides {strides} but backbone "
            f"{backbone_info['name']!r} has none at {missing} (it has {backbone_info['strides']})"
        )


def is_small(backbone_info: dict[str, Any]) -> bool:
    """Backbones whose widest map has <= 256 channels (``tiny``) get narrower heads."""
    return max(backbone_info["channels"]) <= 256


def register_family(name: str, *, task: str, default_backbone: str, input_size: int,
                    defaults: Callable[[dict[str, Any], int], dict[str, Any]],
                    summary: str, backbone_options: tuple[str, ...] = ()
                    ) -> Callable[[Builder], Builder]:
    """Decorator registering a family's builder ``(backbone, spec) -> nn.Module``::

        @register_family("unet", task="semantic", default_backbone="resnet34",
                         input_size=512, defaults=unet_defaults, summary="U-Net ...")
        def build_unet(backbone: Backbone, spec: ModelSpec) -> nn.Module: ...

    ``defaults(backbone_info, input_size)`` gives every option's default (``Family``);
    ``backbone_options`` name the options that ``build_backbone`` takes (``output_stride``).
    """

    def decorator(build: Builder) -> Builder:
        family = Family(name=name, task=task, default_backbone=default_backbone,
                        input_size=input_size, defaults=defaults, build=build, summary=summary,
                        backbone_options=backbone_options)
        FAMILIES.add(name, family, task=task)
        return build

    return decorator
