"""The detection confusion matrix at IoU 0.5 and a score threshold, and per-class counts.

Only the detections scoring at least the threshold count (the at most 100 highest-scoring of
an image, as everywhere in the analysis). The matching has two stages:
1. TIDE's class-aware matching (``matching``): a detection matched to ground truth of its
   class is a true positive, on the diagonal; one ignored on a crowd region of its class is
   not counted anywhere; crowd annotations are never rows.
2. The remaining detections, by score, each take the remaining ground truth (of another
   class, since one of its own class would have matched in stage 1) with the highest IoU
   >= 0.5: a classification confusion, at (true class, predicted class).
Detections still unmatched are false alarms, in the last row ("background"); ground truth
still unmatched is missed, in the last column. So row ``k`` sums to class ``k``'s ground
truth, and per class ``tp`` is the diagonal, ``fp`` the rest of its column and ``fn`` the
rest of its row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detseg.eval.analysis.matching import POS_THRESH, Matching, greedy_match
from detseg.eval.analysis.scene import Scene


@dataclass
class ThresholdCounts:
    """What the matching at a score threshold gives.

    ``counted [P]``: scores at least the threshold and not ignored; ``tp [P]``, ``fp [P]``:
    the counted detections matched in stage 1 / not; ``confused [P]``: the ground-truth row
    a false positive took in stage 2 (-1: none); ``found [G]``: ground truth matched in stage
    1; ``confusion [K + 1, K + 1]`` int64.
    """

    counted: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    confused: np.ndarray
    found: np.ndarray
    confusion: np.ndarray


def threshold_counts(scene: Scene, matching: Matching, score_threshold: float
                     ) -> ThresholdCounts:
    """The confusion matrix and the counts at ``score_threshold`` (see the module docstring)."""
    k_n = scene.num_classes
    counted = (scene.p_score >= score_threshold) & ~matching.ignored
    tp = counted & (matching.matched >= 0)
    fp = counted & ~tp
    found = np.zeros(len(scene.g_img), dtype=bool)
    found[matching.matched[tp]] = True
    pp, pg = scene.pair_p, scene.pair_g
    cand = fp[pp] & ~found[pg] & (scene.pair_iou >= POS_THRESH)
    taken = found.copy()
    confused = greedy_match(pp[cand], pg[cand], scene.pair_iou[cand], scene.p_img,
                            len(scene.p_img), taken)
    rows = np.concatenate([scene.g_cat[matching.matched[tp]],
                           scene.g_cat[confused[confused >= 0]],
                           np.full(int((fp & (confused < 0)).sum()), k_n),
                           scene.g_cat[~taken]])
    cols = np.concatenate([scene.p_cat[tp], scene.p_cat[confused >= 0],
                           scene.p_cat[fp & (confused < 0)],
                           np.full(int((~taken).sum()), k_n)])
    confusion = np.bincount(rows * (k_n + 1) + cols, minlength=(k_n + 1) ** 2)
    return ThresholdCounts(counted, tp, fp, confused, found,
                           confusion.reshape(k_n + 1, k_n + 1).astype(np.int64))


def per_class_counts(confusion: np.ndarray, names: list[str]) -> dict[str, dict[str, int]]:
    """``{class name: {"gt", "tp", "fp", "fn"}}`` read off a ``[K + 1, K + 1]`` confusion
    matrix (see the module docstring)."""
    k_n = len(names)
    diag = np.diag(confusion)[:k_n]
    gt = confusion[:k_n].sum(1)
    fp = confusion[:, :k_n].sum(0) - diag
    return {name: {"gt": int(gt[k]), "tp": int(diag[k]), "fp": int(fp[k]),
                   "fn": int(gt[k] - diag[k])} for k, name in enumerate(names)}
