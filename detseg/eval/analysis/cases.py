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


@dataclass(slots=True)
class ErrorCase:
    """One false positive (``score`` set) or missed ground truth (``score`` None).

    ``box_xywh`` COCO x, y, width, height pixels (for ``segm``: a result's own ``bbox`` when
    the results have boxes, else the mask's bounding box; ground truth: the mask's);
    ``error`` one of ``ERROR_TYPES``; ``other_*`` the ground truth (for a false positive) or
    detection (for a missed object) it was nearest to, with their ``iou``, or None / 0;
    ``segmentation`` the entry's own RLE or polygons for ``segm`` (as in its file), else None.
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


@dataclass(slots=True)
class ImageErrors:
    """Counts of one image at the score threshold; ``errors`` by type (``ERROR_TYPES``)."""

    image_id: int
    file_name: str
    num_gt: int
    tp: int
    fp: int
    fn: int
    errors: dict[str, int] = field(default_factory=dict)


def _category_ids(scene: Scene, cats: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Category ids of ``rows`` of the category indices ``cats``; 0 where a row is -1."""
    out = np.zeros(len(rows), dtype=np.int64)
    out[rows >= 0] = scene.cat_ids[cats[rows[rows >= 0]]]
    return out


def _segmentations(entries: list, rows: np.ndarray, segm: bool) -> list[Any]:
    """The ``segmentation`` of entries ``rows`` (dicts: the parser kept only those) for
    ``segm``, else Nones."""
    if not segm:
        return [None] * len(rows)
    return [entries[i].get("segmentation") for i in rows.tolist()]


def _cases(image_ids: np.ndarray, cat_ids: np.ndarray, boxes: np.ndarray,
           scores: np.ndarray | None, kinds: np.ndarray, other: np.ndarray,
           other_boxes: np.ndarray, other_cats: np.ndarray, segs: list, ious: np.ndarray
           ) -> list[ErrorCase]:
    """``ErrorCase`` objects from columns (``other [N]`` -1 where there is no other box)."""
    has = (other >= 0).tolist()
    names = [ERROR_TYPES[k] for k in kinds.tolist()]
    score_list = [None] * len(kinds) if scores is None else scores.tolist()
    return [ErrorCase(i, c, box, score, name, ob if h else None, oc if h else None, seg, iou)
            for i, c, box, score, name, h, ob, oc, seg, iou in zip(
                image_ids.tolist(), cat_ids.tolist(), map(tuple, boxes.tolist()), score_list,
                names, has, map(tuple, other_boxes.tolist()), other_cats.tolist(), segs,
                ious.tolist(), strict=True)]


def false_positives(scene: Scene, errors: TideErrors, counts: ThresholdCounts,
                    results: list) -> list[ErrorCase]:
    """The false positives at the threshold, highest score first (processing order on ties)."""
    rows = np.flatnonzero(counts.fp)
    rows = rows[np.argsort(-scene.p_score[rows], kind="stable")]
    target = errors.p_target[rows]
    return _cases(scene.img_ids[scene.p_img[rows]], scene.cat_ids[scene.p_cat[rows]],
                  scene.detection_boxes(rows), scene.p_score[rows], errors.p_error[rows], target,
                  scene.truth_boxes(target), _category_ids(scene, scene.g_cat, target),
                  _segmentations(results, scene.p_index[rows], scene.iou_type == "segm"),
                  errors.p_iou[rows])


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
    by_area = np.argsort(-scene.g_area[missed.rows], kind="stable")
    rows, other = missed.rows[by_area], missed.other[by_area]
    return _cases(scene.img_ids[scene.g_img[rows]], scene.cat_ids[scene.g_cat[rows]],
                  scene.truth_boxes(rows), None, missed.kinds[by_area], other,
                  scene.detection_boxes(other), _category_ids(scene, scene.p_cat, other),
                  _segmentations(gt_data["annotations"], scene.g_index[rows],
                                 scene.iou_type == "segm"), missed.iou[by_area])


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
