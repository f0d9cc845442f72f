"""One evaluation's detections and ground truth as arrays in TIDE's processing order, with the
IoU of every overlapping (detection, ground truth) pair of an image.

Parsing is the COCO evaluator's (``parse_ground_truth``, ``parse_results``): the same entries
are skipped with the same warnings, and results of unknown images or categories are left out.
As TIDE (and ``tidecv``) processes them: images in the ground-truth file's order, an image's
detections by score (highest first, file order on ties), at most ``MAX_DETS`` of them per image
whatever their class; ground truth in file order; crowd annotations (``iscrowd``) are kept
apart as ignore regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from detseg.eval.coco.ground_truth import GroundTruth, parse_ground_truth
from detseg.eval.coco.json_input import integer_id, paused_gc
from detseg.eval.coco.match import group_starts
from detseg.eval.coco.results import Detections, parse_results
from detseg.eval.iou import paired_box_iou

MAX_DETS = 100        # detections per image, as TIDE's COCO data
_PAIR_BLOCK = 1 << 21  # (detection, ground truth) pairs whose IoU is computed at once


@dataclass
class Scene:
    """Arrays of one evaluation: ``P`` detections, ``G`` ground truth, ``C`` crowd regions,
    ``Q`` (detection, ground truth) pairs of an image with IoU > 0.

    Boxes are COCO ``xywh`` pixels (for ``segm``, the masks' bounding boxes). Image indices
    point into ``img_ids``, category indices into ``cat_ids``.
    """

    iou_type: str
    img_ids: np.ndarray        # [I] sorted image ids
    img_rank: np.ndarray       # [I] position of each image in the ground-truth file
    file_names: list[str]      # [I] each image's file_name ('' where the entry has none)
    cat_ids: np.ndarray        # [K] sorted category ids
    cat_names: list[str]       # [K]
    p_img: np.ndarray          # [P] image index; detections in processing order
    p_cat: np.ndarray          # [P] category index
    p_score: np.ndarray        # [P] float64
    p_box: np.ndarray          # [P, 4] xywh
    p_index: np.ndarray        # [P] position in the results list
    g_img: np.ndarray          # [G] image index; ground truth in file order (by image)
    g_cat: np.ndarray          # [G]
    g_box: np.ndarray          # [G, 4] xywh
    g_area: np.ndarray         # [G] the 'area' field (square pixels; computed where missing)
    g_index: np.ndarray        # [G] position in the annotations list
    crowd_iou: np.ndarray      # [P] largest crowd IoU (|d & c| / |d|) with a same-class region
    pair_p: np.ndarray         # [Q] detection row, sorted
    pair_g: np.ndarray         # [Q] ground-truth row, sorted within a detection
    pair_iou: np.ndarray       # [Q] float64 IoU > 0 (pycocotools' values)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """``K``, the ground truth's categories."""
        return len(self.cat_ids)


def _image_order(data: dict, gt: GroundTruth) -> tuple[np.ndarray, list[str]]:
    """Each image's first position among the usable ``images`` entries, and its file_name
    (from the last entry of that id, as the parser keeps)."""
    first: dict[int, int] = {}
    names: dict[int, str] = {}
    for i in gt.image_entries:
        entry = data["images"][i]
        img_id = integer_id(entry["id"])
        assert img_id is not None  # the parser kept only integer ids
        first.setdefault(img_id, len(first))
        names[img_id] = str(entry.get("file_name", ""))
    ids = gt.img_ids.tolist()
    return (np.array([first[i] for i in ids], dtype=np.int64).reshape(len(ids)),
            [names[i] for i in ids])


def mask_boxes(rles: list[dict]) -> np.ndarray:
    """Bounding boxes ``[N, 4]`` xywh of compressed RLEs (chunks of 255: pycocotools overflows
    on longer lists under numpy 2)."""
    if not rles:
        return np.zeros((0, 4))
    return np.concatenate([np.asarray(mask_utils.toBbox(rles[i:i + 255]), dtype=np.float64)
                           .reshape(-1, 4) for i in range(0, len(rles), 255)])


def _expand(lo: np.ndarray, counts: np.ndarray, start: int, stop: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """All (row, partner) pairs of rows ``start:stop``; row ``i``'s partners ``lo[i]`` on."""
    c = counts[start:stop]
    det = np.repeat(np.arange(start, stop), c)
    first = np.cumsum(c) - c
    return det, np.repeat(lo[start:stop] - first, c) + np.arange(int(c.sum()))


def _blocks(counts: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive row ranges holding at most about ``_PAIR_BLOCK`` pairs each."""
    cum = np.cumsum(counts)
    bounds, start = [], 0
    while start < len(counts):
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + _PAIR_BLOCK, side="right")), start + 1)
        bounds.append((start, stop))
        start = stop
    return bounds


def _mask_iou(pd: np.ndarray, pg: np.ndarray, p_rles: list, g_rles: list, img: np.ndarray,
              crowd: bool) -> np.ndarray:
    """pycocotools' mask IoU of each pair (sorted by ``pd``; ``img [Q]`` their image), one
    call per image on the masks its pairs use."""
    iou = np.zeros(len(pd))
    cuts = np.flatnonzero(np.diff(img)) + 1
    for s0, s1 in zip(np.r_[0, cuts], np.r_[cuts, len(pd)], strict=True):
        dets, d_pos = np.unique(pd[s0:s1], return_inverse=True)
        gts, g_pos = np.unique(pg[s0:s1], return_inverse=True)
        mat = mask_utils.iou([p_rles[i] for i in dets], [g_rles[j] for j in gts],
                             [int(crowd)] * len(gts))
        iou[s0:s1] = np.asarray(mat).reshape(len(dets), len(gts))[d_pos, g_pos]
    return iou


def _pairs(p_key: np.ndarray, p_box: np.ndarray, g_key: np.ndarray, g_box: np.ndarray,
           p_rles: list | None, g_rles: list | None, crowd: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detection, partner, IoU) for every detection and partner of the same key (both
    sorted by key) with IoU > 0; box IoU, or mask IoU where RLEs are given (pairs whose boxes
    do not overlap are skipped: their masks cannot). ``crowd`` divides by the detection's area.
    """
    lo = np.searchsorted(g_key, p_key, side="left")
    counts = np.searchsorted(g_key, p_key, side="right") - lo
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    p_x0, p_x1 = p_box[:, 0], p_box[:, 2] + p_box[:, 0]
    g_x0, g_x1 = g_box[:, 0], g_box[:, 2] + g_box[:, 0]
    for start, stop in _blocks(counts):
        pd, pg = _expand(lo, counts, start, stop)
        # Pairs apart along x have IoU 0 (the same arithmetic as paired_box_iou's width).
        near = np.minimum(p_x1[pd], g_x1[pg]) - np.maximum(p_x0[pd], g_x0[pg]) > 0
        pd, pg = pd[near], pg[near]
        iou = paired_box_iou(p_box[pd], g_box[pg], np.full(len(pd), crowd))
        keep = iou > 0
        pd, pg, iou = pd[keep], pg[keep], iou[keep]
        if p_rles is not None and g_rles is not None and len(pd):
            iou = _mask_iou(pd, pg, p_rles, g_rles, p_key[pd], crowd)
            keep = iou > 0
            pd, pg, iou = pd[keep], pg[keep], iou[keep]
        out.append((pd, pg, iou))
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return (np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out]),
            np.concatenate([o[2] for o in out]))


def _crowd_iou(p_key: np.ndarray, p_box: np.ndarray, p_rles: list | None, c_key: np.ndarray,
               c_box: np.ndarray, c_rles: list | None) -> np.ndarray:
    """``[P]`` each detection's largest crowd IoU (``|d & c| / |d|``) with the crowd regions of
    its key (image and category), 0 where it has none."""
    out = np.zeros(len(p_key))
    rows = np.flatnonzero(np.isin(p_key, c_key))
    if len(rows) == 0:
        return out
    rows = rows[np.argsort(p_key[rows], kind="stable")]
    c_sort = np.argsort(c_key, kind="stable")
    pd, _, iou = _pairs(p_key[rows], p_box[rows], c_key[c_sort], c_box[c_sort],
                        None if p_rles is None else [p_rles[i] for i in rows.tolist()],
                        None if c_rles is None else [c_rles[j] for j in c_sort.tolist()],
                        crowd=True)
    np.maximum.at(out, rows[pd], iou)
    return out


def _ordered_detections(dets: Detections, img_rank: np.ndarray) -> np.ndarray:
    """Rows of ``dets`` in processing order, at most ``MAX_DETS`` per image."""
    order = np.argsort(-dets.score, kind="stable")        # rows are in file order
    order = order[np.argsort(img_rank[dets.img[order]], kind="stable")]
    rank = np.arange(len(order)) - group_starts(dets.img[order])
    return order[rank < MAX_DETS]


def build_scene(gt_data: Any, results: Any, iou_type: str, gt_source: str,
                results_source: str) -> Scene:
    """Parse a COCO ground-truth dict and results list (``EvalInputError`` / warnings as the
    COCO evaluator) into a ``Scene``."""
    with paused_gc():  # parsing builds many small acyclic objects
        gt = parse_ground_truth(gt_data, iou_type, gt_source)
        dets = parse_results(results, gt, iou_type, results_source)
    img_rank, file_names = _image_order(gt_data, gt)
    segm = iou_type == "segm"
    order = _ordered_detections(dets, img_rank)
    p_rles = [dets.rles[i] for i in order.tolist()] if segm and dets.rles is not None else None
    if p_rles is not None:
        p_box = mask_boxes(p_rles)
    else:
        assert dets.box is not None  # bbox evaluation keeps every result's box
        p_box = dets.box[order]
    g_order = np.lexsort((gt.ann_index, img_rank[gt.img]))
    g_all_box = mask_boxes(gt.rles) if segm and gt.rles is not None else gt.box
    real, crowd = g_order[~gt.crowd[g_order]], g_order[gt.crowd[g_order]]
    g_rles = [gt.rles[j] for j in real.tolist()] if gt.rles is not None else None
    c_rles = [gt.rles[j] for j in crowd.tolist()] if gt.rles is not None else None
    p_img, p_cat = dets.img[order], dets.cat[order]
    pair_p, pair_g, pair_iou = _pairs(img_rank[p_img], p_box, img_rank[gt.img[real]],
                                      g_all_box[real], p_rles, g_rles, crowd=False)
    k_n = len(gt.cat_ids)
    crowd_iou = _crowd_iou(img_rank[p_img] * k_n + p_cat, p_box, p_rles,
                           img_rank[gt.img[crowd]] * k_n + gt.cat[crowd], g_all_box[crowd],
                           c_rles)
    return Scene(iou_type, gt.img_ids, img_rank, file_names, gt.cat_ids, list(gt.cat_names),
                 p_img, p_cat, dets.score[order], p_box, dets.index[order],
                 gt.img[real], gt.cat[real], g_all_box[real], gt.area[real],
                 gt.ann_index[real], crowd_iou, pair_p, pair_g, pair_iou,
                 gt.warnings + dets.warnings)
