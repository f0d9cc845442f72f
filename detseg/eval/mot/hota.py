"""HOTA (Luiten et al., IJCV 2021): detection, association and localisation accuracy, at each
localisation threshold alpha in 0.05, 0.10, ..., 0.95, then averaged over alpha.

Per frame, ground truth and predictions are matched (Hungarian) to maximise the IoU weighted by
how well their whole tracks align (a soft, IoU-weighted track Jaccard accumulated over the
sequence); a match counts at alpha when its IoU >= alpha. With TP/FN/FP those counts,
DetA = TP / (TP + FN + FP); each matched pair contributes its track association
A(c) = TPA / (TPA + FNA + FPA) and AssA = mean of A(c) over the TPs; HOTA = sqrt(DetA * AssA).
The numbers are TrackEval's (its tie-breaking included: the same score matrices are solved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .sequence import EPS, SequenceData, maximum_assignment

#: the localisation thresholds alpha, exactly as TrackEval forms them
ALPHAS = np.arange(0.05, 0.99, 0.05)


@dataclass(frozen=True)
class HotaCounts:
    """Per alpha (float64 ``[19]``): ``tp``, ``fn``, ``fp`` (detection counts) and the
    TP-weighted ``ass_a``, ``ass_re``, ``ass_pr`` and ``loc_a`` (mean IoU of the TPs)."""

    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    ass_a: np.ndarray
    ass_re: np.ndarray
    ass_pr: np.ndarray
    loc_a: np.ndarray


def _soft_alignment(seq: SequenceData, gt_count: np.ndarray, pred_count: np.ndarray
                    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """For every (gt id, pred id) pair that overlaps somewhere: its global alignment score
    (the sum over frames of the IoU normalised by the frame's row and column sums, as a
    Jaccard over the two tracks' lengths). Returns, per frame, the pair index of each nonzero
    IoU entry, and per pair its score, gt id and pred id."""
    keys, values, sizes = [], [], []
    for g, p, sim in zip(seq.gt_ids, seq.pred_ids, seq.similarity, strict=True):
        rows, cols = np.nonzero(sim)
        denom = sim.sum(0)[np.newaxis, :] + sim.sum(1)[:, np.newaxis] - sim
        soft = np.zeros_like(sim)
        mask = denom > 0 + EPS
        soft[mask] = sim[mask] / denom[mask]
        keys.append(g[rows] * seq.num_pred_ids + p[cols])
        values.append(soft[rows, cols])
        sizes.append(len(rows))
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    potential = np.bincount(inverse, weights=np.concatenate(values), minlength=len(unique))
    pair_gt, pair_pred = unique // seq.num_pred_ids, unique % seq.num_pred_ids
    score = potential / (gt_count[pair_gt] + pred_count[pair_pred] - potential)
    per_frame = np.split(inverse, np.cumsum(sizes)[:-1])
    return per_frame, score, pair_gt, pair_pred


def _empty(seq: SequenceData) -> HotaCounts:
    zeros = np.zeros(len(ALPHAS))
    return HotaCounts(zeros, zeros + seq.num_gt_dets, zeros + seq.num_pred_dets, zeros, zeros,
                      zeros, np.ones(len(ALPHAS)))


def hota_counts(seq: SequenceData) -> HotaCounts:
    """The HOTA counts of one sequence."""
    if seq.num_gt_dets == 0 or seq.num_pred_dets == 0:
        return _empty(seq)
    gt_count = np.bincount(np.concatenate(seq.gt_ids), minlength=seq.num_gt_ids).astype(float)
    pred_count = np.bincount(np.concatenate(seq.pred_ids),
                             minlength=seq.num_pred_ids).astype(float)
    pair_index, pair_score, pair_gt, pair_pred = _soft_alignment(seq, gt_count, pred_count)
    matched_pair, matched_iou = [], []
    for sim, index in zip(seq.similarity, pair_index, strict=True):
        if sim.size == 0:
            continue
        rows, cols = np.nonzero(sim)
        score = np.zeros_like(sim)
        score[rows, cols] = pair_score[index] * sim[rows, cols]
        lookup = np.full(sim.shape, -1, dtype=np.int64)
        lookup[rows, cols] = index
        match_rows, match_cols = maximum_assignment(score)
        matched_pair.append(lookup[match_rows, match_cols])
        matched_iou.append(sim[match_rows, match_cols])
    pairs, ious = np.concatenate(matched_pair), np.concatenate(matched_iou)
    # how many alphas each match passes: IoU >= alpha (with TrackEval's eps)
    passes = np.searchsorted(ALPHAS - EPS, ious, side="right")
    tp, loc, ass_a, ass_re, ass_pr = (np.zeros(len(ALPHAS)) for _ in range(5))
    for a in range(len(ALPHAS)):
        ok = passes > a
        tp[a], loc[a] = ok.sum(), ious[ok].sum()
        count = np.bincount(pairs[ok], minlength=len(pair_score)).astype(float)
        gt_len, pred_len = gt_count[pair_gt], pred_count[pair_pred]
        ass_a[a] = np.sum(count * count / np.maximum(1, gt_len + pred_len - count))
        ass_re[a] = np.sum(count * count / np.maximum(1, gt_len))
        ass_pr[a] = np.sum(count * count / np.maximum(1, pred_len))
    weight = np.maximum(1, tp)
    return HotaCounts(tp, seq.num_gt_dets - tp, seq.num_pred_dets - tp, ass_a / weight,
                      ass_re / weight, ass_pr / weight,
                      np.maximum(1e-10, loc) / np.maximum(1e-10, tp))


def combine_hota(parts: Sequence[HotaCounts]) -> HotaCounts:
    """Sequences (or classes) together: counts summed, association and localisation averaged
    weighted by each part's TPs, as TrackEval combines them."""
    tp = sum((p.tp for p in parts), np.zeros(len(ALPHAS)))
    fn = sum((p.fn for p in parts), np.zeros(len(ALPHAS)))
    fp = sum((p.fp for p in parts), np.zeros(len(ALPHAS)))

    def weighted(field: str) -> np.ndarray:
        return sum((getattr(p, field) * p.tp for p in parts), np.zeros(len(ALPHAS))) \
            / np.maximum(1.0, tp)

    loc = sum((p.loc_a * p.tp for p in parts), np.zeros(len(ALPHAS)))
    return HotaCounts(tp, fn, fp, weighted("ass_a"), weighted("ass_re"), weighted("ass_pr"),
                      np.maximum(1e-10, loc) / np.maximum(1e-10, tp))


def hota_curves(c: HotaCounts) -> dict[str, np.ndarray]:
    """Per alpha (``[19]``): HOTA, DetA, AssA, LocA, DetRe, DetPr, AssRe, AssPr (fractions)."""
    det_a = c.tp / np.maximum(1, c.tp + c.fn + c.fp)
    return {"HOTA": np.sqrt(det_a * c.ass_a), "DetA": det_a, "AssA": c.ass_a, "LocA": c.loc_a,
            "DetRe": c.tp / np.maximum(1, c.tp + c.fn), "DetPr": c.tp / np.maximum(1, c.tp + c.fp),
            "AssRe": c.ass_re, "AssPr": c.ass_pr}


def hota_summary(c: HotaCounts) -> dict[str, float]:
    """The HOTA metrics averaged over alpha (TrackEval's reported values), fractions 0-1."""
    return {name: float(np.mean(curve)) for name, curve in hota_curves(c).items()}
