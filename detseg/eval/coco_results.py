"""COCO results entries (what pycocotools' ``loadRes`` reads) of one image's predictions: the
one writer behind ``detseg detect``'s predictions.json, ``Result.to_coco`` and evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np

from detseg.data.masks import encode_rle
from detseg.prediction import Prediction


def coco_entries(prediction: Prediction, image_id: int, category_ids: list[int],
                 gt_size: tuple[int, int] | None = None,
                 with_masks: bool = True) -> list[dict[str, Any]]:
    """One entry per detection: ``image_id``, ``category_id`` (``category_ids[label]``),
    ``bbox`` (``[x, y, width, height]`` pixels, 3 decimals), ``score`` (5 decimals) and, with
    ``with_masks`` and instance masks, an RLE ``segmentation``. Boxes and masks are rescaled to
    ``gt_size`` (h, w) when the ground truth records another size than the image had."""
    import cv2

    gt_size = gt_size or prediction.size
    sy, sx = gt_size[0] / prediction.size[0], gt_size[1] / prediction.size[1]
    boxes = prediction.boxes.astype(np.float64) * np.array([sx, sy, sx, sy])
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).round(3)
    masks = prediction.masks if with_masks else None
    entries = []
    for j, label in enumerate(prediction.labels.tolist()):
        entry: dict[str, Any] = {"image_id": image_id, "category_id": int(category_ids[label]),
                                 "bbox": xywh[j].tolist(),
                                 "score": round(float(prediction.scores[j]), 5)}
        if masks is not None:
            mask = masks[j]
            if mask.shape != tuple(gt_size):
                mask = cv2.resize(mask.astype(np.uint8), (gt_size[1], gt_size[0]),
                                  interpolation=cv2.INTER_NEAREST)
            entry["segmentation"] = encode_rle(mask)
        entries.append(entry)
    return entries
