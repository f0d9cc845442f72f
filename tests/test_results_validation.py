"""Bad entries in results and ground truth: skipped with a warning naming them, never AP 0 with
no word, never a traceback; both backends agree."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from test_coco_map import random_segm_case

from detseg.errors import EvalInputError
from detseg.eval.coco_map import COCOEvaluator, evaluate_with_pycocotools

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

GT = {
    "images": [{"id": 1, "height": 23, "width": 31}, {"id": 2, "height": 17, "width": 29}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 9, 7], "area": 63,
         "iscrowd": 0, "segmentation": [[2, 3, 11, 3, 11, 10, 2, 10]]},
        {"id": 2, "image_id": 2, "category_id": 5, "bbox": [4, 1, 12, 9], "area": 108,
         "iscrowd": 0, "segmentation": [[4, 1, 16, 1, 16, 10, 4, 10]]},
    ],
    "categories": [{"id": 3, "name": "cup"}, {"id": 5, "name": "cat [x]"}],
}


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode()}


def _box_mask(h: int, w: int, x: int, y: int, bw: int, bh: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y:y + bh, x:x + bw] = 1
    return m


def _counts_list(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F")
    bounds = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, len(flat)]
    return ([0] if flat[0] else []) + np.diff(bounds).tolist()


def _good_segm() -> list[dict]:
    return [
        {"image_id": 1, "category_id": 3, "score": 0.9,
         "segmentation": _rle(_box_mask(23, 31, 2, 3, 9, 7))},
        {"image_id": 2, "category_id": 5, "score": 0.8,
         "segmentation": _rle(_box_mask(17, 29, 4, 1, 12, 8))},
        {"image_id": 2, "category_id": 5, "score": 0.3,
         "segmentation": _rle(_box_mask(17, 29, 0, 0, 3, 3))},
    ]


def _decodes(counts: str, total: int) -> bool:
    """Reference check of an RLE counts string, written from the format's description."""
    if not counts or any(not "0" <= ch <= "o" for ch in counts):
        return False
    values, p = [], 0
    while p < len(counts):
        x = k = 0
        while True:
            if p == len(counts) or k == 6:
                return False
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            p, k = p + 1, k + 1
            if not c & 0x20:
                if c & 0x10:
                    x -= 1 << (5 * k)
                break
        if len(values) > 2:
            x += values[-2]
        values.append(x)
    return min(values) >= 0 and sum(values) == total


def _encode(values: list[int]) -> str:
    """An RLE counts string of ``values`` (any integers), as pycocotools writes one."""
    out = []
    for i, x in enumerate(values):
        if i > 2:
            x -= values[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(c + 48 + (0x20 if more else 0)))
    return "".join(out)


def _corrupt(rng: np.random.Generator, counts: str) -> str | bytes:
    kind = int(rng.integers(6))
    p = int(rng.integers(len(counts)))
    if kind == 0:
        return counts[:p] + chr(int(rng.integers(48, 112))) + counts[p + 1:]
    if kind == 1:
        return counts[:p]
    if kind == 2:
        return counts + chr(int(rng.integers(48, 112)))
    if kind == 3:
        return counts[:p] + "é" + counts[p + 1:]
    if kind == 4:
        return counts.encode()        # bytes: valid
    return counts[:p] + "`" + counts[p:]  # a continuation character: a longer number


def test_invalid_rle_strings_are_skipped_by_name_in_both_backends():
    checked = 0
    for seed in range(40):
        gt, results = random_segm_case(seed)
        if len(results) < 3:
            continue
        rng = np.random.default_rng(seed)
        sizes = {im["id"]: im["height"] * im["width"] for im in gt["images"]}
        bad = copy.deepcopy(results)
        invalid = set()
        for i in rng.choice(len(bad), max(1, len(bad) // 3), replace=False):
            seg = bad[i]["segmentation"]
            seg["counts"] = _corrupt(rng, seg["counts"])
            text = seg["counts"].decode() if isinstance(seg["counts"], bytes) else seg["counts"]
            if not _decodes(text, sizes[bad[i]["image_id"]]):
                invalid.add(int(i))
        valid = [r for i, r in enumerate(bad) if i not in invalid]
        if not valid:
            continue
        got = COCOEvaluator(gt, "segm").evaluate(bad, source="preds.json")
        named = {int(w.split("results[")[1].split("]")[0]) for w in got.warnings}
        assert named == invalid, (seed, got.warnings)
        assert all(w.startswith("preds.json: results[") and "RLE counts" in w
                   for w in got.warnings)
        assert got.stats == COCOEvaluator(gt, "segm").evaluate(valid).stats, seed
        ref = evaluate_with_pycocotools(gt, bad, "segm")
        assert ref.warnings == [w.replace("preds.json", "results") for w in got.warnings]
        np.testing.assert_allclose(ref.precision, got.precision, atol=1e-12)
        checked += 1
    assert checked >= 25


def test_rle_counts_lists_work_in_both_backends_and_bad_ones_are_named():
    results = _good_segm()
    as_lists = copy.deepcopy(results)
    for r in as_lists:
        h, w = r["segmentation"]["size"]
        m = mask_utils.decode({"size": [h, w], "counts": r["segmentation"]["counts"]})
        r["segmentation"]["counts"] = _counts_list(m)
    compressed = COCOEvaluator(GT, "segm").evaluate(results)
    for backend in (COCOEvaluator(GT, "segm").evaluate,
                    lambda res: evaluate_with_pycocotools(GT, res, "segm")):
        m = backend(as_lists)
        assert m.warnings == [] and m.stats == pytest.approx(compressed.stats, abs=1e-12)
    wrong = copy.deepcopy(as_lists)
    wrong[0]["segmentation"]["counts"][-1] += 1                    # one pixel too many
    wrong[1]["segmentation"]["counts"][1] = -3
    wrong[2]["segmentation"]["counts"] = [1.5, 3]
    for backend in (COCOEvaluator(GT, "segm").evaluate,
                    lambda res: evaluate_with_pycocotools(GT, res, "segm")):
        with pytest.raises(EvalInputError) as err:
            backend(wrong)
        assert "results[0]: RLE counts add up to 714 pixels, not height * width = 713" in str(
            err.value)
    wrong = [*copy.deepcopy(results), *wrong]
    m = COCOEvaluator(GT, "segm").evaluate(wrong)
    assert [w.split(": ", 2)[1] for w in m.warnings] == ["results[3]", "results[4]",
                                                          "results[5]"]
    assert "neither a string nor a list of non-negative integers" in m.warnings[1]
    assert m.stats == compressed.stats


def test_wrong_size_masks_and_cut_strings_skip_one_entry_each():
    results = _good_segm()
    wrong_size = {**results[0], "segmentation": _rle(np.ones((10, 10), np.uint8))}
    cut = copy.deepcopy(results[1])
    cut["segmentation"]["counts"] = cut["segmentation"]["counts"][:-1] + "`"
    seven = copy.deepcopy(results[1])
    seven["segmentation"]["counts"] = "0000001" + seven["segmentation"]["counts"]
    mask = _box_mask(17, 29, 4, 1, 12, 8)
    assert _encode(_counts_list(mask)) == results[1]["segmentation"]["counts"]
    negative = copy.deepcopy(results[1])  # adds up to 17 * 29 with a negative run
    negative["segmentation"]["counts"] = _encode([17 * 29 + 3, -3])
    m = COCOEvaluator(GT, "segm").evaluate([*results, wrong_size, cut, seven, negative],
                                           source="r.json")
    assert m.warnings[0] == ("r.json: results[3]: mask size [10, 10] differs from the image "
                             "size [23, 31]; skipped")
    assert m.warnings[1].startswith("r.json: results[4]: RLE counts ") and m.warnings[
        1].endswith("are malformed or do not add up to 17x29 = 493 pixels; skipped")
    assert m.warnings[2].startswith("r.json: results[5]: RLE counts ")
    assert m.warnings[3].startswith("r.json: results[6]: RLE counts ")
    assert m.stats == COCOEvaluator(GT, "segm").evaluate(results).stats
    assert m.stats["AP"] > 0.5


@pytest.mark.parametrize("field, value", [
    ("score", float("nan")), ("score", float("inf")), ("bbox", [1, 2, float("nan"), 3]),
    ("bbox", [1, float("-inf"), 2, 3]), ("score", "high"), ("bbox", [1, 2, 3]),
])
def test_non_finite_or_malformed_numbers_skip_the_entry_with_its_index(field, value):
    good = [{"image_id": 1, "category_id": 3, "bbox": [2, 3, 9, 7], "score": 0.9},
            {"image_id": 2, "category_id": 5, "bbox": [4, 1, 12, 9], "score": 0.7}]
    results = [good[0], {**good[1], field: value}, good[1]]
    for evaluate in (COCOEvaluator(GT).evaluate, lambda r: evaluate_with_pycocotools(GT, r)):
        m = evaluate(results)
        assert len(m.warnings) == 1 and m.warnings[0].startswith(f"results: results[1]: {field}")
        assert m.warnings[0].endswith("; skipped")
        assert m.stats["AP"] == pytest.approx(1.0)


def test_unknown_categories_are_ignored_with_a_warning_in_both_backends():
    good = [{"image_id": 1, "category_id": 3, "bbox": [2, 3, 9, 7], "score": 0.9},
            {"image_id": 2, "category_id": 5, "bbox": [4, 1, 12, 9], "score": 0.7}]
    stray = [{"image_id": 1, "category_id": 77, "bbox": [2, 3, 9, 7], "score": 0.95}] * 3
    for evaluate in (COCOEvaluator(GT).evaluate, lambda r: evaluate_with_pycocotools(GT, r)):
        m = evaluate([good[0], *stray, good[1]])
        assert m.warnings == ["results: results[1]: category_id 77 is not a category of the "
                              "ground truth; ignored, as pycocotools does (3 results)"]
        assert m.stats == COCOEvaluator(GT).evaluate(good).stats
    with pytest.raises(EvalInputError, match=r"^results: results\[0\]: category_id 77 .*\(no "
                                             r"result is usable: all 3 rejected\)$"):
        COCOEvaluator(GT).evaluate(stray)


def test_bad_ground_truth_entries_are_skipped_and_reported(tmp_path):
    gt = copy.deepcopy(GT)
    gt["images"].append({"id": 2, "height": 17, "width": 29, "file_name": "again.jpg"})
    gt["categories"].append({"id": 5, "name": "cat again"})
    gt["annotations"] += [
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [2, 3, -1, 7], "iscrowd": 0,
         "segmentation": {"size": [10, 10], "counts": "0"}},
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [2, float("nan"), 1, 7]},
        {"id": 5, "image_id": 1, "category_id": 9, "bbox": [2, 3, 1, 7]},
        {"id": 6, "image_id": 2, "category_id": 5, "bbox": [1, 1, 1, 1], "area": "big"},
    ]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    results = [{"image_id": 1, "category_id": 3, "bbox": [2, 3, 9, 7], "score": 0.9},
               {"image_id": 2, "category_id": 5, "bbox": [4, 1, 12, 9], "score": 0.7}]
    for evaluate in (lambda: COCOEvaluator(path).evaluate(results),
                     lambda: evaluate_with_pycocotools(path, results)):
        m = evaluate()
        text = "\n".join(m.warnings)
        assert f"{path}: images[2]: image id 2 is listed again (first at images[1])" in text
        assert f"{path}: categories[2]: category id 5 is listed again" in text
        assert f"{path}: annotations[2]: bbox [2, 3, -1, 7] has a negative" in text
        assert f"{path}: annotations[3]: bbox [2, nan, 1, 7] has a negative or non-finite" in text
        assert (f"{path}: annotations[4]: category_id 9 is not listed in the ground truth's "
                f"categories; skipped") in text
        assert f"{path}: annotations[5]: area 'big' is not a finite number" in text
        assert "categorys" not in text
        assert m.stats["AP"] == pytest.approx(1.0)
        assert m.category_names == ["cup", "cat again"]
    gt["annotations"].append({"id": 7, "image_id": 2, "category_id": 5, "iscrowd": 1,
                              "segmentation": {"size": [17, 29], "counts": [400, 90]}})
    gt["annotations"].append({"id": 8, "image_id": 2, "category_id": 5,
                              "segmentation": {"size": [17, 29], "counts": "P5"}})
    segm = COCOEvaluator(gt, "segm", source="shapes/val.json")
    assert ("shapes/val.json: annotations[2]: mask size [10, 10] differs from the image size "
            "[23, 31]; skipped") in segm.warnings
    assert ("shapes/val.json: annotations[6]: RLE counts add up to 490 pixels, not height * "
            "width = 493; skipped") in segm.warnings
    assert ("shapes/val.json: annotations[7]: RLE counts 'P5' are malformed or do not add up to "
            "17x29 = 493 pixels; skipped") in segm.warnings
    assert segm.evaluate(_good_segm()).stats["AP"] > 0.5


def test_ground_truth_without_area_or_iscrowd_and_polygon_results_in_the_reference():
    gt = copy.deepcopy(GT)
    for ann in gt["annotations"]:
        del ann["area"], ann["iscrowd"]
    polygons = [{"image_id": 1, "category_id": 3, "score": 0.9,
                 "segmentation": [[2, 3, 11, 3, 11, 10, 2, 10]]},
                {"image_id": 2, "category_id": 5, "score": 0.6,
                 "segmentation": [[4, 1, 16, 1, 16, 9, 4, 9]]}]
    for iou_type in ("bbox", "segm"):
        ours = COCOEvaluator(gt, iou_type).evaluate(polygons)
        ref = evaluate_with_pycocotools(gt, polygons, iou_type)
        assert ours.warnings == ref.warnings == []
        assert ours.stats == pytest.approx(ref.stats, abs=1e-12)
        assert ours.stats["AP"] > 0.3


def test_a_file_with_nothing_usable_names_the_file_and_the_first_entry(tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(json.dumps([{"image_id": 1, "category_id": 3, "score": 0.5},
                                {"image_id": 1, "category_id": 3, "score": 0.5, "bbox": []}]))
    with pytest.raises(EvalInputError, match=r"preds.json: results\[0\] = .*missing key "
                                             r"'segmentation' \(no result is usable: all 2"):
        COCOEvaluator(GT, "segm").evaluate(path)
    with pytest.raises(EvalInputError, match=r"^gt: images\[0\] = .*segm evaluation needs a "
                                             r"positive integer height and width"):
        COCOEvaluator({**GT, "images": [{"id": 1}]}, "segm", source="gt")
    assert COCOEvaluator(GT).evaluate([]).warnings == []
