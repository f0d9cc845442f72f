"""What occlusion and Grad-CAM explain, and its score on any version of the image.

The kind of target follows the model's output (``Prediction``), not its task name:

- ``BoxTarget`` (detections): a detection index into the score-sorted predictions of the clean
  image, or a class name/label meaning that class's best detection. Its score on a modified
  image is the score of the box matched to the target box, matched softly:
  ``max(score * IoU(box, target box))`` over detections of the same label.
- ``ClassTarget`` (semantic maps): a class name or index (default: the most frequent
  non-background predicted class). Its score is the class's mean logit over the pixels the
  clean image predicts as that class (all pixels if none), on the model's output grid.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from torch import Tensor

from detseg.errors import UsageError
from detseg.explain.base import ModelRunner
from detseg.prediction import Prediction
from detseg.tasks import Prepared
from detseg.tasks.semantic import semantic_logits

#: ``f(images [B, 3, H, W] in [0, 1]) -> scores [B]``, differentiable where the model is
ScoreFunction = Callable[[Tensor], Tensor]


def box_iou(box: Tensor, boxes: Tensor) -> Tensor:
    """IoU of one ``[4]`` xyxy box with ``[K, 4]`` boxes -> ``[K]``."""
    lt = torch.maximum(box[:2], boxes[:, :2])
    rb = torch.minimum(box[2:], boxes[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = (box[2:] - box[:2]).clamp(min=0).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area + areas - inter).clamp(min=1e-9)


def class_index(token: str, runner: ModelRunner) -> int:
    """A class given as an index (``"2"``) or a name the model knows."""
    if token.lstrip("-").isdigit():
        return int(token)
    if token not in runner.names:
        raise UsageError(f"unknown class {token!r}; the model's classes are "
                         f"{', '.join(runner.names)}")
    return runner.names.index(token)


@dataclass
class Target(ABC):
    """What an explanation is about.

    Attributes:
        index: detection index (``BoxTarget``) or class index (``ClassTarget``).
        label: the model label.
        name: the label's class name.
        base_score: the target's score on the clean image.
    """

    index: int
    label: int
    name: str
    base_score: float
    #: the file-stem prefix of pictures about this kind of target
    stem_prefix: ClassVar[str] = ""

    @staticmethod
    @abstractmethod
    def reads(prediction: Prediction) -> bool:
        """Whether this kind of target applies to a model predicting ``prediction``."""

    @classmethod
    @abstractmethod
    def resolve(cls, runner: ModelRunner, output: Any, prepared: Prepared,
                prediction: Prediction, token: str | None) -> Target:
        """The target named by ``token`` (``None``: the default) in the clean image's raw
        ``output`` and ``prediction``."""

    @abstractmethod
    def describe(self) -> str:
        """One line for people."""

    @abstractmethod
    def score_function(self, runner: ModelRunner) -> ScoreFunction:
        """``f(images [B, 3, H, W]) -> scores [B]`` of this target."""

    def stem(self) -> str:
        """File-stem part naming the target (``box0-star``, ``class1-spot``)."""
        return f"{self.stem_prefix}{self.index}-{self.name}"

    def mark(self, picture: np.ndarray) -> np.ndarray:
        """``picture`` with the target drawn on it (here: unchanged)."""
        return picture


@dataclass
class BoxTarget(Target):
    """One detection; ``box`` is its ``[x0, y0, x1, y1]`` in image pixels."""

    box: list[float]
    stem_prefix: ClassVar[str] = "box"

    @staticmethod
    def reads(prediction: Prediction) -> bool:
        return prediction.semantic is None

    @classmethod
    def resolve(cls, runner: ModelRunner, output: Any, prepared: Prepared,
                prediction: Prediction, token: str | None) -> BoxTarget:
        found = len(prediction.scores)
        if found == 0:
            raise UsageError("the model detects nothing in this image, so there is no box to "
                             "explain; try another image or weights")
        if token is None:
            index = 0
        elif token.isdigit():
            index = int(token)
        else:
            hits = np.flatnonzero(prediction.labels == class_index(token, runner))
            if len(hits) == 0:
                raise UsageError(f"no detection of class {token!r} in this image")
            index = int(hits[0])
        if index >= found:
            raise UsageError(f"detection index {index} out of range: the model returns "
                             f"{found} detections")
        label = int(prediction.labels[index])
        return cls(index, label, runner.class_name(label), float(prediction.scores[index]),
                   [float(v) for v in prediction.boxes[index]])

    def describe(self) -> str:
        coords = ", ".join(f"{v:.0f}" for v in self.box)
        return (f"detection {self.index} ({self.name}, score {self.base_score:.3f}, "
                f"box [{coords}])")

    def score_function(self, runner: ModelRunner) -> ScoreFunction:
        box = torch.tensor(self.box)

        def matched_score(images: Tensor) -> Tensor:
            output, _ = runner.forward(images)
            scores = []
            for detections in output:
                same = detections["labels"] == self.label
                if not same.any():
                    scores.append(detections["scores"].new_zeros(()))
                    continue
                iou = box_iou(box.to(detections["boxes"]), detections["boxes"][same])
                scores.append((detections["scores"][same] * iou).max())
            return torch.stack(scores)

        return matched_score

    def mark(self, picture: np.ndarray) -> np.ndarray:
        """``picture`` with the target box drawn (white, 2 px)."""
        x0, y0, x1, y1 = (round(v) for v in self.box)
        marked = picture.copy()
        cv2.rectangle(marked, (x0, y0), (x1, y1), (255, 255, 255), 2)
        return marked


def _scaled_logits(output: Any, prepared: Prepared) -> Tensor:
    """``B x C x h x w`` logits over the images' region of the padded input (the batch's images
    share one size)."""
    height, width = prepared.scaled[0]
    return semantic_logits(output)[:, :, :height, :width]


@dataclass
class ClassTarget(Target):
    """One class of a semantic model; ``region`` is the ``h x w`` bool map (on the model's
    output grid) of the pixels the clean image predicts as it."""

    region: Tensor
    stem_prefix: ClassVar[str] = "class"

    @staticmethod
    def reads(prediction: Prediction) -> bool:
        return prediction.semantic is not None

    @classmethod
    def resolve(cls, runner: ModelRunner, output: Any, prepared: Prepared,
                prediction: Prediction, token: str | None) -> ClassTarget:
        logits = _scaled_logits(output, prepared)[0].float()
        classes = logits.shape[0]
        if token is None:
            semantic = prediction.semantic
            if semantic is None:
                raise UsageError("name the class to explain: this prediction has no class map "
                                 "to pick the largest class from")
            labels = semantic[semantic < classes]
            counts = np.bincount(labels.ravel(), minlength=classes)
            if counts[1:].sum() > 0:
                counts[0] = 0
            index = int(counts.argmax())
        else:
            index = class_index(token, runner)
        if not 0 <= index < classes:
            raise UsageError(f"class {index} out of range: the model has {classes} classes")
        region = logits.argmax(0) == index
        if not region.any():
            region = torch.ones_like(region)
        return cls(index, index, runner.class_name(index), float(logits[index][region].mean()),
                   region)

    def describe(self) -> str:
        return f"class {self.index} ({self.name}, mean logit {self.base_score:.3f})"

    def score_function(self, runner: ModelRunner) -> ScoreFunction:
        def mean_logit(images: Tensor) -> Tensor:
            output, prepared = runner.forward(images)
            logits = _scaled_logits(output, prepared)[:, self.index]
            return logits[:, self.region].mean(1)

        return mean_logit


#: the target kinds, tried in order; the first that ``reads`` the model's prediction is used
TARGET_KINDS: tuple[type[Target], ...] = (ClassTarget, BoxTarget)


def resolve_target(runner: ModelRunner, image: Tensor, token: str | int | None = None) -> Target:
    """The target named by ``token`` on the clean ``image [3, H, W]`` in [0, 1] (see the
    module docstring); ``UsageError`` where it names nothing the model predicts."""
    with torch.no_grad():
        output, prepared, prediction = runner.predict(image)
    kind = next(kind for kind in TARGET_KINDS if kind.reads(prediction))
    return kind.resolve(runner, output, prepared, prediction,
                        None if token is None else str(token))
