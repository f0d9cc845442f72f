"""The backbone contract shared by every feature extractor in the registry.

A backbone maps an image batch ``x: Tensor[N, 3, H, W]`` (normalized RGB) to an ordered dict of
feature maps keyed by stride name (``"s2"``, ``"s4"``, ... ``"s32"``), shallow to deep; the map
at stride ``s`` is about ``H / s`` by ``W / s``. ``channels[i]`` and ``strides[i]`` describe the
``i``-th map.

Output stride: a backbone built with ``output_stride=16`` (where its registry entry lists 16 in
``output_strides``) dilates its last stage instead of downsampling it, so its deepest map is at
stride 16 and is the ``"s16"`` map (the undilated stage-4 map is then not returned).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """3x3 conv (no bias, dilated by ``dilation``), BatchNorm, ReLU; keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def stride_key(stride: int) -> str:
    """The feature-dict key of the map at ``stride`` (``8 -> "s8"``)."""
    return f"s{stride}"


def module_stages(backbone: nn.Module) -> list[nn.Module]:
    """The stages of ``backbone`` in input-to-output order, for ``--freeze N``.

    ``tiny``: stem plus first stage, then one per stride; ResNets: stem (conv1, bn1), layer1..4;
    RegNets: stem, then the trunk blocks; nets with a ``features`` sequence (MobileNet, VGG,
    EfficientNet, ConvNeXt): its blocks; otherwise the parameterized children.
    """
    def params(m: nn.Module) -> bool:
        return any(True for _ in m.parameters())

    stages = getattr(backbone, "stages", None)
    if isinstance(stages, nn.ModuleList):
        stages = list(stages)
        stem = getattr(backbone, "stem", None)
        return [nn.ModuleList([stem, stages[0]]), *stages[1:]] if stem is not None else stages
    if hasattr(backbone, "layer1"):
        stem = nn.ModuleList([m for n, m in backbone.named_children() if n in ("conv1", "bn1")])
        return [stem, *(getattr(backbone, f"layer{k}") for k in range(1, 5)
                        if hasattr(backbone, f"layer{k}"))]
    trunk = getattr(backbone, "trunk_output", None)
    if isinstance(trunk, nn.Module):
        return [backbone.get_submodule("stem"), *trunk.children()]
    features = getattr(backbone, "features", None)
    if isinstance(features, nn.Sequential):
        return [m for m in features.children() if params(m)]
    return [m for m in backbone.children() if params(m)]


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

    @property
    def feature_info(self) -> list[dict[str, int | str]]:
        """One entry per feature map, shallow to deep, as timm's ``feature_info``:
        ``{"key": "s8", "num_chs": channels, "reduction": stride}``."""
        return [{"key": k, "num_chs": c, "reduction": s}
                for k, c, s in zip(self.keys, self.channels, self.strides, strict=True)]

    def stage_modules(self) -> list[nn.Module]:
        """The backbone's stages in input-to-output order (what ``--freeze N`` freezes)."""
        return module_stages(self)

    def channels_at(self, key: str) -> int:
        """Channels of the map named ``key``."""
        return self.channels[self.keys.index(key)]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
