"""``faster_rcnn`` and ``mask_rcnn``: torchvision's R-CNNs over an FPN on any registry backbone.

The FPN wrapper has torchvision's ``BackboneWithFPN`` layout (``body``, ``fpn``,
``out_channels``), so over ``resnet50`` the state-dict keys are torchvision's
(``backbone.body.layer1...``, ``backbone.fpn.inner_blocks...``) and the resnet50 presets are
these families with torchvision's options.

Options stored in ``spec.options`` (defaults from ``spec.input_size`` and the backbone):
    fpn_levels: backbone maps fed to the FPN (default ``["s4", "s8", "s16", "s32"]``); a
        max-pooled level is added on top for the RPN, as in torchvision.
    fpn_channels: FPN width (256; 64 for small backbones such as ``tiny``).
    head_style: ``"v1"`` (torchvision's original heads: 1-conv RPN, two-FC box head, no norm in
        the FPN) or ``"v2"`` (the ``_v2`` heads: BatchNorm in the FPN, 2-conv RPN, 4-conv + FC
        box head and BatchNorm mask head).
    representation_size: width of the box head's fully connected layer (4 x ``fpn_channels``).
    anchor_sizes: one anchor size in pixels per FPN level (pool level last); the default is
        8 x the level's stride scaled by ``input_size / 800`` (torchvision's 32..512 at 800).
    aspect_ratios: anchor height/width ratios, the same at every level.
    min_size, max_size: the transform's resize bounds (``input_size`` and 1333/800 of it).
    rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test: RPN proposals kept per level before its
        NMS and in all after it, at inference (torchvision's 1000 and 1000; the Faster R-CNN
        paper tests with 300 after NMS). Fewer make inference faster, most of all the RoIAlign
        and box head, which run once per proposal; a stored spec without them gets 1000.
    mask_channels: width of the mask head's convs (``mask_rcnn`` only; ``fpn_channels``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

from detseg.backbones import Backbone
from detseg.errors import ModelBuildError
from detseg.models.family import is_small, register_family, require_strides
from detseg.spec import ModelSpec

FPN_LEVELS = ["s4", "s8", "s16", "s32"]
#: torchvision's RPN proposals at inference, before (per level) and after NMS
DEFAULT_PROPOSALS = 1000


class FeaturePyramidBackbone(nn.Module):
    """A registry backbone with a ``FeaturePyramidNetwork`` over ``levels`` (plus a pool level).

    ``forward(x)`` returns the FPN maps keyed by level name and ``"pool"``, all with
    ``out_channels`` channels.
    """

    def __init__(self, body: Backbone, levels: list[str], out_channels: int, norm: bool) -> None:
        from torchvision.ops.feature_pyramid_network import (
            FeaturePyramidNetwork,
            LastLevelMaxPool,
        )

        super().__init__()
        self.body = body
        self.levels = list(levels)
        self.fpn = FeaturePyramidNetwork(
            [body.channels_at(k) for k in self.levels], out_channels,
            extra_blocks=LastLevelMaxPool(), norm_layer=nn.BatchNorm2d if norm else None,
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((k, features[k]) for k in self.levels))


def rcnn_defaults(info: dict[str, Any], input_size: int, masks: bool) -> dict[str, Any]:
    levels = [k for k in FPN_LEVELS if int(k[1:]) in info["strides"]]
    fpn_channels = 64 if is_small(info) else 256
    strides = [int(k[1:]) for k in levels] + [2 * int(levels[-1][1:])]
    options: dict[str, Any] = {
        "fpn_levels": levels,
        "fpn_channels": fpn_channels,
        "head_style": "v1",
        "representation_size": 4 * fpn_channels,
        "anchor_sizes": [max(4, round(8 * s * input_size / 800)) for s in strides],
        "aspect_ratios": [0.5, 1.0, 2.0],
        "min_size": input_size,
        "max_size": round(input_size * 1333 / 800),
        "rpn_pre_nms_top_n_test": DEFAULT_PROPOSALS,
        "rpn_post_nms_top_n_test": DEFAULT_PROPOSALS,
    }
    if masks:
        options["mask_channels"] = fpn_channels
    return options


def build_rcnn(backbone: Backbone, spec: ModelSpec, masks: bool) -> nn.Module:
    """torchvision ``FasterRCNN`` (or ``MaskRCNN`` with ``masks``) as ``spec.options`` say."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import (
        FastRCNNConvFCHead,
        FastRCNNPredictor,
        TwoMLPHead,
    )
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    opts = spec.options
    family = "mask_rcnn" if masks else "faster_rcnn"
    require_strides(
        {"name": spec.backbone, "strides": backbone.strides},
        [int(k[1:]) for k in opts["fpn_levels"]], family,
    )
    v2 = _head_style_is_v2(opts["head_style"])
    width = opts["fpn_channels"]
    body = FeaturePyramidBackbone(backbone, opts["fpn_levels"], width, norm=v2)
    levels = len(opts["fpn_levels"]) + 1
    if len(opts["anchor_sizes"]) != levels:
        raise ModelBuildError(f"{family}: anchor_sizes needs {levels} sizes (one per FPN level "
                              f"and the pool level), got {opts['anchor_sizes']}")
    anchors = AnchorGenerator(
        tuple((int(s),) for s in opts["anchor_sizes"]),
        (tuple(float(r) for r in opts["aspect_ratios"]),) * levels,
    )
    rpn_head = RPNHead(width, anchors.num_anchors_per_location()[0], conv_depth=2 if v2 else 1)
    if v2:
        box_head = FastRCNNConvFCHead((width, 7, 7), [width] * 4, [opts["representation_size"]],
                                      norm_layer=nn.BatchNorm2d)
    else:
        box_head = TwoMLPHead(width * 7 * 7, opts["representation_size"])
    proposals = {key: int(opts.get(key, DEFAULT_PROPOSALS))
                 for key in ("rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")}
    for key, count in proposals.items():
        if count < 1:
            raise ModelBuildError(f"{family}: {key} must be at least 1, got {count}")
    kwargs: dict[str, Any] = {
        **proposals,
        "num_classes": None,
        "min_size": opts["min_size"],
        "max_size": opts["max_size"],
        "image_mean": list(spec.mean),
        "image_std": list(spec.std),
        "rpn_anchor_generator": anchors,
        "rpn_head": rpn_head,
        "box_roi_pool": MultiScaleRoIAlign(opts["fpn_levels"], 7, 2),
        "box_head": box_head,
        "box_predictor": FastRCNNPredictor(opts["representation_size"], spec.num_classes),
    }
    if not masks:
        return FasterRCNN(body, **kwargs)
    mask_width = opts["mask_channels"]
    return MaskRCNN(
        body, **kwargs,
        mask_roi_pool=MultiScaleRoIAlign(opts["fpn_levels"], 14, 2),
        mask_head=MaskRCNNHeads(width, [mask_width] * 4, 1,
                                norm_layer=nn.BatchNorm2d if v2 else None),
        mask_predictor=MaskRCNNPredictor(mask_width, mask_width, spec.num_classes),
    )


def _head_style_is_v2(style: str) -> bool:
    if style not in ("v1", "v2"):
        raise ModelBuildError(f"head_style must be 'v1' or 'v2', got {style!r}")
    return style == "v2"


@register_family("faster_rcnn", task="detect", default_backbone="resnet50", input_size=800,
                 defaults=lambda info, size: rcnn_defaults(info, size, masks=False),
                 summary="Faster R-CNN: FPN over strides 4..32, RPN, RoIAlign box head")
def build_faster_rcnn(backbone: Backbone, spec: ModelSpec) -> nn.Module:
    return build_rcnn(backbone, spec, masks=False)


@register_family("mask_rcnn", task="instance", default_backbone="resnet50", input_size=800,
                 defaults=lambda info, size: rcnn_defaults(info, size, masks=True),
                 summary="Mask R-CNN: Faster R-CNN plus a 14x14 RoIAlign mask head")
def build_mask_rcnn(backbone: Backbone, spec: ModelSpec) -> nn.Module:
    return build_rcnn(backbone, spec, masks=True)
