"""``ssd`` and ``ssdlite``: single-shot detectors over any registry backbone.

Six feature maps: the backbone's stride 8, 16 and 32 maps, then three extra blocks each halving
the resolution (strides 64, 128, 256), as SSD300 extends VGG. ``ssd`` uses plain 3x3 heads
(torchvision's ``SSDHead``) and conv-ReLU extra blocks as SSD300; ``ssdlite`` uses
depthwise-separable extra blocks and heads with BatchNorm (torchvision's ``SSDLiteHead``), so, as
torchvision's, it cannot train on a batch of one image when its last map is 1x1 (input <= 256).
Both resize every image to a fixed ``spec.input_size`` square inside the model (torchvision's
transform) and map boxes back.

Options stored in ``spec.options``:
    source_levels: backbone maps used (``["s8", "s16", "s32"]``).
    extra_channels: output channels of the three extra blocks (``[512, 256, 256]``; ``[128,
        128, 128]`` for small backbones such as ``tiny``).
    scales: 7 default-box scales as fractions of the image side (SSD300's ``[0.07, 0.15, 0.33,
        0.51, 0.69, 0.87, 1.05]``: small enough for ~20 px objects in a 300 px image).
    aspect_ratios: extra aspect ratios per map (``[[2], [2, 3], [2, 3], [2, 3], [2], [2]]`` for
        ssd, ``[[2, 3]] * 6`` for ssdlite); each ``r`` adds boxes of ratio ``r`` and ``1/r``.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

from torch import Tensor, nn

from detseg.backbones import Backbone
from detseg.errors import ModelBuildError
from detseg.models.family import is_small, register_family, require_strides
from detseg.spec import ModelSpec

SSD_SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
SOURCE_LEVELS = ["s8", "s16", "s32"]


def _extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """SSD300 extra block: 1x1 conv to half the width, 3x3 stride-2 conv (each + ReLU)."""
    mid = out_channels // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, 1), nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
    )


def _separable_extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """SSDLite extra block: 1x1 reduce, 3x3 depthwise stride 2, 1x1 expand (BN + ReLU6 each)."""
    mid = out_channels // 2
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, 1, bias=False), norm(mid), nn.ReLU6(inplace=True),
        nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False), norm(mid),
        nn.ReLU6(inplace=True),
        nn.Conv2d(mid, out_channels, 1, bias=False), norm(out_channels), nn.ReLU6(inplace=True),
    )


class SSDFeatures(nn.Module):
    """Backbone maps ``levels`` followed by the ``extras`` blocks: the six SSD feature maps."""

    def __init__(self, body: Backbone, levels: list[str], extras: nn.ModuleList) -> None:
        super().__init__()
        self.body = body
        self.levels = list(levels)
        self.extras = extras

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        features = self.body(x)
        maps = [features[k] for k in self.levels]
        for block in self.extras:
            maps.append(block(maps[-1]))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def ssd_defaults(info: dict[str, Any], input_size: int, lite: bool) -> dict[str, Any]:
    return {
        "source_levels": list(SOURCE_LEVELS),
        "extra_channels": [128, 128, 128] if is_small(info) else [512, 256, 256],
        "scales": list(SSD_SCALES),
        "aspect_ratios": [[2, 3]] * 6 if lite else [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    }


def build_ssd(backbone: Backbone, spec: ModelSpec, lite: bool) -> nn.Module:
    """torchvision ``SSD`` with our feature stack and an ``SSDHead`` (``SSDLiteHead`` if lite)."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD, SSDHead
    from torchvision.models.detection.ssdlite import SSDLiteHead

    opts = spec.options
    family = "ssdlite" if lite else "ssd"
    require_strides({"name": spec.backbone, "strides": backbone.strides},
                    [int(k[1:]) for k in opts["source_levels"]], family)
    num_maps = len(opts["source_levels"]) + len(opts["extra_channels"])
    if len(opts["aspect_ratios"]) != num_maps or len(opts["scales"]) != num_maps + 1:
        raise ModelBuildError(
            f"{family}: {num_maps} feature maps need {num_maps} aspect_ratios lists and "
            f"{num_maps + 1} scales, got {len(opts['aspect_ratios'])} and {len(opts['scales'])}"
        )
    block = _separable_extra_block if lite else _extra_block
    in_channels = [backbone.channels_at(k) for k in opts["source_levels"]]
    extras = nn.ModuleList()
    for out_channels in opts["extra_channels"]:
        extras.append(block(in_channels[-1], out_channels))
        in_channels.append(out_channels)
    anchors = DefaultBoxGenerator([list(r) for r in opts["aspect_ratios"]],
                                  scales=[float(s) for s in opts["scales"]])
    num_anchors = anchors.num_anchors_per_location()
    if lite:
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        head = SSDLiteHead(in_channels, num_anchors, spec.num_classes, norm)
    else:
        head = SSDHead(in_channels, num_anchors, spec.num_classes)
    size = (spec.input_size, spec.input_size)
    return SSD(SSDFeatures(backbone, opts["source_levels"], extras), anchors, size,
               spec.num_classes, image_mean=list(spec.mean), image_std=list(spec.std), head=head)


@register_family("ssd", task="detect", default_backbone="vgg16", input_size=300,
                 defaults=lambda info, size: ssd_defaults(info, size, lite=False),
                 summary="SSD300-style: strides 8..32 plus 3 extra blocks, 3x3 SSDHead")
def build_ssd300(backbone: Backbone, spec: ModelSpec) -> nn.Module:
    return build_ssd(backbone, spec, lite=False)


@register_family("ssdlite", task="detect", default_backbone="mobilenet_v3_large",
                 input_size=320, defaults=lambda info, size: ssd_defaults(info, size, lite=True),
                 summary="SSDLite: depthwise-separable extra blocks and heads")
def build_ssdlite(backbone: Backbone, spec: ModelSpec) -> nn.Module:
    return build_ssd(backbone, spec, lite=True)
