"""The ``detect`` and ``instance`` task contract (torchvision-style detectors).

Models take a list of ``3 x H x W`` float images in [0, 1] (their own transform resizes and
normalizes), return a loss dict in train mode (with targets) and a list of ``{boxes, labels,
scores[, masks N x 1 x H x W]}`` in the input images' coordinates in eval mode.

Batching: a detector's transform pads a batch to its largest image, which changes the feature
maps near the borders of the smaller ones; ``batch_key`` is the image size (or a constant for
fixed-size transforms such as SSD's), so callers batch only images that come out identical.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detseg.prediction import Prediction, Scorer
from detseg.tasks.base import InferenceSettings, Prepared, TaskAdapter


def _plain(t: Any) -> Tensor:
    """A tv_tensor (BoundingBoxes, Mask) or array as a plain tensor."""
    return t.as_subclass(Tensor) if isinstance(t, Tensor) else torch.as_tensor(t)


def _detector_transform(model: nn.Module) -> Any:
    return getattr(model, "transform", None)


class DetectionAdapter(TaskAdapter):
    """Boxes, labels and scores (``detect``)."""

    name = "detect"
    fitness_key = "bbox_AP"
    default_conf = 0.25
    iou_types: tuple[str, ...] = ("bbox",)
    export_batches = False

    # -------------------------------------------------------------- inference
    def configure(self, model: nn.Module, settings: InferenceSettings) -> None:
        """Score threshold, NMS IoU threshold, detection cap and resize of torchvision detectors.

        torchvision drops boxes below ``score_thresh`` and keeps ``detections_per_img``; with a
        class filter the cap stays at least as large as it was, so filtered-out classes do not
        crowd out the wanted ones. ``imgsz`` sets the shorter side (R-CNN, RetinaNet, FCOS; the
        longer side cap keeps its ratio) or the square side (SSD).
        """
        # The thresholds live on torchvision modules, untyped here: read them as Any.
        owners: tuple[Any, ...] = (getattr(model, "roi_heads", None), model)
        for owner in owners:
            if owner is None:
                continue
            if settings.conf is not None and hasattr(owner, "score_thresh"):
                owner.score_thresh = settings.conf
            if settings.iou is not None and hasattr(owner, "nms_thresh"):
                owner.nms_thresh = settings.iou
            if settings.max_det is not None and hasattr(owner, "detections_per_img"):
                current = int(owner.detections_per_img)
                owner.detections_per_img = (settings.max_det if settings.classes is None
                                            else max(current, settings.max_det))
        transform = _detector_transform(model)
        self.fixed_size = bool(getattr(transform, "fixed_size", None))
        self._resize = transform
        if settings.imgsz is None or transform is None or not hasattr(transform, "min_size"):
            return
        if getattr(transform, "fixed_size", None):
            transform.fixed_size = (settings.imgsz, settings.imgsz)
        else:
            ratio = transform.max_size / max(transform.min_size)
            transform.min_size = (settings.imgsz,)
            transform.max_size = round(settings.imgsz * ratio)

    #: the model resizes every image to one fixed size (SSD): any images batch together
    fixed_size = False

    def batch_key(self, height: int, width: int, imgsz: int | None = None) -> Hashable:
        return () if self.fixed_size else (height, width)

    #: the model's transform, read by ``working_size`` (set by ``configure``)
    _resize: Any = None

    def working_size(self, height: int, width: int, imgsz: int | None = None
                     ) -> tuple[int, int]:
        """torchvision's resize rule: the square ``fixed_size`` (SSD), else the shorter side to
        ``min_size`` with the longer side at most ``max_size``; the spec's input size (shorter
        side) before ``configure``."""
        transform = self._resize
        fixed = getattr(transform, "fixed_size", None)
        if fixed:
            return int(fixed[0]), int(fixed[1])
        low = float(max(getattr(transform, "min_size", None) or (imgsz or self.spec.input_size,)))
        high = float(getattr(transform, "max_size", None) or low * 1333 / 800)
        scale = min(low / min(height, width), high / max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))

    def prepare(self, images: Sequence[Tensor], imgsz: int | None = None) -> Prepared:
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        return Prepared(list(images), sizes, sizes)

    def postprocess(self, output: Any, prepared: Prepared,
                    settings: InferenceSettings) -> list[Prediction]:
        """Boxes clamped to the image, ``conf``/``classes`` filtered, best ``max_det`` kept
        (score order), masks thresholded at 0.5."""
        predictions = []
        conf = settings.conf if settings.conf is not None else 0.0
        for out, (h, w) in zip(output, prepared.sizes, strict=True):
            scores, labels = out["scores"], out["labels"]
            keep = scores >= conf
            if settings.classes is not None:
                keep &= torch.isin(labels, torch.tensor(settings.classes, device=labels.device))
            idx = keep.nonzero().squeeze(1)
            idx = idx[scores[idx].argsort(descending=True, stable=True)]
            if settings.max_det is not None:
                idx = idx[: settings.max_det]
            boxes = out["boxes"][idx].float()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            masks = (out["masks"][idx, 0] > 0.5).cpu().numpy() if "masks" in out else None
            predictions.append(Prediction(
                size=(h, w), boxes=boxes.cpu().numpy().astype(np.float32),
                labels=labels[idx].cpu().numpy().astype(np.int64),
                scores=scores[idx].float().cpu().numpy().astype(np.float32), masks=masks))
        return predictions

    # -------------------------------------------------------------- training
    target_keys: tuple[str, ...] = ("boxes", "labels")

    def loss(self, model: nn.Module, images: Sequence[Tensor],
             targets: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """torchvision's loss dict; crowd regions and boxes under half a pixel are left out."""
        from detseg.data.base import drop_crowd

        device = images[0].device
        clean = []
        for t in targets:
            t = drop_crowd(t)
            tgt = {k: _plain(t[k]) for k in self.target_keys if k in t}
            tgt["boxes"] = tgt["boxes"].float().reshape(-1, 4)
            wh = tgt["boxes"][:, 2:] - tgt["boxes"][:, :2]
            keep = (wh > 0.5).all(dim=1)
            tgt = {k: v[keep] for k, v in tgt.items()}
            tgt["labels"] = tgt["labels"].long()
            if "masks" in tgt:
                tgt["masks"] = tgt["masks"].to(torch.uint8)
            clean.append({k: v.to(device, non_blocking=True) for k, v in tgt.items()})
        return model(list(images), clean)

    # -------------------------------------------------------------- evaluation
    def scorer(self, dataset: Any, iou_types: tuple[str, ...] | None = None,
               backend: str = "detseg") -> Scorer:
        from detseg.errors import UsageError
        from detseg.eval.scorers import CocoScorer

        iou_types = iou_types or self.iou_types
        unknown = sorted(set(iou_types) - set(type(self).iou_types))
        if unknown:
            raise UsageError(f"iou_type {', '.join(unknown)} needs an instance model; "
                             f"{self.spec.family} is a {self.name} model")
        return CocoScorer(dataset, self.spec, tuple(iou_types), backend)

    # -------------------------------------------------------------- export, benchmark
    output_names: tuple[str, ...] = ("boxes", "labels", "scores")

    def export_module(self, model: nn.Module, imgsz: int) -> tuple[nn.Module, list[str]]:
        names = list(self.output_names)
        return DetectionExport(model.eval(), names).eval(), names

    def example_inputs(self, imgsz: int | tuple[int, int], batch_size: int = 1,
                       device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> list[Tensor]:
        height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        images = torch.rand(batch_size, 3, height, width, device=device)
        return [img.to(dtype) for img in images]


class InstanceAdapter(DetectionAdapter):
    """Boxes plus one mask per object (``instance``)."""

    name = "instance"
    fitness_key = "segm_AP"
    iou_types = ("bbox", "segm")
    target_keys = ("boxes", "labels", "masks")
    output_names = ("boxes", "labels", "scores", "masks")


class DetectionExport(nn.Module):
    """``images [1, 3, H, W]`` in [0, 1] -> ``[boxes, labels, scores(, masks)]`` of that image."""

    def __init__(self, model: nn.Module, output_names: list[str]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, images: Tensor) -> list[Tensor]:
        result = self.model(list(images.unbind(0)))
        # scripted torchvision detectors return (losses, detections) in every mode
        detections = result[1] if torch.jit.is_scripting() else result
        first = detections[0]
        return [first[name] for name in self.output_names]
