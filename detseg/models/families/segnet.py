"""``segnet``: a SegNet decoder that max-unpools with the encoder's own max-pool indices.

Every ``nn.MaxPool2d`` of the backbone is swapped for an ``IndexKeepingMaxPool2d`` (same
settings, same output) that also keeps the argmax indices of its last call. At build time one
probe pass on a 64 px image finds, for each pool, the stride it starts from and its channel
count. The decoder then walks from the deepest map back to stride 1; each step from stride
``2t`` to ``t``:

- if an encoder max-pool went from ``t`` to ``2t``: max-unpool with that pool's indices (a 1x1
  conv first adapts the channels when they differ from the pool's), then two conv-BN-ReLU
  layers. This is SegNet proper; VGG-style backbones (``tiny``, ``vgg*``) pool at every stage,
  so their decoder unpools at every step, from stride 32 back to 1;
- otherwise (the encoder downsampled with a strided conv: ResNets everywhere but their stem
  max-pool; MobileNet, EfficientNet, ConvNeXt and RegNet everywhere): bilinear upsampling, then
  the same two conv-BN-ReLU layers. Over those backbones ``segnet`` is a SegNet-shaped decoder
  without skip connections that unpools only where the encoder really pooled.

As in SegNet the decoder mirrors the encoder: the step at stride ``t`` ends with the encoder's
width at the next stride (the pool's channels, else the backbone map's, else half the previous
width, at least 16), so the next unpooling gets the channels its indices have. A 1x1 conv gives
the logits. Input: a normalized ``N x 3 x H x W`` batch; output: ``N x num_classes x H x W``
logits. No options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detseg.backbones import Backbone, stride_key
from detseg.backbones.base import conv_bn_relu
from detseg.models.families.unet import decoder_strides, stride_size
from detseg.models.family import register_family
from detseg.spec import ModelSpec

PROBE_SIZE = 64


class IndexKeepingMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that keeps ``indices`` and ``input_size`` of its last call."""

    indices: Tensor | None = None
    input_size: torch.Size | None = None

    def forward(self, x: Tensor) -> Tensor:
        out, self.indices = F.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=True,
        )
        self.input_size = x.shape[-2:]
        return out


def _pair(setting: int | tuple[int, ...]) -> tuple[int, ...]:
    """A pool's size setting per side, as ``max_unpool2d``'s hints want (it takes an int too)."""
    return (setting, setting) if isinstance(setting, int) else tuple(setting)


def keep_pool_indices(backbone: nn.Module) -> list[IndexKeepingMaxPool2d]:
    """Swap every ``nn.MaxPool2d`` in ``backbone`` for an index-keeping one; return them."""
    pools = []
    for name, module in list(backbone.named_modules()):
        if type(module) is nn.MaxPool2d:
            parent_name, _, child = name.rpartition(".")
            parent = backbone.get_submodule(parent_name) if parent_name else backbone
            pool = IndexKeepingMaxPool2d(module.kernel_size, module.stride, module.padding,
                                         module.dilation, ceil_mode=module.ceil_mode)
            setattr(parent, child, pool)
            pools.append(pool)
    return pools


@dataclass(frozen=True)
class PoolStep:
    """Encoder max-pool ``pool`` (an index) maps ``stride`` to ``2 * stride``, ``channels`` wide."""

    pool: int
    stride: int
    channels: int


def probe_pools(backbone: Backbone, pools: list[IndexKeepingMaxPool2d]) -> dict[int, PoolStep]:
    """Run the backbone once on a zero image; map each stride-doubling pool by its input stride.

    A pool that does not double the stride, or a second pool at the same stride, is not used
    for unpooling (those steps fall back to bilinear upsampling).
    """
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        backbone(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
    backbone.train(was_training)
    steps: dict[int, PoolStep] = {}
    for i, pool in enumerate(pools):
        if pool.indices is None or pool.input_size is None:
            continue  # not on the path to the returned maps
        stride_in = PROBE_SIZE // pool.input_size[-1]
        stride_out = PROBE_SIZE // pool.indices.shape[-1]
        if stride_out == 2 * stride_in and stride_in not in steps:
            steps[stride_in] = PoolStep(i, stride_in, pool.indices.shape[1])
        pool.indices = pool.input_size = None
    return steps


class SegNet(nn.Module):
    """Backbone encoder with index-keeping max-pools, unpooling decoder, 1x1 classifier."""

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.pools = keep_pool_indices(backbone)  # a plain list: the pools are backbone modules
        self.pool_steps = probe_pools(backbone, self.pools)
        self.strides = decoder_strides(backbone.strides[-1])
        widths = self._encoder_widths()
        adapters: list[nn.Module] = []
        blocks: list[nn.Module] = []
        channels = backbone.channels[-1]
        for i, stride in enumerate(self.strides):
            step = self.pool_steps.get(stride)
            if step is not None and step.channels != channels:
                adapters.append(nn.Conv2d(channels, step.channels, 1))
                channels = step.channels
            else:
                adapters.append(nn.Identity())
            width = widths[min(i + 1, len(widths) - 1)]  # mirror: end at the next stage's width
            blocks.append(nn.Sequential(conv_bn_relu(channels, width), conv_bn_relu(width, width)))
            channels = width
        self.adapters = nn.ModuleList(adapters)
        self.decoder = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _encoder_widths(self) -> list[int]:
        """The encoder's width at each decoder stride: pool channels, map channels, or half."""
        widths = []
        previous = self.backbone.channels[-1]
        for stride in self.strides:
            if stride in self.pool_steps:
                previous = self.pool_steps[stride].channels
            elif stride in self.backbone.strides:
                previous = self.backbone.channels_at(stride_key(stride))
            else:
                previous = max(16, previous // 2)
            widths.append(previous)
        return widths

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        features = self.backbone(x)
        y = features[stride_key(self.backbone.strides[-1])]
        for stride, adapter, block in zip(self.strides, self.adapters, self.decoder, strict=True):
            y = adapter(y)
            step = self.pool_steps.get(stride)
            if step is not None:
                pool = self.pools[step.pool]
                indices, input_size = pool.indices, pool.input_size
                assert indices is not None and input_size is not None, "set by backbone(x)"
                if y.shape[-2:] != indices.shape[-2:]:
                    y = F.interpolate(y, size=indices.shape[-2:], mode="bilinear",
                                      align_corners=False)
                # plain ints: max_unpool2d's size check rejects traced sizes (export)
                y = F.max_unpool2d(y, indices, _pair(pool.kernel_size), _pair(pool.stride),
                                   _pair(pool.padding), output_size=[int(s) for s in input_size])
            else:
                y = F.interpolate(y, size=stride_size(features, stride, size), mode="bilinear",
                                  align_corners=False)
            y = block(y)
        for pool in self.pools:
            pool.indices = pool.input_size = None
        return self.classifier(y)


def segnet_defaults(info: dict[str, Any], input_size: int) -> dict[str, Any]:
    return {}


@register_family("segnet", task="semantic", default_backbone="vgg16_bn", input_size=512,
                 defaults=segnet_defaults,
                 summary="SegNet: decoder max-unpools with the encoder's pool indices")
def build_segnet(backbone: Backbone, spec: ModelSpec) -> SegNet:
    return SegNet(backbone, spec.num_classes)
