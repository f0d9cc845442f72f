"""The error analysis reuses the COCO evaluator's parse (``analyse_detections(parsed=...)``,
``COCOEvaluator.parse``): same numbers, cases and warnings as parsing the inputs again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import detseg
from pycocotools import mask as mask_utils

from detseg.errors import UsageError
from detseg.eval.analysis import analyse_detections, errors_json
from detseg.eval.coco_map import COCOEvaluator


def _poly(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y + 0.1 * h, x + 0.8 * w, y + h, x + 0.05 * w, y + 0.9 * h]


def _inputs() -> tuple[dict, list[dict]]:
    """Two odd-sized images, three classes, a crowd region, RLE and polygon results, one bad
    result and one of an unknown category."""
    images = [{"id": 7, "height": 37, "width": 53, "file_name": "a.jpg"},
              {"id": 3, "height": 61, "width": 29, "file_name": "b.jpg"}]
    cats = [{"id": 1, "name": "cat"}, {"id": 4, "name": "dog"}, {"id": 9, "name": "fox"}]
    boxes = [(7, 1, (2, 3, 20, 15)), (7, 4, (25, 5, 20, 25)), (7, 9, (4, 20, 15, 12)),
             (3, 1, (3, 4, 20, 22)), (3, 9, (5, 30, 18, 25))]
    anns = [{"id": i + 1, "image_id": img, "category_id": c, "bbox": list(b),
             "area": float(b[2] * b[3]), "iscrowd": 0, "segmentation": [_poly(*b)]}
            for i, (img, c, b) in enumerate(boxes)]
    anns.append({"id": 9, "image_id": 3, "category_id": 4, "bbox": [0, 0, 29, 20],
                 "area": 580.0, "iscrowd": 1, "segmentation": [_poly(0, 0, 29, 20)]})
    rng = np.random.default_rng(5)
    results = []
    for img, h, w in ((7, 37, 53), (3, 61, 29)):
        for _ in range(14):
            bw, bh = rng.uniform(4, w - 2), rng.uniform(4, h - 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            rle = mask_utils.frPyObjects([_poly(x, y, bw, bh)], h, w)[0]
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": img, "category_id": int(rng.choice([1, 4, 9])),
                            "score": round(float(rng.uniform(0.05, 1)), 2),
                            "bbox": [x, y, bw, bh], "segmentation": rle})
    for a in anns[:4]:   # near-perfect detections, one of them with polygons
        b = a["bbox"]
        results.append({"image_id": a["image_id"], "category_id": a["category_id"],
                        "score": 0.9, "bbox": b, "segmentation": [_poly(b[0] + 1, b[1], *b[2:])]})
    results.append({"image_id": 7, "category_id": 1, "score": "high", "bbox": [1, 1, 5, 5]})
    results.append({"image_id": 7, "category_id": 55, "score": 0.5, "bbox": [1, 1, 5, 5],
                    "segmentation": [_poly(1, 1, 5, 5)]})
    return {"images": images, "annotations": anns, "categories": cats}, results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_analysis_of_the_evaluators_parse_equals_its_own(iou_type: str) -> None:
    gt, results = _inputs()
    evaluator = COCOEvaluator(gt, iou_type)
    dets = evaluator.parse(results)
    assert evaluator.evaluate(dets).stats == evaluator.evaluate(results).stats
    reused = analyse_detections(gt, results, iou_type, 0.3, parsed=(evaluator.gt, dets))
    fresh = analyse_detections(gt, results, iou_type, 0.3)
    assert reused.tide == fresh.tide and reused.ap50 == fresh.ap50
    assert reused.error_counts == fresh.error_counts and sum(fresh.error_counts.values()) > 5
    assert (reused.confusion == fresh.confusion).all()
    assert reused.false_positives == fresh.false_positives and fresh.false_positives
    assert reused.missed == fresh.missed and reused.per_image == fresh.per_image
    assert reused.warnings == fresh.warnings and len(fresh.warnings) == 2


def test_a_parse_for_another_iou_type_is_refused() -> None:
    gt, results = _inputs()
    boxes = COCOEvaluator(gt, "bbox")
    with pytest.raises(UsageError, match="parsed.*'segm'"):
        analyse_detections(gt, results, "segm", parsed=(boxes.gt, boxes.parse(results)))
    masks = COCOEvaluator(gt, "segm")
    with pytest.raises(UsageError, match="parsed.*'bbox'"):
        analyse_detections(gt, results, "bbox", parsed=(masks.gt, masks.parse(results)))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_eval_report_errors_json_equals_the_analysis(tmp_path: Path, iou_type: str,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    gt, results = _inputs()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    out = tmp_path / "run"
    code, stdout, stderr = detseg(monkeypatch, capsys, "eval", "--ann", tmp_path / "gt.json",
                                  "--predictions", tmp_path / "res.json", "--iou-type",
                                  iou_type, "--report", "--no-plots", "--out", out)
    assert code == 1, stdout + stderr   # the two skipped results
    assert "results[32]" in stderr and "results[33]" in stderr
    want = errors_json({iou_type: analyse_detections(gt, results, iou_type)})
    assert json.loads((out / "errors.json").read_text()) == want
    assert (out / "report.html").stat().st_size > 1000
