"""Run a detseg model over a detseg dataset and evaluate it (validation and ``detseg eval``).

Detection/instance models get float 0..1 images and produce COCO results that are scored
against ``dataset.to_coco()`` (``bbox``, plus ``segm`` for instance models); predictions are
scaled back when a transform resized the images. Semantic models get batches normalized with
``spec.mean/std`` (padded to a multiple of 32) and their argmax is compared with the
dataset's masks in a ``ConfusionMatrix``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torch import nn
from torch.utils.data import DataLoader, Subset

from detseg.errors import UsageError
from detseg.eval.coco_map import (
    COCOEvaluator,
    COCOMetrics,
    evaluate_with_pycocotools,
    metrics_json,
)
from detseg.eval.pixels import ConfusionMatrix

PAD_MULTIPLE = 32
BACKENDS = ("detseg", "pycocotools")
Progress = Callable[[int, int], None]


def _as_float_image(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    image = torch.as_tensor(image).to(device)
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    return image.float()


def _category_map(model_spec: Any, dataset: Any) -> list[int]:
    """Dataset category id per model label."""
    if model_spec.category_ids:
        return list(model_spec.category_ids)
    ds_ids = list(getattr(dataset, "category_ids", []) or [])
    if len(ds_ids) == model_spec.num_classes:
        return ds_ids
    return list(range(model_spec.num_classes))


def _subset_gt(gt: dict, image_ids: set[int]) -> dict:
    return {**gt, "images": [im for im in gt["images"] if im["id"] in image_ids],
            "annotations": [a for a in gt["annotations"] if a["image_id"] in image_ids]}


def _detection_results(out: dict[str, torch.Tensor], image_id: int, size: tuple[int, int],
                       gt_size: tuple[int, int], cat_map: list[int], with_masks: bool
                       ) -> list[dict]:
    """COCO results of one image; ``size``/``gt_size`` are (h, w) seen by the model / in the GT."""
    boxes = out["boxes"].float()
    sy, sx = gt_size[0] / size[0], gt_size[1] / size[1]
    if (sy, sx) != (1.0, 1.0):
        boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
    boxes = boxes.cpu().numpy().astype(np.float64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).round(3)
    labels = out["labels"].cpu().numpy()
    scores = out["scores"].float().cpu().numpy()
    rles: list[Any] = [None] * len(labels)
    if with_masks and len(labels):
        masks = out["masks"].float()
        if masks.shape[-2:] != gt_size:
            masks = F.interpolate(masks, size=gt_size, mode="bilinear", align_corners=False)
        binary = (masks[:, 0] > 0.5).to(torch.uint8).cpu().numpy()
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    results = []
    for j, label in enumerate(labels.tolist()):
        entry = {"image_id": image_id, "category_id": int(cat_map[label]),
                 "bbox": xywh[j].tolist(), "score": round(float(scores[j]), 5)}
        if rles[j] is not None:
            entry["segmentation"] = {"size": rles[j]["size"],
                                     "counts": rles[j]["counts"].decode("ascii")}
        results.append(entry)
    return results


def score_detections(gt: dict, predictions: list[dict], iou_types: tuple[str, ...],
                     backend: str = "detseg") -> dict[str, COCOMetrics]:
    """COCO metrics of ``predictions`` for each IoU type with the chosen backend."""
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "pycocotools":
        return {t: evaluate_with_pycocotools(gt, predictions, t) for t in iou_types}
    return {t: COCOEvaluator(gt, t).evaluate(predictions) for t in iou_types}


def evaluate_model(model: nn.Module, dataset: Any, batch_size: int = 8,
                   device: str | torch.device = "cpu", max_images: int | None = None,
                   progress: Progress | None = None, iou_types: tuple[str, ...] | None = None,
                   backend: str = "detseg") -> dict[str, Any]:
    """Evaluate ``model`` (with a ``.spec``) on the first ``max_images`` images of ``dataset``.

    Returns a dict with:
        ``metrics``: the ``metrics.json`` structure: ``{"bbox": {AP, AP50, ...}, "segm": {...},
            "per_class": {name: {"bbox": AP, "segm": AP}}}`` for detection/instance models,
            ``{"pixel_acc", "mean_acc", "mIoU", "fwIoU", "mDice", "per_class"}`` for semantic;
        flat numbers for quick use: ``bbox_AP``, ``bbox_AP50``, ... ``segm_AP``... or
            ``pixel_acc``, ``mean_acc``, ``mIoU``, ``fwIoU``, ``mDice``; ``num_images``;
        ``predictions``: COCO results (detection/instance; empty for semantic);
        ``details``: ``{"bbox": COCOMetrics, ...}`` or ``{"confusion_matrix": C x C array,
            "class_names": [...]}`` for plots.
    ``progress(done, total)`` is called after every batch; ``iou_types`` defaults to ``bbox``
    (+ ``segm`` for instance models).
    """
    spec = model.spec
    device = torch.device(device)
    n = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    loader = DataLoader(Subset(dataset, range(n)), batch_size=max(1, batch_size), shuffle=False,
                        collate_fn=lambda batch: tuple(zip(*batch, strict=True)))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if spec.task == "semantic":
                out = _evaluate_semantic(model, dataset, loader, n, device, progress)
            else:
                out = _evaluate_detection(model, dataset, loader, n, device, progress,
                                          iou_types, backend)
    finally:
        model.train(was_training)
    out["num_images"] = n
    return out


def _evaluate_detection(model: nn.Module, dataset: Any, loader: DataLoader, n: int,
                        device: torch.device, progress: Progress | None,
                        iou_types: tuple[str, ...] | None, backend: str) -> dict[str, Any]:
    spec = model.spec
    if iou_types is None:
        iou_types = ("bbox", "segm") if spec.task == "instance" else ("bbox",)
    if "segm" in iou_types and spec.task != "instance":
        raise UsageError(f"segm evaluation needs an instance model; {spec.family} is {spec.task}")
    gt = dataset.to_coco()
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in gt["images"]}
    known = {c["id"] for c in gt["categories"]}
    cat_map = _category_map(spec, dataset)
    predictions: list[dict] = []
    seen: set[int] = set()
    dropped = done = 0
    for images, targets in loader:
        batch = [_as_float_image(im, device) for im in images]
        outputs = model(batch)
        for image, target, out in zip(batch, targets, outputs, strict=True):
            image_id = int(target["image_id"])
            seen.add(image_id)
            size = (int(image.shape[-2]), int(image.shape[-1]))
            for entry in _detection_results(out, image_id, size, sizes.get(image_id, size),
                                            cat_map, "segm" in iou_types):
                if entry["category_id"] in known:
                    predictions.append(entry)
                else:
                    dropped += 1
        done += len(batch)
        if progress is not None:
            progress(done, n)
    subset = _subset_gt(gt, seen) if len(seen) < len(gt["images"]) else gt
    evals = score_detections(subset, predictions, tuple(iou_types), backend)
    out: dict[str, Any] = {"metrics": metrics_json(evals), "predictions": predictions,
                           "details": evals, "dropped_predictions": dropped}
    for iou_type, m in evals.items():
        for key, value in m.stats.items():
            out[f"{iou_type}_{key}"] = value
    return out


def _pad_batch(images: list[torch.Tensor]) -> torch.Tensor:
    h = math.ceil(max(im.shape[-2] for im in images) / PAD_MULTIPLE) * PAD_MULTIPLE
    w = math.ceil(max(im.shape[-1] for im in images) / PAD_MULTIPLE) * PAD_MULTIPLE
    batch = images[0].new_zeros((len(images), 3, h, w))
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = im
    return batch


def _evaluate_semantic(model: nn.Module, dataset: Any, loader: DataLoader, n: int,
                       device: torch.device, progress: Progress | None) -> dict[str, Any]:
    from detseg.models import semantic_logits

    spec = model.spec
    names = spec.names()
    cm = ConfusionMatrix(spec.num_classes, class_names=names)
    mean = torch.tensor(spec.mean, device=device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(3, 1, 1)
    done = 0
    for images, targets in loader:
        batch = [(_as_float_image(im, device) - mean) / std for im in images]
        logits = semantic_logits(model(_pad_batch(batch)))
        for i, (image, target) in enumerate(zip(batch, targets, strict=True)):
            h, w = image.shape[-2:]
            truth = torch.as_tensor(target["mask"]).to(device)
            pred = logits[i, :, :h, :w].argmax(0)
            if pred.shape != truth.shape:
                pred = F.interpolate(pred[None, None].float(), size=truth.shape[-2:],
                                     mode="nearest")[0, 0].long()
            cm.update(pred, truth)
        done += len(batch)
        if progress is not None:
            progress(done, n)
    metrics = cm.compute()
    out: dict[str, Any] = {"metrics": metrics, "predictions": [],
                           "details": {"confusion_matrix": cm.to_numpy(), "class_names": names}}
    out.update({k: v for k, v in metrics.items() if k != "per_class"})
    return out
