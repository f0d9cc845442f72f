"""``COCOMetrics``, the result of one COCO evaluation, and the ``metrics.json`` structure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detseg.eval.coco.params import IOU_THRESHOLDS, RECALL_THRESHOLDS, Params


@dataclass
class COCOMetrics:
    """Result of one COCO evaluation.

    Attributes:
        iou_type: ``"bbox"`` or ``"segm"``.
        stats: the 12 summary numbers keyed by ``STAT_KEYS`` (-1 where undefined).
        per_class: category name -> AP@[.5:.95] (all areas, most detections); -1 without GT.
            With ``use_cats=False`` one entry, ``"all"``.
        precision: ``[T, R, K, A, M]`` interpolated precision (-1 where no GT), as pycocotools.
        recall: ``[T, K, A, M]`` final recall (-1 where no GT).
        scores: ``[T, R, K, A, M]`` detection score at each recall threshold.
        category_ids, category_names: the ``K`` categories in array order (sorted ids; ``[-1]``
            and ``["all"]`` with ``use_cats=False``).
        max_dets: the ``M`` maximum numbers of detections per image.
        iou_thresholds, recall_thresholds: ``[T]`` and ``[R]``.
        params: everything the evaluation measured.
        warnings: one line per input entry skipped or ignored, naming the file and the entry
            (``results.json: results[17]: ...``); empty when the input was clean.
    """

    iou_type: str
    stats: dict[str, float]
    per_class: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    category_ids: list[int]
    category_names: list[str]
    max_dets: tuple[int, ...]
    iou_thresholds: np.ndarray = field(default_factory=lambda: IOU_THRESHOLDS.copy())
    recall_thresholds: np.ndarray = field(default_factory=lambda: RECALL_THRESHOLDS.copy())
    params: Params = field(default_factory=Params)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``{"iou_type", "stats", "per_class", "warnings"}`` (no large
        arrays)."""
        return {"iou_type": self.iou_type, "stats": dict(self.stats),
                "per_class": dict(self.per_class), "warnings": list(self.warnings)}


def metrics_json(evals: dict[str, COCOMetrics]) -> dict[str, Any]:
    """The ``metrics.json`` structure: ``{"bbox": {AP, ..., ARl}, "segm": {...},
    "per_class": {name: {"bbox": AP, "segm": AP}}}`` (the IoU types present)."""
    metrics: dict[str, Any] = {iou_type: dict(m.stats) for iou_type, m in evals.items()}
    names = next(iter(evals.values())).category_names if evals else []
    metrics["per_class"] = {name: {iou_type: m.per_class[name] for iou_type, m in evals.items()}
                            for name in names}
    return metrics
