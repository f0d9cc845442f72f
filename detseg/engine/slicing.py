"""Sliced inference: small objects in large pictures (the idea of SAHI, Akyon et al. 2022).

A picture larger than the tile ``size`` is cut into tiles that overlap by ``overlap`` of their
side (``slice_grid``: the last row and column are aligned to the picture's edge, no tile is
larger than the picture). Each tile runs through the model at its own resolution, so an object
of a few pixels is not shrunk away with the whole picture. What comes back is put together
again by ``SlicedPicture``:

- detections are shifted back (``shift_prediction``: a box found at tile offset ``(x0, y0)``
  moves by ``+x0``/``+y0``, a mask is pasted at the offset) and merged across tiles per class
  (``merge_detections``): greedily, best score first (whole detections before those touching
  a tile border inside the picture, which a tile may show only in part), every detection of
  the class that matches the leader (IoU, or IoS: intersection over the smaller box, which
  also catches a box cut by a tile border lying inside the whole one found by a neighbour)
  above ``threshold`` joins its group. ``nms`` keeps the leader of a group; ``gnmm`` (SAHI's
  GREEDYNMM) keeps the union of the group's boxes and masks with the best score. An optional
  full-picture pass adds the large objects that no tile holds whole;
- semantic class scores (logits) of overlapping tiles are blended with a weight that ramps up
  linearly over the overlap from each tile's border (``blend_window``), so tile seams vanish;
  the argmax comes after the blend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from detseg.errors import UsageError
from detseg.prediction import Prediction
from detseg.registry import Registry
from detseg.spec import MAX_IMGSZ, MIN_IMGSZ

#: how two boxes are compared when merging: ``(a N x 4, b M x 4) -> N x M`` in [0, 1]
MatchMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]
MATCH_METRICS: Registry[MatchMetric] = Registry("match metric")


@dataclass(frozen=True)
class SliceOptions:
    """How a picture is sliced and put together again.

    Attributes:
        size: tile side in pixels; pictures no larger than this on both sides run whole.
        overlap: fraction of ``size`` by which neighbouring tiles overlap, in [0, 1).
        merge: a ``SLICE_MERGES`` name: ``nms`` or ``gnmm``.
        full: also run the whole picture and merge its detections (or blend its scores) in.
        match: a ``MATCH_METRICS`` name (``ios`` or ``iou``) comparing detections to merge.
        threshold: detections of one class matching above this are merged, in (0, 1].
    """

    size: int
    overlap: float = 0.2
    merge: str = "nms"
    full: bool = False
    match: str = "ios"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not MIN_IMGSZ <= self.size <= MAX_IMGSZ:
            raise UsageError(f"slice size must be within {MIN_IMGSZ}..{MAX_IMGSZ} pixels, got "
                             f"{self.size}")
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError(f"slice overlap must be a fraction of the tile in [0, 1), got "
                             f"{self.overlap}")
        if self.merge not in SLICE_MERGES:
            raise UsageError(f"slice merge must be one of {', '.join(SLICE_MERGES.names())}, "
                             f"got {self.merge!r}")
        if self.match not in MATCH_METRICS:
            raise UsageError(f"slice match must be one of {', '.join(MATCH_METRICS.names())}, "
                             f"got {self.match!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise UsageError(f"slice match threshold must be within (0, 1], got "
                             f"{self.threshold}")

    @property
    def overlap_px(self) -> int:
        """Overlap of neighbouring tiles in pixels."""
        return int(self.size * self.overlap)

    def applies(self, height: int, width: int) -> bool:
        """Whether a picture of ``height`` x ``width`` is sliced (larger than a tile)."""
        return height > self.size or width > self.size

    def describe(self) -> str:
        """One line for run summaries, e.g. ``256 px tiles, overlap 0.2, nms (ios > 0.5)``."""
        full = " + full picture" if self.full else ""
        return (f"{self.size} px tiles, overlap {self.overlap:g}, {self.merge} "
                f"({self.match} > {self.threshold:g}){full}")


def _starts(length: int, size: int, step: int) -> list[int]:
    """Tile starts along one side: every ``step`` pixels, the last one flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, step))
    return [*starts, length - size]


def slice_grid(height: int, width: int, size: int, overlap: float = 0.2) -> np.ndarray:
    """Tiles covering a ``height`` x ``width`` picture: K x 4 int64 xyxy pixels, row by row.

    Tiles are ``size`` square (clipped to the picture where it is smaller), start every
    ``size - int(size * overlap)`` pixels, and the last row and column end at the picture's
    edge (so they may overlap their neighbour by more).
    """
    if height < 1 or width < 1:
        raise UsageError(f"cannot slice an empty picture ({height} x {width})")
    step = max(1, size - int(size * overlap))
    tiles = [(x, y, min(x + size, width), min(y + size, height))
             for y in _starts(height, size, step) for x in _starts(width, size, step)]
    return np.asarray(tiles, dtype=np.int64).reshape(-1, 4)


# ---------------------------------------------------------------------- detections


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


# ---------------------------------------------------------------------- semantic scores


def blend_window(height: int, width: int, ramp: int) -> Tensor:
    """``height`` x ``width`` float32 weights: 1 inside, falling linearly over ``ramp`` pixels
    towards each border (never to 0), so overlapping tiles fade into each other."""
    def side(n: int) -> Tensor:
        distance = torch.minimum(torch.arange(n), torch.arange(n).flip(0)).float()
        return ((distance + 1) / (max(ramp, 1) + 1)).clamp(max=1.0)

    return side(height)[:, None] * side(width)[None, :]


class ScoreCanvas:
    """Weighted sum of class scores (C x H x W float32, on the CPU) of overlapping tiles."""

    def __init__(self, height: int, width: int, ramp: int) -> None:
        self.size = (height, width)
        self.ramp = ramp
        self.total: Tensor | None = None
        self.weight = torch.zeros(height, width)

    def add(self, box: tuple[int, int, int, int], scores: Tensor, uniform: bool = False) -> None:
        """Blend ``scores`` (C x h x w) in at ``box`` (xyxy picture pixels of size w x h);
        ``uniform`` weighs every pixel 1 (a whole-picture pass) instead of the ramp."""
        x0, y0, x1, y1 = box
        scores = scores.detach().float().cpu()
        if tuple(scores.shape[-2:]) != (y1 - y0, x1 - x0):
            raise UsageError(f"scores of shape {tuple(scores.shape)} do not fit the tile "
                             f"{box}")
        if self.total is None:
            self.total = torch.zeros(scores.shape[0], *self.size)
        weight = (torch.ones(y1 - y0, x1 - x0) if uniform
                  else blend_window(y1 - y0, x1 - x0, self.ramp))
        self.total[:, y0:y1, x0:x1] += scores * weight
        self.weight[y0:y1, x0:x1] += weight

    def blended(self) -> Tensor:
        """C x H x W blended scores (every pixel must have been covered)."""
        if self.total is None:
            raise UsageError("no tile scores were added")
        return self.total / self.weight.clamp(min=1e-12)


# ---------------------------------------------------------------------- one picture


class SlicedPicture:
    """One picture's tiles and what the model made of them.

    ``tiles`` (K x 4 xyxy) are what to run; give each tile's output back with
    ``add_detections`` (detectors) or ``add_scores`` (semantic models), and the whole
    picture's with the same calls when ``options.full``; then ``detections`` or ``scores``.
    """

    def __init__(self, height: int, width: int, options: SliceOptions) -> None:
        self.size = (height, width)
        self.options = options
        self.tiles = slice_grid(height, width, options.size, options.overlap)
        self._parts: list[Detections] = []
        self._canvas: ScoreCanvas | None = None

    def crops(self, image: np.ndarray, start: int, stop: int) -> list[np.ndarray]:
        """``image`` (H x W x C) cut to tiles ``start:stop`` (views, not copies)."""
        return [image[y0:y1, x0:x1] for x0, y0, x1, y1 in self.tiles[start:stop].tolist()]

    def add_detections(self, tile: int | None, prediction: Prediction) -> None:
        """Tile ``tile``'s prediction (in tile pixels), or the whole picture's (``None``)."""
        x0, y0 = (0, 0) if tile is None else (int(self.tiles[tile, 0]), int(self.tiles[tile, 1]))
        part = shift_prediction(prediction, x0, y0)
        if tile is not None:
            part.cut = border_cut(part.boxes, self.tiles[tile], self.size)
        self._parts.append(part)

    def add_scores(self, tile: int | None, scores: Tensor) -> None:
        """Tile ``tile``'s class scores (C x h x w in tile pixels), or the whole picture's
        (``None``, weighed uniformly)."""
        if self._canvas is None:
            self._canvas = ScoreCanvas(*self.size, self.options.overlap_px)
        if tile is None:
            self._canvas.add((0, 0, self.size[1], self.size[0]), scores, uniform=True)
        else:
            x0, y0, x1, y1 = (int(v) for v in self.tiles[tile])
            self._canvas.add((x0, y0, x1, y1), scores)

    def detections(self, conf: float | None = None, classes: tuple[int, ...] | None = None,
                   max_det: int | None = None) -> Prediction:
        """The merged detections of every tile (and the whole-picture pass), then ``conf``,
        ``classes`` and the best ``max_det`` kept."""
        o = self.options
        merged = merge_detections(Detections.concat(self._parts), o.merge, o.match, o.threshold)
        keep = np.ones(len(merged), bool)
        if conf is not None:
            keep &= merged.scores >= conf
        if classes is not None:
            keep &= np.isin(merged.labels, classes)
        index = np.flatnonzero(keep)[:max_det]
        kept = Detections(merged.boxes[index], merged.scores[index], merged.labels[index],
                          None if merged.masks is None else [merged.masks[i] for i in index])
        return kept.to_prediction(self.size)

    def scores(self) -> Tensor:
        """C x H x W blended class scores of every tile (and the whole-picture pass)."""
        if self._canvas is None:
            raise UsageError("no tile scores were added")
        return self._canvas.blended()
