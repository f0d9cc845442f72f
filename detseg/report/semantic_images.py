"""Per-image pixel metrics of a semantic run, and the worst images' class maps.

``SemanticImages`` watches a model evaluation (``evaluate_model(..., observer=...)`` calls it
with every image's ``Prediction`` and target): it computes each image's IoU per class (over the
classes present in its truth or prediction, ``ignore_index`` pixels left out), keeps every
image's mIoU and pixel accuracy, and keeps the truth and predicted maps of the ``keep`` images
with the lowest mIoU, shrunk to long side <= ``side`` (nearest neighbour), so its memory does
not grow with the dataset.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from detseg.report.pictures import GALLERY_SIZE


@dataclass
class ImageScore:
    """One image: ``miou`` (mean IoU over its present classes), ``pixel_acc``, ``pixels``
    counted, and (for the kept worst images) ``truth`` / ``pred`` ``h x w`` uint8 maps with 255
    where the truth is ignored."""

    image_id: int
    miou: float
    pixel_acc: float
    pixels: int
    truth: np.ndarray | None = None
    pred: np.ndarray | None = None


def _shrink(values: np.ndarray, side: int) -> np.ndarray:
    h, w = values.shape
    scale = min(1.0, side / max(h, w))
    if scale >= 1.0:
        return values
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(values, size, interpolation=cv2.INTER_NEAREST)


class SemanticImages:
    """Observer of a semantic evaluation (see the module docstring).

    Args:
        num_classes: ``C``; class maps hold ``0 .. C-1``.
        keep: how many of the worst images keep their maps.
        side: long side of the kept maps, pixels.
        ignore_index: truth value of unlabelled pixels.
    """

    def __init__(self, num_classes: int, keep: int = GALLERY_SIZE, side: int = 320,
                 ignore_index: int = 255) -> None:
        self.num_classes, self.keep, self.side = num_classes, keep, side
        self.ignore_index = ignore_index
        self.scores: list[ImageScore] = []
        self._worst: list[tuple[float, int, ImageScore]] = []   # max-heap on mIoU
        self._tick = itertools.count()

    def __call__(self, prediction: Any, target: dict[str, Any]) -> None:
        """Score one image (``prediction.semantic``: ``h x w`` class map; ``target["mask"]``
        the truth at the image's resolution); predictions without a class map are skipped."""
        if getattr(prediction, "semantic", None) is None:
            return
        truth = np.asarray(target["mask"]).astype(np.int64)
        truth = truth.reshape(truth.shape[-2], truth.shape[-1])
        pred = np.asarray(prediction.semantic)
        if pred.shape != truth.shape:
            pred = cv2.resize(pred.astype(np.int32), (truth.shape[1], truth.shape[0]),
                              interpolation=cv2.INTER_NEAREST)
        pred = pred.astype(np.int64)
        c = self.num_classes
        valid = (truth != self.ignore_index) & (truth >= 0) & (truth < c) & (pred >= 0) \
            & (pred < c)
        counts = np.bincount(truth[valid] * c + pred[valid], minlength=c * c).reshape(c, c)
        tp = np.diag(counts).astype(np.float64)
        union = counts.sum(axis=0) + counts.sum(axis=1) - tp
        present = union > 0
        pixels = int(valid.sum())
        miou = float((tp[present] / union[present]).mean()) if present.any() else float("nan")
        score = ImageScore(int(target["image_id"]), miou,
                           float(tp.sum() / pixels) if pixels else float("nan"), pixels)
        self.scores.append(score)
        if not pixels:
            return
        entry = (-miou, next(self._tick), score)
        if len(self._worst) < self.keep:
            heapq.heappush(self._worst, entry)
        elif miou < -self._worst[0][0]:
            dropped = heapq.heapreplace(self._worst, entry)[2]
            dropped.truth = dropped.pred = None
        else:
            return
        shown_truth = np.where(truth == self.ignore_index, 255, truth)
        score.truth = _shrink(np.clip(shown_truth, 0, 255).astype(np.uint8), self.side)
        score.pred = _shrink(np.clip(pred, 0, 255).astype(np.uint8), self.side)

    def mean_image_miou(self) -> float | None:
        """The mean over images of each image's mIoU (images without counted pixels left out),
        ``None`` before any image."""
        values = [s.miou for s in self.scores if s.pixels]
        return float(np.mean(values)) if values else None

    def worst(self) -> list[ImageScore]:
        """The kept images, lowest mIoU first."""
        return [s for _, _, s in sorted(self._worst, key=lambda e: (-e[0], e[1]))]
