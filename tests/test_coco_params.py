"""COCOEvaluator with non-default ``Params`` against pycocotools' COCOeval with the same ones."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_coco_map import random_bbox_case, random_segm_case

from detseg.errors import UsageError
from detseg.eval.coco_map import STAT_KEYS, COCOEvaluator, Params, evaluate_with_pycocotools

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _pycocotools(gt: dict, results: list[dict], params: Params, summarize: bool = True):
    """pycocotools' COCOeval with ``params`` (silenced); ``summarize`` needs three max_dets."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), params.iou_type)
        if params.img_ids is not None:
            ev.params.imgIds = list(params.img_ids)
        if params.cat_ids is not None:
            ev.params.catIds = list(params.cat_ids)
        ev.params.iouThrs = np.array(params.iou_thrs)
        ev.params.recThrs = np.array(params.rec_thrs)
        ev.params.maxDets = list(params.max_dets)
        ev.params.areaRng = [list(r) for r in params.area_rng]
        ev.params.areaRngLbl = list(params.area_labels)
        ev.params.useCats = int(params.use_cats)
        ev.evaluate()
        ev.accumulate()
        if summarize:
            ev.summarize()
    return ev


def _subsets(rng: np.random.Generator, gt: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
    img_ids = sorted(im["id"] for im in gt["images"])
    cat_ids = sorted(c["id"] for c in gt["categories"])
    keep_img = rng.choice(img_ids, max(1, len(img_ids) - 1), replace=False)
    keep_cat = rng.choice(cat_ids, max(1, len(cat_ids) - int(len(cat_ids) > 1)), replace=False)
    return tuple(sorted(int(i) for i in keep_img)), tuple(sorted(int(c) for c in keep_cat))


def _assert_same(got, ref, params: Params, where: str) -> None:
    try:
        np.testing.assert_allclose(got.precision, ref.eval["precision"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.recall, ref.eval["recall"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.scores, ref.eval["scores"], rtol=0, atol=1e-12)
        if len(params.max_dets) >= 3:
            np.testing.assert_allclose([got.stats[k] for k in STAT_KEYS], ref.stats, rtol=0,
                                       atol=1e-9)
    except AssertionError as err:
        raise AssertionError(f"{where}: {err}") from None


@pytest.mark.parametrize("iou_type, n_cases", [("bbox", 70), ("segm", 30)])
def test_non_default_params_match_pycocotools(iou_type, n_cases):
    """max_dets [1, 5, 20], category-agnostic matching, image and category subsets."""
    checked = 0
    for seed in range(n_cases):
        gt, results = random_bbox_case(seed) if iou_type == "bbox" else random_segm_case(seed)
        if not results:
            continue
        rng = np.random.default_rng(seed)
        img_ids, cat_ids = _subsets(rng, gt)
        for use_cats in (True, False):
            params = Params(iou_type=iou_type, max_dets=(1, 5, 20), use_cats=use_cats,
                            img_ids=img_ids, cat_ids=cat_ids)
            got = COCOEvaluator(gt, params=params).evaluate(results)
            _assert_same(got, _pycocotools(gt, results, params), params,
                         f"{iou_type} seed={seed} use_cats={use_cats}")
        checked += 1
    assert checked >= n_cases * 0.8


def test_thresholds_area_ranges_and_one_max_dets_match_pycocotools_arrays():
    gt, results = random_bbox_case(11)
    params = Params(iou_thrs=(0.3, 0.55, 1.0), rec_thrs=tuple(np.linspace(0, 1, 11)),
                    max_dets=(7,), area_rng=((0, 1e10), (0, 400.0), (400.0, 1e10)),
                    area_labels=("all", "small", "large"), use_cats=False)
    got = COCOEvaluator(gt, params=params).evaluate(results)
    ref = _pycocotools(gt, results, params, summarize=False)
    _assert_same(got, ref, params, "custom thresholds")
    assert got.precision.shape == (3, 11, 1, 3, 1)
    # One max_dets: every number is read there; no IoU 0.5/0.75 threshold and no "medium"
    # range give -1, as pycocotools' lookups do.
    s = got.precision[:, :, :, 0, 0]
    assert got.stats["AP"] == pytest.approx(np.mean(s[s > -1]), abs=1e-12)
    r = got.recall[:, :, 0, 0]
    assert got.stats["AR1"] == got.stats["AR10"] == got.stats["AR100"] == pytest.approx(
        np.mean(r[r > -1]), abs=1e-12)
    assert got.stats["AP50"] == got.stats["AP75"] == got.stats["APm"] == -1.0
    assert got.per_class == {"all": got.stats["AP"]}
    assert got.category_ids == [-1] and got.category_names == ["all"]


def test_max_dets_300_reads_ap_at_300_and_matches_pycocotools_arrays():
    gt, results = random_bbox_case(16)   # an image with 110 detections of one category
    params = Params(max_dets=(300,))
    got = COCOEvaluator(gt, params=params).evaluate(results)
    ref = _pycocotools(gt, results, params, summarize=False)
    _assert_same(got, ref, params, "max_dets [300]")
    s = got.precision[:, :, :, 0, 0]
    assert got.stats["AP"] == pytest.approx(np.mean(s[s > -1]), abs=1e-12)
    assert got.stats["AP"] > 0


def test_defaults_are_the_default_params_and_the_reference_backend_agrees():
    gt, results = random_bbox_case(21)
    default = COCOEvaluator(gt).evaluate(results)
    explicit = COCOEvaluator(gt, "bbox", Params()).evaluate(results)
    assert default.stats == explicit.stats and default.params == Params()
    np.testing.assert_array_equal(default.precision, explicit.precision)
    params = Params(max_dets=(2, 4, 8), use_cats=False, img_ids=_subsets(
        np.random.default_rng(1), gt)[0])
    ours = COCOEvaluator(gt, params=params).evaluate(results)
    ref = evaluate_with_pycocotools(gt, results, params=params)
    assert ours.stats == pytest.approx(ref.stats, abs=1e-12)
    np.testing.assert_allclose(ours.precision, ref.precision, atol=1e-12)
    one = evaluate_with_pycocotools(gt, results, max_dets=(50,))
    assert one.stats == pytest.approx(COCOEvaluator(gt).evaluate(results, (50,)).stats,
                                      abs=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"iou_type": "keypoints"}, r"iou_type must be one of"),
    ({"max_dets": (0, 10)}, r"Params.max_dets must be positive integers"),
    ({"max_dets": ()}, r"Params.max_dets must be positive integers"),
    ({"max_dets": (1.5,)}, r"Params.max_dets must be positive integers"),
    ({"iou_thrs": (0.0, 0.5)}, r"Params.iou_thrs must be numbers in \(0.0, 1.0\]"),
    ({"iou_thrs": (0.5, float("nan"))}, r"Params.iou_thrs must be numbers"),
    ({"rec_thrs": (0.5, 0.2)}, r"Params.rec_thrs must be ascending"),
    ({"rec_thrs": ("a",)}, r"Params.rec_thrs must be a list of numbers"),
    ({"area_rng": ((0, 10),), "area_labels": ("all", "small")}, r"one \(low, high\) pair"),
    ({"area_rng": ((10, 0),), "area_labels": ("all",)}, r"low end is above its high end"),
    ({"img_ids": ()}, r"Params.img_ids must be a non-empty list"),
    ({"cat_ids": (1, True)}, r"Params.cat_ids must be a non-empty list of integer ids"),
])
def test_bad_params_are_usage_errors_naming_the_field(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Params(**kwargs)


def test_params_ids_must_be_in_the_ground_truth_and_iou_types_agree():
    gt, _ = random_bbox_case(5)
    missing = max(im["id"] for im in gt["images"]) + 1
    with pytest.raises(UsageError, match=rf"Params.img_ids: \[{missing}\] are not images"):
        COCOEvaluator(gt, params=Params(img_ids=(missing,)))
    with pytest.raises(UsageError, match=r"Params.cat_ids: \[999\] are not categories"):
        COCOEvaluator(gt, params=Params(cat_ids=(999,)))
    with pytest.raises(UsageError, match=r"iou_type 'segm' differs from params.iou_type"):
        COCOEvaluator(gt, "segm", Params(iou_type="bbox"))
    assert Params(max_dets=(100, 1, 10)).max_dets == (1, 10, 100)
    assert Params(img_ids=(3, 1, 3)).img_ids == (1, 3)
