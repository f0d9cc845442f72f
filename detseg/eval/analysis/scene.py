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

from detseg.errors import UsageError
from detseg.eval.coco.ground_truth import GroundTruth, parse_ground_truth
from detseg.eval.coco.json_input import integer_id
from detseg.eval.coco.match import group_starts
from detseg.eval.coco.results import Detections, parse_results
from detseg.eval.iou import paired_box_iou

MAX_DETS = 100        # detections per image, as TIDE's COCO data
_PAIR_BLOCK = 1 << 21  # (detection, ground truth) pairs whose IoU is computed at once


@dataclass
class Scene:
    """Arrays of one evaluation: ``P`` detections, ``G`` ground truth (crowd regions apart),
    ``Q`` (detection, ground truth) pairs of an image with IoU > 0.

    Geometry is boxes (``bbox``: COCO ``xywh`` pixels) or compressed RLEs (``segm``). Image
    indices point into ``img_ids``, category indices into ``cat_ids``.
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
    p_index: np.ndarray        # [P] position in the results list
    p_geometry: np.ndarray | list[dict]   # [P, 4] xywh boxes or [P] RLEs
    p_box: np.ndarray | None   # [P, 4] the results' own xywh boxes, where they have them
    g_img: np.ndarray          # [G] image index; ground truth in file order (by image)
    g_cat: np.ndarray          # [G]
    g_area: np.ndarray         # [G] the 'area' field (square pixels; computed where missing)
    g_index: np.ndarray        # [G] position in the annotations list
    g_geometry: np.ndarray | list[dict]   # [G, 4] xywh boxes or [G] RLEs
    crowd_iou: np.ndarray      # [P] largest crowd IoU (|d & c| / |d|) with a same-class region
    pair_p: np.ndarray         # [Q] detection row, sorted
    pair_g: np.ndarray         # [Q] ground-truth row, sorted within a detection
    pair_iou: np.ndarray       # [Q] float64 IoU > 0 (pycocotools' values)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """``K``, the ground truth's categories."""
        return len(self.cat_ids)

    def detection_boxes(self, rows: np.ndarray) -> np.ndarray:
        """``[N, 4]`` xywh boxes of detection ``rows``: the results' own (``segm``: where every
        result has one, else the masks' bounding boxes); zeros where a row is -1."""
        return _boxes_of(self.p_geometry if self.p_box is None else self.p_box, rows)

    def truth_boxes(self, rows: np.ndarray) -> np.ndarray:
        """``[N, 4]`` xywh boxes of ground-truth ``rows`` (``segm``: the masks' bounding
        boxes); zeros where a row is -1."""
        return _boxes_of(self.g_geometry, rows)


def _boxes_of(geometry: np.ndarray | list[dict], rows: np.ndarray) -> np.ndarray:
    out = np.zeros((len(rows), 4))
    have = np.flatnonzero(rows >= 0)
    if isinstance(geometry, np.ndarray):
        out[have] = geometry[rows[have]]
    elif len(have):
        unique, back = np.unique(rows[have], return_inverse=True)
        out[have] = mask_boxes([geometry[i] for i in unique.tolist()])[back]
    return out


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


def _box_pairs(p_key: np.ndarray, p_box: np.ndarray, g_key: np.ndarray, g_box: np.ndarray,
               crowd: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detection, partner, IoU) for every detection and partner box of the same key (both
    sorted by key) with IoU > 0; ``crowd`` divides by the detection's area."""
    lo = np.searchsorted(g_key, p_key, side="left")
    counts = np.searchsorted(g_key, p_key, side="right") - lo
    p_x0, p_x1 = p_box[:, 0], p_box[:, 2] + p_box[:, 0]
    g_x0, g_x1 = g_box[:, 0], g_box[:, 2] + g_box[:, 0]
    out_d, out_g, out_iou = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for start, stop in _blocks(counts):
        pd, pg = _expand(lo, counts, start, stop)
        # Pairs apart along x have IoU 0 (the same arithmetic as paired_box_iou's width).
        near = np.minimum(p_x1[pd], g_x1[pg]) - np.maximum(p_x0[pd], g_x0[pg]) > 0
        pd, pg = pd[near], pg[near]
        iou = paired_box_iou(p_box[pd], g_box[pg], np.full(len(pd), crowd))
        keep = iou > 0
        out_d.append(pd[keep])
        out_g.append(pg[keep])
        out_iou.append(iou[keep])
    return np.concatenate(out_d), np.concatenate(out_g), np.concatenate(out_iou)


def _mask_pairs(p_key: np.ndarray, p_rles: list, g_key: np.ndarray, g_rles: list,
                crowd: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As ``_box_pairs`` for masks: one pycocotools IoU call per key (which skips the masks
    whose boxes do not overlap); the matrices are read all at once."""
    keys, p_lo = np.unique(p_key, return_index=True)
    p_hi = np.r_[p_lo[1:], len(p_key)].astype(np.int64)
    g_lo = np.searchsorted(g_key, keys, side="left")
    g_hi = np.searchsorted(g_key, keys, side="right")
    has = g_hi > g_lo
    p_lo, p_hi, g_lo, g_hi = p_lo[has], p_hi[has], g_lo[has], g_hi[has]
    n = g_hi - g_lo
    flags = [int(crowd)] * int(n.max(initial=0))
    # Each [m, n] matrix row-major: entry r * n + c is (detection r, partner c) of its key.
    iou = np.concatenate([np.zeros(0), *(
        np.asarray(mask_utils.iou(p_rles[a:b], g_rles[c:d], flags[:d - c])).ravel()
        for a, b, c, d in zip(p_lo.tolist(), p_hi.tolist(), g_lo.tolist(), g_hi.tolist(),
                              strict=True))])
    ends = np.cumsum((p_hi - p_lo) * n)
    q = np.flatnonzero(iou > 0)
    block = np.searchsorted(ends, q, side="right")
    local = q - (ends - (p_hi - p_lo) * n)[block]
    return p_lo[block] + local // n[block], g_lo[block] + local % n[block], iou[q]


def _pairs(p_key: np.ndarray, p_geo: np.ndarray | list, g_key: np.ndarray,
           g_geo: np.ndarray | list, crowd: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detection, partner, IoU > 0) of the same key, boxes or masks (``crowd``: IoU over the
    detection's area); keys sorted on both sides."""
    if isinstance(p_geo, np.ndarray) and isinstance(g_geo, np.ndarray):
        return _box_pairs(p_key, p_geo, g_key, g_geo, crowd)
    assert isinstance(p_geo, list) and isinstance(g_geo, list)
    return _mask_pairs(p_key, p_geo, g_key, g_geo, crowd)


def _subset(geometry: np.ndarray | list, rows: np.ndarray) -> np.ndarray | list:
    if isinstance(geometry, np.ndarray):
        return geometry[rows]
    return [geometry[i] for i in rows.tolist()]


def _crowd_iou(p_key: np.ndarray, p_geo: np.ndarray | list, c_key: np.ndarray,
               c_geo: np.ndarray | list) -> np.ndarray:
    """``[P]`` each detection's largest crowd IoU (``|d & c| / |d|``) with the crowd regions of
    its key (image and category), 0 where it has none."""
    out = np.zeros(len(p_key))
    rows = np.flatnonzero(np.isin(p_key, c_key))
    if len(rows) == 0:
        return out
    rows = rows[np.argsort(p_key[rows], kind="stable")]
    c_sort = np.argsort(c_key, kind="stable")
    pd, _, iou = _pairs(p_key[rows], _subset(p_geo, rows), c_key[c_sort],
                        _subset(c_geo, c_sort), crowd=True)
    np.maximum.at(out, rows[pd], iou)
    return out


def _ordered_detections(dets: Detections, img_rank: np.ndarray) -> np.ndarray:
    """Rows of ``dets`` in processing order, at most ``MAX_DETS`` per image."""
    order = np.argsort(-dets.score, kind="stable")        # rows are in file order
    order = order[np.argsort(img_rank[dets.img[order]], kind="stable")]
    rank = np.arange(len(order)) - group_starts(dets.img[order])
    return order[rank < MAX_DETS]


def parsed_for(parsed: tuple[GroundTruth, Detections], iou_type: str
               ) -> tuple[GroundTruth, Detections]:
    """``parsed`` checked to hold what ``iou_type`` needs (masks for ``segm``, boxes for
    ``bbox``); ``UsageError`` naming it otherwise."""
    gt, dets = parsed
    masks = gt.rles is not None and dets.rles is not None
    if (masks if iou_type == "segm" else gt.rles is None and dets.box is not None):
        return gt, dets
    raise UsageError(f"parsed: the ground truth and detections were not parsed for iou_type "
                     f"{iou_type!r}")


def build_scene(gt_data: Any, results: Any, iou_type: str, gt_source: str,
                results_source: str, parsed: tuple[GroundTruth, Detections] | None = None
                ) -> Scene:
    """Parse a COCO ground-truth dict and results list (``EvalInputError`` / warnings as the
    COCO evaluator) into a ``Scene``; ``parsed``: the COCO evaluator's own parse of these
    inputs for ``iou_type`` (``COCOEvaluator.gt`` and ``.parse``), used instead."""
    if parsed is not None:
        gt, dets = parsed_for(parsed, iou_type)
    else:
        gt = parse_ground_truth(gt_data, iou_type, gt_source)
        dets = parse_results(results, gt, iou_type, results_source)
    img_rank, file_names = _image_order(gt_data, gt)
    order = _ordered_detections(dets, img_rank)
    p_geo: np.ndarray | list
    g_all: np.ndarray | list
    if iou_type == "segm":
        assert dets.rles is not None and gt.rles is not None  # segm parsing makes RLEs
        p_geo, g_all = [dets.rles[i] for i in order.tolist()], gt.rles
    else:
        assert dets.box is not None  # bbox evaluation keeps every result's box
        p_geo, g_all = dets.box[order], gt.box
    g_order = np.lexsort((gt.ann_index, img_rank[gt.img]))
    real, crowd = g_order[~gt.crowd[g_order]], g_order[gt.crowd[g_order]]
    g_geo = _subset(g_all, real)
    p_img, p_cat = dets.img[order], dets.cat[order]
    pair_p, pair_g, pair_iou = _pairs(img_rank[p_img], p_geo, img_rank[gt.img[real]], g_geo,
                                      crowd=False)
    k_n = len(gt.cat_ids)
    crowd_iou = _crowd_iou(img_rank[p_img] * k_n + p_cat, p_geo,
                           img_rank[gt.img[crowd]] * k_n + gt.cat[crowd], _subset(g_all, crowd))
    return Scene(iou_type, gt.img_ids, img_rank, file_names, gt.cat_ids, list(gt.cat_names),
                 p_img, p_cat, dets.score[order], dets.index[order], p_geo,
                 None if dets.box is None else dets.box[order],
                 gt.img[real], gt.cat[real], gt.area[real], gt.ann_index[real], g_geo,
                 crowd_iou, pair_p, pair_g, pair_iou, gt.warnings + dets.warnings)
