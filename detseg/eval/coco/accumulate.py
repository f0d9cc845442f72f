"""Precision/recall arrays from the matches, and the 12 summary numbers (pycocotools' rules).

Precision and recall are accumulated per (area range, max detections) over all categories at
once, from the true positives only (precision rises only there): counts of counted detections
before each true positive come from one cumulative sum, and the interpolated precision at the
recall thresholds is read off with segmented maxima.
"""

from __future__ import annotations

import numpy as np

from detseg.eval.coco.ground_truth import GroundTruth
from detseg.eval.coco.match import group_starts, match
from detseg.eval.coco.params import Params
from detseg.eval.coco.results import Detections

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
             "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def accumulate(gt: GroundTruth, dets: Detections, params: Params
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``precision [T, R, K, A, M]``, ``recall [T, K, A, M]`` and ``scores [T, R, K, A, M]``.

    As pycocotools' ``COCOeval.eval``: -1 where a category has no ground truth in the area
    range; ``K`` is ``gt``'s categories (a ``select``-ed ground truth and ``restrict``-ed
    detections, whose category indices are the same).
    """
    iou_thrs, area_rng = params.iou_array, params.area_array
    k_n = len(gt.cat_ids)
    t_n, r_n, a_n, m_n = len(iou_thrs), len(params.rec_thrs), len(area_rng), len(params.max_dets)
    precision = -np.ones((t_n, r_n, k_n, a_n, m_n))
    recall = -np.ones((t_n, k_n, a_n, m_n))
    scores = -np.ones((t_n, r_n, k_n, a_n, m_n))
    if k_n == 0:
        return precision, recall, scores
    # Group detections by (image, category), highest score first, row order on ties.
    d_key_all = dets.img * k_n + dets.cat
    order = np.argsort(-dets.score, kind="stable")
    order = order[np.argsort(d_key_all[order], kind="stable")]
    rank = np.arange(len(order)) - group_starts(d_key_all[order])
    keep = rank < params.max_dets[-1]
    order, rank = order[keep], rank[keep]
    d_key, d_cat, d_score = d_key_all[order], dets.cat[order], dets.score[order]
    lo_a, hi_a = area_rng[:, 0:1], area_rng[:, 1:2]
    d_area = dets.area[order]
    out_area = (d_area[None, :] < lo_a) | (d_area[None, :] > hi_a)           # [A, N]
    cand, tp, counted = match(gt, dets, d_key, order, out_area, iou_thrs, area_rng,
                              params.iou_type == "segm")
    # Accumulation order: category, then score (descending), then image, then row order.
    acc = np.argsort(-d_score, kind="stable")
    acc = acc[np.argsort(d_cat[acc], kind="stable")]
    acc_pos = np.empty(len(acc), dtype=np.int64)
    acc_pos[acc] = np.arange(len(acc))
    gt_ok = ~(gt.crowd[None, :] | (gt.area[None, :] < lo_a) | (gt.area[None, :] > hi_a))
    npig = np.stack([np.bincount(gt.cat[gt_ok[a]], minlength=k_n) for a in range(a_n)])
    rec_thrs = np.array(params.rec_thrs)
    for m, md in enumerate(params.max_dets):
        in_m = rank[acc] < md
        sel = acc[in_m]
        sel_pos = np.cumsum(in_m) - 1                  # position among the selected
        lens = np.bincount(d_cat[sel], minlength=k_n)
        starts = np.cumsum(lens) - lens
        c_in = rank[cand] < md
        c_pos = sel_pos[acc_pos[cand[c_in]]]
        c_order = np.argsort(c_pos)
        c_pos = c_pos[c_order]
        c_idx = np.flatnonzero(c_in)[c_order]
        c_cat = d_cat[cand[c_idx]]
        c_score = d_score[cand[c_idx]]
        first_score = np.zeros(k_n)
        first_score[lens > 0] = d_score[sel[starts[lens > 0]]]
        for a in range(a_n):
            kept = ~out_area[a, sel]
            q, ss, rc = _precision_recall(
                tp[a][:, c_idx], counted[a][:, c_idx], kept[c_pos], c_pos, c_cat, c_score,
                np.cumsum(kept), lens, starts, first_score, npig[a], rec_thrs)
            has_gt = npig[a] > 0
            precision[:, :, has_gt, a, m] = q.transpose(0, 2, 1)[:, :, has_gt]
            scores[:, :, has_gt, a, m] = ss.transpose(0, 2, 1)[:, :, has_gt]
            recall[:, has_gt, a, m] = rc[:, has_gt]
    return precision, recall, scores



def _precision_recall(tp: np.ndarray, counted: np.ndarray, kept: np.ndarray, pos: np.ndarray,
                      cat: np.ndarray, score: np.ndarray, kept_cum: np.ndarray, lens: np.ndarray,
                      starts: np.ndarray, first_score: np.ndarray, npig: np.ndarray,
                      rec_thrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolated precision and scores ``[T, K, R]`` and recall ``[T, K]`` of one setting.

    The detections of the setting are sorted by category (segments of ``lens`` starting at
    ``starts``), score descending within. Only the candidates (``C`` detections that have an
    IoU >= 0.5 pair, at sorted positions ``pos`` with categories ``cat`` and scores ``score``)
    can be true positives: ``tp``/``counted [T, C]`` are their flags, ``kept [C]`` their
    default not-ignored flag that ``kept_cum [N]`` (cumulative over all detections) counts.

    pycocotools' precision ``tp_c / (fp_c + tp_c + eps)`` only rises at true positives, so the
    interpolated precision at a recall threshold is the maximum over the true positives from
    the one where that recall is reached; ``fp_c`` there is the number of counted detections
    so far minus ``tp_c``. Values for categories without ground truth are meaningless (the
    caller keeps -1 there).
    """
    t_n = tp.shape[0]
    k_n, r_n = len(lens), len(rec_thrs)
    # Counted (not ignored) detections up to each candidate inclusive, within its category:
    # the default flags of everything plus the candidates' corrections at each threshold.
    kept_cum = np.append(0, kept_cum)              # kept_cum[i]: kept among the first i
    before = kept_cum[starts]
    base = kept_cum[pos + 1] - before[cat]
    corr = counted.astype(np.int64) - kept[None, :]
    corr_cum = np.cumsum(corr, axis=1)
    c_lens = np.bincount(cat, minlength=k_n)
    c_starts = np.cumsum(c_lens) - c_lens
    if len(pos):
        corr_cum -= np.repeat(np.concatenate([np.zeros((t_n, 1), np.int64), corr_cum], 1)
                              [:, c_starts], c_lens, axis=1)
    n_counted = base[None, :] + corr_cum
    # True positives in (t, category, position) order, with their rank j within the category.
    tt, cc = np.nonzero(tp)
    tp_cat = cat[cc]
    seg = tt * k_n + tp_cat
    ntp = np.bincount(seg, minlength=t_n * k_n)
    seg_start = np.cumsum(ntp) - ntp
    j = np.arange(len(seg)) - seg_start[seg] + 1
    tp_f = j.astype(np.float64)
    fp_f = (n_counted[tt, cc] - j).astype(np.float64)
    pr = tp_f / (fp_f + tp_f + np.spacing(1))
    ntp = ntp.reshape(t_n, k_n)
    npig_f = np.maximum(npig, 1).astype(np.float64)
    rc = ntp / npig_f                               # final recall; 0 without detections
    # Smallest true-positive count v whose recall v / npig reaches each threshold, exactly as
    # the float division compares (checked on the neighbours of v ~ thr * npig). A threshold
    # of 0 is reached at the category's first detection, whatever it is.
    cand = np.floor(rec_thrs[None, :] * npig_f[:, None])[:, :, None] - 1 + np.arange(4)
    cand = np.maximum(cand, 1)
    ok = cand / npig_f[:, None, None] >= rec_thrs[None, :, None]
    need = np.take_along_axis(cand, ok.argmax(axis=2)[:, :, None], axis=2)[:, :, 0]
    need = need.astype(np.int64)                                                  # [K, R]
    reached = need[None] <= ntp[:, :, None]                                       # [T, K, R]
    local = np.minimum(need[None] - 1, ntp[:, :, None])
    seg_base = seg_start.reshape(t_n, k_n)[:, :, None]
    # Maximum of pr from the v-th true positive to the category's last: block maxima between
    # consecutive query positions, then a suffix maximum over the blocks.
    bounds = np.concatenate([seg_base + local, seg_base + ntp[:, :, None]], axis=2)
    pr_ext = np.append(pr, 0.0)
    blocks = np.maximum.reduceat(pr_ext, bounds.ravel()).reshape(t_n, k_n, r_n + 1)[:, :, :r_n]
    blocks[~reached] = 0.0
    q = np.maximum.accumulate(blocks[:, :, ::-1], axis=2)[:, :, ::-1]
    tp_score = np.append(score[cc], 0.0)
    ss = np.where(reached, tp_score[np.minimum(seg_base + local, len(cc))], 0.0)
    ss[:, :, rec_thrs <= 0] = first_score[None, :, None]
    return q, ss, rc


def _pycocotools_max_dets(max_dets: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Max detections of the AP number, of AR1/AR10/AR100 and of the other numbers.

    pycocotools reads ``AP`` at 100 (-1 when 100 is not in ``max_dets``), ``AR1``/``AR10``/
    ``AR100`` at ``max_dets[0]``/``[1]``/``[2]`` and the rest at ``max_dets[2]``; it fails
    with fewer than three. Then the list is padded with its last value and ``AP`` is read
    there too, so ``max_dets=[300]`` gives every number at 300.
    """
    if len(max_dets) >= 3:
        return 100, max_dets[0], max_dets[1], max_dets[2]
    padded = (*max_dets, max_dets[-1], max_dets[-1])
    return max_dets[-1], padded[0], padded[1], padded[2]


def summarize(precision: np.ndarray, recall: np.ndarray, params: Params) -> dict[str, float]:
    """The 12 COCO summary numbers keyed by ``STAT_KEYS`` (-1 where undefined).

    Read from ``precision [T, R, K, A, M]`` and ``recall [T, K, A, M]`` as pycocotools'
    ``summarize()`` does: means over the entries > -1, IoU 0.5/0.75 and the area labels
    ``all``/``small``/``medium``/``large`` looked up in ``params`` (-1 when missing). The
    key names are those of the default ``max_dets``; see ``_pycocotools_max_dets``.
    """
    iou_thrs = np.array(params.iou_thrs)

    def one(ap: bool, md: int, iou_thr: float | None = None, area: str = "all") -> float:
        aind = [i for i, label in enumerate(params.area_labels) if label == area]
        mind = [i for i, m in enumerate(params.max_dets) if m == md]
        s = precision if ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == iou_thrs)[0]]
        s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    ap_md, m0, m1, m2 = _pycocotools_max_dets(params.max_dets)
    values = [
        one(True, ap_md), one(True, m2, 0.5), one(True, m2, 0.75),
        one(True, m2, area="small"), one(True, m2, area="medium"), one(True, m2, area="large"),
        one(False, m0), one(False, m1), one(False, m2),
        one(False, m2, area="small"), one(False, m2, area="medium"), one(False, m2, area="large"),
    ]
    return dict(zip(STAT_KEYS, values, strict=True))


def per_class_ap(precision: np.ndarray, names: list[str], params: Params) -> dict[str, float]:
    """Category name -> AP over the IoU thresholds, at the ``all`` area range (the first one
    when no range is labelled ``all``) and the most detections; -1 without ground truth."""
    a = params.area_labels.index("all") if "all" in params.area_labels else 0
    out = {}
    for k, name in enumerate(names):
        s = precision[:, :, k, a, -1]
        out[name] = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
    return out
