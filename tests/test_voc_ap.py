"""VOC AP on a hand-worked example (all-point and 2007 11-point, difficult ignored)."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.eval.voc_ap import voc_ap, voc_evaluate


def _example():
    # Image 0: two cats (one difficult), image 1: one cat and one dog.
    gt = {
        0: {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 1],
            "difficult": [False, True]},
        1: {"boxes": [[0, 0, 10, 10], [50, 50, 60, 60]], "labels": [1, 2]},
    }
    dt = {
        0: {"boxes": [[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]],
            "labels": [1, 1, 1], "scores": [0.9, 0.8, 0.7]},
        1: {"boxes": [[30, 30, 40, 40], [0, 1, 10, 10], [50, 50, 60, 60]],
            "labels": [1, 1, 2], "scores": [0.85, 0.6, 0.5]},
    }
    return gt, dt


def test_hand_example_all_point_and_07():
    gt, dt = _example()
    # cat, by score: 0.9 TP (img0), 0.85 FP (img1, no overlap), 0.8 FP (duplicate on img0),
    # 0.7 neither (difficult; keeps its place as the devkit does), 0.6 TP (img1, IoU 0.9).
    m = voc_evaluate(dt, gt, class_names=["bg", "cat", "dog"])
    np.testing.assert_allclose(m.recall["cat"], [0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(m.precision["cat"], [1.0, 0.5, 1 / 3, 1 / 3, 0.5])
    # Envelope: p=1 up to r=0.5, then 0.5 up to r=1 -> 0.5 * 1 + 0.5 * 0.5.
    assert m.per_class["cat"] == pytest.approx(0.75)
    assert m.per_class["dog"] == pytest.approx(1.0)
    assert m.mAP == pytest.approx(0.875)
    m07 = voc_evaluate(dt, gt, class_names=["bg", "cat", "dog"], use_07_metric=True)
    # 11 points: r in {0,..,0.5} -> 1 (6 points), r in {0.6,..,1} -> 0.5 (5 points).
    assert m07.per_class["cat"] == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def test_iou_threshold_is_strict_and_inclusive_boxes():
    gt = [{"boxes": [[0, 0, 10, 10]], "labels": [1]}]
    half = [{"boxes": [[0, 0, 10, 5]], "labels": [1], "scores": [1.0]}]
    assert voc_evaluate(half, gt, iou_threshold=0.5).per_class["1"] == 0.0   # IoU exactly 0.5
    assert voc_evaluate(half, gt, iou_threshold=0.49).per_class["1"] == 1.0
    # With +1 pixel widths the IoU is 66/121 > 0.5.
    assert voc_evaluate(half, gt, inclusive=True).per_class["1"] == 1.0


def test_class_without_ground_truth_is_minus_one_and_left_out():
    gt = [{"boxes": [[0, 0, 10, 10]], "labels": [1]}]
    dt = [{"boxes": [[0, 0, 10, 10], [5, 5, 9, 9]], "labels": [1, 3], "scores": [0.9, 0.8]}]
    m = voc_evaluate(dt, gt)
    assert m.per_class == {"1": 1.0, "3": -1.0}
    assert m.mAP == 1.0
    assert m.to_dict()["mAP"] == 1.0


def test_voc_ap_curve_function():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    assert voc_ap(np.array([]), np.array([])) == 0.0
