"""The detection / instance part of the report, one section per IoU type (``bbox``, ``segm``).

Everything is read from our evaluator's ``COCOMetrics`` (the 12 numbers; per class AP, AP50 and
AR and the precision-recall curves from ``precision [T, R, K, A, M]`` and ``recall [T, K, A,
M]`` at area ``all`` and the most detections) and from the error analysis
(``detseg.eval.analysis``: counts at IoU 0.5 and the score threshold, the detection confusion
matrix, TIDE's dAP, the cases the galleries show).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from detseg.eval.coco_map import COCOMetrics
from detseg.report.galleries import detection_galleries
from detseg.report.html import cards, note, table
from detseg.report.page import Section
from detseg.report.pictures import PictureSource

if TYPE_CHECKING:
    from detseg.eval.analysis import DetectionAnalysis

STAT_HINTS = {
    "AP": "AP at IoU 0.50:0.95, all areas, 100 detections", "AP50": "AP at IoU 0.50",
    "AP75": "AP at IoU 0.75", "APs": "AP of small objects (area < 32^2)",
    "APm": "AP of medium objects", "APl": "AP of large objects (area > 96^2)",
    "AR1": "recall with 1 detection per image", "AR10": "recall with 10 detections",
    "AR100": "recall with 100 detections", "ARs": "recall of small objects",
    "ARm": "recall of medium objects", "ARl": "recall of large objects",
}
TIDE_MAIN = (("Cls", "#db2777"), ("Loc", "#7c3aed"), ("Both", "#0891b2"),
             ("Dupe", "#64748b"), ("Bkg", "#dc2626"), ("Miss", "#f59e0b"))
TIDE_SPECIAL = (("FalsePos", "#475569"), ("FalseNeg", "#475569"))
TITLES = {"bbox": "Boxes (bbox)", "segm": "Masks (segm)"}


def _area_all(metrics: COCOMetrics) -> int:
    labels = list(metrics.params.area_labels)
    return labels.index("all") if "all" in labels else 0


def _t50(metrics: COCOMetrics) -> int | None:
    hits = np.flatnonzero(np.isclose(metrics.iou_thresholds, 0.5))
    return int(hits[0]) if len(hits) else None


def _mean(values: np.ndarray) -> float | None:
    kept = values[values > -1]
    return float(kept.mean()) if kept.size else None


def class_numbers(metrics: COCOMetrics) -> list[tuple[str, float | None, float | None,
                                                        float | None]]:
    """``(name, AP, AP50, AR)`` per category (``None`` without ground truth), from the arrays
    at area ``all`` and the most detections (AR: recall averaged over the IoU thresholds)."""
    a, t50 = _area_all(metrics), _t50(metrics)
    rows = []
    for k, name in enumerate(metrics.category_names):
        p = metrics.precision[:, :, k, a, -1]
        ap50 = _mean(p[t50]) if t50 is not None else None
        rows.append((name, _mean(p), ap50, _mean(metrics.recall[:, k, a, -1])))
    return rows


def pr_curves(metrics: COCOMetrics) -> dict[str, Any]:
    """PR curve data of the page: per class and averaged over the classes with ground truth,
    at IoU 0.5 and averaged over IoU 0.5:0.95 (``None`` where a class has no ground truth, or no
    detection: the evaluator leaves -1 there)."""
    a, t50 = _area_all(metrics), _t50(metrics)
    p = metrics.precision[:, :, :, a, -1]                                   # [T, R, K]
    has_gt = np.asarray((p > -1).all(axis=(0, 1)), dtype=bool)

    def curve(values: np.ndarray | None) -> list[float] | None:
        return None if values is None else [round(float(v), 4) for v in values]

    p50 = p[t50] if t50 is not None else None
    iou50 = [curve(p50[:, k]) if p50 is not None and has_gt[k] else None
             for k in range(p.shape[2])]
    iou5095 = [curve(p[:, :, k].mean(axis=0)) if has_gt[k] else None
               for k in range(p.shape[2])]
    return {
        "recall": [round(float(r), 4) for r in metrics.recall_thresholds],
        "classes": list(metrics.category_names), "iou50": iou50, "iou5095": iou5095,
        "mean50": curve(p50[:, has_gt].mean(axis=1))
        if p50 is not None and has_gt.any() else None,
        "mean5095": curve(p[:, :, has_gt].mean(axis=(0, 2))) if has_gt.any() else None,
    }


def _summary(metrics: COCOMetrics) -> str:
    return cards([(key, value, STAT_HINTS.get(key, key))
                  for key, value in metrics.stats.items()])


def _class_table(section_id: str, metrics: COCOMetrics,
                 analysis: DetectionAnalysis | None, threshold: float) -> str:
    counts = analysis.per_class if analysis is not None else {}
    rows: list[list[Any]] = []
    for name, ap, ap50, ar in class_numbers(metrics):
        c = counts.get(name, {})
        rows.append([name, ap, ap50, ar, *(c.get(k) for k in ("gt", "tp", "fp", "fn"))])
    explain = note("AP over IoU 0.50:0.95, AP50 and AR (recall averaged over IoU 0.50:0.95, "
                   "100 detections) from the evaluator; GT, TP, FP, FN counted at IoU 0.5 and "
                   f"score >= {threshold:g}. Click a column header to sort.")
    return explain + table(f"{section_id}-classes",
                           ["class", "AP", "AP50", "AR", "GT", "TP", "FP", "FN"], rows)


def _columns(left: list[str], right: list[str]) -> str:
    """Two columns side by side (stacked on a narrow window)."""
    return (f'<div class="row2"><div class="col">{"".join(left)}</div>'
            f'<div class="col">{"".join(right)}</div></div>')


def _pr_view(key: str) -> str:
    return (f'<div class="pr-view" data-src="{key}"><label>class <select></select></label>'
            '<div class="pr-host"></div></div>')


def _matrix_view(key: str, mode: str = "counts") -> str:
    buttons = "".join(f'<button data-mode="{m}" class="{"on" if m == mode else ""}">{label}'
                      f"</button>" for m, label in (("counts", "counts"),
                                                    ("rows", "row-normalised")))
    return (f'<div class="matrix-view" data-src="{key}" data-mode="{mode}">'
            f'<div class="toggle">{buttons}</div><div class="scroll matrix-host"></div></div>')


def confusion_data(analysis: DetectionAnalysis) -> dict[str, Any]:
    """The detection confusion matrix for the page (rows truth, columns predicted, the last
    row and column background)."""
    labels = [*analysis.class_names, "background"]
    return {"labels": labels, "counts": np.asarray(analysis.confusion).astype(int).tolist(),
            "rowLabel": "truth", "colLabel": "predicted"}


def tide_data(tide: dict[str, float]) -> list[dict[str, Any]]:
    """TIDE's dAP points as bar groups: main errors, then the special ones."""
    return [{"title": "main errors (dAP50)",
             "items": [[k, float(tide[k]), c] for k, c in TIDE_MAIN if k in tide]},
            {"title": "special errors (dAP50)",
             "items": [[k, float(tide[k]), c] for k, c in TIDE_SPECIAL if k in tide]}]


def detection_section(metrics: COCOMetrics, analysis: DetectionAnalysis | None,
                      pictures: PictureSource | None, gt: dict[str, Any],
                      results: list[dict[str, Any]], threshold: float) -> Section:
    """The report section of one IoU type."""
    sid = metrics.iou_type
    data: dict[str, Any] = {f"{sid}.pr": pr_curves(metrics)}
    pr = ["<h3>Precision-recall curves</h3>",
          note("Interpolated precision at the 101 recall thresholds of the COCO evaluation "
               "(area all, 100 detections), at IoU 0.5 and averaged over IoU 0.5:0.95."),
          _pr_view(f"{sid}.pr")]
    body = [_summary(metrics),
            _columns(["<h3>Per class</h3>", _class_table(sid, metrics, analysis, threshold)],
                     pr)]
    if analysis is not None:
        data[f"{sid}.confusion"] = confusion_data(analysis)
        data[f"{sid}.tide"] = tide_data(analysis.tide)
        confusion = [
            "<h3>Confusion matrix</h3>",
            note(f"Detections with score >= {threshold:g} matched to the ground truth at IoU "
                 "0.5. Rows are the true class, columns the predicted class; the background "
                 "row holds false alarms (a detection on no object), the background column "
                 "the missed objects."),
            _matrix_view(f"{sid}.confusion")]
        tide = [
            "<h3>Error breakdown (TIDE)</h3>",
            note("dAP50: the AP50 points fixing each kind of error would add (Bolya et al., "
                 "ECCV 2020; IoU 0.5, background below IoU 0.1). Cls: right place, wrong "
                 "class; Loc: right class, poor box; Both: both wrong; Dupe: a duplicate of a "
                 "detected object; Bkg: detection on background; Miss: object never detected. "
                 "FalsePos / FalseNeg: all false positives / all missed objects fixed."),
            f'<div class="tide-view" data-src="{sid}.tide"></div>',
            note(f"AP50 by TIDE's matching: {analysis.ap50:.2f} points.")]
        body.append(_columns(confusion, tide))
        body += detection_galleries(sid, analysis, pictures, gt, results, threshold)
    return Section(sid, TITLES.get(sid, sid), "".join(body), data)

