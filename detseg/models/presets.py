"""torchvision's pretrained models under torchvision's names.

Each preset records its torchvision weight enum (class name), task, family and backbone, and
takes its class names from the enum's ``meta["categories"]`` (no download): COCO's 91-index
names (with ``"__background__"`` and ``"N/A"`` holes) for the detectors, VOC's 21 for the
segmenters. Every preset is the same network as torchvision's builder (same state-dict keys and
shapes, same outputs from the same state dict):

- the four ResNet-50 R-CNNs are our ``faster_rcnn`` / ``mask_rcnn`` families over the registry's
  ``resnet50`` with torchvision's options (``head_style`` v1 or v2), so their keys match;
- the others (MobileNet R-CNNs, whose FPN taps two stride-32 maps, SSD300's modified VGG,
  SSDLite, RetinaNet, FCOS, DeepLabV3, FCN, LR-ASPP) are built by torchvision's own builder with
  ``weights=None, weights_backbone=None``; their ``spec.family`` is the preset name.

Preset options (stored in ``spec.options``): ``min_size`` / ``max_size`` for the torchvision-built
R-CNN, RetinaNet and FCOS presets; ``aux_loss`` for DeepLabV3 and FCN (default ``True``: the
pretrained checkpoints include the auxiliary classifier); none for SSD, SSDLite and LR-ASPP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from detseg.spec import ModelSpec


@dataclass(frozen=True)
class Preset:
    """A torchvision model under its torchvision name.

    Attributes:
        name: torchvision's builder name (``fasterrcnn_resnet50_fpn_v2``).
        task: ``detect``, ``instance`` or ``semantic``.
        family: the kind of network (``faster_rcnn``, ``retinanet``, ``deeplabv3``, ...).
        backbone: the backbone it uses (informational for torchvision-built presets).
        weights: torchvision weight enum class name (``FasterRCNN_ResNet50_FPN_V2_Weights``).
        input_size: the image size torchvision evaluates it at (shorter side for R-CNNs).
        options: preset options and their defaults; for ``via_family`` presets, the family's
            options that make it torchvision's network.
        via_family: build through our family of that name over the registry backbone, instead
            of torchvision's builder.
        mean, std: input normalization (SSD300 works on 0..255 pixels minus the mean).
    """

    name: str
    task: str
    family: str
    backbone: str
    weights: str
    input_size: int
    options: dict[str, Any] = field(default_factory=dict)
    via_family: bool = False
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def weights_enum(self) -> Any:
        """The torchvision weight enum class (import only, no download)."""
        import torchvision

        return torchvision.models.get_model_weights(self.name)

    def class_names(self) -> list[str]:
        """Category names of the default weights, index = model label."""
        return list(self.weights_enum().DEFAULT.meta["categories"])

    def build(self, spec: ModelSpec) -> nn.Module:
        """torchvision's builder, no weights, with ``spec.num_classes`` and ``spec.options``."""
        import torchvision

        builder: Callable[..., nn.Module] = getattr(torchvision.models, self.name, None) or (
            torchvision.models.get_model_builder(self.name)
        )
        return builder(weights=None, weights_backbone=None, num_classes=spec.num_classes,
                       **spec.options)


_RCNN_SIZES = {"min_size": 800, "max_size": 1333}

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("fasterrcnn_resnet50_fpn", "detect", "faster_rcnn", "resnet50",
           "FasterRCNN_ResNet50_FPN_Weights", 800, {"head_style": "v1"}, via_family=True),
    Preset("fasterrcnn_resnet50_fpn_v2", "detect", "faster_rcnn", "resnet50",
           "FasterRCNN_ResNet50_FPN_V2_Weights", 800, {"head_style": "v2"}, via_family=True),
    Preset("fasterrcnn_mobilenet_v3_large_fpn", "detect", "faster_rcnn", "mobilenet_v3_large",
           "FasterRCNN_MobileNet_V3_Large_FPN_Weights", 800, dict(_RCNN_SIZES)),
    Preset("fasterrcnn_mobilenet_v3_large_320_fpn", "detect", "faster_rcnn",
           "mobilenet_v3_large", "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights", 320,
           {"min_size": 320, "max_size": 640}),
    Preset("maskrcnn_resnet50_fpn", "instance", "mask_rcnn", "resnet50",
           "MaskRCNN_ResNet50_FPN_Weights", 800, {"head_style": "v1"}, via_family=True),
    Preset("maskrcnn_resnet50_fpn_v2", "instance", "mask_rcnn", "resnet50",
           "MaskRCNN_ResNet50_FPN_V2_Weights", 800, {"head_style": "v2"}, via_family=True),
    Preset("ssd300_vgg16", "detect", "ssd", "vgg16", "SSD300_VGG16_Weights", 300,
           mean=(0.48235, 0.45882, 0.40784), std=(1 / 255, 1 / 255, 1 / 255)),
    Preset("ssdlite320_mobilenet_v3_large", "detect", "ssdlite", "mobilenet_v3_large",
           "SSDLite320_MobileNet_V3_Large_Weights", 320, mean=(0.5, 0.5, 0.5),
           std=(0.5, 0.5, 0.5)),
    Preset("retinanet_resnet50_fpn_v2", "detect", "retinanet", "resnet50",
           "RetinaNet_ResNet50_FPN_V2_Weights", 800, dict(_RCNN_SIZES)),
    Preset("fcos_resnet50_fpn", "detect", "fcos", "resnet50", "FCOS_ResNet50_FPN_Weights", 800,
           dict(_RCNN_SIZES)),
    Preset("deeplabv3_resnet50", "semantic", "deeplabv3", "resnet50",
           "DeepLabV3_ResNet50_Weights", 520, {"aux_loss": True}),
    Preset("deeplabv3_mobilenet_v3_large", "semantic", "deeplabv3", "mobilenet_v3_large",
           "DeepLabV3_MobileNet_V3_Large_Weights", 520, {"aux_loss": True}),
    Preset("fcn_resnet50", "semantic", "fcn", "resnet50", "FCN_ResNet50_Weights", 520,
           {"aux_loss": True}),
    Preset("lraspp_mobilenet_v3_large", "semantic", "lraspp", "mobilenet_v3_large",
           "LRASPP_MobileNet_V3_Large_Weights", 520),
]}
