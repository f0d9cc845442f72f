"""Scorers: predictions against a dataset's targets, into the metrics ``detseg eval`` reports.

- ``CocoScorer`` (detection and instance models): COCO results (``bbox``, ``segm``) scored
  against ``dataset.to_coco()`` by detseg's evaluator or pycocotools;
- ``PixelScorer`` (semantic models): a confusion matrix at each image's original resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from detseg.errors import UsageError
from detseg.eval.coco_map import (
    COCOEvaluator,
    COCOMetrics,
    evaluate_with_pycocotools,
    metrics_json,
)
from detseg.eval.coco_results import coco_entries
from detseg.eval.metrics_files import (
    Table,
    detection_tables,
    semantic_tables,
    write_detection_files,
    write_semantic_files,
)
from detseg.eval.pixels import ConfusionMatrix
from detseg.prediction import Prediction, Scorer
from detseg.spec import ModelSpec

BACKENDS = ("detseg", "pycocotools")


def score_detections(gt: dict, predictions: list[dict], iou_types: tuple[str, ...],
                     backend: str = "detseg") -> dict[str, COCOMetrics]:
    """COCO metrics of ``predictions`` for each IoU type with the chosen backend."""
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "pycocotools":
        return {t: evaluate_with_pycocotools(gt, predictions, t) for t in iou_types}
    return {t: COCOEvaluator(gt, t).evaluate(predictions) for t in iou_types}


def category_map(spec: ModelSpec, dataset: Any) -> list[int]:
    """The dataset category id of each model label."""
    if spec.category_ids:
        return list(spec.category_ids)
    ds_ids = list(getattr(dataset, "category_ids", []) or [])
    if len(ds_ids) == spec.num_classes:
        return ds_ids
    return list(range(spec.num_classes))


class CocoScorer(Scorer):
    """COCO mAP of a detection or instance model over a detection dataset."""

    def __init__(self, dataset: Any, spec: ModelSpec, iou_types: tuple[str, ...],
                 backend: str = "detseg") -> None:
        if backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.gt = dataset.to_coco()
        self.iou_types = iou_types
        self.backend = backend
        self.gt_sizes = {im["id"]: (int(im["height"]), int(im["width"]))
                         for im in self.gt["images"]}
        self.known = {c["id"] for c in self.gt["categories"]}
        self.cat_map = category_map(spec, dataset)
        self.predictions: list[dict] = []
        self.seen: set[int] = set()
        self.dropped = 0

    def update(self, prediction: Prediction, target: dict[str, Any]) -> None:
        image_id = int(target["image_id"])
        self.seen.add(image_id)
        for entry in coco_entries(prediction, image_id, self.cat_map,
                                  self.gt_sizes.get(image_id), "segm" in self.iou_types):
            if entry["category_id"] in self.known:
                self.predictions.append(entry)
            else:
                self.dropped += 1

    def state(self) -> tuple[list[dict], set[int], int]:
        return self.predictions, self.seen, self.dropped

    def merge(self, state: tuple[list[dict], set[int], int]) -> None:
        predictions, seen, dropped = state
        self.predictions.extend(predictions)
        self.seen |= seen
        self.dropped += dropped

    def compute(self) -> dict[str, Any]:
        gt = self.gt
        if len(self.seen) < len(gt["images"]):
            gt = {**gt, "images": [im for im in gt["images"] if im["id"] in self.seen],
                  "annotations": [a for a in gt["annotations"] if a["image_id"] in self.seen]}
        evals = score_detections(gt, self.predictions, self.iou_types, self.backend)
        warnings = list(dict.fromkeys(w for m in evals.values() for w in m.warnings))
        out: dict[str, Any] = {"metrics": metrics_json(evals), "predictions": self.predictions,
                               "details": evals, "dropped_predictions": self.dropped,
                               "warnings": warnings, "ground_truth": gt}
        for iou_type, m in evals.items():
            for key, value in m.stats.items():
                out[f"{iou_type}_{key}"] = value
        return out

    @staticmethod
    def write(result: dict[str, Any], out_dir: Path, plots: bool = True) -> list[Path]:
        """metrics.json, per_class.csv, predictions.json and PR curves of ``compute()``."""
        return write_detection_files(result["metrics"], result["details"], out_dir, plots,
                                     result["predictions"])

    @staticmethod
    def tables(result: dict[str, Any]) -> list[Table]:
        return detection_tables(result["metrics"], result["details"])


class PixelScorer(Scorer):
    """Per-pixel metrics of a semantic model, at each image's original resolution."""

    def __init__(self, spec: ModelSpec) -> None:
        self.names = spec.names()
        self.matrix = ConfusionMatrix(spec.num_classes, class_names=self.names)

    def update(self, prediction: Prediction, target: dict[str, Any]) -> None:
        truth = torch.as_tensor(target["mask"]).long()
        truth = truth.reshape(truth.shape[-2:])
        pred = torch.from_numpy(prediction.semantic)
        if pred.shape != truth.shape:
            pred = F.interpolate(pred[None, None].float(), size=truth.shape[-2:],
                                 mode="nearest")[0, 0].long()
        self.matrix.update(pred, truth)

    def state(self) -> np.ndarray:
        return self.matrix.to_numpy()

    def merge(self, state: np.ndarray) -> None:
        counts, current = torch.as_tensor(state), self.matrix.matrix
        # A scorer that saw no image yet has no matrix: it takes the other's counts.
        self.matrix.matrix = counts if current is None else current + counts.to(current)

    def compute(self) -> dict[str, Any]:
        metrics = self.matrix.compute()
        out: dict[str, Any] = {"metrics": metrics, "predictions": [],
                               "details": {"confusion_matrix": self.matrix.to_numpy(),
                                           "class_names": self.names}}
        out.update({k: v for k, v in metrics.items() if k != "per_class"})
        return out

    @staticmethod
    def write(result: dict[str, Any], out_dir: Path, plots: bool = True) -> list[Path]:
        """metrics.json, per_class.csv and the confusion matrix of ``compute()``."""
        return write_semantic_files(result["metrics"], result["details"], out_dir, plots)

    @staticmethod
    def tables(result: dict[str, Any]) -> list[Table]:
        return semantic_tables(result["metrics"])
