"""Box and mask IoU against pycocotools.mask.iou (crowd semantics included)."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detseg.eval.iou import box_iou, mask_iou, rle_area


def test_box_iou_hand_example_xyxy_and_xywh():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
    expected = [[50 / 150, 0.0, 1.0]]
    np.testing.assert_allclose(box_iou(a, b), expected)
    xywh = [[5, 0, 10, 10], [20, 20, 10, 10], [0, 0, 10, 10]]
    np.testing.assert_allclose(box_iou([[0, 0, 10, 10]], xywh, fmt="xywh"), expected)


def test_box_iou_is_bit_identical_to_pycocotools_with_crowds():
    rng = np.random.default_rng(0)
    dt = np.concatenate([rng.uniform(0, 50, (40, 2)), rng.uniform(0, 30, (40, 2))], 1)
    gt = np.concatenate([rng.uniform(0, 50, (25, 2)), rng.uniform(0, 30, (25, 2))], 1)
    dt[:5] = np.round(dt[:5])
    gt[:5] = np.round(dt[:5])
    crowd = rng.random(25) < 0.3
    ref = mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist())
    assert np.array_equal(box_iou(dt, gt, fmt="xywh", iscrowd=crowd), ref)


def test_box_iou_empty_and_bad_format():
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    with pytest.raises(ValueError):
        box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]], fmt="cxcywh")


def test_mask_iou_matches_pycocotools_and_accepts_binary_masks():
    rng = np.random.default_rng(1)
    masks = (rng.random((6, 20, 24)) < 0.4).astype(np.uint8)
    masks[3] = 0
    dt_rles = mask_utils.encode(np.asfortranarray(masks[:4].transpose(1, 2, 0)))
    gt_rles = mask_utils.encode(np.asfortranarray(masks[4:].transpose(1, 2, 0)))
    crowd = [1, 0]
    ref = mask_utils.iou(dt_rles, gt_rles, crowd)
    assert np.array_equal(mask_iou(dt_rles, gt_rles, crowd), ref)
    assert np.array_equal(mask_iou(masks[:4], masks[4:], crowd), ref)
    inter = (masks[0] & masks[5]).sum()
    union = (masks[0] | masks[5]).sum()
    assert mask_iou(masks[:1], masks[5:])[0, 0] == pytest.approx(inter / union)
    assert mask_iou([], gt_rles).shape == (0, 2)


def test_rle_area_handles_long_lists():
    rles = mask_utils.frPyObjects([[1, 1, 8, 1, 8, 8, 1, 8]] * 600, 10, 10)
    area = rle_area(rles)
    assert area.shape == (600,) and (area == 49).all()
