"""COCO detection metrics (``bbox`` and ``segm``) that reproduce pycocotools' ``COCOeval``.

The stable import path for the public names; the implementation is the ``detseg.eval.coco``
package (``params``, ``ground_truth``/``results`` parsing, ``match``, ``accumulate``,
``evaluator``, ``reference``), whose docstrings say how the numbers are computed.

    from detseg.eval.coco_map import COCOEvaluator, Params
    m = COCOEvaluator("instances_val2017.json", params=Params(max_dets=(300,))).evaluate(res)
    m.stats["AP"], m.per_class["person"], m.warnings
"""

from detseg.eval.coco.accumulate import STAT_KEYS, summarize
from detseg.eval.coco.evaluator import COCOEvaluator
from detseg.eval.coco.json_input import load_json
from detseg.eval.coco.metrics import COCOMetrics, metrics_json
from detseg.eval.coco.params import (
    AREA_LABELS,
    AREA_RANGES,
    IOU_THRESHOLDS,
    IOU_TYPES,
    RECALL_THRESHOLDS,
    Params,
)
from detseg.eval.coco.reference import evaluate_with_pycocotools
from detseg.eval.coco.rle import segmentation_to_rle

__all__ = [
    "AREA_LABELS", "AREA_RANGES", "IOU_THRESHOLDS", "IOU_TYPES", "RECALL_THRESHOLDS",
    "STAT_KEYS", "COCOEvaluator", "COCOMetrics", "Params", "evaluate_with_pycocotools",
    "load_json", "metrics_json", "segmentation_to_rle", "summarize",
]
