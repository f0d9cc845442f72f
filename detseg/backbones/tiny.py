"""``tiny``: our own VGG-style CNN (about 1M parameters) for fast CPU training and tests.

A full-resolution conv-BN-ReLU stem, then five stages of ``MaxPool2d(2)`` followed by two
conv-BN-ReLU layers; stage ``k`` works at stride ``2**k`` and its output is feature map
``s{2**k}``. Every downsampling is a max-pool, so SegNet can unpool all the way back to full
resolution. ``output_stride=16`` drops the last stage's max-pool and dilates its convs by 2:
the deepest map is then ``s16`` (same parameters, so weights load either way).
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

    def __init__(self, stem_width: int = TINY_STEM_WIDTH, widths: tuple[int, ...] = TINY_WIDTHS,
                 output_stride: int = 32):
        super().__init__()
        self.stem = conv_bn_relu(3, stem_width)
        stages = []
        in_channels = stem_width
        strides = []
        stride = dilation = 1
        for width in widths:
            if stride < output_stride:
                stride *= 2
                pool: nn.Module = nn.MaxPool2d(2)
            else:  # past the output stride: keep the resolution, widen the view instead
                dilation *= 2
                pool = nn.Identity()
            stages.append(nn.Sequential(pool, conv_bn_relu(in_channels, width, dilation),
                                        conv_bn_relu(width, width, dilation)))
            in_channels = width
            strides.append(stride)
        self.stages = nn.ModuleList(stages)
        # A dilated last stage replaces the map at its stride: one map per stride, the deepest.
        self._returned = [i for i in range(len(widths))
                          if i + 1 == len(widths) or strides[i + 1] != strides[i]]
        self.channels = [widths[i] for i in self._returned]
        self.strides = [strides[i] for i in self._returned]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(x)
        features: OrderedDict[str, Tensor] = OrderedDict()
        returned = iter(zip(self._returned, self.strides, strict=True))
        index, stride = next(returned)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == index:
                features[stride_key(stride)] = x
                index, stride = next(returned, (-1, 0))
        return features


@register_backbone("tiny", pretrained=False, channels=list(TINY_WIDTHS),
                   strides=[2, 4, 8, 16, 32], output_strides=[16, 32], source="detseg")
def build_tiny(pretrained: bool = False, output_stride: int = 32) -> TinyBackbone:
    """Our small VGG-style backbone (random init: it has no pretrained weights)."""
    if pretrained:
        raise RegistryError("backbone 'tiny' has no pretrained weights (it is ours, trained from "
                            "scratch); use pretrained=False")
    return TinyBackbone(output_stride=output_stride)
