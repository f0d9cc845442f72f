"""CLEAR MOT (Bernardin & Stiefelhagen 2008): MOTA, MOTP, identity switches, fragmentations,
mostly tracked / partially tracked / mostly lost.

Per frame, ground truth and predictions are matched at IoU >= 0.5 (Hungarian), keeping the
pairing of the previous frame where it still overlaps enough, then maximising IoU. An identity
switch is a target matched to another prediction id than at its last match; a fragmentation is
a target's track resuming after an interruption. MOTA = 1 - (FN + FP + IDSW) / GT detections,
MOTP = mean IoU of the matches. Mostly tracked: matched in more than 80% of its frames, mostly
lost: in less than 20%. As TrackEval computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from .sequence import EPS, SequenceData, maximum_assignment

#: IoU a match needs
THRESHOLD = 0.5


@dataclass(frozen=True)
class ClearCounts:
    """The summable CLEAR counts of a sequence (or of several together); ``motp_sum`` is the
    sum of the matches' IoU."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    idsw: int = 0
    mt: int = 0
    pt: int = 0
    ml: int = 0
    frag: int = 0
    motp_sum: float = 0.0


def clear_counts(seq: SequenceData) -> ClearCounts:
    """The CLEAR counts of one sequence."""
    if seq.num_pred_dets == 0:
        return ClearCounts(fn=seq.num_gt_dets, ml=seq.num_gt_ids)
    if seq.num_gt_dets == 0:
        return ClearCounts(fp=seq.num_pred_dets)
    n = seq.num_gt_ids
    frames_present, frames_matched, fragments = np.zeros(n), np.zeros(n), np.zeros(n)
    # the pred id each target was last matched to (any frame before) and in the previous frame
    last_pred, previous_pred = np.full(n, np.nan), np.full(n, np.nan)
    tp = fn = fp = idsw = 0
    motp_sum = 0.0
    for g, p, sim in zip(seq.gt_ids, seq.pred_ids, seq.similarity, strict=True):
        if len(g) == 0 or len(p) == 0:  # no matching, and the previous frame's pairs persist
            fp += len(p)
            fn += len(g)
            frames_present[g] += 1
            continue
        score = 1000 * (p[np.newaxis, :] == previous_pred[g[:, np.newaxis]]) + sim
        score[sim < THRESHOLD - EPS] = 0
        rows, cols = maximum_assignment(score)
        matched = score[rows, cols] > 0 + EPS
        rows, cols = rows[matched], cols[matched]
        matched_gt, matched_pred = g[rows], p[cols]
        before = last_pred[matched_gt]
        idsw += int(np.sum(~np.isnan(before) & (matched_pred != before)))
        frames_present[g] += 1
        frames_matched[matched_gt] += 1
        was_tracked = ~np.isnan(previous_pred)
        last_pred[matched_gt] = matched_pred
        previous_pred[:] = np.nan
        previous_pred[matched_gt] = matched_pred
        fragments += ~was_tracked & ~np.isnan(previous_pred)
        tp += len(rows)
        fn += len(g) - len(rows)
        fp += len(p) - len(rows)
        motp_sum += float(sim[rows, cols].sum())
    ratio = frames_matched[frames_present > 0] / frames_present[frames_present > 0]
    mt = int(np.sum(ratio > 0.8))
    pt = int(np.sum(ratio >= 0.2)) - mt
    frag = int(np.sum(fragments[fragments > 0] - 1))
    return ClearCounts(tp, fn, fp, idsw, mt, pt, n - mt - pt, frag, motp_sum)


def combine_clear(parts: Sequence[ClearCounts]) -> ClearCounts:
    """Sequences (or classes) together: every count summed."""
    total = {f.name: sum(getattr(p, f.name) for p in parts) for f in fields(ClearCounts)}
    return ClearCounts(**total)


def clear_summary(c: ClearCounts) -> dict[str, float | int]:
    """MOTA, MOTP, MODA, CLR_Re, CLR_Pr (fractions; MOTA and MODA may be negative), IDSW, Frag,
    MT, PT, ML, TP, FP, FN (counts)."""
    gt = max(1, c.tp + c.fn)
    return {"MOTA": (c.tp - c.fp - c.idsw) / gt, "MOTP": c.motp_sum / max(1, c.tp),
            "MODA": (c.tp - c.fp) / gt, "CLR_Re": c.tp / gt, "CLR_Pr": c.tp / max(1, c.tp + c.fp),
            "IDSW": c.idsw, "Frag": c.frag, "MT": c.mt, "PT": c.pt, "ML": c.ml, "TP": c.tp,
            "FP": c.fp, "FN": c.fn}
