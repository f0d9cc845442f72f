"""What a model predicted for one image, and what accumulates predictions into metrics.

Shared by the task adapters (``detseg.tasks``), which produce ``Prediction`` objects, and the
scorers (``detseg.eval.scorers``), which consume them; it imports neither.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Prediction:
    """One image's output in its original pixel coordinates (numpy, on the CPU).

    Attributes:
        size: the image's ``(h, w)`` in pixels.
        boxes: N x 4 float32 xyxy pixels.
        labels: N int64 model labels.
        scores: N float32 confidences in [0, 1].
        masks: N x h x w bool instance masks, or ``None``.
        semantic: h x w int64 class map (255 = unlabeled), for semantic models.
    """

    size: tuple[int, int]
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    masks: np.ndarray | None = None
    semantic: np.ndarray | None = None

    def rescaled(self, size: tuple[int, int]) -> Prediction:
        """This prediction mapped to an image of ``size`` (h, w): boxes scaled, masks and the
        class map resized by nearest neighbour."""
        import cv2

        sy, sx = size[0] / self.size[0], size[1] / self.size[1]
        boxes = (self.boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)

        def resize(maps: np.ndarray) -> np.ndarray:
            return cv2.resize(maps, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

        masks = None if self.masks is None else (
            np.stack([resize(m.astype(np.uint8)) for m in self.masks]).astype(bool)
            if len(self.masks) else np.zeros((0, *size), bool))
        semantic = None
        if self.semantic is not None:  # resized as uint8 where it fits (255 = ignore stays)
            narrow = np.uint8 if int(self.semantic.max(initial=0)) <= 255 else np.int32
            semantic = resize(self.semantic.astype(narrow)).astype(np.int64)
        return Prediction(size=size, boxes=boxes, labels=self.labels, scores=self.scores,
                          masks=masks, semantic=semantic)

    def fields(self) -> dict[str, Any]:
        """The fields ``detseg.engine.results.Result`` takes."""
        out: dict[str, Any] = {"boxes": self.boxes, "labels": self.labels, "scores": self.scores}
        if self.masks is not None:
            out["masks"] = self.masks
        if self.semantic is not None:
            out["semantic"] = self.semantic
        return out


class Scorer(ABC):
    """Accumulates predictions against a dataset's targets.

    ``state()`` is what DDP ranks exchange; ``merge(state)`` adds another rank's share.
    """

    @abstractmethod
    def update(self, prediction: Prediction, target: dict[str, Any]) -> None:
        """Add one image's prediction and its dataset target."""

    @abstractmethod
    def state(self) -> Any:
        """This scorer's accumulated data, picklable."""

    @abstractmethod
    def merge(self, state: Any) -> None:
        """Add another scorer's ``state()``."""

    @abstractmethod
    def compute(self) -> dict[str, Any]:
        """``{"metrics": the metrics.json structure, "details": ..., "predictions": [...]}``
        plus flat numbers (``bbox_AP``, ``segm_AP``, ... or ``mIoU``, ``pixel_acc``, ...)."""

    @staticmethod
    @abstractmethod
    def write(result: dict[str, Any], out_dir: Path, plots: bool = True) -> list[Path]:
        """Write ``compute()``'s result into ``out_dir`` (metrics.json, per_class.csv, plots,
        predictions); returns the paths written."""

    @staticmethod
    @abstractmethod
    def tables(result: dict[str, Any]) -> list[tuple[str | None, list[str], list[list[Any]]]]:
        """``(title, columns, rows)`` tables summarising ``compute()``'s result."""
