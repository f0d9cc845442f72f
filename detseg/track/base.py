"""The tracker contract: detections of one frame in, identities out.

A ``Tracker`` is fed one frame at a time (``update``) with the detector's boxes (``(N, 4)`` xyxy
float pixels), scores ``(N,)`` and class ids ``(N,)``, and returns the confirmed tracks seen in
that frame as ``TrackedObjects``. Rows whose box or score is not finite, or whose box has no area
(``clean_detections``), are dropped before tracking (``det_index`` still refers to the caller's
rows).

Each tracker declares its parameters as a frozen dataclass (``Tracker.params``) whose fields
carry a default and ``metadata={"help": ..., "min": ..., "max": ...}``: the CLI builds its
options from them and ``check_params`` validates a set of values against them.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detseg.errors import UsageError

#: pixels: shorter box sides are no box (the Kalman filters' noise scales with the height)
MIN_SIDE = 1e-3
#: pixels: larger coordinates are no box either (their areas would overflow float64 squares)
MAX_COORD = 1e7


def param(default: Any, help: str, low: float | None = None, high: float | None = None) -> Any:
    """A tracker parameter field: ``default``, a one-line ``help``, and an inclusive range."""
    return dataclasses.field(default=default, metadata={"help": help, "min": low, "max": high})


def check_params(params: Any) -> None:
    """Raise ``UsageError`` naming the first field of the dataclass ``params`` whose value has
    the wrong type or lies outside its ``min``/``max``."""
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        kind = type(f.default)
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value)
        if not ok:
            raise UsageError(f"tracker parameter {f.name} must be {kind.__name__}, "
                             f"got {value!r}")
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"[{low}, {'inf' if high is None else high}]"
            raise UsageError(f"tracker parameter {f.name} must be within {span}, got {value!r}")


def lost_frames(frames_at_30fps: int, frame_rate: float) -> int:
    """A buffer given in frames of a 30 fps video as frames of a ``frame_rate`` video (at least
    one frame for a positive buffer)."""
    if frames_at_30fps == 0:
        return 0
    return max(1, math.ceil(frame_rate / 30.0 * frames_at_30fps))


@dataclass(frozen=True)
class TrackedObjects:
    """The confirmed tracks observed in one frame, sorted by id.

    Attributes:
        ids: ``(M,)`` int64 track ids, >= 1, never reused within one tracker.
        boxes_xyxy: ``(M, 4)`` float32 pixels: the detection's box.
        scores: ``(M,)`` float32 detection scores.
        classes: ``(M,)`` int64 class of the track.
        det_index: ``(M,)`` int64 row of the ``update`` input each object came from (-1 marks a
            track reported without a detection; ByteTrack and OC-SORT report only tracks
            matched in the frame, so every row has one).
    """

    ids: np.ndarray
    boxes_xyxy: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    det_index: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def build(ids: list[int], rows: list[int], classes: list[int], boxes: np.ndarray,
              scores: np.ndarray) -> TrackedObjects:
        """Objects for tracks ``ids`` (with their ``classes``) matched to input ``rows`` of
        ``boxes`` ``(N, 4)`` / ``scores`` ``(N,)``; sorted by id."""
        order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
        ids_a = np.asarray(ids, dtype=np.int64)[order]
        rows_a = np.asarray(rows, dtype=np.int64)[order]
        return TrackedObjects(
            ids=ids_a,
            boxes_xyxy=boxes[rows_a].astype(np.float32).reshape(-1, 4),
            scores=scores[rows_a].astype(np.float32),
            classes=np.asarray(classes, dtype=np.int64)[order],
            det_index=rows_a,
        )


@dataclass(frozen=True)
class Frame:
    """The usable detections of one frame: ``boxes`` ``(K, 4)`` float64 xyxy pixels, ``scores``
    ``(K,)`` float64, ``classes`` ``(K,)`` int64 and ``rows`` ``(K,)`` int64, their rows in the
    caller's input."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    rows: np.ndarray


def clean_detections(boxes_xyxy: Any, scores: Any, classes: Any) -> Frame:
    """Validate the shapes of one frame's detections and keep the usable rows.

    Raises ``UsageError`` naming the argument whose shape is wrong. Rows with a non-finite
    score, a coordinate that is not finite or beyond ``MAX_COORD``, or a side shorter than
    ``MIN_SIDE`` (zero-area and inverted boxes) are dropped.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UsageError(f"boxes_xyxy must have shape (N, 4), got {boxes.shape}")
    n = len(boxes)
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    cls = np.asarray(classes).reshape(-1)
    for name, arr in (("scores", score), ("classes", cls)):
        if len(arr) != n:
            raise UsageError(f"{name} must have one value per box ({n}), got {len(arr)}")
    if n and not np.issubdtype(cls.dtype, np.integer):
        raise UsageError(f"classes must be integers, got dtype {cls.dtype}")
    with np.errstate(invalid="ignore"):
        keep = (np.abs(boxes) <= MAX_COORD).all(axis=1) & np.isfinite(score)
        keep &= (boxes[:, 2] - boxes[:, 0] >= MIN_SIDE) & (boxes[:, 3] - boxes[:, 1] >= MIN_SIDE)
    rows = np.flatnonzero(keep).astype(np.int64)
    return Frame(boxes[rows], score[rows], cls[rows].astype(np.int64), rows)


class Tracker(ABC):
    """An online multi-object tracker; one instance follows one video.

    Subclasses set ``params`` (their parameter dataclass) and implement ``_step`` and
    ``_clear``. Ids are handed out at confirmation, consecutively from 1.
    """

    params: ClassVar[type]

    def __init__(self, params: Any = None, frame_rate: float = 30.0) -> None:
        """``params``: an instance of ``self.params`` (``None``: the defaults); ``frame_rate``:
        frames per second of the video (buffers given in 30 fps frames scale with it)."""
        if isinstance(frame_rate, bool) or not isinstance(frame_rate, (int, float)) \
                or not math.isfinite(frame_rate) or frame_rate <= 0:
            raise UsageError(f"frame_rate must be a positive number, got {frame_rate!r}")
        if params is not None and not isinstance(params, self.params):
            raise UsageError(f"params must be a {self.params.__name__}, got {params!r}")
        self.p = params if params is not None else self.params()
        self.frame_rate = float(frame_rate)
        self._next_id = 1
        self.frame = 0

    def update(self, boxes_xyxy: np.ndarray, scores: np.ndarray,
               classes: np.ndarray) -> TrackedObjects:
        """Track one frame: ``boxes_xyxy`` ``(N, 4)`` float pixels, ``scores`` ``(N,)``,
        ``classes`` ``(N,)`` int. Returns the confirmed tracks matched in this frame."""
        frame = clean_detections(boxes_xyxy, scores, classes)
        self.frame += 1
        ids, rows, cls = self._step(frame)
        return TrackedObjects.build(ids, [int(frame.rows[r]) for r in rows], cls,
                                    np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4),
                                    np.asarray(scores, dtype=np.float64).reshape(-1))

    def reset(self) -> None:
        """Forget every track and restart ids from 1 (a new video)."""
        self._next_id = 1
        self.frame = 0
        self._clear()

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    @abstractmethod
    def _step(self, frame: Frame) -> tuple[list[int], list[int], list[int]]:
        """Advance one frame (``self.frame`` counts from 1); return the reported tracks' ids,
        their rows in ``frame`` and their classes."""

    @abstractmethod
    def _clear(self) -> None:
        """Drop every track."""
