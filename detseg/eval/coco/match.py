"""Greedy matching of detections to ground truth, every (image, category) group at once.

Detections come sorted by group and score (the caller's ``order``); ``d_key [N]`` is each one's
group. IoUs of the (detection, ground truth) pairs of a group are computed in batched blocks
and only pairs reaching the lowest IoU threshold are kept (segm: pairs whose mask areas rule
that out are skipped, the rest go to pycocotools' C mask IoU, one call per image). The greedy
matching then runs for all ``T`` thresholds x ``A`` area ranges x all groups at once, stepping
through the detections' rank among their group's candidates.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from detseg.eval.coco.ground_truth import GroundTruth
from detseg.eval.coco.results import Detections
from detseg.eval.iou import paired_box_iou

_PAIR_BLOCK = 1 << 21  # (detection, ground truth) pairs whose IoU is computed at once


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each element's run of equal keys."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return np.repeat(starts, np.diff(np.append(starts, n)))


def _pair_blocks(counts: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Split detections into consecutive ranges holding at most ~``limit`` pairs each."""
    n = len(counts)
    cum = np.cumsum(counts)
    bounds, start = [], 0
    while start < n:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + limit, side="right"))
        stop = max(stop, start + 1)
        bounds.append((start, stop))
        start = stop
    return bounds


def _expand_pairs(lo: np.ndarray, counts: np.ndarray, start: int, stop: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(detection, ground truth) index pairs for detections ``start:stop``."""
    c = counts[start:stop]
    total = int(c.sum())
    det = np.repeat(np.arange(start, stop), c)
    first = np.cumsum(c) - c
    gt = np.repeat(lo[start:stop] - first, c) + np.arange(total)
    return det, gt


def _mask_area_filter(pd: np.ndarray, pg: np.ndarray, d_area: np.ndarray, gt: GroundTruth,
                      lowest: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop pairs whose mask IoU is certainly below ``lowest``.

    The intersection is at most the smaller mask and the union at least the larger one, so
    the IoU is at most ``smaller / larger`` (for a crowd, ``|d & g| / |d| <= |g| / |d|``);
    a small margin keeps pairs the float comparison could get wrong. Empty masks have IoU 0.
    """
    assert gt.mask_area is not None  # segm evaluation
    da, ga = d_area[pd], gt.mask_area[pg]
    small, large = np.minimum(da, ga), np.where(gt.crowd[pg], da, np.maximum(da, ga))
    keep = (small > 0) & (small >= lowest * (1 - 1e-12) * large)
    return pd[keep], pg[keep]


def _mask_pair_iou(pd: np.ndarray, pg: np.ndarray, rles: list[dict], gt: GroundTruth
                   ) -> np.ndarray:
    """Exact mask IoU of each pair: one pycocotools call per image.

    Pairs come sorted by detection (hence by image); an image's ground truth is one
    contiguous range, passed whole.
    """
    iou = np.zeros(len(pd))
    if len(pd) == 0:
        return iou
    img = gt.img[pg]
    cuts = np.flatnonzero(np.diff(img)) + 1
    new_det = np.empty(len(pd), dtype=bool)
    new_det[0] = True
    np.not_equal(pd[1:], pd[:-1], out=new_det[1:])
    det_rank = np.cumsum(new_det) - 1
    g_first = np.searchsorted(gt.img, gt.img[pg[np.r_[0, cuts]]], side="left")
    g_last = np.searchsorted(gt.img, gt.img[pg[np.r_[0, cuts]]], side="right")
    crowd = gt.crowd.astype(np.uint8)
    assert gt.rles is not None  # segm evaluation
    for s0, s1, g0, g1 in zip(np.r_[0, cuts], np.r_[cuts, len(pd)], g_first, g_last,
                              strict=True):
        dets = pd[s0:s1][new_det[s0:s1]]
        mat = mask_utils.iou([rles[i] for i in dets], gt.rles[g0:g1], crowd[g0:g1].tolist())
        iou[s0:s1] = np.asarray(mat).reshape(len(dets), g1 - g0)[
            det_rank[s0:s1] - det_rank[s0], pg[s0:s1] - g0]
    return iou


def candidate_pairs(gt: GroundTruth, dets: Detections, d_key: np.ndarray, order: np.ndarray,
                    lowest: float, segm: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (detection, ground truth, IoU) of the same group with IoU >= ``lowest``, by
    mask IoU (``segm``) or box IoU.

    Detections are the rows ``order`` of ``dets`` (``d_key`` their groups, sorted); returned
    detection indices are positions in ``order``, ground-truth ones rows of ``gt``.
    """
    lo = np.searchsorted(gt.key, d_key, side="left")
    counts = np.searchsorted(gt.key, d_key, side="right") - lo
    out_d, out_g, out_iou = [], [], []
    if segm:
        assert dets.rles is not None and dets.mask_area is not None
        rles = [dets.rles[i] for i in order]
        d_area = dets.mask_area[order]
    else:
        assert dets.box is not None
        d_box = dets.box[order]
    for start, stop in _pair_blocks(counts, _PAIR_BLOCK):
        pd, pg = _expand_pairs(lo, counts, start, stop)
        if segm:
            pd, pg = _mask_area_filter(pd, pg, d_area, gt, lowest)
            iou = _mask_pair_iou(pd, pg, rles, gt)
        else:
            iou = paired_box_iou(d_box[pd], gt.box[pg], gt.crowd[pg])
        keep = iou >= lowest
        out_d.append(pd[keep])
        out_g.append(pg[keep])
        out_iou.append(iou[keep])
    if not out_d:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_d), np.concatenate(out_g), np.concatenate(out_iou)


def match(gt: GroundTruth, dets: Detections, d_key: np.ndarray, order: np.ndarray,
          out_area: np.ndarray, iou_thrs: np.ndarray, area_rng: np.ndarray, segm: bool
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of all groups, thresholds and area ranges at once (pycocotools' rules).

    ``iou_thrs [T]`` (1 already read as ``1 - 1e-10``), ``area_rng [A, 2]``; ``out_area [A, N]``
    flags the detections ``order`` outside each area range. Returns the positions ``[C]`` of
    the detections that have a pair with IoU >= the lowest threshold (the only ones that can
    match) and their ``tp [A, T, C]`` and ``counted [A, T, C]`` (not ignored) flags; every
    other detection is a false positive unless ``out_area`` ignores it.
    """
    a_n, t_n = len(area_rng), len(iou_thrs)
    lo_a, hi_a = area_rng[:, 0:1], area_rng[:, 1:2]
    gt_ig = gt.crowd[None, :] | (gt.area[None, :] < lo_a) | (gt.area[None, :] > hi_a)
    pd, pg, piou = candidate_pairs(gt, dets, d_key, order, float(iou_thrs.min()), segm)
    if len(pd) == 0:
        none = np.zeros((a_n, t_n, 0), bool)
        return np.zeros(0, np.int64), none, none
    # Candidate detections (those with a pair) and their step = rank among the group's
    # candidates; the greedy order only matters within a group.
    new = np.empty(len(pd), dtype=bool)
    new[0] = True
    np.not_equal(pd[1:], pd[:-1], out=new[1:])
    cand = pd[new]                                  # sorted detection positions
    blk = np.cumsum(new) - 1                        # pair -> candidate index
    step = np.arange(len(cand)) - group_starts(d_key[cand])
    by_step = np.argsort(step, kind="stable")       # candidate order processed step by step
    slot = np.empty(len(cand), dtype=np.int64)
    slot[by_step] = np.arange(len(cand))
    pslot = slot[blk]
    # Within a detection: best IoU first, later ground truth first on ties (pycocotools
    # keeps the last of equal IoUs); non-ignored ground truth before ignored ones.
    base = np.lexsort((-pg, -piou, pslot))
    pslot_sorted = pslot[base]
    slot_start = np.searchsorted(pslot_sorted, np.arange(len(cand) + 1))
    step_sorted = step[by_step]
    n_steps = int(step_sorted[-1]) + 1
    step_start = np.searchsorted(step_sorted, np.arange(n_steps + 1))
    g_a = np.empty((a_n, len(pd)), dtype=np.int64)
    iou_a = np.empty((a_n, len(pd)))
    for a in range(a_n):
        perm = base[np.argsort(pslot_sorted * 2 + gt_ig[a, pg[base]], kind="stable")]
        g_a[a] = pg[perm]
        iou_a[a] = piou[perm]
    g_n = len(gt.key)
    taken = np.zeros((a_n, t_n, g_n + 1), dtype=bool)     # column g_n: where misses write
    matched = np.full((a_n, t_n, len(cand)), -1, dtype=np.int64)
    ai = np.arange(a_n)[:, None, None]
    ti = np.arange(t_n)[None, :, None]
    thr = iou_thrs[None, :, None]
    for s in range(n_steps):
        b0, b1 = step_start[s], step_start[s + 1]
        p0, p1 = slot_start[b0], slot_start[b1]
        g = g_a[:, p0:p1]
        width = p1 - p0
        free = ~taken[ai, ti, g[:, None, :]] | gt.crowd[g][:, None, :]
        valid = (iou_a[:, None, p0:p1] >= thr) & free
        pos = np.where(valid, np.arange(width), width)
        first = np.minimum.reduceat(pos, slot_start[b0:b1] - p0, axis=2)     # [A, T, nb]
        hit = first < width
        chosen = np.take_along_axis(g[:, None, :], np.minimum(first, width - 1), axis=2)
        taken[ai, ti, np.where(hit, chosen, g_n)] = True
        matched[:, :, b0:b1] = np.where(hit, chosen, -1)
    # Flags in step order, then back to detection order (slot j holds candidate by_step[j]).
    hit = matched >= 0
    # pycocotools stores matches by id: a ground truth whose id is 0 counts as no match.
    lookup = gt_ig.astype(np.uint8) | ((gt.ann_id == 0).astype(np.uint8) << 1)[None, :]
    code = lookup[ai, np.maximum(matched, 0)]
    counted = hit & ((code & 2) == 0)
    ignored = (hit & ((code & 1) != 0)) | (~counted & out_area[:, None, cand[by_step]])
    return cand, (counted & ~ignored)[:, :, slot], ~ignored[:, :, slot]
