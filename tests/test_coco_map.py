"""COCOEvaluator against pycocotools' COCOeval on hundreds of small random cases."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detseg.errors import EvalInputError
from detseg.eval.coco_map import STAT_KEYS, COCOEvaluator

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

N_BBOX_CASES = 300
N_SEGM_CASES = 120


def _reference(gt: dict, results: list[dict], iou_type: str):
    """pycocotools' stats, per-class AP and arrays (silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dt = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]
    per_class = []
    for k in range(prec.shape[2]):
        s = prec[:, :, k, 0, -1]
        per_class.append(float(np.mean(s[s > -1])) if (s > -1).any() else -1.0)
    return ev.stats, per_class, ev.eval


def _random_box(rng: np.random.Generator, h: int, w: int, grid: bool) -> list[float]:
    kind = rng.random()
    if kind < 0.15:      # tiny, sometimes degenerate
        bw, bh = rng.integers(0, 4, 2).astype(float)
    elif kind < 0.3:     # huge
        bw, bh = rng.uniform(90, 400, 2)
    else:
        bw, bh = rng.uniform(2, 120, 2)
    x, y = rng.uniform(-5, w, 2) if not grid else rng.integers(-2, w, 2).astype(float)
    if grid:
        bw, bh = float(round(bw)), float(round(bh))
    return [float(x), float(y), float(bw), float(bh)]


def _jitter(rng: np.random.Generator, box: list[float], grid: bool) -> list[float]:
    x, y, w, h = box
    if grid:
        d = rng.integers(-2, 3, 4).astype(float) * (rng.random() < 0.6)
    else:
        d = rng.normal(0, 0.08, 4) * np.array([w, h, w, h]) if rng.random() < 0.8 else (
            np.zeros(4))
    return [x + d[0], y + d[1], max(w + d[2], 0.0), max(h + d[3], 0.0)]


def random_bbox_case(seed: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    grid = rng.random() < 0.5             # integer boxes: many exact IoU ties and boundaries
    n_img = int(rng.integers(1, 7))
    cat_ids = sorted(rng.choice(np.arange(1, 30), int(rng.integers(1, 5)), replace=False).tolist())
    images, anns, results = [], [], []
    ann_id = 0 if rng.random() < 0.2 else 1   # sometimes a ground truth with id 0
    img_ids = rng.choice(np.arange(1, 1000), n_img, replace=False).tolist()
    used_cats = cat_ids[: max(1, len(cat_ids) - int(rng.random() < 0.3))]  # a category w/o GT
    score_pool = np.round(rng.random(6), 2)
    for img_id in img_ids:
        h, w = int(rng.integers(16, 400)), int(rng.integers(16, 400))
        images.append({"id": int(img_id), "height": h, "width": w, "file_name": f"{img_id}.jpg"})
        gts = []
        for _ in range(int(rng.integers(0, 9)) if rng.random() > 0.15 else 0):
            box = _random_box(rng, h, w, grid)
            area = box[2] * box[3]
            r = rng.random()
            if r < 0.1:
                area = float(rng.choice([1024, 9216, 0]))   # exactly on area range bounds
            elif r < 0.2:
                area = float(rng.uniform(0, 20000))
            cat = int(rng.choice(used_cats))
            ann = {"id": ann_id, "image_id": int(img_id), "category_id": cat, "bbox": box,
                   "area": area, "iscrowd": int(rng.random() < 0.15)}
            anns.append(ann)
            gts.append(ann)
            ann_id += 1
            if grid and rng.random() < 0.2:
                # two halves of the box: a detection on the whole box ties at IoU 0.5 on both
                x, y, bw, bh = box
                for half in ([x, y, bw, bh / 2], [x, y + bh / 2, bw, bh / 2]):
                    anns.append({**ann, "id": ann_id, "bbox": half, "iscrowd": 0})
                    gts.append(anns[-1])
                    ann_id += 1
        n_det = int(rng.integers(0, 16)) if rng.random() > 0.15 else 0
        crowded = rng.random() < 0.05             # > 100 in one group: truncation at maxDets
        if crowded:
            n_det = 110
        for _ in range(n_det):
            if gts and rng.random() < 0.7:
                g = gts[int(rng.integers(len(gts)))]
                box = _jitter(rng, g["bbox"], grid)
                cat = g["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids))
            else:
                box = _random_box(rng, h, w, grid)
                cat = int(rng.choice(cat_ids))
            if crowded:
                cat = cat_ids[0]
            score = float(rng.choice(score_pool)) if rng.random() < 0.5 else float(rng.random())
            results.append({"image_id": int(img_id), "category_id": cat, "bbox": box,
                            "score": score})
    rng.shuffle(results)
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    return gt, results


def _random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(0.5, h / 1.5), rng.uniform(0.5, w / 1.5)
    if rng.random() < 0.5:
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    else:
        m = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
    return m.astype(np.uint8)


def _shift(rng: np.random.Generator, m: np.ndarray) -> np.ndarray:
    dy, dx = rng.integers(-2, 3, 2)
    out = np.roll(m, (int(dy), int(dx)), axis=(0, 1))
    if rng.random() < 0.3:
        out = out & (rng.random(m.shape) < 0.9)
    return out.astype(np.uint8)


def _encode(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    return rle


def _uncompressed(m: np.ndarray) -> dict:
    flat = m.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.r_[0, change, len(flat)]
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(m.shape), "counts": counts}


def _polygon(rng: np.random.Generator, h: int, w: int) -> list[list[float]]:
    cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1, max(h, w) / 2)
    ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))))
    pts = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)
    parts = [pts.ravel().tolist()]
    if rng.random() < 0.2:
        parts.append((pts * 0.5 + 3).ravel().tolist())
    return parts


def random_segm_case(seed: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(10_000 + seed)
    n_img = int(rng.integers(1, 5))
    cat_ids = sorted(rng.choice(np.arange(1, 20), int(rng.integers(1, 4)), replace=False).tolist())
    used_cats = cat_ids[: max(1, len(cat_ids) - int(rng.random() < 0.3))]
    with_box = rng.random() < 0.3     # loadRes then takes areas from the boxes
    images, anns, results = [], [], []
    ann_id = 1
    for img_id in range(1, n_img + 1):
        h, w = int(rng.integers(8, 140)), int(rng.integers(8, 140))
        images.append({"id": img_id, "height": h, "width": w})
        masks = []
        for _ in range(int(rng.integers(0, 7)) if rng.random() > 0.15 else 0):
            crowd = int(rng.random() < 0.15)
            cat = int(rng.choice(used_cats))
            r = rng.random()
            if crowd:
                m = _random_mask(rng, h, w)
                seg = _uncompressed(m)
            elif r < 0.4:
                seg = _polygon(rng, h, w)
                m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
            else:
                m = _random_mask(rng, h, w)
                seg = _encode(m)
            area = float(m.sum()) * (float(rng.choice([1, 1, 1, 30, 200])))  # reach all ranges
            anns.append({"id": ann_id, "image_id": img_id, "category_id": cat,
                         "segmentation": seg, "area": area, "iscrowd": crowd,
                         "bbox": [0, 0, 1, 1]})
            masks.append((m, cat))
            ann_id += 1
        for _ in range(int(rng.integers(0, 12)) if rng.random() > 0.15 else 0):
            if masks and rng.random() < 0.7:
                m, cat = masks[int(rng.integers(len(masks)))]
                m = _shift(rng, m)
                if rng.random() < 0.2:
                    cat = int(rng.choice(cat_ids))
            else:
                m, cat = _random_mask(rng, h, w), int(rng.choice(cat_ids))
            res = {"image_id": img_id, "category_id": cat, "segmentation": _encode(m),
                   "score": float(rng.choice([0.5, 0.7, 0.9])) if rng.random() < 0.5
                   else float(rng.random())}
            if with_box:
                res["bbox"] = mask_utils.toBbox(res["segmentation"]).tolist()
            results.append(res)
    rng.shuffle(results)
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    return gt, results


def _compare(gt: dict, results: list[dict], iou_type: str) -> None:
    ref_stats, ref_per_class, ref_eval = _reference(gt, results, iou_type)
    got = COCOEvaluator(gt, iou_type).evaluate(results)
    ours = np.array([got.stats[k] for k in STAT_KEYS])
    np.testing.assert_allclose(ours, ref_stats, rtol=0, atol=1e-9)
    np.testing.assert_allclose(list(got.per_class.values()), ref_per_class, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.precision, ref_eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.recall, ref_eval["recall"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.scores, ref_eval["scores"], rtol=0, atol=1e-12)


def test_bbox_matches_pycocotools_on_random_cases():
    checked = 0
    for seed in range(N_BBOX_CASES):
        gt, results = random_bbox_case(seed)
        if not results:
            continue
        try:
            _compare(gt, results, "bbox")
        except AssertionError as err:
            raise AssertionError(f"bbox case seed={seed}: {err}") from None
        checked += 1
    assert checked > 250


def test_segm_matches_pycocotools_on_random_cases():
    checked = 0
    for seed in range(N_SEGM_CASES):
        gt, results = random_segm_case(seed)
        if not results:
            continue
        try:
            _compare(gt, results, "segm")
        except AssertionError as err:
            raise AssertionError(f"segm case seed={seed}: {err}") from None
        checked += 1
    assert checked > 100


def _reference_max_dets(gt: dict, results: list[dict], max_dets: list[int]):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_custom_max_dets_match_pycocotools_including_the_ap_at_100_quirk():
    gt, results = random_bbox_case(3)
    for max_dets in ([1, 5, 20], [1, 10, 100], [2, 3, 4]):
        ref = _reference_max_dets(gt, results, max_dets)
        got = COCOEvaluator(gt).evaluate(results, max_dets=max_dets)
        np.testing.assert_allclose([got.stats[k] for k in STAT_KEYS], ref.stats, atol=1e-12)
        np.testing.assert_allclose(got.precision, ref.eval["precision"], atol=1e-12)


def test_inputs_are_not_modified_and_paths_work(tmp_path):
    gt, results = random_bbox_case(5)
    gt_copy, res_copy = copy.deepcopy(gt), copy.deepcopy(results)
    direct = COCOEvaluator(gt).evaluate(results)
    assert gt == gt_copy and results == res_copy
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    from_files = COCOEvaluator(tmp_path / "gt.json").evaluate(str(tmp_path / "res.json"))
    assert from_files.stats == direct.stats
    assert json.loads(json.dumps(from_files.to_dict()))["stats"]["AP"] == direct.stats["AP"]


def test_empty_results_and_categories_without_ground_truth():
    gt, _ = random_bbox_case(7)
    gt["categories"].append({"id": 999, "name": "never"})
    m = COCOEvaluator(gt).evaluate([])
    assert m.per_class["never"] == -1.0
    assert all(v in (0.0, -1.0) for v in m.stats.values())
    assert m.precision.shape == (10, 101, len(gt["categories"]), 4, 3)


GT_SMALL = {
    "images": [{"id": 1, "height": 20, "width": 30}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5],
                     "area": 25, "iscrowd": 0,
                     "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}],
    "categories": [{"id": 3, "name": "thing"}],
}


@pytest.mark.parametrize("results, message", [
    ([{"image_id": 1, "category_id": 4, "bbox": [1, 1, 5, 5], "score": 0.5}],
     r"results\[0\]: category_id 4 is not a category"),
    ([{"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]}],
     r"results\[0\] = .*missing key 'score'"),
    ([{"image_id": 1, "category_id": 3, "bbox": [1, 1, 5], "score": 0.5}],
     r"results\[0\]: bbox \[1, 1, 5\] is not \[x, y, w, h\]"),
    ([{"image_id": "a", "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5}],
     r"results\[0\]: image_id 'a' is not an integer"),
    ([{"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "score": float("nan")}],
     r"results\[0\]: score nan is not a finite number"),
    ({"image_id": 1}, r"results must be a JSON list"),
])
def test_bad_results_name_the_offending_entry(results, message):
    """A file none of whose entries is usable is an error naming the first bad one."""
    with pytest.raises(EvalInputError, match=message):
        COCOEvaluator(GT_SMALL).evaluate(results)


@pytest.mark.parametrize("bad, message", [
    ({"image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5},
     r"^results: results\[1\]: image_id 2 is not an image of the ground truth; skipped$"),
    ({"image_id": 1, "category_id": 3, "bbox": [1, 1, -5, 5], "score": 0.5},
     r"^results: results\[1\]: bbox \[1, 1, -5, 5\] has a negative or non-finite size; "
     r"skipped$"),
])
def test_one_bad_result_is_skipped_with_a_warning_naming_it(bad, message):
    good = {"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5}
    m = COCOEvaluator(GT_SMALL).evaluate([good, bad])
    assert len(m.warnings) == 1 and re.match(message, m.warnings[0]), m.warnings
    assert m.stats == COCOEvaluator(GT_SMALL).evaluate([good]).stats
    assert m.stats["AP"] == pytest.approx(1.0)


def test_bad_files_and_masks(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": 1,')
    with pytest.raises(EvalInputError, match=r"bad.json: malformed JSON"):
        COCOEvaluator(GT_SMALL).evaluate(bad)
    with pytest.raises(EvalInputError, match=r"missing.json: ground-truth file not found"):
        COCOEvaluator(tmp_path / "missing.json")
    wrong_size = mask_utils.encode(np.asfortranarray(np.ones((10, 10), np.uint8)))
    res = [{"image_id": 1, "category_id": 3, "score": 1.0,
            "segmentation": {"size": [10, 10], "counts": wrong_size["counts"].decode()}}]
    with pytest.raises(EvalInputError, match=r"results\[0\]: mask size \[10, 10\] differs"):
        COCOEvaluator(GT_SMALL, "segm").evaluate(res)
    gt = copy.deepcopy(GT_SMALL)
    gt["annotations"][0]["category_id"] = 5
    with pytest.raises(EvalInputError, match=r"annotations\[0\]: category_id 5 is not listed"):
        COCOEvaluator(gt)
