"""The same evaluation by pycocotools' own ``COCOeval`` (the trusted reference; slow).

Both files go through detseg's parser first, so bad entries are skipped with the same
warnings, and pycocotools sees only what detseg evaluates: the usable entries, ground truth
without ``area``/``iscrowd`` given them, and results' polygons or uncompressed RLEs (which
``COCO.loadRes`` cannot read) as the compressed RLEs ``COCO.annToRLE`` would make.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detseg.eval.coco.accumulate import STAT_KEYS, per_class_ap, summarize
from detseg.eval.coco.evaluator import COCOEvaluator, resolve_params
from detseg.eval.coco.ground_truth import GroundTruth
from detseg.eval.coco.json_input import load_json, source_name
from detseg.eval.coco.metrics import COCOMetrics
from detseg.eval.coco.params import Params
from detseg.eval.coco.results import Detections, parse_results
from detseg.eval.coco.rle import is_compressed


def _usable_ground_truth(data: dict, gt: GroundTruth) -> dict:
    """The entries of ``data`` that detseg evaluates, as new dicts (pycocotools edits them)."""
    area_of = dict(zip(gt.ann_index.tolist(), gt.area.tolist(), strict=True))
    anns = [{"iscrowd": 0, **data["annotations"][i], "area": area_of[i]}
            for i in sorted(area_of)]
    return {"images": [data["images"][i] for i in gt.image_entries],
            "categories": [data["categories"][i] for i in gt.category_entries],
            "annotations": anns}


def _usable_results(data: list, dets: Detections) -> tuple[list[dict], Any]:
    """The usable results as new dicts with masks pycocotools can read, and the ``bbox`` taken
    off the first one when ``loadRes`` would otherwise read areas from boxes (to put back)."""
    entries = []
    for row, i in enumerate(dets.index):
        entry = dict(data[i])
        if dets.rles is not None and not is_compressed(entry.get("segmentation")):
            entry["segmentation"] = dets.rles[row]
        entries.append(entry)
    first_box = None
    if not dets.from_boxes and entries[0].get("bbox"):
        first_box = entries[0].pop("bbox")
    return entries, first_box


def evaluate_with_pycocotools(gt: dict | str | Path, results: list[dict] | str | Path,
                              iou_type: str | None = None,
                              max_dets: Sequence[int] | None = None,
                              params: Params | None = None, source: str | None = None,
                              gt_source: str | None = None) -> COCOMetrics:
    """``COCOEvaluator(gt, iou_type, params).evaluate(results, max_dets)`` by pycocotools.

    An empty results list (which ``COCO.loadRes`` cannot load) is scored by
    ``COCOEvaluator``. With fewer than three ``max_dets`` (pycocotools' ``summarize`` needs
    three) the summary is read from pycocotools' arrays by ``accumulate.summarize``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_data = load_json(gt, "ground-truth")
    evaluator = COCOEvaluator(gt_data, iou_type, params,
                              source=source_name(gt, gt_source, "ground truth"))
    params = resolve_params(None, evaluator.params, max_dets)
    data = load_json(results, "results")
    dets = parse_results(data, evaluator.gt, evaluator.iou_type,
                         source_name(results, source, "results"))
    if not len(dets.index):
        return evaluator.evaluate([], params.max_dets)
    entries, first_box = _usable_results(data, dets)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = _usable_ground_truth(gt_data, evaluator.gt)
        coco.createIndex()
        loaded = coco.loadRes(entries)
        if first_box is not None:
            loaded.anns[1]["bbox"] = first_box
        ev = COCOeval(coco, loaded, evaluator.iou_type)
        ev.params.imgIds = list(params.img_ids or evaluator.gt.img_ids.tolist())
        ev.params.catIds = list(params.cat_ids or evaluator.gt.cat_ids.tolist())
        ev.params.iouThrs = np.array(params.iou_thrs)
        ev.params.recThrs = np.array(params.rec_thrs)
        ev.params.maxDets = list(params.max_dets)
        ev.params.areaRng = [list(r) for r in params.area_rng]
        ev.params.areaRngLbl = list(params.area_labels)
        ev.params.useCats = int(params.use_cats)
        ev.evaluate()
        ev.accumulate()
        if len(params.max_dets) >= 3:
            ev.summarize()
    precision, recall = ev.eval["precision"], ev.eval["recall"]
    stats = (dict(zip(STAT_KEYS, map(float, ev.stats), strict=True))
             if len(params.max_dets) >= 3 else summarize(precision, recall, params))
    names = evaluator.category_names
    return COCOMetrics(evaluator.iou_type, stats, per_class_ap(precision, names, params),
                       precision, recall, ev.eval["scores"], evaluator.category_ids, names,
                       params.max_dets, np.array(params.iou_thrs), np.array(params.rec_thrs),
                       params, evaluator.warnings + dets.warnings)
