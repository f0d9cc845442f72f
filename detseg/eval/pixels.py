"""Per-pixel metrics of semantic segmentation from a confusion matrix.

The ``C x C`` matrix (rows: true class, columns: predicted class) is accumulated with one
``bincount`` per batch on the tensors' own device; pixels whose truth is ``ignore_index`` are
skipped. From it:

- ``pixel_acc``: correct pixels / counted pixels;
- per-class ``acc`` (recall) ``TP / (TP + FN)``, ``IoU`` ``TP / (TP + FP + FN)``, ``Dice``
  ``2 TP / (2 TP + FP + FN)``;
- ``mean_acc``, ``mIoU``, ``mDice``: plain means over the classes *present* (in the truth or in
  the prediction); a class absent from both is left out of the means (its IoU would be 0/0).
  Accuracy is undefined for a class with no true pixels, so ``mean_acc`` averages the classes
  present in the truth;
- ``fwIoU``: IoU weighted by each class's share of the true pixels.
Undefined per-class values are ``None`` in ``compute()``'s output (valid JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class ConfusionMatrix:
    """Accumulates a confusion matrix of integer class maps.

    Args:
        num_classes: ``C``; valid labels are ``0 .. C-1``.
        ignore_index: truth value of pixels left out (default 255).
        class_names: optional ``C`` names used as keys of ``per_class``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255,
                 class_names: Sequence[str] | None = None) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else [
            str(k) for k in range(num_classes)]
        self.matrix: torch.Tensor | None = None

    def reset(self) -> None:
        self.matrix = None

    @torch.no_grad()
    def update(self, pred: Any, target: Any) -> None:
        """Add a batch.

        Args:
            pred: predicted class indices with the shape of ``target``, or scores/logits with
                one more dimension (``N x C x H x W``), reduced by argmax over ``dim=1``.
            target: true class indices (any shape), ``ignore_index`` where unlabeled.
        """
        pred_t, target_t = torch.as_tensor(pred), torch.as_tensor(target)
        if pred_t.dim() == target_t.dim() + 1:
            pred_t = pred_t.argmax(dim=1)
        if pred_t.shape != target_t.shape:
            raise ValueError(f"prediction shape {tuple(pred_t.shape)} differs from target shape "
                             f"{tuple(target_t.shape)}")
        pred_t = pred_t.to(target_t.device).reshape(-1).long()
        target_t = target_t.reshape(-1).long()
        keep = target_t != self.ignore_index
        pred_t, target_t = pred_t[keep], target_t[keep]
        c = self.num_classes
        bad_t = (target_t < 0) | (target_t >= c)
        bad_p = (pred_t < 0) | (pred_t >= c)
        if bool(bad_t.any()) or bool(bad_p.any()):
            what, values = ("target", target_t[bad_t]) if bool(bad_t.any()) else (
                "prediction", pred_t[bad_p])
            raise ValueError(f"{what} has class {int(values[0])} outside 0..{c - 1} "
                             f"(ignore index {self.ignore_index})")
        counts = torch.bincount(target_t * c + pred_t, minlength=c * c).reshape(c, c)
        if self.matrix is None:
            self.matrix = counts
        else:
            self.matrix += counts.to(self.matrix.device)

    def to_numpy(self) -> np.ndarray:
        """The ``C x C`` int64 matrix (rows truth, columns prediction)."""
        if self.matrix is None:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return self.matrix.cpu().numpy().astype(np.int64)

    def compute(self) -> dict[str, Any]:
        """``{"pixel_acc", "mean_acc", "mIoU", "fwIoU", "mDice", "per_class"}``.

        ``per_class`` maps each class name to ``{"IoU", "acc", "Dice", "pixels"}`` (``pixels``:
        true pixel count); means are over present classes (see the module docstring) and are
        0 when nothing was counted.
        """
        m = self.to_numpy().astype(np.float64)
        tp = np.diag(m)
        truth = m.sum(axis=1)
        predicted = m.sum(axis=0)
        total = truth.sum()
        present = (truth + predicted) > 0
        in_truth = truth > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(present, tp / (truth + predicted - tp), np.nan)
            dice = np.where(present, 2 * tp / (truth + predicted), np.nan)
            acc = np.where(in_truth, tp / truth, np.nan)

        def mean(values: np.ndarray, where: np.ndarray) -> float:
            return float(values[where].mean()) if where.any() else 0.0

        per_class = {
            name: {"IoU": _opt(iou[k]), "acc": _opt(acc[k]), "Dice": _opt(dice[k]),
                   "pixels": int(truth[k])}
            for k, name in enumerate(self.class_names)
        }
        return {
            "pixel_acc": float(tp.sum() / total) if total else 0.0,
            "mean_acc": mean(acc, in_truth),
            "mIoU": mean(iou, present),
            "fwIoU": float(np.sum(truth[in_truth] / total * iou[in_truth])) if total else 0.0,
            "mDice": mean(dice, present),
            "per_class": per_class,
        }


def _opt(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
