"""Identity metrics (Ristani et al. 2016): IDF1, IDP, IDR.

Each ground-truth track is paired with at most one predicted track, once for the whole
sequence, to maximise the detections they share (frames where their boxes overlap at
IoU >= 0.5): IDTP. Every other ground-truth detection is an IDFN, every other predicted
detection an IDFP; IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN). As TrackEval computes it (its
(G+T)-square cost matrix and this maximum-weight matching have the same optimum, and the three
counts follow from IDTP alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .sequence import SequenceData, maximum_assignment

#: IoU a shared detection needs
THRESHOLD = 0.5


@dataclass(frozen=True)
class IdentityCounts:
    """IDTP, IDFN, IDFP of a sequence (or of several together)."""

    idtp: int = 0
    idfn: int = 0
    idfp: int = 0


def identity_counts(seq: SequenceData) -> IdentityCounts:
    """The identity counts of one sequence."""
    gt_total, pred_total = seq.num_gt_dets, seq.num_pred_dets
    if gt_total == 0 or pred_total == 0:
        return IdentityCounts(0, gt_total, pred_total)
    gt_parts, pred_parts = [], []
    for g, p, sim in zip(seq.gt_ids, seq.pred_ids, seq.similarity, strict=True):
        rows, cols = np.nonzero(np.greater_equal(sim, THRESHOLD))
        gt_parts.append(g[rows])
        pred_parts.append(p[cols])
    gt_ids, pred_ids = np.concatenate(gt_parts), np.concatenate(pred_parts)
    if len(gt_ids) == 0:
        return IdentityCounts(0, gt_total, pred_total)
    # only the ids that share a detection with someone take part in the matching
    gt_used, gt_index = np.unique(gt_ids, return_inverse=True)
    pred_used, pred_index = np.unique(pred_ids, return_inverse=True)
    shared = np.zeros((len(gt_used), len(pred_used)))
    np.add.at(shared, (gt_index, pred_index), 1)
    rows, cols = maximum_assignment(shared)
    idtp = int(shared[rows, cols].sum())
    return IdentityCounts(idtp, gt_total - idtp, pred_total - idtp)


def combine_identity(parts: Sequence[IdentityCounts]) -> IdentityCounts:
    """Sequences (or classes) together: the counts summed."""
    return IdentityCounts(sum(p.idtp for p in parts), sum(p.idfn for p in parts),
                          sum(p.idfp for p in parts))


def identity_summary(c: IdentityCounts) -> dict[str, float | int]:
    """IDF1, IDP, IDR (fractions) and IDTP, IDFN, IDFP (counts)."""
    return {"IDF1": c.idtp / max(1.0, c.idtp + 0.5 * c.idfp + 0.5 * c.idfn),
            "IDP": c.idtp / max(1.0, c.idtp + c.idfp), "IDR": c.idtp / max(1.0, c.idtp + c.idfn),
            "IDTP": c.idtp, "IDFN": c.idfn, "IDFP": c.idfp}
