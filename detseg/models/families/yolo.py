"""``yolo``: an anchor-free single-shot detector in the style of YOLOv8 / YOLOX.

Every image is letterboxed into a gray square canvas (its longer side scaled to
``input_size``, the canvas side rounded up to a multiple of 32, image at the top left), then a
PAN-FPN neck (top-down, then bottom-up, with CSP blocks) fuses the backbone's stride 8, 16 and
32 maps, and a decoupled head per level predicts class logits and, per box edge, a
distribution over ``reg_max`` distance bins (GFL). Inference keeps the best
``pre_nms_topk`` (anchor, class) scores over ``score_thresh``, runs class-aware NMS
(``torchvision.ops.batched_nms``) and maps the boxes back to each input image's pixels.

Training: the task-aligned assigner of TOOD (Feng et al. 2021) picks, for every ground-truth
box, the ``assigner_topk`` anchor points inside it with the best alignment
``score ** alpha * IoU ** beta``; a point claimed by several boxes keeps the one it overlaps
most. Class targets are the alignment normalized per box (its best point gets that box's best
IoU), trained with BCE; boxes with the CIoU loss and GFL's Distribution Focal Loss (Li et al.
2020) on the four edge distances, both weighted by the class target. In the loss code, ``A``
is the number of anchor points (cell centres of every level), ``K`` of foreground classes,
``M`` of an image's boxes, ``R`` of distance bins; boxes are xyxy pixels of the square canvas
and distances are in units of the level's stride.

Options stored in ``spec.options``:
    width_multiple: neck widths as a fraction of ``[256, 512, 1024]`` (0.25; 0.125 for small
        backbones such as ``tiny``).
    depth_multiple: bottlenecks per CSP block as a fraction of 3 (0.33: one).
    reg_max: distance bins per box edge (16: distances up to 15 strides).
    assigner_topk, assigner_alpha, assigner_beta: candidates per box and exponents of the
        alignment metric (10, 0.5, 6.0).
    box_gain, dfl_gain, cls_gain: loss weights (7.5, 1.5, 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.onnx.operators import shape_as_tensor

from detseg.backbones import Backbone, stride_key
from detseg.errors import ModelBuildError, UsageError
from detseg.models.family import is_small, register_family, require_strides
from detseg.spec import ModelSpec

STRIDES = [8, 16, 32]
BASE_WIDTHS = [256, 512, 1024]
#: letterbox padding, as a pixel value in [0, 1] (114 / 255, YOLO's gray)
PAD_VALUE = 114 / 255


@dataclass(frozen=True)
class LossSettings:
    """Assigner and loss weights: ``topk`` candidates per box, ``alpha``/``beta`` exponents of
    the alignment metric, and the gains of the box (CIoU), DFL and classification losses."""

    topk: int
    alpha: float
    beta: float
    box_gain: float
    dfl_gain: float
    cls_gain: float


@dataclass(frozen=True)
class Assignment:
    """Targets of one image: ``boxes`` A x 4 (the assigned box, any value where not positive),
    ``scores`` A x K soft class targets, ``positive`` A bool."""

    boxes: Tensor
    scores: Tensor
    positive: Tensor


def decode_distances(anchors: Tensor, distances: Tensor) -> Tensor:
    """xyxy boxes ``... x A x 4`` from anchor points ``A x 2`` and pixel distances ``... x A x 4``
    to the left, top, right and bottom edges."""
    return torch.cat([anchors - distances[..., :2], anchors + distances[..., 2:]], dim=-1)


def assign(probs: Tensor, pred_boxes: Tensor, anchors: Tensor, gt_boxes: Tensor,
           gt_classes: Tensor, settings: LossSettings) -> Assignment:
    """Task-aligned assignment of one image.

    ``probs`` A x K class probabilities and ``pred_boxes`` A x 4 (both detached), ``anchors``
    A x 2 pixel points, ``gt_boxes`` M x 4 and ``gt_classes`` M (0-based foreground classes).
    """
    from torchvision.ops import box_iou

    num_anchors, num_classes = probs.shape
    if gt_boxes.shape[0] == 0:
        return Assignment(pred_boxes.new_zeros(num_anchors, 4), probs.new_zeros(probs.shape),
                          torch.zeros(num_anchors, dtype=torch.bool, device=probs.device))
    x, y = anchors[:, 0][None], anchors[:, 1][None]
    inside = ((x > gt_boxes[:, 0:1]) & (x < gt_boxes[:, 2:3])
              & (y > gt_boxes[:, 1:2]) & (y < gt_boxes[:, 3:4]))  # M x A
    iou = box_iou(gt_boxes, pred_boxes).clamp(min=0) * inside
    metric = probs[:, gt_classes].T.pow(settings.alpha) * iou.pow(settings.beta) * inside
    top = metric.topk(min(settings.topk, num_anchors), dim=1).indices
    chosen = torch.zeros_like(inside).scatter_(1, top, True) & inside  # M x A
    contested = chosen.sum(0) > 1
    if contested.any():
        best = F.one_hot(iou.argmax(0), gt_boxes.shape[0]).T.bool()
        chosen = torch.where(contested[None], best & inside, chosen)
    positive = chosen.any(0)
    gt_index = chosen.float().argmax(0)  # A (any index where not positive)
    metric = metric * chosen
    iou = iou * chosen
    aligned = metric / (metric.amax(1, keepdim=True) + 1e-9) * iou.amax(1, keepdim=True)
    strength = aligned.amax(0) * positive  # A
    scores = F.one_hot(gt_classes[gt_index], num_classes).to(probs.dtype) * strength[:, None]
    return Assignment(gt_boxes[gt_index], scores, positive)


def distribution_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """GFL's DFL: cross-entropy towards the two bins around each target distance, weighted by
    closeness. ``logits`` P x 4 x R, ``target`` P x 4 in stride units; returns P (mean of 4)."""
    bins = logits.shape[-1]
    target = target.clamp(0, bins - 1 - 0.01)
    left = target.floor().long()
    right_weight = target - left
    log_probs = F.log_softmax(logits, dim=-1)
    left_term = log_probs.gather(-1, left[..., None]).squeeze(-1) * (1 - right_weight)
    right_term = log_probs.gather(-1, (left + 1)[..., None]).squeeze(-1) * right_weight
    return -(left_term + right_term).mean(-1)


def yolo_losses(cls_logits: Tensor, dist_logits: Tensor, anchors: Tensor, strides: Tensor,
                targets: list[tuple[Tensor, Tensor]], settings: LossSettings
                ) -> dict[str, Tensor]:
    """``loss_box`` (CIoU), ``loss_dfl`` and ``loss_cls`` (BCE) of a batch, each normalized by
    the sum of the classification targets and scaled by its gain.

    ``cls_logits`` N x A x K, ``dist_logits`` N x A x 4 x R, ``anchors`` A x 2 pixels,
    ``strides`` A pixels, ``targets`` per image (boxes M x 4 canvas pixels, classes M 0-based).
    """
    from torchvision.ops import complete_box_iou_loss

    cls_logits, dist_logits = cls_logits.float(), dist_logits.float()
    bins = torch.arange(dist_logits.shape[-1], device=dist_logits.device, dtype=torch.float32)
    distances = dist_logits.softmax(-1) @ bins  # N x A x 4, stride units
    pred_boxes = decode_distances(anchors, distances * strides[:, None])
    probs = cls_logits.detach().sigmoid()
    assignments = [assign(probs[i], pred_boxes[i].detach(), anchors, boxes.float(), classes,
                          settings) for i, (boxes, classes) in enumerate(targets)]
    target_scores = torch.stack([a.scores for a in assignments])
    positive = torch.stack([a.positive for a in assignments])
    target_boxes = torch.stack([a.boxes for a in assignments])
    normalizer = target_scores.sum().clamp(min=1.0)
    loss_cls = F.binary_cross_entropy_with_logits(cls_logits, target_scores,
                                                  reduction="sum") / normalizer
    weight = target_scores.sum(-1)[positive]
    chosen_boxes = target_boxes[positive]
    ciou = complete_box_iou_loss(pred_boxes[positive], chosen_boxes, reduction="none")
    loss_box = (ciou * weight).sum() / normalizer
    points = anchors.expand_as(pred_boxes[..., :2])[positive]
    point_strides = strides.expand_as(pred_boxes[..., 0])[positive][:, None]
    target_distances = torch.cat([points - chosen_boxes[:, :2], chosen_boxes[:, 2:] - points],
                                 dim=-1) / point_strides
    dfl = distribution_focal_loss(dist_logits[positive], target_distances)
    loss_dfl = (dfl * weight).sum() / normalizer
    return {"loss_box": loss_box * settings.box_gain, "loss_dfl": loss_dfl * settings.dfl_gain,
            "loss_cls": loss_cls * settings.cls_gain}


def conv_bn_silu(in_channels: int, out_channels: int, kernel: int = 1,
                 stride: int = 1) -> nn.Sequential:
    """Conv (no bias), BatchNorm, SiLU; ``kernel // 2`` padding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.SiLU(inplace=True),
    )


class Bottleneck(nn.Module):
    """Two 3x3 conv blocks with a residual connection; keeps channels and size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_silu(channels, channels, 3),
                                  conv_bn_silu(channels, channels, 3))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class CSPBlock(nn.Module):
    """Cross-stage partial block: a 1x1 conv split in two halves, ``depth`` bottlenecks chained
    on the second, every intermediate concatenated and fused by a 1x1 conv to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, depth: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.split = conv_bn_silu(in_channels, 2 * half)
        self.blocks = nn.ModuleList(Bottleneck(half) for _ in range(depth))
        self.fuse = conv_bn_silu((2 + depth) * half, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.split(x).chunk(2, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.fuse(torch.cat(parts, dim=1))


class PANNeck(nn.Module):
    """PAN-FPN over three maps (strides 8, 16, 32): 1x1 laterals to ``widths``, a top-down path
    (upsample, concatenate, CSP) and a bottom-up path (stride-2 conv, concatenate, CSP).

    ``forward([c3, c4, c5])`` returns three maps with ``widths`` channels at the same strides.
    """

    def __init__(self, in_channels: list[int], widths: list[int], depth: int) -> None:
        super().__init__()
        w3, w4, w5 = widths
        self.lateral = nn.ModuleList(conv_bn_silu(c, w) for c, w in zip(in_channels, widths,
                                                                         strict=True))
        self.top_down4 = CSPBlock(w5 + w4, w4, depth)
        self.top_down3 = CSPBlock(w4 + w3, w3, depth)
        self.down3 = conv_bn_silu(w3, w3, 3, 2)
        self.bottom_up4 = CSPBlock(w3 + w4, w4, depth)
        self.down4 = conv_bn_silu(w4, w4, 3, 2)
        self.bottom_up5 = CSPBlock(w4 + w5, w5, depth)

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        c3, c4, c5 = (lateral(m) for lateral, m in zip(self.lateral, maps, strict=True))
        p4 = self.top_down4(torch.cat([_upsample_to(c5, c4), c4], dim=1))
        n3 = self.top_down3(torch.cat([_upsample_to(p4, c3), c3], dim=1))
        n4 = self.bottom_up4(torch.cat([self.down3(n3), p4], dim=1))
        n5 = self.bottom_up5(torch.cat([self.down4(n4), c5], dim=1))
        return [n3, n4, n5]


def _upsample_to(x: Tensor, reference: Tensor) -> Tensor:
    return F.interpolate(x, size=reference.shape[-2:], mode="nearest")


def _branch(in_channels: int, width: int, out_channels: int, bias: float) -> nn.Sequential:
    """Two 3x3 conv blocks and a 1x1 predictor whose biases start at ``bias``."""
    predictor = nn.Conv2d(width, out_channels, 1)
    nn.init.constant_(predictor.get_parameter("bias"), bias)
    return nn.Sequential(conv_bn_silu(in_channels, width, 3), conv_bn_silu(width, width, 3),
                         predictor)


class DecoupledHead(nn.Module):
    """Per level, separate box and class branches (two 3x3 conv blocks and a 1x1 predictor).

    ``forward(maps)`` returns ``cls_logits`` N x A x K, ``dist_logits`` N x A x 4 x R (bins of
    the left, top, right, bottom distances), ``anchors`` A x 2 (cell centres, canvas pixels)
    and ``strides`` A, with A the cells of all levels (level by level, row-major).
    """

    def __init__(self, widths: list[int], num_classes: int, reg_max: int,
                 strides: list[int]) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.strides = list(strides)
        box_width = max(16, widths[0] // 4, 4 * reg_max)
        cls_width = max(widths[0], min(num_classes, 100))
        # class prior: about 5 objects per 640 x 640 image, spread over the classes
        self.box = nn.ModuleList(_branch(w, box_width, 4 * reg_max, 1.0) for w in widths)
        self.cls = nn.ModuleList(
            _branch(w, cls_width, num_classes, math.log(5 / num_classes / (640 / s) ** 2))
            for w, s in zip(widths, strides, strict=True))

    def forward(self, maps: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cls_parts, dist_parts, anchor_parts, stride_parts = [], [], [], []
        for x, box, cls, stride in zip(maps, self.box, self.cls, self.strides, strict=True):
            n, _, h, w = x.shape
            cls_parts.append(cls(x).flatten(2).transpose(1, 2))
            dist_parts.append(box(x).reshape(n, 4, self.reg_max, h * w).permute(0, 3, 1, 2))
            ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) * stride
            xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) * stride
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            anchor_parts.append(torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2))
            stride_parts.append(torch.full((h * w,), float(stride), device=x.device))
        return (torch.cat(cls_parts, 1), torch.cat(dist_parts, 1), torch.cat(anchor_parts),
                torch.cat(stride_parts))


class Letterbox(nn.Module):
    """Scales each ``3 x H x W`` image (values in [0, 1]) so its longer side is
    ``fixed_size[0]``, pads it (bottom, right) with gray to a square canvas whose side is that
    rounded up to a multiple of 32, and normalizes with ``mean``/``std``.

    ``fixed_size`` is what ``detseg.tasks.detection`` sets for ``--imgsz``; ``min_size`` and
    ``max_size`` are there because it looks for them to know the transform is resizable.
    ``forward(images)`` returns the N x 3 x S x S batch and each image's scale factor (0-d).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, size: int, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.fixed_size = (size, size)
        self.min_size = (size,)
        self.max_size = size
        self.register_buffer("mean", torch.tensor(mean).reshape(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(3, 1, 1), persistent=False)

    def forward(self, images: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        side = int(self.fixed_size[0])
        canvas = -(-side // 32) * 32
        batch, scales = [], []
        for image in images:
            # sizes as tensors, so that a traced (exported) graph keeps them dynamic
            scale = side / shape_as_tensor(image)[-2:].max().float()
            factor = cast(float, scale) if torch.jit.is_tracing() else float(scale)
            resized = F.interpolate(image[None].float(), scale_factor=factor, mode="bilinear",
                                    align_corners=False, recompute_scale_factor=True)
            # pad by a whole canvas, then crop: the same graph for every image size
            padded = F.pad(resized, (0, canvas, 0, canvas), value=PAD_VALUE)
            batch.append((padded[0, :, :canvas, :canvas] - self.mean) / self.std)
            scales.append(scale)
        return torch.stack(batch), scales


class YOLO(nn.Module):
    """Letterbox, backbone (strides 8, 16, 32), PAN-FPN neck, decoupled head; torchvision's
    detection I/O (a loss dict in train mode, ``{boxes, labels, scores}`` per image in eval
    mode, boxes xyxy in the input image's pixels, labels 1..num_classes-1).

    ``score_thresh``, ``nms_thresh``, ``detections_per_img`` and ``pre_nms_topk`` steer
    inference (``--conf``, ``--iou``, ``--max-det`` set the first three).
    """

    def __init__(self, backbone: Backbone, num_classes: int, input_size: int,
                 mean: list[float], std: list[float], options: dict[str, Any]) -> None:
        super().__init__()
        if num_classes < 2:
            raise ModelBuildError(f"yolo needs num_classes >= 2 (background plus at least "
                                  f"one class), got {num_classes}")
        self.transform = Letterbox(input_size, mean, std)
        self.backbone = backbone
        self.levels = [stride_key(s) for s in STRIDES]
        widths = [max(8, round(b * float(options["width_multiple"]))) for b in BASE_WIDTHS]
        depth = max(1, round(3 * float(options["depth_multiple"])))
        self.neck = PANNeck([backbone.channels_at(k) for k in self.levels], widths, depth)
        self.head = DecoupledHead(widths, num_classes - 1, int(options["reg_max"]), STRIDES)
        self.loss_settings = LossSettings(
            topk=int(options["assigner_topk"]), alpha=float(options["assigner_alpha"]),
            beta=float(options["assigner_beta"]), box_gain=float(options["box_gain"]),
            dfl_gain=float(options["dfl_gain"]), cls_gain=float(options["cls_gain"]))
        self.score_thresh = 0.05
        self.nms_thresh = 0.7
        self.detections_per_img = 300
        self.pre_nms_topk = 1000

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
                ) -> Any:
        batch, scales = self.transform(images)
        features = self.backbone(batch)
        maps = self.neck([features[k] for k in self.levels])
        cls_logits, dist_logits, anchors, strides = self.head(maps)
        if self.training:
            if targets is None:
                raise UsageError("yolo in train mode needs targets (boxes and labels)")
            canvas_targets = [(t["boxes"].float().reshape(-1, 4) * scale, t["labels"] - 1)
                              for t, scale in zip(targets, scales, strict=True)]
            return yolo_losses(cls_logits, dist_logits, anchors, strides, canvas_targets,
                               self.loss_settings)
        bins = torch.arange(self.head.reg_max, device=batch.device, dtype=torch.float32)
        distances = dist_logits.float().softmax(-1) @ bins
        boxes = decode_distances(anchors, distances * strides[:, None])
        probs = cls_logits.float().sigmoid()
        return [self._detections(probs[i], boxes[i] / scale, image)
                for i, (image, scale) in enumerate(zip(images, scales, strict=True))]

    def _detections(self, probs: Tensor, boxes: Tensor, image: Tensor) -> dict[str, Tensor]:
        """Best (anchor, class) pairs of one image after class-aware NMS: ``probs`` A x K,
        ``boxes`` A x 4 in the pixels of ``image`` (3 x H x W), clipped to it."""
        from torchvision.ops import batched_nms

        num_classes = probs.shape[1]
        scores, order = probs.flatten().topk(min(self.pre_nms_topk, probs.numel()))
        keep = scores > self.score_thresh
        scores, order = scores[keep], order[keep]
        anchor_index = torch.div(order, num_classes, rounding_mode="floor")
        labels = order % num_classes + 1
        bounds = shape_as_tensor(image)[[2, 1, 2, 1]].to(boxes.dtype)  # W, H, W, H
        chosen = torch.minimum(boxes[anchor_index].clamp(min=0), bounds)
        kept = batched_nms(chosen, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": chosen[kept], "labels": labels[kept], "scores": scores[kept]}


def yolo_defaults(info: dict[str, Any], input_size: int) -> dict[str, Any]:
    require_strides(info, STRIDES, "yolo")
    return {
        "width_multiple": 0.125 if is_small(info) else 0.25,
        "depth_multiple": 0.33,
        "reg_max": 16,
        "assigner_topk": 10,
        "assigner_alpha": 0.5,
        "assigner_beta": 6.0,
        "box_gain": 7.5,
        "dfl_gain": 1.5,
        "cls_gain": 0.5,
    }


@register_family("yolo", task="detect", default_backbone="resnet18", input_size=640,
                 defaults=yolo_defaults,
                 summary="YOLO-style anchor-free: PAN-FPN over strides 8..32, decoupled "
                         "DFL/CIoU heads, task-aligned assigner")
def build_yolo(backbone: Backbone, spec: ModelSpec) -> YOLO:
    require_strides({"name": spec.backbone, "strides": backbone.strides}, STRIDES, "yolo")
    return YOLO(backbone, spec.num_classes, spec.input_size, list(spec.mean), list(spec.std),
                spec.options)
