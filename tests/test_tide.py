"""TIDE error analysis (detseg.eval.analysis) against the tidecv package, on generated sets with
planted errors of every kind, and on hand-made cases whose error types are known."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detseg.errors import EvalInputError, OutputError, UsageError
from detseg.eval.analysis import (
    ERROR_TYPES,
    SPECIAL_ERROR_TYPES,
    analyse_detections,
    errors_json,
    write_errors_json,
)
from detseg.eval.coco_map import COCOEvaluator

CATS = [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 11, "name": "fox"}]


def _rle(poly: list[float], h: int, w: int) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
    rle["counts"] = rle["counts"].decode()
    return rle


def _quad(x: float, y: float, w: float, h: float) -> list[float]:
    """A slanted quadrilateral inside the box (masks differ from boxes)."""
    return [x, y, x + w, y, x + 0.85 * w, y + h, x, y + 0.9 * h]


class _Planter:
    """Builds a COCO ground truth and results with planted errors, deterministically."""

    def __init__(self, seed: int, with_masks: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.with_masks = with_masks
        self.images: list[dict] = []
        self.anns: list[dict] = []
        self.results: list[dict] = []

    def image(self, h: int, w: int) -> tuple[int, int, int]:
        img_id = 40 + 7 * len(self.images)
        self.images.append({"id": img_id, "file_name": f"img{img_id}.png", "height": h,
                            "width": w})
        return img_id, h, w

    def truth(self, img: tuple[int, int, int], cat: int, box: list[float], crowd: int = 0
              ) -> None:
        self.anns.append({"id": len(self.anns) + 1, "image_id": img[0], "category_id": cat,
                          "bbox": box, "area": box[2] * box[3], "iscrowd": crowd,
                          "segmentation": [_quad(*box)]})

    def detect(self, img: tuple[int, int, int], cat: int, box: list[float], score: float
               ) -> None:
        img_id, h, w = img
        x, y = max(box[0], 0.0), max(box[1], 0.0)
        box = [x, y, min(box[2], w - x), min(box[3], h - y)]
        entry: dict[str, Any] = {"image_id": img_id, "category_id": cat, "bbox": box,
                                 "score": score}
        if self.with_masks:
            entry["segmentation"] = _rle(_quad(*box), h, w)
        self.results.append(entry)

    def build(self, n_images: int) -> tuple[dict, list[dict]]:
        rng = self.rng
        ids = [c["id"] for c in CATS]
        for i in range(n_images):
            img = self.image(int(rng.integers(37, 97)), int(rng.integers(41, 111)))
            h, w = img[1], img[2]
            if i % 6 == 5:      # no ground truth: every detection is background
                for _ in range(2):
                    self.detect(img, int(rng.choice(ids)), [float(rng.uniform(0, w - 9)),
                                float(rng.uniform(0, h - 9)), 8.0, 7.0], float(rng.random()))
                continue
            for _ in range(int(rng.integers(1, 5))):
                bw, bh = float(rng.uniform(9, w / 2)), float(rng.uniform(9, h / 2))
                x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
                cat = int(rng.choice(ids))
                other = ids[(ids.index(cat) + 1) % len(ids)]
                crowd = int(rng.random() < 0.12)
                self.truth(img, cat, [x, y, bw, bh], crowd)
                s = float(rng.uniform(0.05, 1.0))
                kind = int(rng.integers(0, 8)) if i % 6 != 4 else 6   # i % 6 == 4: no detection
                if kind == 0:      # correct
                    self.detect(img, cat, [x + 1, y - 1, bw - 1, bh + 1], s)
                elif kind == 1:    # classification
                    self.detect(img, other, [x + 1, y, bw, bh - 1], s)
                elif kind == 2:    # localisation
                    self.detect(img, cat, [x + 0.45 * bw, y + 0.3 * bh, bw, bh], s)
                elif kind == 3:    # both
                    self.detect(img, other, [x + 0.5 * bw, y + 0.35 * bh, bw, bh], s)
                elif kind == 4:    # duplicate
                    self.detect(img, cat, [x, y, bw, bh], s)
                    self.detect(img, cat, [x + 1, y + 1, bw - 1, bh], s * 0.9)
                elif kind == 5:    # background, far from everything
                    self.detect(img, cat, [w - 6.0, h - 6.0, 5.0, 5.0], s)
                elif kind == 7:    # correct, plus a poor detection of another class
                    self.detect(img, cat, [x, y, bw, bh], s)
                    self.detect(img, other, [x, y, 0.4 * bw, bh], s * 0.5)
                # kind 6: missed
        gt = {"images": self.images, "annotations": self.anns, "categories": CATS}
        return gt, self.results


def _tidecv(gt_path: Path, res_path: Path, masks: bool) -> tuple[dict[str, float], float]:
    tidecv = pytest.importorskip("tidecv", reason="tidecv (the test oracle) is not installed")
    tide = tidecv.TIDE()
    tide.evaluate(tidecv.datasets.COCO(str(gt_path)), tidecv.datasets.COCOResult(str(res_path)),
                  mode=tidecv.TIDE.MASK if masks else tidecv.TIDE.BOX)
    errors = tide.get_all_errors()
    out = dict(next(iter(errors["main"].values())))
    out.update(next(iter(errors["special"].values())))
    return out, next(iter(tide.runs.values())).ap


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tide_equals_tidecv_on_planted_errors(tmp_path: Path, iou_type: str, seed: int) -> None:
    gt, results = _Planter(seed, iou_type == "segm").build(18)
    if seed == 2:   # equal scores: tidecv's insertion order breaks the ties
        for r in results:
            r["score"] = round(r["score"], 1)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    want, want_ap = _tidecv(tmp_path / "gt.json", tmp_path / "res.json", iou_type == "segm")
    analysis = analyse_detections(tmp_path / "gt.json", tmp_path / "res.json", iou_type)
    assert analysis.warnings == []
    assert analysis.ap50 == pytest.approx(want_ap, abs=0.05)
    for name in (*ERROR_TYPES, *SPECIAL_ERROR_TYPES):
        assert analysis.tide[name] == pytest.approx(want[name], abs=0.05), name
    # every kind of error was planted and found, so each number above was exercised
    assert all(analysis.error_counts[name] > 0 for name in ERROR_TYPES), analysis.error_counts
    written = write_errors_json({iou_type: analysis}, tmp_path)
    on_disk = json.loads(written.read_text())
    assert written.name == "errors.json" and list(on_disk) == [iou_type]
    assert on_disk == errors_json({iou_type: analysis})
    for name, value in on_disk[iou_type].items():
        assert value == pytest.approx(want[name], abs=0.05), name


def _one_image_case(masks: bool) -> tuple[dict, list[dict]]:
    """One 61 x 83 image; each detection is one error kind."""
    p = _Planter(0, masks)
    img = p.image(61, 83)
    p.truth(img, 3, [2.0, 3.0, 20.0, 16.0])      # found, then duplicated
    p.truth(img, 5, [40.0, 4.0, 18.0, 20.0])     # detected as a fox
    p.truth(img, 11, [4.0, 30.0, 22.0, 24.0])    # detected too far off
    p.truth(img, 3, [50.0, 35.0, 25.0, 22.0])    # missed
    p.detect(img, 3, [2.0, 3.0, 20.0, 16.0], 0.95)       # TP
    p.detect(img, 3, [3.0, 3.0, 19.0, 16.0], 0.9)        # Dupe
    p.detect(img, 11, [40.0, 4.0, 18.0, 20.0], 0.85)     # Cls (dog -> fox)
    p.detect(img, 11, [14.0, 40.0, 22.0, 24.0], 0.8)     # Loc
    p.detect(img, 5, [14.0, 40.0, 22.0, 24.0], 0.75)     # Both
    p.detect(img, 5, [70.0, 2.0, 10.0, 9.0], 0.7)        # Bkg
    p.detect(img, 5, [70.0, 2.0, 10.0, 9.0], 0.2)        # Bkg, under the threshold
    return {"images": p.images, "annotations": p.anns, "categories": CATS}, p.results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_each_planted_detection_gets_its_error_type(iou_type: str) -> None:
    gt, results = _one_image_case(iou_type == "segm")
    analysis = analyse_detections(gt, results, iou_type, score_threshold=0.5)
    got = [(c.score, c.error, c.other_category_id) for c in analysis.false_positives]
    assert got == [(0.9, "Dupe", 3), (0.85, "Cls", 5), (0.8, "Loc", 11), (0.75, "Both", 11),
                   (0.7, "Bkg", None)]
    assert analysis.error_counts == {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 2,
                                     "Miss": 1}
    # missed objects: largest first; the dog and the fox are explained by Cls / Loc errors
    missed = [(c.category_id, c.error, c.score) for c in analysis.missed]
    assert missed == [(3, "Miss", None), (11, "Loc", None), (5, "Cls", None)]
    assert analysis.missed[2].other_box_xywh == (40.0, 4.0, 18.0, 20.0)
    if iou_type == "segm":
        assert analysis.false_positives[0].segmentation == results[1]["segmentation"]
        assert analysis.missed[0].segmentation == gt["annotations"][3]["segmentation"]
    else:
        assert analysis.false_positives[0].segmentation is None
    (image,) = analysis.per_image
    assert (image.image_id, image.file_name, image.num_gt, image.tp, image.fp, image.fn) == (
        40, "img40.png", 4, 1, 5, 3)
    assert image.errors == {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 1, "Miss": 1}


def test_fixing_errors_by_hand() -> None:
    """Two classes, one image each; AP by hand: class 3 has 2 GT, a TP (0.9) and a Loc error
    (0.8); class 5 has 1 GT and a Bkg error (0.7) above its TP (0.6)."""
    p = _Planter(0, False)
    a, b = p.image(50, 70), p.image(45, 65)
    p.truth(a, 3, [0.0, 0.0, 20.0, 20.0])
    p.truth(a, 3, [30.0, 10.0, 20.0, 20.0])
    p.detect(a, 3, [0.0, 0.0, 20.0, 20.0], 0.9)
    p.detect(a, 3, [40.0, 10.0, 20.0, 20.0], 0.8)     # IoU 1/3 with the second: Loc
    p.truth(b, 5, [5.0, 5.0, 20.0, 20.0])
    p.detect(b, 5, [40.0, 20.0, 10.0, 10.0], 0.7)     # Bkg
    p.detect(b, 5, [5.0, 5.0, 20.0, 20.0], 0.6)
    gt = {"images": p.images, "annotations": p.anns, "categories": CATS[:2]}
    analysis = analyse_detections(gt, p.results)
    # class 3: precision 1 up to recall 0.5 -> 51 of 101 points; class 5: precision 1/2
    ap3, ap5 = 51 / 101 * 100, 50.0
    assert analysis.ap50 == pytest.approx((ap3 + ap5) / 2)
    assert analysis.tide["Loc"] == pytest.approx((100 - ap3) / 2)   # class 3 becomes perfect
    assert analysis.tide["Bkg"] == pytest.approx((100 - ap5) / 2)   # class 5 becomes perfect
    assert analysis.tide["Cls"] == analysis.tide["Dupe"] == analysis.tide["Miss"] == 0
    # FalseNeg: class 3's unmatched GT is removed -> perfect recall at precision 1
    assert analysis.tide["FalseNeg"] == pytest.approx((100 - ap3) / 2)
    assert analysis.tide["FalsePos"] == pytest.approx((100 - ap5) / 2)


def test_crowd_regions_ignore_detections_of_their_class() -> None:
    p = _Planter(0, False)
    img = p.image(57, 63)
    p.truth(img, 3, [0.0, 0.0, 40.0, 40.0], crowd=1)
    p.truth(img, 3, [45.0, 45.0, 15.0, 10.0])
    p.detect(img, 3, [5.0, 5.0, 10.0, 10.0], 0.9)    # inside the crowd: ignored
    p.detect(img, 5, [5.0, 5.0, 10.0, 10.0], 0.8)    # other class: a false positive
    p.detect(img, 3, [45.0, 45.0, 15.0, 10.0], 0.7)
    gt = {"images": p.images, "annotations": p.anns, "categories": CATS[:2]}
    analysis = analyse_detections(gt, p.results)
    assert [(c.category_id, c.error) for c in analysis.false_positives] == [(5, "Bkg")]
    assert analysis.per_class["cat"] == {"gt": 1, "tp": 1, "fp": 0, "fn": 0}
    assert analysis.confusion.sum() == 2  # the crowd is no row, the ignored detection no column


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_hostile_results_warn_or_raise_as_the_coco_evaluator(iou_type: str) -> None:
    gt, results = _one_image_case(True)
    bad = [*results,
           dict(results[0], image_id=999),                      # unknown image
           dict(results[0], category_id=77),                    # unknown category
           dict(results[0], bbox=[math.nan, 1.0, 2.0, 3.0], segmentation=None),  # NaN box
           dict(results[0], score=math.inf)]                    # infinite score
    analysis = analyse_detections(gt, bad, iou_type)
    metrics = COCOEvaluator(gt, iou_type).evaluate(bad)
    assert analysis.warnings == metrics.warnings and len(analysis.warnings) == 4
    assert any("results[7]: image_id 999" in w for w in analysis.warnings)
    assert any("results[8]: category_id 77" in w for w in analysis.warnings)
    # the bad entries change nothing
    assert analysis.tide == analyse_detections(gt, results, iou_type).tide
    with pytest.raises(EvalInputError) as ours:
        analyse_detections(gt, [{"image_id": 40}], iou_type)
    with pytest.raises(EvalInputError) as theirs:
        COCOEvaluator(gt, iou_type).evaluate([{"image_id": 40}])
    assert str(ours.value) == str(theirs.value)
    assert "results[0]" in str(ours.value)


def test_empty_results_and_empty_ground_truth() -> None:
    gt, results = _one_image_case(False)
    nothing = analyse_detections(gt, [])
    assert nothing.ap50 == 0 and nothing.false_positives == []
    assert [c.error for c in nothing.missed] == ["Miss"] * 4
    assert nothing.confusion[:, -1].tolist() == [2, 1, 1, 0]
    no_truth = analyse_detections(dict(gt, annotations=[]), results)
    assert {c.error for c in no_truth.false_positives} == {"Bkg"}
    assert no_truth.confusion[-1].sum() == 6 and no_truth.missed == []


def test_bad_arguments_and_files(tmp_path: Path) -> None:
    gt, results = _one_image_case(False)
    for threshold in (math.nan, "0.5", None, True):
        with pytest.raises(UsageError, match="score_threshold"):
            analyse_detections(gt, results, score_threshold=threshold)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="iou_type"):
        analyse_detections(gt, results, "keypoints")
    with pytest.raises(EvalInputError, match="missing.json: ground-truth file not found"):
        analyse_detections(tmp_path / "missing.json", results)
    (tmp_path / "torn.json").write_text('[{"image_id": 40, ')
    with pytest.raises(EvalInputError, match="torn.json: malformed JSON"):
        analyse_detections(gt, tmp_path / "torn.json")
    with pytest.raises(OutputError, match="errors.json"):
        write_errors_json({"bbox": analyse_detections(gt, results)}, tmp_path / "no" / "dir")


def test_thresholds_are_inclusive_as_tidecv(tmp_path: Path) -> None:
    """IoU exactly 0.5 with a taken ground truth of its class is Loc, exactly 0.1 is Loc,
    below 0.1 is Bkg; an IoU of exactly 0.5 matches."""
    p = _Planter(0, False)
    img = p.image(43, 47)
    p.truth(img, 3, [0.0, 0.0, 20.0, 20.0])
    p.truth(img, 5, [25.0, 20.0, 20.0, 20.0])
    p.detect(img, 3, [0.0, 0.0, 20.0, 20.0], 0.9)      # TP
    p.detect(img, 3, [0.0, 0.0, 20.0, 10.0], 0.8)      # IoU 0.5, ground truth taken: Loc
    p.detect(img, 3, [0.0, 0.0, 20.0, 2.0], 0.7)       # IoU 0.1: Loc
    p.detect(img, 3, [0.0, 0.0, 18.0, 2.0], 0.6)       # IoU 0.09: Bkg
    p.detect(img, 5, [25.0, 20.0, 20.0, 10.0], 0.55)   # IoU 0.5: TP
    gt = {"images": p.images, "annotations": p.anns, "categories": CATS[:2]}
    analysis = analyse_detections(gt, p.results, score_threshold=0.0)
    assert [c.error for c in analysis.false_positives] == ["Loc", "Loc", "Bkg"]
    assert analysis.per_class["dog"]["tp"] == 1
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(p.results))
    want, want_ap = _tidecv(tmp_path / "gt.json", tmp_path / "res.json", False)
    assert analysis.ap50 == pytest.approx(want_ap, abs=0.05)
    assert analysis.tide == pytest.approx(want, abs=0.05)


def test_at_most_100_detections_per_image_as_tidecv(tmp_path: Path) -> None:
    """An image with 130 detections: only its 100 highest-scoring ones count, whatever their
    class (TIDE's per-image limit, unlike COCO's per-class one)."""
    rng = np.random.default_rng(5)
    p = _Planter(5, False)
    img = p.image(89, 101)
    for _ in range(13):
        box = [float(v) for v in (*rng.uniform(0, 60, 2), *rng.uniform(8, 40, 2))]
        p.truth(img, int(rng.choice([3, 5])), box)
        for _ in range(10):
            jitter = (np.array(box) + rng.normal(0, 4, 4)).clip(1, None).tolist()
            p.detect(img, int(rng.choice([3, 5])), jitter, float(rng.random()))
    gt = {"images": p.images, "annotations": p.anns, "categories": CATS[:2]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(p.results))
    want, want_ap = _tidecv(tmp_path / "gt.json", tmp_path / "res.json", False)
    analysis = analyse_detections(gt, p.results, score_threshold=0.0)
    assert analysis.ap50 == pytest.approx(want_ap, abs=0.05)
    assert analysis.tide == pytest.approx(want, abs=0.05)
    assert analysis.confusion[:, :2].sum() == 100
