"""``COCOEvaluator``: pycocotools' ``COCOeval`` numbers, computed over whole arrays.

The numbers are the ones ``COCOeval.evaluate(); accumulate(); summarize()`` gives with the
same ``Params`` (the 12 summary values, ``precision [T, R, K, A, M]``, ``recall [T, K, A, M]``
and ``scores``), but with numpy over whole arrays instead of Python loops over (image,
category) pairs: parse (``ground_truth``, ``results``), select (``Params``' images and
categories), match (``match``), accumulate and summarize (``accumulate``).

pycocotools behaviour kept on purpose (documented so nobody "fixes" it):
- a ground truth is ignored iff ``iscrowd`` (an ``ignore`` key is overwritten by pycocotools,
  so it has no effect) or its ``area`` field is outside the area range;
- result areas follow ``COCO.loadRes``: when the first result has a non-empty ``bbox``, every
  result's area is ``w * h`` of its box (even for ``segm``), otherwise the RLE mask area;
  results' ``iscrowd`` is always 0;
- score ties keep file order (pycocotools' stable mergesort); with ``use_cats=False`` an
  image's results are taken category by category first, as pycocotools gathers them;
- a match to a ground truth whose ``id`` is 0 counts as unmatched in the accumulation
  (pycocotools stores matches by annotation id);
- ``AP`` (the first summary number) is read at 100 detections whatever ``max_dets`` says when
  it has three or more entries (see ``accumulate.summarize``).
Beyond pycocotools: an empty results list gives zeros instead of an exception, a ground truth
without ``area`` gets the box area (``bbox``) or mask area (``segm``), and bad entries of
either file are skipped with a warning (``COCOMetrics.warnings``) instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from detseg.errors import UsageError
from detseg.eval.coco.accumulate import accumulate, per_class_ap, summarize
from detseg.eval.coco.ground_truth import parse_ground_truth, select
from detseg.eval.coco.json_input import load_json, paused_gc, source_name
from detseg.eval.coco.metrics import COCOMetrics
from detseg.eval.coco.params import Params
from detseg.eval.coco.results import Detections, parse_results, restrict


def resolve_params(iou_type: str | None, params: Params | None,
                   max_dets: Sequence[int] | None = None) -> Params:
    """``params`` (default: pycocotools' for ``iou_type``), with ``max_dets`` if given; an
    ``iou_type`` that contradicts ``params.iou_type`` is a usage error."""
    if params is None:
        params = Params(iou_type=iou_type or "bbox")
    elif iou_type is not None and iou_type != params.iou_type:
        raise UsageError(f"iou_type {iou_type!r} differs from params.iou_type "
                         f"{params.iou_type!r}; give one of them")
    if max_dets is not None:
        params = replace(params, max_dets=tuple(max_dets))
    return params


class COCOEvaluator:
    """COCO mAP for ``bbox`` or ``segm`` with pycocotools' exact numbers.

    Args:
        gt: COCO ground-truth dict or the path of its JSON file (not modified).
        iou_type: ``"bbox"`` or ``"segm"`` (default: ``params.iou_type``, else ``"bbox"``).
        params: what to measure (``Params``); default pycocotools' defaults.
        source: the name messages give the ground truth (default: its path).

    Bad ground-truth entries are skipped; ``warnings`` lists them (every ``COCOMetrics``
    repeats them).

    Example:
        >>> metrics = COCOEvaluator("instances_val2017.json").evaluate("results.json")
        >>> metrics.stats["AP"], metrics.per_class["person"], metrics.warnings
        >>> COCOEvaluator(gt, params=Params(max_dets=(300,), use_cats=False)).evaluate(res)
    """

    def __init__(self, gt: dict | str | Path, iou_type: str | None = None,
                 params: Params | None = None, source: str | None = None) -> None:
        self.params = resolve_params(iou_type, params)
        self.iou_type = self.params.iou_type
        with paused_gc():  # the parsed file is freed by reference counting before it resumes
            self.gt = parse_ground_truth(load_json(gt, "ground-truth"), self.iou_type,
                                         source_name(gt, source, "ground truth"))
        self._view, self._selection = select(self.gt, self.params)

    @property
    def category_names(self) -> list[str]:
        """Names of the ``K`` evaluated categories, in array order."""
        return list(self._view.cat_names)

    @property
    def category_ids(self) -> list[int]:
        """Ids of the ``K`` evaluated categories (``[-1]`` with ``use_cats=False``)."""
        return self._view.cat_ids.tolist()

    @property
    def warnings(self) -> list[str]:
        """One line per ground-truth entry skipped or duplicated."""
        return list(self.gt.warnings)

    def parse(self, results: list[dict] | str | Path, source: str | None = None) -> Detections:
        """The usable results of ``results`` as arrays, parsed against this ground truth (what
        ``evaluate`` does first; a caller that needs them too, as the error analysis of
        ``eval --report``, parses once and passes them to ``evaluate``)."""
        with paused_gc():  # the parsed file is freed by reference counting before it resumes
            return parse_results(load_json(results, "results"), self.gt, self.iou_type,
                                 source_name(results, source, "results"))

    def evaluate(self, results: list[dict] | str | Path | Detections,
                 max_dets: Sequence[int] | None = None, source: str | None = None
                 ) -> COCOMetrics:
        """Evaluate COCO-format results (a list of dicts, the path of a JSON list, or what
        ``parse`` made of them).

        Each result needs ``image_id``, ``category_id``, ``score`` and ``bbox`` ``[x, y, w, h]``
        (bbox) or ``segmentation`` (segm: RLE, or polygons rasterized at the image size). Bad
        entries are skipped and named in ``COCOMetrics.warnings``; a file none of whose entries
        is usable raises ``EvalInputError`` naming the first. ``max_dets`` overrides
        ``params.max_dets``; ``source`` names the results in messages (default: the path).
        """
        params = resolve_params(None, self.params, max_dets)
        dets = results if isinstance(results, Detections) else self.parse(results, source)
        precision, recall, scores = accumulate(self._view, restrict(dets, self._selection),
                                               params)
        names = list(self._view.cat_names)
        return COCOMetrics(self.iou_type, summarize(precision, recall, params),
                           per_class_ap(precision, names, params), precision, recall, scores,
                           self.category_ids, names, params.max_dets,
                           np.array(params.iou_thrs), np.array(params.rec_thrs), params,
                           self.warnings + dets.warnings)
