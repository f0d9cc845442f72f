"""One sequence ready for the metrics: per frame, the target ids, the prediction ids and their
box IoU, after the class conventions of ``preprocess`` are applied.

Only frames holding a ground-truth row or a prediction are kept: a frame with neither changes
no metric (TrackEval's loops skip it too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

from .io import MotTable
from .preprocess import ABSENT, DISTRACTOR, TARGET, ClassSubset

EPS = np.finfo(float).eps
#: IoU a prediction needs with a distractor to be removed with it
DISTRACTOR_IOU = 0.5


@dataclass(frozen=True)
class SequenceData:
    """Per frame (ascending), ``gt_ids`` int64 ``[G_t]`` and ``pred_ids`` int64 ``[P_t]``
    relabelled to ``0..num_gt_ids-1`` / ``0..num_pred_ids-1`` in ascending order of the file's
    ids, and ``similarity`` float64 ``[G_t, P_t]``: box IoU, rows and columns in file order."""

    gt_ids: list[np.ndarray]
    pred_ids: list[np.ndarray]
    similarity: list[np.ndarray]
    num_gt_ids: int
    num_pred_ids: int

    @property
    def num_gt_dets(self) -> int:
        return sum(len(ids) for ids in self.gt_ids)

    @property
    def num_pred_dets(self) -> int:
        return sum(len(ids) for ids in self.pred_ids)


def maximum_assignment(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns ``([K], [K])`` of the one-to-one assignment with the largest total
    ``score`` (``[N, M]``; K = min(N, M)), by the Hungarian algorithm (scipy)."""
    rows, cols = linear_sum_assignment(-score)
    return rows, cols


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` ``[N, 4]`` with boxes ``b`` ``[M, 4]`` (xywh pixels): ``[N, M]``.

    A box of zero area has IoU 0 with everything. Corners are formed as ``x + w`` first and the
    areas from the corners, as TrackEval does, so values at the exact thresholds agree.
    """
    a = np.concatenate([a[:, :2], a[:, :2] + a[:, 2:]], axis=1)
    b = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.maximum(hi[..., 0] - lo[..., 0], 0) * np.maximum(hi[..., 1] - lo[..., 1], 0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    inter[area_a <= EPS, :] = 0
    inter[:, area_b <= EPS] = 0
    inter[union <= EPS] = 0
    union[union <= EPS] = 1
    return inter / union


def _kept_by_distractors(similarity: np.ndarray, roles: np.ndarray) -> np.ndarray:
    """Bool ``[P_t]``: the predictions not matched to a distractor. Predictions are matched to
    all present ground-truth rows of the frame (maximum total IoU, IoU >= 0.5)."""
    keep = np.ones(similarity.shape[1], dtype=bool)
    if not (roles == DISTRACTOR).any() or similarity.shape[1] == 0:
        return keep
    scores = similarity.copy()
    scores[scores < DISTRACTOR_IOU - EPS] = 0
    rows, cols = maximum_assignment(scores)
    matched = scores[rows, cols] > EPS
    rows, cols = rows[matched], cols[matched]
    keep[cols[roles[rows] == DISTRACTOR]] = False
    return keep


def _frame_slices(frames: np.ndarray, sorted_frames: np.ndarray) -> np.ndarray:
    return np.stack([np.searchsorted(sorted_frames, frames, "left"),
                     np.searchsorted(sorted_frames, frames, "right")], axis=1)


def _relabel(per_frame: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """The ids mapped to ``0..n-1`` in ascending order of the file's ids, and ``n``."""
    if not per_frame:
        return [], 0
    unique, inverse = np.unique(np.concatenate(per_frame), return_inverse=True)
    bounds = np.cumsum([len(ids) for ids in per_frame])[:-1]
    return [part.astype(np.int64) for part in np.split(inverse, bounds)], len(unique)


def build_sequence(gt: MotTable, pred: MotTable, subset: ClassSubset) -> SequenceData:
    """The metrics' view of one sequence for one class subset (see ``preprocess``)."""
    present = subset.gt_roles != ABSENT
    gt, roles, pred = gt.where(present), subset.gt_roles[present], pred.where(subset.pred_mask)
    g_order = np.argsort(gt.frame, kind="stable")
    p_order = np.argsort(pred.frame, kind="stable")
    g_frame, p_frame = gt.frame[g_order], pred.frame[p_order]
    g_boxes, g_ids, roles = gt.boxes[g_order], gt.ids[g_order], roles[g_order]
    p_boxes, p_ids = pred.boxes[p_order], pred.ids[p_order]
    frames = np.union1d(g_frame, p_frame)
    g_slices, p_slices = _frame_slices(frames, g_frame), _frame_slices(frames, p_frame)
    gt_ids, pred_ids, similarity = [], [], []
    for (g0, g1), (p0, p1) in zip(g_slices, p_slices, strict=True):
        sim = box_iou_xywh(g_boxes[g0:g1], p_boxes[p0:p1])
        keep = _kept_by_distractors(sim, roles[g0:g1])
        target = roles[g0:g1] == TARGET
        gt_ids.append(g_ids[g0:g1][target])
        pred_ids.append(p_ids[p0:p1][keep])
        similarity.append(sim[target][:, keep])
    gt_ids, num_gt_ids = _relabel(gt_ids)
    pred_ids, num_pred_ids = _relabel(pred_ids)
    return SequenceData(gt_ids, pred_ids, similarity, num_gt_ids, num_pred_ids)
