"""torchvision classification networks as backbones, wrapped by a table of node names.

Each entry names, per stride, the graph node whose output is the feature map at that stride;
``torchvision.models.feature_extraction.create_feature_extractor`` cuts the network there. No
forward pass is copied. The wrapper registers the extractor's submodules under their
torchvision names and runs the extractor's generated code over them, so a backbone's state-dict
keys are the classification network's (``conv1.weight``, ``layer1.0.bn1.running_mean``,
``features.3.block.0.0.weight``, ...) minus the classifier head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn

from detseg.backbones.base import Backbone, stride_key
from detseg.backbones.registry import BACKBONES


@dataclass(frozen=True)
class TorchvisionNet:
    """How to cut one torchvision network into a backbone.

    Attributes:
        weights: name of the torchvision weight enum in ``torchvision.models``.
        nodes: stride -> graph node whose output is the feature map at that stride.
        channels: channels of those maps, in stride order.
        head: top-level children the feature maps do not use (left out of the parameter count).
        dilated: builder keyword arguments that dilate the last stage (output stride 16), where
            torchvision supports it (``replace_stride_with_dilation`` of the bottleneck
            ResNets, MobileNetV3's ``dilated``); empty where it does not.
        dilated_deepest: the node whose output is then the stride-16 map, and its channels.
    """

    weights: str
    nodes: dict[int, str]
    channels: tuple[int, ...]
    head: tuple[str, ...]
    dilated: dict[str, Any] = field(default_factory=dict)
    dilated_deepest: tuple[str, int] = ("", 0)

    @property
    def strides(self) -> list[int]:
        return sorted(self.nodes)

    @property
    def output_strides(self) -> list[int]:
        """The deepest strides this network can be built with."""
        return [16, 32] if self.dilated else [32]

    def cut(self, output_stride: int) -> tuple[dict[int, str], list[int]]:
        """Stride -> node, and channels, of the maps at ``output_stride`` (16 or 32)."""
        if output_stride == 32:
            return self.nodes, list(self.channels)
        node, channels = self.dilated_deepest
        nodes = {s: n for s, n in self.nodes.items() if s < 16} | {16: node}
        return nodes, [c for s, c in zip(self.strides, self.channels, strict=True)
                       if s < 16] + [channels]


_RESNET = {2: "relu", 4: "layer1", 8: "layer2", 16: "layer3", 32: "layer4"}
# torchvision's BasicBlock (ResNet-18/34) cannot dilate; the bottleneck ResNets can.
_RESNET_DILATED = {"replace_stride_with_dilation": [False, False, True]}
_RESNET_HEAD = ("avgpool", "fc")
_CLASSIFIER_HEAD = ("avgpool", "classifier")

TORCHVISION_NETS: dict[str, TorchvisionNet] = {
    "resnet18": TorchvisionNet("ResNet18_Weights", _RESNET, (64, 64, 128, 256, 512), _RESNET_HEAD),
    "resnet34": TorchvisionNet("ResNet34_Weights", _RESNET, (64, 64, 128, 256, 512), _RESNET_HEAD),
    "resnet50": TorchvisionNet(
        "ResNet50_Weights", _RESNET, (64, 256, 512, 1024, 2048), _RESNET_HEAD, _RESNET_DILATED,
        ("layer4", 2048)),
    "resnet101": TorchvisionNet(
        "ResNet101_Weights", _RESNET, (64, 256, 512, 1024, 2048), _RESNET_HEAD, _RESNET_DILATED,
        ("layer4", 2048)),
    "mobilenet_v2": TorchvisionNet(
        "MobileNet_V2_Weights",
        {2: "features.1", 4: "features.3", 8: "features.6", 16: "features.13", 32: "features.18"},
        (16, 24, 32, 96, 1280), ("classifier",)),
    "mobilenet_v3_small": TorchvisionNet(
        "MobileNet_V3_Small_Weights",
        {2: "features.0", 4: "features.1", 8: "features.3", 16: "features.8", 32: "features.12"},
        (16, 16, 24, 48, 576), _CLASSIFIER_HEAD, {"dilated": True}, ("features.12", 576)),
    "mobilenet_v3_large": TorchvisionNet(
        "MobileNet_V3_Large_Weights",
        {2: "features.1", 4: "features.3", 8: "features.6", 16: "features.12", 32: "features.16"},
        (16, 24, 40, 112, 960), _CLASSIFIER_HEAD, {"dilated": True}, ("features.16", 960)),
    # VGG: the last ReLU before each max-pool (stride 2..16), then the final max-pool (32).
    "vgg11_bn": TorchvisionNet(
        "VGG11_BN_Weights",
        {2: "features.6", 4: "features.13", 8: "features.20", 16: "features.27", 32: "features.28"},
        (128, 256, 512, 512, 512), _CLASSIFIER_HEAD),
    "vgg16": TorchvisionNet(
        "VGG16_Weights",
        {2: "features.8", 4: "features.15", 8: "features.22", 16: "features.29", 32: "features.30"},
        (128, 256, 512, 512, 512), _CLASSIFIER_HEAD),
    "vgg16_bn": TorchvisionNet(
        "VGG16_BN_Weights",
        {2: "features.12", 4: "features.22", 8: "features.32", 16: "features.42",
         32: "features.43"},
        (128, 256, 512, 512, 512), _CLASSIFIER_HEAD),
    "efficientnet_b0": TorchvisionNet(
        "EfficientNet_B0_Weights",
        {2: "features.1", 4: "features.2", 8: "features.3", 16: "features.5", 32: "features.8"},
        (16, 24, 40, 112, 1280), _CLASSIFIER_HEAD),
    "efficientnet_b3": TorchvisionNet(
        "EfficientNet_B3_Weights",
        {2: "features.1", 4: "features.2", 8: "features.3", 16: "features.5", 32: "features.8"},
        (24, 32, 48, 136, 1536), _CLASSIFIER_HEAD),
    # ConvNeXt's stem is a 4x4 stride-4 patchify conv: no stride-2 map.
    "convnext_tiny": TorchvisionNet(
        "ConvNeXt_Tiny_Weights",
        {4: "features.1", 8: "features.3", 16: "features.5", 32: "features.7"},
        (96, 192, 384, 768), _CLASSIFIER_HEAD),
    "regnet_y_800mf": TorchvisionNet(
        "RegNet_Y_800MF_Weights",
        {2: "stem", 4: "trunk_output.block1", 8: "trunk_output.block2",
         16: "trunk_output.block3", 32: "trunk_output.block4"},
        (32, 64, 144, 320, 784), ("avgpool", "fc")),
}


class TorchvisionBackbone(Backbone):
    """A torchvision network cut at ``net.nodes`` by ``create_feature_extractor``.

    The extractor's submodules are registered on this module under their torchvision names (so
    ``state_dict`` keys match the classification network), and the extractor's train and eval
    graphs are compiled into functions run with this module as their root: one module tree, so
    ``deepcopy``, ``.to()`` and swapping a submodule behave as for any ``nn.Module``.
    """

    def __init__(self, model: nn.Module, net: TorchvisionNet, output_stride: int = 32) -> None:
        from torchvision.models.feature_extraction import create_feature_extractor

        super().__init__()
        nodes, channels = net.cut(output_stride)
        extractor = create_feature_extractor(
            model, return_nodes={nodes[s]: stride_key(s) for s in sorted(nodes)}
        )
        for name, child in extractor.named_children():
            self.add_module(name, child)
        # Graphs differ between train and eval where the network branches on self.training
        # (stochastic depth); both were traced.
        self._forward_train = _graph_function(extractor.train_graph)
        self._forward_eval = _graph_function(extractor.eval_graph)
        self.channels = channels
        self.strides = sorted(nodes)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        run = self._forward_train if self.training else self._forward_eval
        return OrderedDict(run(self, x))


def _graph_function(graph: torch.fx.Graph) -> Callable[..., dict[str, Tensor]]:
    """The Python function FX generates for ``graph``, taking the root module as ``self``."""
    code = graph.python_code(root_module="self")
    namespace = dict(code.globals)
    exec(compile(code.src, "<detseg-backbone-graph>", "exec"), namespace)
    return namespace["forward"]


def torchvision_model(name: str, on_meta: bool = False, **kwargs: Any) -> nn.Module:
    """The randomly initialized torchvision classification network ``name`` (``kwargs`` go to
    its builder).

    ``on_meta`` builds it on the meta device (no memory, no init; for counting parameters),
    except for builders that compute with tensors while constructing (RegNet), built on CPU.
    """
    import torchvision

    builder = getattr(torchvision.models, name)
    if on_meta and not name.startswith("regnet"):
        with torch.device("meta"):
            return builder(weights=None, **kwargs)
    return builder(weights=None, **kwargs)


def build_torchvision_backbone(name: str, pretrained: bool = False,
                               output_stride: int = 32) -> TorchvisionBackbone:
    """Backbone ``name`` from the table; ``pretrained`` loads torchvision's ImageNet weights;
    ``output_stride=16`` dilates the last stage (where ``output_strides`` lists 16)."""
    net = TORCHVISION_NETS[name]
    model = torchvision_model(name, **(net.dilated if output_stride == 16 else {}))
    if pretrained:
        from detseg.weights import (
            load_state_dict_checked,
            load_torchvision_weights,
            torchvision_enum,
        )

        member = torchvision_enum(net.weights)
        load_state_dict_checked(model, load_torchvision_weights(member), f"{net.weights}.DEFAULT")
    return TorchvisionBackbone(model, net, output_stride)


def torchvision_backbone_params(name: str) -> int:
    """Parameters of backbone ``name`` (the network without its classifier), no allocation."""
    net = TORCHVISION_NETS[name]
    model = torchvision_model(name, on_meta=True)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for child in net.head for p in getattr(model, child).parameters())
    return total - head


for _name, _net in TORCHVISION_NETS.items():
    BACKBONES.add(
        _name,
        lambda pretrained=False, output_stride=32, _name=_name: build_torchvision_backbone(
            _name, pretrained, output_stride),
        pretrained=True, channels=list(_net.channels), strides=_net.strides,
        output_strides=_net.output_strides, weights=_net.weights, source="torchvision",
    )
