"""PASCAL VOC average precision (2007 11-point and all-point), ``difficult`` objects ignored.

Matching follows the VOC devkit: detections of a class are taken by descending score (ties in
input order); each goes to the ground-truth box of the same image and class with the highest
IoU (the first on ties). Above the threshold (strictly) it is a true positive if that box is
not yet taken, a false positive if it is, and neither when the box is ``difficult``. Below it
is a false positive. Since every detection's best box does not depend on the order, the whole
matching is vectorized: a detection is a true positive iff it is the first above-threshold
detection on its (non-difficult) best box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """Area under a precision/recall curve the VOC way.

    Args:
        recall, precision: cumulative values after each detection (descending score).
        use_07_metric: VOC2007's mean of the maximum precision at recall >= 0, 0.1, ..., 1
            (11 points); otherwise (VOC2010+) the exact area under the monotone envelope.
    """
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):  # the devkit's points, float quirks included
            above = prec[rec >= t]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


@dataclass
class VOCMetrics:
    """VOC evaluation result.

    Attributes:
        mAP: mean AP over the classes with at least one non-difficult ground truth.
        per_class: class name -> AP (-1 for a class without non-difficult ground truth).
        precision, recall: class name -> cumulative curves (descending score).
        iou_threshold, use_07_metric: the settings used.
    """

    mAP: float
    per_class: dict[str, float]
    iou_threshold: float
    use_07_metric: bool
    precision: dict[str, np.ndarray] = field(default_factory=dict)
    recall: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"mAP", "per_class", "iou_threshold", "use_07_metric"}``."""
        return {"mAP": self.mAP, "per_class": dict(self.per_class),
                "iou_threshold": self.iou_threshold, "use_07_metric": self.use_07_metric}


def _table(entries: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
           keys: Sequence[str]) -> tuple[list[Any], dict[str, list[np.ndarray]]]:
    items = entries.items() if isinstance(entries, Mapping) else enumerate(entries)
    ids: list[Any] = []
    cols: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for image_id, entry in items:
        ids.append(image_id)
        n = len(np.asarray(entry["labels"]).reshape(-1))
        for k in keys:
            if k == "difficult" and k not in entry:
                cols[k].append(np.zeros(n, dtype=bool))
            else:
                shape = (-1, 4) if k == "boxes" else (-1,)
                cols[k].append(np.asarray(entry[k]).reshape(shape))
    return ids, cols


def voc_evaluate(detections: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
                 ground_truth: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
                 class_names: Sequence[str] | Mapping[int, str] | None = None,
                 iou_threshold: float = 0.5, use_07_metric: bool = False,
                 inclusive: bool = False) -> VOCMetrics:
    """VOC AP per class and mAP.

    Args:
        detections: per image (a mapping image id -> entry, or a list aligned with
            ``ground_truth``) a dict with ``boxes [N, 4]`` xyxy, ``labels [N]``, ``scores [N]``
            (numpy arrays, lists or CPU tensors).
        ground_truth: per image ``boxes [M, 4]`` xyxy, ``labels [M]`` and optional
            ``difficult [M]`` flags.
        class_names: names indexed by label (a list, or a mapping label -> name); labels
            without a name are called by their number.
        iou_threshold: a detection matches when IoU > threshold (strictly, as the devkit).
        use_07_metric: VOC2007 11-point AP instead of the all-point area.
        inclusive: boxes are inclusive pixel indices (the devkit's ``+1`` in widths and heights).
    """
    gt_ids, gt = _table(ground_truth, ("boxes", "labels", "difficult"))
    dt_ids, dt = _table(detections, ("boxes", "labels", "scores"))
    index = {image_id: i for i, image_id in enumerate(gt_ids)}
    missing = [i for i in dt_ids if i not in index]
    if missing:
        raise KeyError(f"detections for images without ground truth entries: {missing[:5]}")
    empty = [np.zeros(0)]  # what np.concatenate gets when no image has entries
    g_img = np.concatenate([np.full(len(b), i) for i, b in enumerate(gt["labels"])] or empty)
    d_img = np.concatenate([np.full(len(b), index[i])
                            for i, b in zip(dt_ids, dt["labels"], strict=True)] or empty)
    g_img, d_img = g_img.astype(np.int64), d_img.astype(np.int64)
    g_box = np.concatenate(gt["boxes"] or [np.zeros((0, 4))]).astype(np.float64).reshape(-1, 4)
    g_lab = np.concatenate(gt["labels"] or empty).astype(np.int64)
    g_dif = np.concatenate(gt["difficult"] or empty).astype(bool)
    d_box = np.concatenate(dt["boxes"] or [np.zeros((0, 4))]).astype(np.float64).reshape(-1, 4)
    d_lab = np.concatenate(dt["labels"] or empty).astype(np.int64)
    d_score = np.concatenate(dt["scores"] or empty).astype(np.float64)
    labels = np.union1d(g_lab, d_lab)
    names = _names(class_names)

    best_gt, best_iou = _best_match(d_img, d_lab, d_box, g_img, g_lab, g_box, inclusive)
    above = best_iou > iou_threshold
    difficult = np.zeros(len(d_lab), dtype=bool)
    difficult[above] = g_dif[best_gt[above]]
    # Class by class, highest score first: the first detection on a box takes it.
    order = np.lexsort((-d_score, d_lab)) if len(d_lab) else np.zeros(0, np.int64)
    claims = above & ~difficult
    first_claim = np.zeros(len(d_lab), dtype=bool)
    claimed = np.flatnonzero(claims[order])
    if len(claimed):
        boxes_in_order = best_gt[order[claimed]]
        _, first = np.unique(boxes_in_order, return_index=True)
        first_claim[order[claimed[first]]] = True
    tp = first_claim
    fp = ~first_claim & ~(above & difficult)
    per_class, precision, recall = {}, {}, {}
    aps = []
    for label in labels.tolist():
        name = names.get(label, str(label))
        npos = int(np.count_nonzero((g_lab == label) & ~g_dif))
        idx = order[d_lab[order] == label]
        tp_c = np.cumsum(tp[idx]).astype(np.float64)
        fp_c = np.cumsum(fp[idx]).astype(np.float64)
        prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
        rec = tp_c / npos if npos else np.zeros_like(tp_c)
        precision[name], recall[name] = prec, rec
        if npos == 0:
            per_class[name] = -1.0
            continue
        per_class[name] = voc_ap(rec, prec, use_07_metric)
        aps.append(per_class[name])
    mean = float(np.mean(aps)) if aps else -1.0
    return VOCMetrics(mean, per_class, iou_threshold, use_07_metric, precision, recall)


def _names(class_names: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    if class_names is None:
        return {}
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return {i: str(n) for i, n in enumerate(class_names)}


def _best_match(d_img: np.ndarray, d_lab: np.ndarray, d_box: np.ndarray, g_img: np.ndarray,
                g_lab: np.ndarray, g_box: np.ndarray, inclusive: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the ground truth of its image and class with the highest IoU
    (the first on ties) and that IoU (0 and index -1 when there is none)."""
    n = len(d_img)
    best_gt = np.full(n, -1, dtype=np.int64)
    best_iou = np.zeros(n)
    if n == 0 or len(g_img) == 0:
        return best_gt, best_iou
    g_key = g_img * (int(max(g_lab.max(), d_lab.max())) + 1) + g_lab
    d_key = d_img * (int(max(g_lab.max(), d_lab.max())) + 1) + d_lab
    g_order = np.argsort(g_key, kind="stable")
    g_sorted = g_key[g_order]
    lo = np.searchsorted(g_sorted, d_key, side="left")
    counts = np.searchsorted(g_sorted, d_key, side="right") - lo
    det = np.repeat(np.arange(n), counts)
    first = np.cumsum(counts) - counts
    pair_gt = g_order[np.repeat(lo - first, counts) + np.arange(int(counts.sum()))]
    one = 1.0 if inclusive else 0.0
    db, gb = d_box[det], g_box[pair_gt]
    iw = np.minimum(db[:, 2], gb[:, 2]) - np.maximum(db[:, 0], gb[:, 0]) + one
    ih = np.minimum(db[:, 3], gb[:, 3]) - np.maximum(db[:, 1], gb[:, 1]) + one
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_d = (db[:, 2] - db[:, 0] + one) * (db[:, 3] - db[:, 1] + one)
    area_g = (gb[:, 2] - gb[:, 0] + one) * (gb[:, 3] - gb[:, 1] + one)
    union = area_d + area_g - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    # Per detection: highest IoU, then the earliest ground truth.
    pick = np.lexsort((pair_gt, -iou, det))
    take = pick[np.r_[True, det[pick][1:] != det[pick][:-1]]] if len(pick) else pick
    best_gt[det[take]] = pair_gt[take]
    best_iou[det[take]] = iou[take]
    return best_gt, best_iou
