"""Typed inference results: one ``Result`` per image or video frame, and run statistics.

A ``Result`` holds the RGB image it was computed on and the model output mapped back to that
image's pixel grid: ``boxes`` (N x 4 xyxy float pixels), ``labels`` (N int64, model labels, 0 =
background for detectors), ``scores`` (N float32), instance ``masks`` (N x H x W bool) or a
``semantic`` map (H x W int64, 255 = unlabeled). ``speed`` holds the per-image milliseconds of
each stage. ``ResultStats`` accumulates class counts and stage times over a stream of results.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detseg.data.masks import encode_rle
from detseg.eval.coco_results import coco_entries
from detseg.prediction import Prediction
from detseg.spec import ModelSpec

IGNORE_INDEX = 255
STAGES = ("preprocess", "inference", "postprocess")


@dataclass
class StageTimes:
    """Milliseconds spent on one image in each stage (a batch's time split over its images)."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess

    def as_dict(self) -> dict[str, float]:
        return {s: round(getattr(self, s), 3) for s in STAGES}


@dataclass(eq=False)
class Result:
    """What the model found in one image (or one video frame).

    Attributes:
        image: the input, H x W x 3 uint8 RGB (not copied).
        spec: the model's spec (class names, dataset category ids, task).
        boxes: N x 4 float32 xyxy pixels in ``image`` coordinates (empty for semantic models).
        labels: N int64 model labels; ``names[label]`` names them.
        scores: N float32 confidences in [0, 1].
        masks: N x H x W bool instance masks, or ``None`` when the model has none.
        semantic: H x W int64 class map (255 = unlabeled), for semantic models only.
        path: the file the image came from (the video for frames), ``None`` for arrays.
        frame_index, timestamp: position in the video (0-based index, seconds) for frames.
        speed: per-image stage times in milliseconds.
    """

    image: np.ndarray
    spec: ModelSpec
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    masks: np.ndarray | None = None
    semantic: np.ndarray | None = None
    path: Path | None = None
    frame_index: int | None = None
    timestamp: float | None = None
    speed: StageTimes = field(default_factory=StageTimes)

    @property
    def names(self) -> list[str]:
        """Class names indexed by model label."""
        return self.spec.names()

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def __len__(self) -> int:
        """Number of detections (0 for semantic results)."""
        return int(len(self.labels))

    def counts(self) -> Counter[str]:
        """Detections per class name; for semantic results, labeled pixels per class name."""
        names = self.names
        if self.semantic is not None:
            ids, pixels = np.unique(self.semantic, return_counts=True)
            return Counter({names[i]: int(n) for i, n in zip(ids, pixels, strict=True)
                            if i != IGNORE_INDEX and i < len(names)})
        return Counter(names[int(k)] for k in self.labels)

    def to_coco(self, image_id: int, file_name: str | None = None) -> list[dict[str, Any]]:
        """Entries in COCO results format (what pycocotools ``loadRes`` reads).

        Detections give ``image_id``, ``category_id`` (the dataset's id, via the spec), ``bbox``
        (``[x, y, width, height]`` pixels, COCO's convention), ``score`` and, with instance
        masks, an RLE ``segmentation``. Semantic results give one RLE entry per class present
        (COCO stuff format, ``score`` 1).
        ``file_name`` is added to every entry when given, so results can be matched by name.
        """
        extra = {"file_name": file_name} if file_name is not None else {}
        out: list[dict[str, Any]] = []
        if self.semantic is not None:
            for k in np.unique(self.semantic):
                if k == IGNORE_INDEX:
                    continue
                out.append({"image_id": image_id, "category_id": self.spec.category_id(int(k)),
                            "segmentation": encode_rle(self.semantic == k), "score": 1.0, **extra})
            return out
        prediction = Prediction(size=(int(self.image.shape[0]), int(self.image.shape[1])),
                                boxes=self.boxes, labels=self.labels, scores=self.scores,
                                masks=self.masks)
        category_ids = [self.spec.category_id(k) for k in range(self.spec.num_classes)]
        out = [{**entry, **extra} for entry in coco_entries(prediction, image_id, category_ids)]
        return out

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-ready summary (used for the per-frame JSONL of videos).

        Detections: ``{"detections": [{"label", "name", "score", "box_xyxy"[, "mask"]}]}`` with
        ``box_xyxy`` the corners ``[x1, y1, x2, y2]`` in pixels (predictions.json has COCO's
        ``bbox`` ``[x, y, width, height]`` instead) and, for instance models, ``mask`` the COCO
        compressed RLE (``{"size": [h, w], "counts"}``). Semantic: ``{"pixels": {name: fraction
        of the image}}``.
        """
        names = self.names
        if self.semantic is not None:
            area = float(self.semantic.size)
            return {"pixels": {n: round(c / area, 5) for n, c in self.counts().items()}}
        detections = []
        for i in range(len(self)):
            label = int(self.labels[i])
            detection: dict[str, Any] = {
                "label": label, "name": names[label], "score": round(float(self.scores[i]), 5),
                "box_xyxy": [round(float(v), 2) for v in self.boxes[i]]}
            if self.masks is not None:
                detection["mask"] = encode_rle(self.masks[i])
            detections.append(detection)
        return {"detections": detections}

    def plot(self, line_width: int | None = None, hide_labels: bool = False,
             hide_conf: bool = False) -> np.ndarray:
        """The image annotated with boxes, labels, scores and masks (or a semantic overlay).

        Returns a new H x W x 3 uint8 RGB array; ``self.image`` is left untouched.
        """
        from detseg.viz import draw

        if self.semantic is not None:
            return draw.draw_semantic(self.image, self.semantic, self.names)
        return draw.draw_detections(
            self.image, self.boxes, self.labels, self.names, scores=self.scores,
            masks=self.masks, line_width=line_width, hide_labels=hide_labels,
            hide_conf=hide_conf,
        )


@dataclass
class ResultStats:
    """Totals over many results: images, per-class counts and summed stage times.

    For semantic results ``class_counts`` counts the images in which each class appears.
    """

    images: int = 0
    detections: int = 0
    class_counts: Counter[str] = field(default_factory=Counter)
    stage_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, result: Result) -> None:
        self.images += 1
        counts = result.counts()
        if result.semantic is not None:
            self.class_counts.update(dict.fromkeys(counts, 1))
        else:
            self.detections += len(result)
            self.class_counts.update(counts)
        for stage in STAGES:
            self.stage_ms[stage] += getattr(result.speed, stage)

    def merge(self, other: ResultStats) -> None:
        self.images += other.images
        self.detections += other.detections
        self.class_counts.update(other.class_counts)
        for stage in STAGES:
            self.stage_ms[stage] += other.stage_ms[stage]

    def mean_ms(self) -> dict[str, float]:
        """Mean milliseconds per image of each stage."""
        n = max(self.images, 1)
        return {s: self.stage_ms[s] / n for s in STAGES}
