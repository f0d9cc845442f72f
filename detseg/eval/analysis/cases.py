"""Error cases for galleries: false positives, missed objects and per-image error counts, at
IoU 0.5 and the score threshold.

A false positive is a counted detection (score at least the threshold, not on a crowd region
of its class) that TIDE's matching leaves unmatched; its error is its TIDE type (the same as
among all detections: the matching is greedy by score). A missed object is ground truth no
counted detection matches; its error is ``Cls`` / ``Loc`` when a counted detection with that
error points at it (the highest-scoring one, drawn as the other box), else ``Miss`` (the other
box: the counted detection with the highest IoU, if any). Per image, ``errors`` counts the
false positives by type plus the ``Miss`` objects (a ``Cls`` / ``Loc`` error is counted once,
on its detection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detseg.eval.analysis.confusion import ThresholdCounts
from detseg.eval.analysis.scene import Scene
from detseg.eval.analysis.tide import CLS, ERROR_TYPES, LOC, MISS, TideErrors

Box = tuple[float, float, float, float]


@dataclass
class ErrorCase:
    """One false positive (``score`` set) or missed ground truth (``score`` None).

    ``box_xywh`` COCO x, y, width, height pixels; ``error`` one of ``ERROR_TYPES``;
    ``other_*`` the ground truth (for a false positive) or detection (for a missed object) it
    was nearest to, with their ``iou``, or None / 0; ``segmentation`` the entry's own RLE or
    polygons for ``segm``, else None.
    """

    image_id: int
    category_id: int
    box_xywh: Box
    score: float | None
    error: str
    other_box_xywh: Box | None = None
    other_category_id: int | None = None
    segmentation: Any = None
    iou: float = 0.0


@dataclass
class ImageErrors:
    """Counts of one image at the score threshold; ``errors`` by type (``ERROR_TYPES``)."""

    image_id: int
    file_name: str
    num_gt: int
    tp: int
    fp: int
    fn: int
    errors: dict[str, int] = field(default_factory=dict)


def _box(row: list[float]) -> Box:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


def _segmentations(entries: list, rows: np.ndarray, segm: bool) -> list[Any]:
    if not segm:
        return [None] * len(rows)
    return [entries[i].get("segmentation") if isinstance(entries[i], dict) else None
            for i in rows.tolist()]


def false_positives(scene: Scene, errors: TideErrors, counts: ThresholdCounts,
                    results: list) -> list[ErrorCase]:
    """The false positives at the threshold, highest score first (processing order on ties)."""
    rows = np.flatnonzero(counts.fp)
    rows = rows[np.argsort(-scene.p_score[rows], kind="stable")]
    target = errors.p_target[rows]
    has = target >= 0
    t = np.maximum(target, 0)
    other_box = scene.g_box[t].tolist()
    other_cat = scene.cat_ids[scene.g_cat[t]].tolist()
    segs = _segmentations(results, scene.p_index[rows], scene.iou_type == "segm")
    return [ErrorCase(image_id, category_id, _box(box), score, ERROR_TYPES[kind],
                      _box(ob) if h else None, oc if h else None, seg, iou)
            for image_id, category_id, box, score, kind, h, ob, oc, seg, iou in zip(
                scene.img_ids[scene.p_img[rows]].tolist(),
                scene.cat_ids[scene.p_cat[rows]].tolist(), scene.p_box[rows].tolist(),
                scene.p_score[rows].tolist(), errors.p_error[rows].tolist(), has.tolist(),
                other_box, other_cat, segs, errors.p_iou[rows].tolist(), strict=True)]


@dataclass
class Missed:
    """The ground truth missed at the threshold: rows ``[M]``, error types ``[M]``, the
    detection each is drawn with ``other [M]`` (-1: none) and its IoU ``[M]``."""

    rows: np.ndarray
    kinds: np.ndarray
    other: np.ndarray
    iou: np.ndarray


def missed_types(scene: Scene, errors: TideErrors, counts: ThresholdCounts) -> Missed:
    """Which ground truth is missed at the threshold, and why (see the module docstring)."""
    missed = np.flatnonzero(~counts.found)
    kind = np.full(len(scene.g_img), MISS, dtype=np.int64)
    other = np.full(len(scene.g_img), -1, dtype=np.int64)
    iou = np.zeros(len(scene.g_img))
    fixers = np.flatnonzero(counts.counted & ((errors.p_error == CLS) | (errors.p_error == LOC))
                            & (errors.p_target >= 0))
    fixers = fixers[~counts.found[errors.p_target[fixers]]]
    gts, first = np.unique(errors.p_target[fixers], return_index=True)
    kind[gts] = errors.p_error[fixers[first]]
    other[gts] = fixers[first]
    iou[gts] = errors.p_iou[fixers[first]]
    pp, pg, piou = scene.pair_p, scene.pair_g, scene.pair_iou
    near = counts.counted[pp] & ~counts.found[pg] & (other[pg] < 0)
    order = np.flatnonzero(near)
    order = order[np.lexsort((pp[order], -piou[order], pg[order]))]
    gts, first = np.unique(pg[order], return_index=True)
    other[gts] = pp[order[first]]
    iou[gts] = piou[order[first]]
    return Missed(missed, kind[missed], other[missed], iou[missed])


def missed_objects(scene: Scene, missed: Missed, gt_data: dict) -> list[ErrorCase]:
    """The ground truth missed at the threshold, largest area first (file order on ties)."""
    rows, kinds, other, ious = missed.rows, missed.kinds, missed.other, missed.iou
    by_area = np.argsort(-scene.g_area[rows], kind="stable")
    rows, kinds, other, ious = rows[by_area], kinds[by_area], other[by_area], ious[by_area]
    has = other >= 0
    o = np.maximum(other, 0)
    segs = _segmentations(gt_data["annotations"], scene.g_index[rows],
                          scene.iou_type == "segm")
    return [ErrorCase(image_id, category_id, _box(box), None, ERROR_TYPES[kind],
                      _box(ob) if h else None, oc if h else None, seg, iou)
            for image_id, category_id, box, kind, h, ob, oc, seg, iou in zip(
                scene.img_ids[scene.g_img[rows]].tolist(),
                scene.cat_ids[scene.g_cat[rows]].tolist(), scene.g_box[rows].tolist(),
                kinds.tolist(), has.tolist(), scene.p_box[o].tolist(),
                scene.cat_ids[scene.p_cat[o]].tolist(), segs, ious.tolist(), strict=True)]


def per_image(scene: Scene, errors: TideErrors, counts: ThresholdCounts, missed: Missed
              ) -> list[ImageErrors]:
    """Every image's counts at the threshold, most errors first (then most false positives
    plus missed objects, then file order)."""
    i_n, t_n = len(scene.img_ids), len(ERROR_TYPES)
    tp = np.bincount(scene.p_img[counts.tp], minlength=i_n)
    fp = np.bincount(scene.p_img[counts.fp], minlength=i_n)
    fn = np.bincount(scene.g_img[~counts.found], minlength=i_n)
    num_gt = np.bincount(scene.g_img, minlength=i_n)
    table = np.bincount(scene.p_img[counts.fp] * t_n + errors.p_error[counts.fp],
                        minlength=i_n * t_n).reshape(i_n, t_n)
    table[:, MISS] = np.bincount(scene.g_img[missed.rows[missed.kinds == MISS]], minlength=i_n)
    total = table.sum(1)
    order = np.lexsort((scene.img_rank, -(fp + fn), -total))
    return [ImageErrors(image_id, scene.file_names[i], g, t, f, n,
                        dict(zip(ERROR_TYPES, row, strict=True)))
            for i, image_id, g, t, f, n, row in zip(
                order.tolist(), scene.img_ids[order].tolist(), num_gt[order].tolist(),
                tp[order].tolist(), fp[order].tolist(), fn[order].tolist(),
                table[order].tolist(), strict=True)]
