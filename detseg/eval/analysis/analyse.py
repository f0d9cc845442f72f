"""``analyse_detections``: TIDE errors, the detection confusion matrix and error cases of a
COCO results list against its ground truth, in one ``DetectionAnalysis``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detseg.errors import UsageError
from detseg.eval.analysis.cases import (
    ErrorCase,
    ImageErrors,
    false_positives,
    missed_objects,
    missed_types,
    per_image,
)
from detseg.eval.analysis.confusion import per_class_counts, threshold_counts
from detseg.eval.analysis.matching import POS_THRESH, match_scene
from detseg.eval.analysis.scene import build_scene
from detseg.eval.analysis.tide import classify, error_counts, tide_scores
from detseg.eval.coco.ground_truth import GroundTruth
from detseg.eval.coco.json_input import load_json, paused_gc, source_name
from detseg.eval.coco.results import Detections

IOU_TYPES = ("bbox", "segm")


@dataclass
class DetectionAnalysis:
    """What went wrong in a detection (``bbox``) or instance segmentation (``segm``) run.

    ``tide``: dAP in AP points (0-100) per TIDE error type (``Cls, Loc, Both, Dupe, Bkg,
    Miss``, ``FalsePos, FalseNeg``) and ``ap50`` TIDE's AP at IoU 0.5, both over all
    detections (at most 100 per image); ``error_counts`` how many errors of each main type.
    At ``iou_threshold`` and ``score_threshold``: ``confusion [K + 1, K + 1]`` int64 (row =
    true class, column = predicted class, index ``K`` = background: false alarms in the last
    row, missed objects in the last column), ``per_class`` ``{name: {gt, tp, fp, fn}}``,
    ``false_positives`` (highest score first), ``missed`` (largest area first) and
    ``per_image`` (most errors first). ``warnings``: the input entries skipped, one line each.
    """

    iou_type: str
    score_threshold: float
    iou_threshold: float
    category_ids: list[int]
    class_names: list[str]
    tide: dict[str, float]
    ap50: float
    error_counts: dict[str, int]
    confusion: np.ndarray
    per_class: dict[str, dict[str, int]]
    false_positives: list[ErrorCase]
    missed: list[ErrorCase]
    per_image: list[ImageErrors]
    warnings: list[str] = field(default_factory=list)


def _unique_names(names: list[str], ids: list[int]) -> list[str]:
    """Class names, with the id added to a name that two categories share."""
    return [f"{name} (id {i})" if names.count(name) > 1 else name
            for name, i in zip(names, ids, strict=True)]


def analyse_detections(gt: dict | str | Path, results: list[dict] | str | Path,
                       iou_type: str = "bbox", score_threshold: float = 0.5,
                       gt_source: str | None = None, results_source: str | None = None,
                       parsed: tuple[GroundTruth, Detections] | None = None
                       ) -> DetectionAnalysis:
    """Analyse COCO results against a COCO ground truth (dicts as ``json.load`` gives them,
    or their files).

    Parsing is the COCO evaluator's: bad or unknown entries are skipped and named in
    ``warnings``; inputs with nothing usable raise ``EvalInputError`` naming the first bad
    entry. ``score_threshold`` (a finite number) selects the detections the confusion matrix,
    counts and error cases use; TIDE's numbers use every detection. ``gt_source`` /
    ``results_source`` name the inputs in messages (default: their paths). ``parsed``: what
    a ``COCOEvaluator(gt, iou_type)`` of the same inputs already parsed (its ``gt`` and the
    ``parse(results)`` it evaluated), so that they are not parsed twice.
    """
    if iou_type not in IOU_TYPES:
        raise UsageError(f"iou_type must be one of {', '.join(IOU_TYPES)}, got {iou_type!r}")
    if (isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float))
            or not math.isfinite(score_threshold)):
        raise UsageError(f"score_threshold must be a finite number, got {score_threshold!r}")
    # Parsing and the error cases make many small acyclic objects: no cyclic collection
    # until the end (one full pass then, instead of many on a heap of results).
    with paused_gc():
        gt_data: Any = load_json(gt, "ground-truth")
        res_data: Any = load_json(results, "results")
        scene = build_scene(gt_data, res_data, iou_type,
                            source_name(gt, gt_source, "ground truth"),
                            source_name(results, results_source, "results"), parsed)
        matching = match_scene(scene)
        errors = classify(scene, matching)
        ap50, dap = tide_scores(scene, matching, errors)
        counts = threshold_counts(scene, matching, float(score_threshold))
        missed = missed_types(scene, errors, counts)
        ids = scene.cat_ids.tolist()
        names = _unique_names(scene.cat_names, ids)
        return DetectionAnalysis(
            iou_type, float(score_threshold), POS_THRESH, ids, names, dap, ap50,
            error_counts(errors), counts.confusion, per_class_counts(counts.confusion, names),
            false_positives(scene, errors, counts, res_data),
            missed_objects(scene, missed, gt_data), per_image(scene, errors, counts, missed),
            scene.warnings)
