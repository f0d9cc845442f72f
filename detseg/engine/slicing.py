"""Sliced inference: small objects in large pictures (the idea of SAHI, Akyon et al. 2022).

A picture larger than the tile ``size`` is cut into tiles that overlap by ``overlap`` of their
side (``slice_grid``: the last row and column are aligned to the picture's edge, no tile is
larger than the picture). Each tile runs through the model at its own resolution, so an object
of a few pixels is not shrunk away with the whole picture. What comes back is put together
again by ``SlicedPicture``:

- detections are shifted back (a box found at tile offset ``(x0, y0)`` moves by
  ``+x0``/``+y0``, a mask is pasted at the offset) and merged across tiles per class, one per
  object (``detseg.engine.slice_merge``: ``nms`` or SAHI's greedy merging ``gnmm``, matched by
  IoS or IoU, whole detections before those a tile border cuts). An optional full-picture pass
  adds the large objects that no tile holds whole;
- semantic class scores (logits) of overlapping tiles are blended with a weight that ramps up
  linearly over the overlap from each tile's border (``blend_window``), so tile seams vanish;
  the argmax comes after the blend. ``ScoreBlend`` holds one row of tiles at a time (C x
  size x W), so a huge picture never becomes a C x H x W float map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detseg.engine.slice_merge import (
    MATCH_METRICS,
    SLICE_MERGES,
    Detections,
    border_cut,
    merge_detections,
    shift_prediction,
)
from detseg.errors import UsageError
from detseg.prediction import Prediction
from detseg.spec import MAX_IMGSZ, MIN_IMGSZ

#: overlap of neighbouring tiles, a fraction of the tile side. 0.3 rather than SAHI's 0.2:
#: on 1280 px pictures of 25 shapes images side by side (bench/slice_speed.py, 5 pictures),
#: shapes-faster_rcnn recall at IoU 0.5 is 0.833 at 0.2 and 0.860 at 0.3, for ~40% more time.
DEFAULT_OVERLAP = 0.3


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
    overlap: float = DEFAULT_OVERLAP
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

    def describe(self, blend: bool = False) -> str:
        """One line for run summaries, e.g. ``256 px tiles, overlap 0.2, nms (ios > 0.5)``;
        ``blend``: for semantic models, whose tiles' class scores are blended, not merged."""
        full = " + full picture" if self.full else ""
        merge = ("class scores blended" if blend
                 else f"{self.merge} ({self.match} > {self.threshold:g})")
        return f"{self.size} px tiles, overlap {self.overlap:g}, {merge}{full}"


def _starts(length: int, size: int, step: int) -> list[int]:
    """Tile starts along one side: every ``step`` pixels, the last one flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, step))
    return [*starts, length - size]


def slice_grid(height: int, width: int, size: int,
               overlap: float = DEFAULT_OVERLAP) -> np.ndarray:
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


# ---------------------------------------------------------------------- semantic scores


def blend_window(height: int, width: int, ramp: int) -> Tensor:
    """``height`` x ``width`` float32 weights: 1 inside, falling linearly over ``ramp`` pixels
    towards each border (never to 0), so overlapping tiles fade into each other."""
    def side(n: int) -> Tensor:
        distance = torch.minimum(torch.arange(n), torch.arange(n).flip(0)).float()
        return ((distance + 1) / (max(ramp, 1) + 1)).clamp(max=1.0)

    return side(height)[:, None] * side(width)[None, :]


class ScoreBlend:
    """Blends the class scores of overlapping tiles that arrive row by row (``slice_grid``'s
    order), holding only the rows one row of tiles covers: a C x ``band`` x W float32 sum, on
    the CPU. ``add`` and ``finish`` give back the rows no later tile reaches, blended, as
    ``(first row, C x h x W scores)``.

    ``whole``: class scores of the whole picture at any size (C x h' x w'), resized (bilinear,
    as ``F.interpolate``) band by band and weighed 1 everywhere.
    """

    def __init__(self, height: int, width: int, ramp: int, band: int,
                 whole: Tensor | None = None) -> None:
        self.size = (height, width)
        self.ramp = ramp
        self.band = min(band, height)
        self.top = 0
        self.total: Tensor | None = None
        self.weight = torch.zeros(self.band, width)
        self.whole = None if whole is None else whole.detach().float().cpu()

    def add(self, box: tuple[int, int, int, int], scores: Tensor) -> list[tuple[int, Tensor]]:
        """Blend ``scores`` (C x h x w) in at ``box`` (xyxy picture pixels of size w x h);
        returns the rows above the tile's top, finished."""
        x0, y0, x1, y1 = box
        scores = scores.detach().float().cpu()
        if tuple(scores.shape[-2:]) != (y1 - y0, x1 - x0):
            raise UsageError(f"scores of shape {tuple(scores.shape)} do not fit the tile "
                             f"{box}")
        if y0 < self.top or y1 > max(y0, self.top) + self.band:
            raise UsageError(f"tile {box} comes after rows {self.top}.. were finished, or is "
                             f"taller than {self.band} rows")
        done = self._release(y0) if y0 > self.top else []
        if self.total is None:
            self.total = torch.zeros(scores.shape[0], self.band, self.size[1])
        weight = blend_window(y1 - y0, x1 - x0, self.ramp)
        rows = slice(y0 - self.top, y1 - self.top)
        self.total[:, rows, x0:x1] += scores * weight
        self.weight[rows, x0:x1] += weight
        return done

    def finish(self) -> list[tuple[int, Tensor]]:
        """The rows not given back yet, blended."""
        return self._release(self.size[0]) if self.top < self.size[0] else []

    def _release(self, until: int) -> list[tuple[int, Tensor]]:
        """Rows ``top..until`` blended and given back; the band moves down to ``until``."""
        n = until - self.top
        if self.total is None or n > self.band:
            raise UsageError(f"rows {self.top}..{until} of the picture were covered by no tile")
        total, weight = self.total[:, :n], self.weight[:n]
        if self.whole is not None:
            total, weight = total + self._whole_rows(self.top, until), weight + 1
        if not bool((weight > 0).all()):
            raise UsageError(f"rows {self.top}..{until} of the picture were covered by no tile")
        blended = total / weight
        self.total = torch.cat([self.total[:, n:], torch.zeros_like(self.total[:, :n])], 1)
        self.weight = torch.cat([self.weight[n:], torch.zeros_like(self.weight[:n])])
        first, self.top = self.top, until
        return [(first, blended)]

    def _whole_rows(self, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` of ``whole`` resized to the picture: C x (stop - start) x W."""
        assert self.whole is not None, "called only with whole-picture scores"
        (height, width), whole = self.size, self.whole
        if tuple(whole.shape[-2:]) == (height, width):
            return whole[:, start:stop]
        xs = (torch.arange(width) + 0.5) / width * 2 - 1
        ys = (torch.arange(start, stop) + 0.5) / height * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]
        return F.grid_sample(whole[None], grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[0]


# ---------------------------------------------------------------------- one picture


class SlicedPicture:
    """One picture's tiles and what the model made of them.

    ``tiles`` (K x 4 xyxy) are what to run. Detectors: give each tile's prediction with
    ``add_detections`` (and the whole picture's, with ``options.full``), then take
    ``detections``. Semantic models: give the whole picture's class scores first (with
    ``options.full``), then each tile's in order, with ``add_scores``, then take ``labels``;
    ``to_labels`` turns blended C x h x W scores into an h x W class map, band by band.
    """

    def __init__(self, height: int, width: int, options: SliceOptions,
                 to_labels: Callable[[Tensor], np.ndarray] | None = None) -> None:
        self.size = (height, width)
        self.options = options
        self.tiles = slice_grid(height, width, options.size, options.overlap)
        self.to_labels = to_labels
        self._parts: list[Detections] = []
        self._whole: Tensor | None = None
        self._blend: ScoreBlend | None = None
        self._labels: np.ndarray | None = None

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
        (``None``; C x h' x w' at any size, before the first tile's)."""
        if tile is None:
            if self._blend is not None:
                raise UsageError("the whole picture's scores go in before the tiles'")
            self._whole = scores
            return
        if self._blend is None:
            self._blend = ScoreBlend(*self.size, self.options.overlap_px, self.options.size,
                                     self._whole)
        x0, y0, x1, y1 = (int(v) for v in self.tiles[tile])
        self._keep(self._blend.add((x0, y0, x1, y1), scores))

    def _keep(self, bands: list[tuple[int, Tensor]]) -> None:
        if self.to_labels is None:
            raise UsageError("a SlicedPicture given class scores needs to_labels")
        for first, scores in bands:
            labels = self.to_labels(scores)
            if self._labels is None:
                self._labels = np.empty(self.size, labels.dtype)
            self._labels[first:first + len(labels)] = labels

    def labels(self) -> np.ndarray:
        """H x W class map of the blended scores of every tile (and the whole picture)."""
        if self._blend is None:
            raise UsageError("no tile scores were added")
        self._keep(self._blend.finish())
        assert self._labels is not None, "finish gives back the last rows"
        return self._labels

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
