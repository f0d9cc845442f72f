"""Merging detections of overlapping tiles (sliced inference, ``detseg.engine.slicing``).

A tile's prediction is moved to the picture by ``shift_prediction`` (boxes ``+x0``/``+y0``,
masks kept as crops placed at the offset, so a picture's worth of tiles never holds full-size
masks). ``merge_detections`` then leaves one detection per object: per class, greedily, in
order of score with whole detections before those touching a tile border inside the picture
(``border_cut``: a tile may show them only in part), each detection not yet grouped leads a
group that takes every other of its class whose match with it (``MATCH_METRICS``: IoU, or IoS,
intersection over the smaller box, which also catches a cut box lying inside the whole one a
neighbour found) exceeds the threshold. A ``SLICE_MERGES`` rule makes the group one detection:
``nms`` keeps the leader, ``gnmm`` (SAHI's GREEDYNMM) the union of the group's boxes and masks
with its best score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from detseg.prediction import Prediction
from detseg.registry import Registry

#: how two boxes are compared when merging: ``(a N x 4, b M x 4) -> N x M`` in [0, 1]
MatchMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]
MATCH_METRICS: Registry[MatchMetric] = Registry("match metric")


@dataclass
class MaskPiece:
    """An instance mask stored as the crop of its pixels: ``crop`` (h x w bool) whose top-left
    pixel is at ``(y0, x0)`` in the picture."""

    y0: int
    x0: int
    crop: np.ndarray

    @staticmethod
    def of(mask: np.ndarray, y0: int = 0, x0: int = 0) -> MaskPiece:
        """The piece holding ``mask``'s set pixels (an H x W bool mask placed at ``(y0, x0)``)."""
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if not len(rows):
            return MaskPiece(y0, x0, np.zeros((0, 0), bool))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return MaskPiece(y0 + int(r0), x0 + int(c0), np.ascontiguousarray(mask[r0:r1, c0:c1]))

    def paste(self, canvas: np.ndarray) -> None:
        """OR this piece into ``canvas`` (H x W bool), clipped to it."""
        h, w = self.crop.shape
        y1, x1 = min(self.y0 + h, canvas.shape[0]), min(self.x0 + w, canvas.shape[1])
        if y1 > self.y0 and x1 > self.x0:
            canvas[self.y0:y1, self.x0:x1] |= self.crop[: y1 - self.y0, : x1 - self.x0]


@dataclass
class Detections:
    """Detections gathered from tiles, in picture coordinates, before merging.

    Attributes:
        boxes: N x 4 float32 xyxy picture pixels.
        scores: N float32; labels: N int64 model labels.
        masks: N mask pieces, or ``None`` for models without masks.
        cut: N bool, the detections that touch a tile border inside the picture.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    masks: list[MaskPiece] | None = None
    cut: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))

    def __len__(self) -> int:
        return int(len(self.scores))

    @staticmethod
    def concat(parts: list[Detections]) -> Detections:
        """All of ``parts`` in one (masks kept only if every part has them)."""
        if not parts:
            return Detections()
        with_masks = all(p.masks is not None for p in parts)
        return Detections(np.concatenate([p.boxes for p in parts]).astype(np.float32),
                          np.concatenate([p.scores for p in parts]).astype(np.float32),
                          np.concatenate([p.labels for p in parts]).astype(np.int64),
                          [m for p in parts for m in (p.masks or [])] if with_masks else None,
                          np.concatenate([p.cut for p in parts]))

    def to_prediction(self, size: tuple[int, int]) -> Prediction:
        """A ``Prediction`` of a ``size`` (h, w) picture; masks pasted at full size."""
        masks = None
        if self.masks is not None:
            masks = np.zeros((len(self), *size), bool)
            for canvas, piece in zip(masks, self.masks, strict=True):
                piece.paste(canvas)
        return Prediction(size=size, boxes=self.boxes.astype(np.float32),
                          labels=self.labels.astype(np.int64),
                          scores=self.scores.astype(np.float32), masks=masks)


def shift_prediction(prediction: Prediction, x0: int, y0: int) -> Detections:
    """A tile's ``prediction`` moved to the picture: boxes ``+x0``/``+y0``, masks placed at the
    tile's offset ``(x0, y0)``."""
    offset = np.array([x0, y0, x0, y0], np.float32)
    masks = None
    if prediction.masks is not None:
        masks = [MaskPiece.of(m, y0, x0) for m in prediction.masks]
    return Detections(prediction.boxes.astype(np.float32).reshape(-1, 4) + offset,
                      prediction.scores.astype(np.float32), prediction.labels.astype(np.int64),
                      masks, np.zeros(len(prediction.scores), bool))


#: how a group of matched detections becomes one: ``(boxes K x 4, scores K, mask pieces or
#: None) -> (box 4, score, the pieces kept or None)``; the group's first detection leads it
MergeRule = Callable[[np.ndarray, np.ndarray, list[MaskPiece] | None],
                     tuple[np.ndarray, float, list[MaskPiece] | None]]
SLICE_MERGES: Registry[MergeRule] = Registry("slice merge")


#: a box edge this close (pixels) to a tile border inside the picture marks a cut object
CUT_MARGIN = 3.0


def border_cut(boxes: np.ndarray, tile: np.ndarray, size: tuple[int, int],
               margin: float = CUT_MARGIN) -> np.ndarray:
    """Which of ``boxes`` (N x 4 xyxy picture pixels, found in ``tile``, xyxy) reach within
    ``margin`` pixels of a tile border inside the ``size`` (h, w) picture: objects the tile
    may show only in part. N bool."""
    x0, y0, x1, y1 = (float(v) for v in tile)
    h, w = size
    cut = np.zeros(len(boxes), bool)
    if x0 > 0:
        cut |= boxes[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= boxes[:, 1] <= y0 + margin
    if x1 < w:
        cut |= boxes[:, 2] >= x1 - margin
    if y1 < h:
        cut |= boxes[:, 3] >= y1 - margin
    return cut


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0,
                                                                  None)


def _intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    wh = (np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]))
    return np.clip(wh, 0, None).prod(axis=2)


@MATCH_METRICS.register("iou", help="intersection over union")
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a`` (N x 4) and ``b`` (M x 4): N x M."""
    inter = _intersections(a, b)
    union = _areas(a)[:, None] + _areas(b)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


@MATCH_METRICS.register("ios", help="intersection over the smaller box's area")
def box_ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller area of xyxy boxes ``a`` (N x 4) and ``b`` (M x 4): N x M
    (1 when one box lies inside the other)."""
    inter = _intersections(a, b)
    smaller = np.minimum(_areas(a)[:, None], _areas(b)[None, :])
    return inter / np.maximum(smaller, 1e-9)


@SLICE_MERGES.register("nms", help="keep the best-scored detection of each matched group")
def keep_best(boxes: np.ndarray, scores: np.ndarray, masks: list[MaskPiece] | None
              ) -> tuple[np.ndarray, float, list[MaskPiece] | None]:
    """The group's leader (its first detection) as it is."""
    return boxes[0], float(scores[0]), None if masks is None else masks[:1]


@SLICE_MERGES.register("gnmm", help="greedy non-maximum merging (SAHI's GREEDYNMM): the union "
                                    "of each matched group's boxes and masks, best score")
def union(boxes: np.ndarray, scores: np.ndarray, masks: list[MaskPiece] | None
          ) -> tuple[np.ndarray, float, list[MaskPiece] | None]:
    """The box around all of the group's boxes with its best score, and all of its mask
    pieces (pasted together)."""
    box = np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])
    return box, float(scores.max()), masks


def match_groups(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                 match: str = "ios", threshold: float = 0.5,
                 cut: np.ndarray | None = None) -> list[np.ndarray]:
    """Greedy grouping per class: in order of score (highest first), whole detections before
    those marked ``cut`` (N bool, see ``border_cut``), a detection not yet grouped leads a
    group that takes every ungrouped detection of its class whose ``match`` with it exceeds
    ``threshold``. So a box cut by a tile border joins the whole box a neighbour found instead
    of replacing it. Returns index arrays (leader first), by leader score, highest first."""
    metric = MATCH_METRICS.get(match).builder
    cut = np.zeros(len(scores), bool) if cut is None else cut
    order = np.lexsort((np.arange(len(scores)), -scores, cut))
    groups: list[np.ndarray] = []
    for label in np.unique(labels):
        idx = order[labels[order] == label]
        similar = metric(boxes[idx], boxes[idx]) > threshold
        free = np.ones(len(idx), bool)
        for i in range(len(idx)):
            if not free[i]:
                continue
            free[i] = False
            members = np.flatnonzero(free & similar[i])
            free[members] = False
            groups.append(idx[np.concatenate([[i], members])])
    groups.sort(key=lambda g: (-scores[g[0]], g[0]))
    return groups


def merge_detections(detections: Detections, merge: str = "nms", match: str = "ios",
                     threshold: float = 0.5) -> Detections:
    """One detection per matched group (see ``match_groups``), best score first; the
    ``merge`` rule (a ``SLICE_MERGES`` name) makes a group's box and mask."""
    rule = SLICE_MERGES.get(merge).builder
    groups = match_groups(detections.boxes, detections.scores, detections.labels, match,
                          threshold, detections.cut)
    if not groups:
        return Detections(masks=None if detections.masks is None else [])
    boxes, scores, masks = [], [], []
    for group in groups:
        pieces = None if detections.masks is None else [detections.masks[i] for i in group]
        box, score, kept = rule(detections.boxes[group], detections.scores[group], pieces)
        boxes.append(box)
        scores.append(score)
        if kept is not None:
            masks.append(_joined(kept))
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    leaders = np.array([g[0] for g in groups])[order]
    return Detections(np.stack(boxes)[order].astype(np.float32),
                      np.asarray(scores, np.float32)[order], detections.labels[leaders],
                      None if detections.masks is None else [masks[i] for i in order],
                      detections.cut[leaders])


def _joined(pieces: list[MaskPiece]) -> MaskPiece:
    """One piece covering all of ``pieces`` (their union)."""
    if len(pieces) == 1:
        return pieces[0]
    y0 = min(p.y0 for p in pieces)
    x0 = min(p.x0 for p in pieces)
    y1 = max(p.y0 + p.crop.shape[0] for p in pieces)
    x1 = max(p.x0 + p.crop.shape[1] for p in pieces)
    canvas = np.zeros((y1 - y0, x1 - x0), bool)
    for p in pieces:
        MaskPiece(p.y0 - y0, p.x0 - x0, p.crop).paste(canvas)
    return MaskPiece(y0, x0, canvas)
