"""Video decoding: ``VideoFrames`` reads a video's frames in a background thread.

``--vid-stride`` frames are skipped with ``grab`` only; ``start``/``end`` select a range in
seconds. Frames come out as ``Frame`` objects (RGB uint8 image, index, timestamp).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detseg.errors import UsageError, VideoReadError

DEFAULT_FPS = 30.0
# Consecutive failed grabs after which the stream is taken as ended.
MAX_GRAB_MISSES = 3


@dataclass
class Frame:
    """One decoded frame: 0-based ``index`` in the video, ``timestamp`` in seconds, RGB image."""

    index: int
    timestamp: float
    image: np.ndarray


@dataclass
class _Failure:
    index: int
    reason: str


_END = object()


class VideoFrames:
    """Iterates the frames of a video, decoded ahead in a background thread.

    Args:
        path: the video file.
        stride: process every ``stride``-th frame (the others are grabbed, not decoded to RGB).
        start, end: seconds; frames before ``start`` or at/after ``end`` are skipped.
        queue_size: frames decoded ahead (bounds memory).
        on_error: called (in the iterating thread) with a ``VideoReadError`` for each frame that
            fails to decode; that frame is skipped and its index added to ``failed``.
        capture: factory opening the video (``cv2.VideoCapture``); replaceable for tests.

    Raises ``VideoReadError`` when the file cannot be opened and ``UsageError`` for bad ranges.
    """

    def __init__(self, path: str | Path, *, stride: int = 1, start: float | None = None,
                 end: float | None = None, queue_size: int = 16,
                 on_error: Callable[[VideoReadError], None] | None = None,
                 capture: Callable[[str], Any] = cv2.VideoCapture) -> None:
        if stride < 1:
            raise UsageError(f"--vid-stride must be >= 1, got {stride}")
        if start is not None and end is not None and end <= start:
            raise UsageError(f"--end ({end}s) must be after --start ({start}s)")
        self.path = Path(path)
        self.stride = stride
        self.on_error = on_error
        self.failed: list[int] = []
        self._cap = capture(str(self.path))
        if not self._cap.isOpened():
            raise VideoReadError(self.path, "cannot open video (not a video or codec missing)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        self.size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        self.start_frame = round(start * self.fps) if start else 0
        self.end_frame = round(end * self.fps) if end is not None else None
        if self.start_frame and not self._cap.set(cv2.CAP_PROP_POS_FRAMES, self.start_frame):
            self._skip_to(self.start_frame)
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name="detseg-video-read",
                                        daemon=True)
        self._thread.start()

    @property
    def expected(self) -> int | None:
        """How many frames will be processed, when the container says how long it is."""
        last = self.frame_count
        if self.end_frame is not None:
            last = self.end_frame if last is None else min(last, self.end_frame)
        if last is None:
            return None
        return max(0, math.ceil((last - self.start_frame) / self.stride))

    def _skip_to(self, index: int) -> None:
        for _ in range(index):
            if not self._cap.grab():
                break

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        index = self.start_frame
        misses = 0
        try:
            while not self._stop.is_set():
                if self.end_frame is not None and index >= self.end_frame:
                    break
                if not self._cap.grab():
                    misses += 1
                    if misses >= MAX_GRAB_MISSES:
                        break
                    index += 1
                    continue
                # Grabs that failed before this success were frames that could not be read.
                for lost in range(index - misses, index):
                    if (lost - self.start_frame) % self.stride == 0:
                        self._put(_Failure(lost, "could not be read"))
                misses = 0
                if (index - self.start_frame) % self.stride == 0:
                    ok, bgr = self._cap.retrieve()
                    if ok and bgr is not None:
                        item: Any = Frame(index, index / self.fps, bgr[..., ::-1].copy())
                    else:
                        item = _Failure(index, "failed to decode")
                    if not self._put(item):
                        break
                index += 1
        except BaseException as err:  # noqa: BLE001 - handed to the iterating thread
            self._put(err)
        finally:
            self._put(_END)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _Failure):
                self.failed.append(item.index)
                if self.on_error is not None:
                    self.on_error(VideoReadError(self.path,
                                                 f"frame {item.index} {item.reason}; skipped"))
                continue
            yield item

    def close(self) -> None:
        """Stop decoding and release the file (safe to call twice)."""
        self._stop.set()
        self._thread.join()
        self._cap.release()
