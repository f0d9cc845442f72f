"""Greedy one-to-one matching of detections to ground truth, and per-detection maxima over pairs.

TIDE's matching (Bolya et al., ECCV 2020, as ``tidecv`` does it): within an image, detections
in score order each take the unmatched ground truth of their own class with the highest IoU
(the first in file order on ties) if that IoU is at least ``POS_THRESH``. A detection left
unmatched whose crowd IoU (``|d & c| / |d|``) with a crowd region of its class is above
``POS_THRESH`` is ignored. The matching of the detections scoring at least any threshold is
the same as with every detection (greedy by score), so the counts at a score threshold read
the one matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detseg.eval.analysis.scene import Scene
from detseg.eval.coco.match import group_starts

POS_THRESH = 0.5   # IoU of a true positive (TIDE's foreground threshold)
BG_THRESH = 0.1    # IoU at or below which a false positive is background (TIDE)


@dataclass
class Matching:
    """``matched [P]`` ground-truth row of each detection (-1: none) and ``ignored [P]``
    (unmatched, on a crowd region of its class)."""

    matched: np.ndarray
    ignored: np.ndarray


def _first_in_segments(seg: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For consecutive segments ``seg [Q]`` (equal values together): the segment values that
    have an ``ok`` element and the position of their first one."""
    pos = np.flatnonzero(ok)
    if len(pos) == 0:
        return np.zeros(0, np.int64), pos
    s = seg[pos]
    first = np.ones(len(pos), dtype=bool)
    np.not_equal(s[1:], s[:-1], out=first[1:])
    return s[first], pos[first]


def greedy_match(pair_p: np.ndarray, pair_g: np.ndarray, pair_iou: np.ndarray,
                 p_img: np.ndarray, n_p: int, taken: np.ndarray) -> np.ndarray:
    """Greedy matching over candidate pairs (every pair may match; detection rows are the
    processing order, images contiguous).

    Each detection, in order, takes its candidate ground truth with the highest IoU that is not
    ``taken`` yet (lowest row on ties). ``taken [G]`` is updated. Returns ``matched [n_p]``
    (-1: none). The greedy steps run for all images at once: step ``s`` handles every image's
    ``s``-th detection that has a candidate.
    """
    matched = np.full(n_p, -1, dtype=np.int64)
    if len(pair_p) == 0:
        return matched
    order = np.lexsort((pair_g, -pair_iou, pair_p))
    pp, pg = pair_p[order], pair_g[order]
    new = np.ones(len(pp), dtype=bool)
    np.not_equal(pp[1:], pp[:-1], out=new[1:])
    cand = pp[new]                                   # detections with a candidate, in order
    step = np.arange(len(cand)) - group_starts(p_img[cand])
    owner = np.cumsum(new) - 1                       # pair -> candidate index
    by_step = np.lexsort((np.arange(len(pp)), step[owner]))
    pp, pg = pp[by_step], pg[by_step]
    step_of_pair = step[owner[by_step]]
    bounds = np.searchsorted(step_of_pair, np.arange(int(step.max()) + 2))
    for s0, s1 in zip(bounds[:-1], bounds[1:], strict=True):
        dets, first = _first_in_segments(pp[s0:s1], ~taken[pg[s0:s1]])
        chosen = pg[s0:s1][first]
        taken[chosen] = True
        matched[dets] = chosen
    return matched


def match_scene(scene: Scene) -> Matching:
    """TIDE's matching of every detection of ``scene`` (see the module docstring)."""
    same = scene.p_cat[scene.pair_p] == scene.g_cat[scene.pair_g]
    cand = same & (scene.pair_iou >= POS_THRESH)
    matched = greedy_match(scene.pair_p[cand], scene.pair_g[cand], scene.pair_iou[cand],
                           scene.p_img, len(scene.p_img), np.zeros(len(scene.g_img), bool))
    ignored = (matched < 0) & (scene.crowd_iou > POS_THRESH)
    return Matching(matched, ignored)


def segment_best(pair_p: np.ndarray, values: np.ndarray, ok: np.ndarray, n_p: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per detection, the largest ``values`` over its pairs where ``ok`` (pairs sorted by
    detection, then ground truth): ``best [n_p]`` (0 where none) and the pair index of the
    first maximum ``arg [n_p]`` (-1 where none), as ``numpy.argmax`` over a row picks it."""
    best = np.zeros(n_p)
    arg = np.full(n_p, -1, dtype=np.int64)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return best, arg
    p, v = pair_p[idx], values[idx]
    new = np.ones(len(idx), dtype=bool)
    np.not_equal(p[1:], p[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    top = np.maximum.reduceat(v, starts)
    best[p[starts]] = top
    dets, first = _first_in_segments(p, v == top[np.cumsum(new) - 1])
    arg[dets] = idx[first]
    return best, arg
