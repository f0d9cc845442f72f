"""Evaluation: COCO mAP with pycocotools' exact numbers, VOC AP, per-pixel metrics, plots.

- ``coco_map.COCOEvaluator``: ``bbox``/``segm`` COCO metrics, vectorized (numpy + pycocotools).
- ``voc_ap.voc_evaluate`` / ``voc_ap.voc_ap``: PASCAL VOC AP (2007 11-point or all-point);
  ``detseg.eval.voc_ap`` is the module (import the function from it).
- ``pixels.ConfusionMatrix``: pixel accuracy, mean accuracy, IoU, mIoU, fwIoU, Dice (torch).
- ``iou.box_iou`` / ``iou.mask_iou``: IoU matrices with pycocotools' crowd semantics.
- ``plots``: PR curves and confusion-matrix heatmaps (matplotlib, PNG).
- ``runner.evaluate_model``: run a detseg model over a detseg dataset and evaluate it.

Names are imported lazily, so ``from detseg.eval import COCOEvaluator`` pulls in numpy and
pycocotools only (no torch, no matplotlib).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "COCOEvaluator": "detseg.eval.coco_map",
    "COCOMetrics": "detseg.eval.coco_map",
    "box_iou": "detseg.eval.iou",
    "mask_iou": "detseg.eval.iou",
    "voc_evaluate": "detseg.eval.voc_ap",
    "VOCMetrics": "detseg.eval.voc_ap",
    "ConfusionMatrix": "detseg.eval.pixels",
    "evaluate_model": "detseg.eval.runner",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detseg.eval' has no attribute {name!r}")
