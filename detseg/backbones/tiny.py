"""``tiny``: our own VGG-style CNN (about 1M parameters) for fast CPU training and tests.

A full-resolution conv-BN-ReLU stem, then five stages of ``MaxPool2d(2)`` followed by two
conv-BN-ReLU layers; stage ``k`` works at stride ``2**k`` and its output is feature map
``s{2**k}``. Every downsampling is a max-pool, so SegNet can unpool all the way back to full
resolution.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from detseg.backbones.base import Backbone, conv_bn_relu, stride_key
from detseg.backbones.registry import register_backbone
from detseg.errors import RegistryError

TINY_STEM_WIDTH = 16
TINY_WIDTHS = (32, 64, 96, 128, 192)


class TinyBackbone(Backbone):
    """VGG-style conv-BN-ReLU stages with max-pooling; maps at strides 2, 4, 8, 16, 32."""

    def __init__(self, stem_width: int = TINY_STEM_WIDTH, widths: tuple[int, ...] = TINY_WIDTHS):
        super().__init__()
        self.stem = conv_bn_relu(3, stem_width)
        stages = []
        in_channels = stem_width
        for width in widths:
            stages.append(nn.Sequential(
                nn.MaxPool2d(2), conv_bn_relu(in_channels, width), conv_bn_relu(width, width)
            ))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.channels = list(widths)
        self.strides = [2 ** (k + 1) for k in range(len(widths))]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(x)
        features: OrderedDict[str, Tensor] = OrderedDict()
        for stride, stage in zip(self.strides, self.stages, strict=True):
            x = stage(x)
            features[stride_key(stride)] = x
        return features


@register_backbone("tiny", pretrained=False, channels=list(TINY_WIDTHS),
                   strides=[2, 4, 8, 16, 32], source="detseg")
def build_tiny(pretrained: bool = False) -> TinyBackbone:
    """Our small VGG-style backbone (random init: it has no pretrained weights)."""
    if pretrained:
        raise RegistryError("backbone 'tiny' has no pretrained weights (it is ours, trained from "
                            "scratch); use pretrained=False")
    return TinyBackbone()
