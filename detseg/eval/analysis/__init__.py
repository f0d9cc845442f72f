"""Detection error analysis (``detseg eval --report``): TIDE's error breakdown, a detection
confusion matrix with background row and column, per-class counts, error cases and per-image
errors, from a COCO ground truth and results list.

- ``scene``: both inputs parsed (the COCO evaluator's parsers) into arrays in TIDE's order,
  with the IoU of every overlapping (detection, ground truth) pair;
- ``matching``: TIDE's greedy class-aware matching, crowd regions ignored;
- ``tide``: error types and dAP (``tidecv``'s numbers);
- ``confusion``: the confusion matrix and per-class counts at a score threshold;
- ``cases``: false positives, missed objects, per-image counts;
- ``analyse``: ``analyse_detections`` and ``DetectionAnalysis``;
- ``errors_file``: ``errors.json``.

    from detseg.eval.analysis import analyse_detections, errors_json
    a = analyse_detections(gt, results, "bbox", score_threshold=0.5)
    a.tide["Loc"], a.confusion, a.per_class["cat"], a.false_positives[:10]
"""

from detseg.eval.analysis.analyse import IOU_TYPES, DetectionAnalysis, analyse_detections
from detseg.eval.analysis.cases import ErrorCase, ImageErrors
from detseg.eval.analysis.errors_file import ERRORS_FILE, errors_json, write_errors_json
from detseg.eval.analysis.tide import ERROR_TYPES, SPECIAL_ERROR_TYPES

__all__ = [
    "ERRORS_FILE", "ERROR_TYPES", "IOU_TYPES", "SPECIAL_ERROR_TYPES", "DetectionAnalysis",
    "ErrorCase", "ImageErrors", "analyse_detections", "errors_json", "write_errors_json",
]
