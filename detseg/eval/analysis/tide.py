"""TIDE error types and their dAP (Bolya et al., "TIDE: A General Toolbox for Identifying
Object Detection Errors", ECCV 2020), with the numbers of the ``tidecv`` package.

Every unmatched detection (see ``matching``) gets one error, tested in this order, with IoUs
against the image's (non-crowd) ground truth, ``t_f = 0.5`` and ``t_b = 0.1``:
- ``Loc``: its best IoU with ground truth of its class is in ``[t_b, t_f]``;
- ``Cls``: IoU >= ``t_f`` with ground truth of another class;
- ``Dupe``: IoU >= ``t_f`` with matched ground truth of its class;
- ``Bkg``: IoU <= ``t_b`` with every ground truth (or the image has none);
- ``Both``: anything else (wrong class and poorly localised).
Unmatched ground truth that no ``Cls`` / ``Loc`` error points at is ``Miss``.

dAP of a type is the AP50 after fixing only that type's errors, minus the AP50 (not below 0):
a ``Cls`` / ``Loc`` error becomes a true positive of its ground truth's / own class when it is
the highest-scoring such error on an unmatched ground truth, otherwise it is dropped, as are
fixed ``Dupe``, ``Bkg`` and ``Both`` errors; fixing ``Miss`` removes those ground truths.
``FalsePos`` gives every true positive score 1 and every false positive 0; ``FalseNeg``
removes every unmatched ground truth (neither is clipped at 0). AP is TIDE's: per class,
101-point interpolated precision over recall (COCO's); the mean over classes that have
ground truth or detections (a class with detections only has AP 0). Score ties are broken
as ``tidecv`` inserts its data points: processing order, and in a fixed set errors before
true positives.

Where this differs from ``tidecv``: inputs are read as the COCO evaluator reads them (bad
entries skipped with a warning; results and annotations of categories the ground truth does
not list are left out, where ``tidecv`` would count a results-only class with AP 0; results in
polygons are rasterized), and a mean over no class is 0 (``tidecv`` divides by zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detseg.eval.analysis.matching import BG_THRESH, POS_THRESH, Matching, segment_best
from detseg.eval.analysis.scene import Scene

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_ERROR_TYPES = ("FalsePos", "FalseNeg")
CLS, LOC, BOTH, DUPE, BKG, MISS = range(6)
MATCHED = -1   # a detection or ground truth without error
_RECALLS = np.arange(101) / 100


@dataclass
class TideErrors:
    """Each detection's and ground truth's TIDE error (an index into ``ERROR_TYPES``, or
    ``MATCHED``) and what it points at.

    ``p_target [P]``: the ground-truth row of a ``Cls`` / ``Loc`` / ``Dupe`` error, else the
    detection's nearest ground truth (-1 where no IoU > 0). ``p_fixes [P]``: the error would
    become its ground truth's true positive when fixed. ``g_error [G]``: ``MATCHED`` for
    matched ground truth; for unmatched ground truth the type of the highest-scoring ``Cls`` /
    ``Loc`` error pointing at it, else ``MISS``.
    """

    p_error: np.ndarray
    p_target: np.ndarray
    p_iou: np.ndarray     # [P] IoU with ``p_target`` (0 where none)
    p_fixes: np.ndarray
    g_error: np.ndarray


def _pair_to_gt(scene: Scene, arg: np.ndarray) -> np.ndarray:
    """The ground-truth rows of pair indices ``arg`` (-1 stays -1)."""
    out = np.full(len(arg), -1, dtype=np.int64)
    out[arg >= 0] = scene.pair_g[arg[arg >= 0]]
    return out


def classify(scene: Scene, matching: Matching) -> TideErrors:
    """TIDE's error of every detection and ground truth (see the module docstring)."""
    n_p, n_g = len(scene.p_img), len(scene.g_img)
    matched = matching.matched
    g_used = np.zeros(n_g, dtype=bool)
    g_used[matched[matched >= 0]] = True
    pp, pg, iou = scene.pair_p, scene.pair_g, scene.pair_iou
    same = scene.p_cat[pp] == scene.g_cat[pg]
    everywhere = np.ones(len(pp), dtype=bool)
    a, a_arg = segment_best(pp, iou, same, n_p)
    b, b_arg = segment_best(pp, iou, ~same, n_p)
    c, c_arg = segment_best(pp, iou, same & g_used[pg], n_p)
    d, d_arg = segment_best(pp, iou, everywhere, n_p)
    error = np.full(n_p, MATCHED, dtype=np.int64)
    target = _pair_to_gt(scene, d_arg)
    p_iou = d.copy()
    open_ = matched < 0
    for kind, hit, arg, value in ((LOC, (a >= BG_THRESH) & (a <= POS_THRESH), a_arg, a),
                                  (CLS, b >= POS_THRESH, b_arg, b),
                                  (DUPE, c >= POS_THRESH, c_arg, c),
                                  (BKG, d <= BG_THRESH, d_arg, d),
                                  (BOTH, np.ones(n_p, dtype=bool), d_arg, d)):
        now = open_ & hit
        error[now] = kind
        if kind in (LOC, CLS, DUPE):
            target[now] = _pair_to_gt(scene, arg[now])
            p_iou[now] = value[now]
        open_ &= ~hit
    # A Cls / Loc error on an unmatched ground truth: the first (highest-scoring) one fixes it.
    points = np.flatnonzero(((error == CLS) | (error == LOC)) & (target >= 0))
    points = points[~g_used[target[points]]]
    gts, first = np.unique(target[points], return_index=True)
    fixes = np.zeros(n_p, dtype=bool)
    fixes[points[first]] = True
    g_error = np.where(g_used, MATCHED, MISS)
    g_error[gts] = error[points[first]]
    return TideErrors(error, target, p_iou, fixes, g_error)


def by_class(ranked: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """``ranked`` (indices, best first) grouped by ``cls``, rank order kept within a class."""
    keys = cls[ranked]
    if len(keys) and keys.max() < 1 << 15:   # numpy sorts 16-bit integers stably by radix
        keys = keys.astype(np.int16)
    return ranked[np.argsort(keys, kind="stable")]


def mean_ap(cls: np.ndarray, correct: np.ndarray, grouped: np.ndarray, num_gt: np.ndarray
            ) -> float:
    """TIDE's mean AP (0-100) of the data points ``grouped`` (indices into ``cls``,
    ``correct [N]``; by class, best first within one) with ``num_gt [K]`` positives per
    class; 0 when no class counts (has ground truth or data points)."""
    k_n = len(num_gt)
    counts = np.bincount(cls[grouped], minlength=k_n)
    hits = correct[grouped]
    ends = np.cumsum(counts)
    aps: list[float] = []
    for k in np.flatnonzero((counts > 0) | (num_gt > 0)).tolist():
        if num_gt[k] <= 0 or counts[k] == 0:
            aps.append(0.0)
            continue
        tp = np.cumsum(hits[ends[k] - counts[k]:ends[k]])
        precision = tp / np.arange(1, len(tp) + 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(tp / num_gt[k], _RECALLS, side="left")
        y = np.where(at < len(tp), precision[np.minimum(at, len(tp) - 1)], 0.0)
        aps.append(sum(y.tolist()) / len(y) * 100)
    return sum(aps) / len(aps) if aps else 0.0


def tide_scores(scene: Scene, matching: Matching, errors: TideErrors
                ) -> tuple[float, dict[str, float]]:
    """TIDE's AP50 and its dAP per error type (``ERROR_TYPES`` and ``SPECIAL_ERROR_TYPES``),
    both in AP points 0-100."""
    k_n, cat = scene.num_classes, scene.p_cat
    tp = matching.matched >= 0
    counted = ~matching.ignored
    num_gt = np.bincount(scene.g_cat, minlength=k_n)
    by_score = np.argsort(-scene.p_score, kind="stable")   # ties: processing order
    base = mean_ap(cat, tp, by_class(by_score[counted[by_score]], cat), num_gt)
    # In a fixed set tidecv lists errors first, then the true positives.
    fixed_order = by_score[np.lexsort((tp[by_score], -scene.p_score[by_score]))]
    grouped = by_class(fixed_order, cat)
    out: dict[str, float] = {}
    for kind, name in enumerate(ERROR_TYPES):
        if kind == MISS:
            gts = num_gt - np.bincount(scene.g_cat[errors.g_error == MISS], minlength=k_n)
            new = mean_ap(cat, tp, grouped[counted[grouped]], gts)
        else:
            fixed = errors.p_error == kind
            gain = fixed & errors.p_fixes
            rows = (counted & ~fixed) | gain
            if kind == CLS:   # a fixed class error counts for its ground truth's class
                cls = cat.copy()
                cls[gain] = scene.g_cat[errors.p_target[gain]]
                new = mean_ap(cls, tp | gain, by_class(fixed_order[rows[fixed_order]], cls),
                              num_gt)
            else:
                new = mean_ap(cat, tp | gain, grouped[rows[grouped]], num_gt)
        out[name] = max(new - base, 0.0)
    ranked = grouped[counted[grouped]]
    perfect = by_class(ranked[np.argsort(~tp[ranked], kind="stable")], cat)  # TPs at score 1
    out["FalsePos"] = mean_ap(cat, tp, perfect, num_gt) - base
    unmatched = np.bincount(scene.g_cat[errors.g_error != MATCHED], minlength=k_n)
    out["FalseNeg"] = mean_ap(cat, tp, ranked, num_gt - unmatched) - base
    return base, out


def error_counts(errors: TideErrors) -> dict[str, int]:
    """How many errors of each type (``ERROR_TYPES``) TIDE finds (``tidecv``'s
    ``count_errors``: a ground truth a ``Cls`` / ``Loc`` error points at is not a ``Miss``)."""
    p = np.bincount(errors.p_error[errors.p_error >= 0], minlength=len(ERROR_TYPES))
    return {name: int(p[k]) if k != MISS else int((errors.g_error == MISS).sum())
            for k, name in enumerate(ERROR_TYPES)}
