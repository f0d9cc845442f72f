"""The detection confusion matrix, per-class and per-image counts of detseg.eval.analysis,
against small cases counted by hand (boxes and masks, crowd regions, background row and
column, score threshold)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detseg.eval.analysis import analyse_detections

CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 4, "name": "c"}]
SIZES = {1: (53, 71), 2: (41, 37), 3: (31, 29)}   # image id: (height, width), odd on purpose


def _pixels(box: list[float], img: int) -> np.ndarray:
    h, w = SIZES[img]
    m = np.zeros((h, w), dtype=np.uint8)
    x, y, bw, bh = (int(v) for v in box)
    m[y:y + bh, x:x + bw] = 1
    return m


def _compressed(box: list[float], img: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(_pixels(box, img)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def _uncompressed(box: list[float], img: int) -> dict:
    """An RLE whose counts are a list, as COCO stores crowd regions."""
    flat = _pixels(box, img).flatten(order="F")
    cuts = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, cuts, len(flat)]).tolist()
    return {"size": list(SIZES[img]), "counts": ([0] if flat[0] else []) + runs}


def _case(masks: bool) -> tuple[dict, list[dict]]:
    truth = [  # (image, category, box, crowd)
        (1, 1, [2, 2, 20, 20], 0),     # g1 a: found by d1 (d2 of class b comes too late)
        (1, 1, [30, 2, 20, 20], 0),    # g2 a: found by d10, though d9 (b) overlaps it more
        (1, 2, [2, 30, 20, 20], 0),    # g3 b: detected as a (d3)
        (1, 4, [30, 30, 20, 20], 0),   # g4 c: its detection d4 scores under the threshold
        (1, 2, [55, 5, 10, 10], 0),    # g5 b: found by d8
        (1, 4, [50, 35, 20, 15], 1),   # crowd of c
        (3, 1, [1, 1, 10, 10], 0),     # missed
    ]
    dets = [  # (image, category, box, score)
        (1, 1, [2, 2, 20, 20], 0.95),   # d1 TP a
        (1, 2, [2, 2, 20, 19], 0.9),    # d2 b on g1, already found: false alarm
        (1, 1, [2, 30, 20, 20], 0.85),  # d3 a on g3 (b): confusion b -> a
        (1, 4, [30, 30, 20, 20], 0.3),  # d4 under the threshold
        (1, 1, [40, 2, 20, 20], 0.8),   # d5 IoU 1/3 with g2: false alarm
        (1, 4, [52, 37, 10, 10], 0.75),  # d6 c inside the crowd of c: ignored
        (1, 1, [52, 37, 10, 10], 0.7),  # d7 a inside the crowd of c: false alarm
        (1, 2, [55, 5, 10, 10], 0.6),   # d8 TP b
        (1, 2, [30, 2, 20, 20], 0.65),  # d9 b on g2: g2 goes to d10 (its class): false alarm
        (1, 1, [31, 2, 20, 19], 0.52),  # d10 TP a
        (2, 2, [3, 3, 10, 10], 0.9),    # image without ground truth: false alarm
        (2, 1, [20, 20, 10, 10], 0.4),  # under the threshold
    ]
    images = [{"id": i, "file_name": f"{i}.png", "height": h, "width": w}
              for i, (h, w) in SIZES.items()]
    anns: list[dict[str, Any]] = []
    for n, (img, cat, box, crowd) in enumerate(truth):
        ann: dict[str, Any] = {"id": n + 1, "image_id": img, "category_id": cat, "bbox": box,
                               "area": box[2] * box[3], "iscrowd": crowd}
        if masks:
            ann["segmentation"] = (_uncompressed if crowd else _compressed)(box, img)
        anns.append(ann)
    results = []
    for img, cat, box, score in dets:
        entry: dict[str, Any] = {"image_id": img, "category_id": cat, "score": score}
        if masks:
            entry["segmentation"] = _compressed(box, img)
        else:
            entry["bbox"] = box
        results.append(entry)
    return {"images": images, "annotations": anns, "categories": CATS}, results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_confusion_matrix_counted_by_hand(iou_type: str) -> None:
    gt, results = _case(iou_type == "segm")
    analysis = analyse_detections(gt, results, iou_type, score_threshold=0.5)
    assert analysis.warnings == []
    assert analysis.category_ids == [1, 2, 4] and analysis.class_names == ["a", "b", "c"]
    assert analysis.confusion.dtype == np.int64
    #                                  pred a  b  c  missed
    assert analysis.confusion.tolist() == [[2, 0, 0, 1],     # true a
                                           [1, 1, 0, 0],     # true b
                                           [0, 0, 0, 1],     # true c
                                           [2, 3, 0, 0]]     # background (false alarms)
    assert analysis.per_class == {"a": {"gt": 3, "tp": 2, "fp": 3, "fn": 1},
                                  "b": {"gt": 2, "tp": 1, "fp": 3, "fn": 1},
                                  "c": {"gt": 1, "tp": 0, "fp": 0, "fn": 1}}


def test_per_image_counts_and_order() -> None:
    gt, results = _case(False)
    analysis = analyse_detections(gt, results, score_threshold=0.5)
    got = [(im.image_id, im.file_name, im.num_gt, im.tp, im.fp, im.fn, im.errors)
           for im in analysis.per_image]
    none = dict.fromkeys(("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"), 0)
    assert got == [
        (1, "1.png", 5, 3, 5, 2, {**none, "Cls": 3, "Loc": 1, "Bkg": 1, "Miss": 1}),
        (2, "2.png", 0, 0, 1, 0, {**none, "Bkg": 1}),
        (3, "3.png", 1, 0, 0, 1, {**none, "Miss": 1}),
    ]
    # missed objects: g3 (explained by d3's class error), g4 and the one of image 3
    assert [(c.image_id, c.category_id, c.error, c.other_category_id)
            for c in analysis.missed] == [(1, 2, "Cls", 1), (1, 4, "Miss", None),
                                          (3, 1, "Miss", None)]
    assert analysis.missed[0].box_xywh == (2.0, 30.0, 20.0, 20.0)
    assert [c.score for c in analysis.false_positives] == [0.9, 0.9, 0.85, 0.8, 0.7, 0.65]


def test_the_score_threshold_moves_detections_in_and_out() -> None:
    gt, results = _case(False)
    low = analyse_detections(gt, results, score_threshold=0.0).confusion
    assert low[2].tolist() == [0, 0, 1, 0]          # d4 now finds g4
    assert low[3].tolist() == [3, 3, 0, 0]          # image 2's a detection is a false alarm
    high = analyse_detections(gt, results, score_threshold=0.99)
    assert high.confusion[:3, 3].tolist() == [3, 2, 1] and high.confusion[3].sum() == 0
    assert high.false_positives == [] and len(high.missed) == 6
    # TIDE's numbers use every detection, whatever the threshold
    assert high.tide == analyse_detections(gt, results, score_threshold=0.0).tide


def test_rows_sum_to_ground_truth_and_counts_agree_on_random_sets() -> None:
    rng = np.random.default_rng(7)
    images, anns, results = [], [], []
    for i in range(25):
        h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": h, "width": w})
        for _ in range(int(rng.integers(0, 6))):
            x, y = float(rng.uniform(0, w - 10)), float(rng.uniform(0, h - 10))
            box = [x, y, float(rng.uniform(3, w - x)), float(rng.uniform(3, h - y))]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "bbox": box,
                         "category_id": int(rng.choice([1, 2, 4])), "area": box[2] * box[3],
                         "iscrowd": int(rng.random() < 0.1)})
            for _ in range(int(rng.integers(0, 4))):
                jitter = (box + rng.normal(0, 3, 4)).clip(0, None).tolist()
                results.append({"image_id": i + 1, "category_id": int(rng.choice([1, 2, 4])),
                                "bbox": jitter, "score": float(rng.random())})
    gt = {"images": images, "annotations": anns, "categories": CATS}
    analysis = analyse_detections(gt, results, score_threshold=0.3)
    real = [a for a in anns if not a["iscrowd"]]
    for k, cat in enumerate(CATS):
        assert analysis.confusion[k].sum() == sum(a["category_id"] == cat["id"] for a in real)
    assert analysis.confusion[-1, -1] == 0
    images_total = {key: sum(getattr(im, key) for im in analysis.per_image)
                    for key in ("num_gt", "tp", "fp", "fn")}
    classes_total = {key: sum(c[key] for c in analysis.per_class.values())
                     for key in ("gt", "tp", "fp", "fn")}
    assert list(images_total.values()) == list(classes_total.values())
    assert images_total["tp"] == int(np.trace(analysis.confusion))
    assert images_total["fp"] == len(analysis.false_positives)
    assert images_total["fn"] == len(analysis.missed)
    totals = [sum(im.errors.values()) for im in analysis.per_image]
    assert totals == sorted(totals, reverse=True)
    assert [c.score for c in analysis.false_positives] == sorted(
        (c.score for c in analysis.false_positives), reverse=True)
    areas = [c.box_xywh[2] * c.box_xywh[3] for c in analysis.missed]
    assert areas == sorted(areas, reverse=True)


def test_categories_sharing_a_name_stay_apart() -> None:
    gt, results = _case(False)
    gt["categories"] = [{"id": 4, "name": "a"}, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    analysis = analyse_detections(gt, results)
    assert analysis.category_ids == [1, 2, 4]
    assert analysis.class_names == ["a (id 1)", "b", "a (id 4)"]
    assert analysis.per_class["a (id 4)"] == {"gt": 1, "tp": 0, "fp": 0, "fn": 1}
    assert analysis.per_class["a (id 1)"]["gt"] == 3
