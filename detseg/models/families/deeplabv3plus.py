"""``deeplabv3plus``: DeepLabV3+ (Chen et al., ECCV 2018) over any registry backbone.

Encoder: Atrous Spatial Pyramid Pooling on the backbone's deepest map (a 1x1 conv, three 3x3
atrous convs at ``aspp_rates`` and an image-pooling branch, concatenated and projected);
decoder: the ASPP output upsampled to the stride-4 map, concatenated with that map reduced to
``low_level_channels``, two 3x3 conv blocks, a 1x1 classifier, and bilinear upsampling to the
input size. Input: a normalized ``N x 3 x H x W`` batch; output: ``N x num_classes x H x W``.

ASPP runs at output stride 16, as in the paper, where the backbone can dilate its last stage
(``tiny``, the bottleneck ResNets, MobileNetV3: ``detseg backbones`` lists their output strides);
on the others (ResNet-18/34, VGG, EfficientNet, ConvNeXt, RegNet, MobileNetV2, timm) it runs on
the stride-32 map with the rates halved, which covers the same field of view.

Options stored in ``spec.options``:
    output_stride: 16 (default where the backbone supports it) or 32; passed to the backbone.
    aspp_rates: dilation rates of the three atrous ASPP convs (default ``[6, 12, 18]`` at output
        stride 16, ``[3, 6, 9]`` at 32).
    aspp_channels: width of every ASPP branch and its projection (256; 128 for small backbones
        such as ``tiny``).
    low_level_channels: the stride-4 map is reduced to this many channels (48; 24 small).
    decoder_channels: width of the decoder's conv blocks (256; 128 small).
    dropout: dropout after the ASPP projection, in training (0.1).
    loss_top_k: fraction of the pixels of a training batch whose cross-entropy is averaged,
        the hardest first (1.0: all; 0.2 is the hard-pixel mining of Panoptic-DeepLab and
        Detectron2's DeepLab heads). Read by the semantic task's loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detseg.backbones import Backbone, stride_key
from detseg.errors import ModelBuildError
from detseg.models.family import is_small, register_family, require_strides
from detseg.spec import ModelSpec


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3,
                  dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPPPooling(nn.Module):
    """Image-level features: global average pool, 1x1 conv (with bias) and ReLU, broadcast back.

    No BatchNorm on this 1 x 1 map: it would fail on a training batch of one image.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1),
                                     nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling: ``N x C x h x w`` -> ``N x width x h x w``."""

    def __init__(self, in_channels: int, width: int, rates: list[int], dropout: float) -> None:
        super().__init__()
        branches: list[nn.Module] = [_conv_bn_relu(in_channels, width, kernel=1)]
        branches += [_conv_bn_relu(in_channels, width, dilation=r) for r in rates]
        branches.append(ASPPPooling(in_channels, width))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(_conv_bn_relu(width * len(branches), width, kernel=1),
                                     nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3Plus(nn.Module):
    """Backbone, ASPP on the deepest map, and the DeepLabV3+ decoder at stride 4."""

    def __init__(self, backbone: Backbone, num_classes: int, options: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.deep_key = stride_key(backbone.strides[-1])
        self.low_key = stride_key(4)
        self.aspp = ASPP(backbone.channels[-1], int(options["aspp_channels"]),
                         [int(r) for r in options["aspp_rates"]], float(options["dropout"]))
        low = int(options["low_level_channels"])
        width = int(options["decoder_channels"])
        self.reduce = _conv_bn_relu(backbone.channels_at(self.low_key), low, kernel=1)
        self.decoder = nn.Sequential(_conv_bn_relu(int(options["aspp_channels"]) + low, width),
                                     _conv_bn_relu(width, width))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        low = self.reduce(features[self.low_key])
        deep = F.interpolate(self.aspp(features[self.deep_key]), size=low.shape[-2:],
                             mode="bilinear", align_corners=False)
        logits = self.classifier(self.decoder(torch.cat([deep, low], dim=1)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def deeplabv3plus_defaults(info: dict[str, Any], input_size: int) -> dict[str, Any]:
    require_strides(info, [4, max(info["strides"])], "deeplabv3plus")
    if max(info["strides"]) < 16:
        raise ModelBuildError(f"deeplabv3plus needs a backbone map at stride 16 or 32; "
                              f"{info['name']!r} stops at {max(info['strides'])}")
    small = is_small(info)
    output_stride = 16 if 16 in info.get("output_strides", [32]) else 32
    return {"output_stride": output_stride,
            "aspp_rates": [6, 12, 18] if output_stride == 16 else [3, 6, 9],
            "aspp_channels": 128 if small else 256,
            "low_level_channels": 24 if small else 48, "decoder_channels": 128 if small else 256,
            "dropout": 0.1, "loss_top_k": 1.0}


@register_family("deeplabv3plus", task="semantic", default_backbone="resnet50", input_size=512,
                 defaults=deeplabv3plus_defaults, backbone_options=("output_stride",),
                 summary="DeepLabV3+: ASPP at output stride 16 (32 where the backbone cannot "
                         "dilate), decoder fused with the stride-4 map")
def build_deeplabv3plus(backbone: Backbone, spec: ModelSpec) -> DeepLabV3Plus:
    if len(spec.options["aspp_rates"]) < 1 or min(spec.options["aspp_rates"]) < 1:
        raise ModelBuildError(f"deeplabv3plus aspp_rates must be positive integers, got "
                              f"{spec.options['aspp_rates']}")
    top_k = spec.options.get("loss_top_k", 1.0)  # absent from specs saved before the option
    if not 0 < float(top_k) <= 1:
        raise ModelBuildError(f"deeplabv3plus loss_top_k must be in (0, 1], got {top_k}")
    return DeepLabV3Plus(backbone, spec.num_classes, spec.options)
