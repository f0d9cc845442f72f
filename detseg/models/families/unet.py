"""``unet``: a U-Net decoder over any registry backbone.

From the deepest map the decoder repeatedly doubles the resolution (bilinear resize to the skip
map's exact size), concatenates the backbone map of that stride when there is one, and applies
two conv-BN-ReLU layers, down to stride 1; a 1x1 conv gives the class logits. Input: a
normalized ``N x 3 x H x W`` batch (any H, W); output: ``N x num_classes x H x W`` logits.

Options stored in ``spec.options``:
    decoder_channels: widths of the decoder blocks from the deepest stride down to stride 1, one
        per halving of the stride (5 for a stride-32 backbone): ``[256, 128, 64, 32, 16]``, or
        ``[128, 64, 32, 16, 16]`` for small backbones such as ``tiny``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detseg.backbones import Backbone, stride_key
from detseg.backbones.base import conv_bn_relu
from detseg.errors import ModelBuildError
from detseg.models.family import is_small, register_family
from detseg.spec import ModelSpec


def decoder_strides(deepest: int) -> list[int]:
    """Strides the decoder produces, deepest first: ``32 -> [16, 8, 4, 2, 1]``."""
    return [deepest >> k for k in range(1, int(math.log2(deepest)) + 1)]


def stride_size(features: dict[str, Tensor], stride: int, size: tuple[int, int]) -> list[int]:
    """Spatial size at ``stride``: the backbone map's if it has one, else ``ceil(size / s)``."""
    key = stride_key(stride)
    if key in features:
        return list(features[key].shape[-2:])
    return [-(-size[0] // stride), -(-size[1] // stride)]  # ceil; stays symbolic when traced


class UNet(nn.Module):
    """Backbone encoder, skip-connected decoder to full resolution, 1x1 classifier."""

    def __init__(self, backbone: Backbone, num_classes: int, decoder_channels: list[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.strides = decoder_strides(backbone.strides[-1])
        if len(decoder_channels) != len(self.strides):
            raise ModelBuildError(
                f"unet over {backbone.strides[-1]}-stride features needs {len(self.strides)} "
                f"decoder_channels (one per stride {self.strides}), got {decoder_channels}"
            )
        blocks = []
        in_channels = backbone.channels[-1]
        for stride, width in zip(self.strides, decoder_channels, strict=True):
            skip = backbone.channels_at(stride_key(stride)) if stride in backbone.strides else 0
            blocks.append(nn.Sequential(conv_bn_relu(in_channels + skip, width),
                                        conv_bn_relu(width, width)))
            in_channels = width
        self.decoder = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        features = self.backbone(x)
        y = features[stride_key(self.backbone.strides[-1])]
        for stride, block in zip(self.strides, self.decoder, strict=True):
            y = F.interpolate(y, size=stride_size(features, stride, size), mode="bilinear",
                              align_corners=False)
            skip = features.get(stride_key(stride))
            if skip is not None:
                y = torch.cat([y, skip], dim=1)
            y = block(y)
        return self.classifier(y)


def unet_defaults(info: dict[str, Any], input_size: int) -> dict[str, Any]:
    steps = len(decoder_strides(info["strides"][-1]))
    widths = [128, 64, 32, 16, 16] if is_small(info) else [256, 128, 64, 32, 16]
    widths = widths + [widths[-1]] * max(0, steps - len(widths))
    return {"decoder_channels": widths[:steps]}


@register_family("unet", task="semantic", default_backbone="resnet34", input_size=512,
                 defaults=unet_defaults,
                 summary="U-Net: skip connections from every stride, decoder to full resolution")
def build_unet(backbone: Backbone, spec: ModelSpec) -> UNet:
    return UNet(backbone, spec.num_classes, list(spec.options["decoder_channels"]))
