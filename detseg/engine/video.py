"""Video inference: threaded decoding, batched frames, a threaded annotated-video writer, JSONL.

``VideoFrames`` decodes in a background thread (``--vid-stride`` frames skipped with ``grab``
only, ``start``/``end`` in seconds); ``AnnotatedVideoWriter`` draws and encodes in another
thread (same size; fps divided by the stride so the clip keeps its duration; the first codec
that opens among ``VIDEO_CODECS``); ``VideoRun`` ties them to a ``Predictor`` and writes one JSONL
line per processed frame. Interrupting a run (Ctrl-C) still closes both files, so what was
written stays playable.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from detseg.engine.background import BackgroundWorker
from detseg.engine.results import Result, ResultStats
from detseg.engine.writers import JsonlWriter
from detseg.errors import UsageError, VideoReadError

if TYPE_CHECKING:
    from detseg.engine.predictor import Predictor

# (fourcc, container) pairs tried in order when writing annotated videos.
VIDEO_CODECS = (("mp4v", ".mp4"), ("avc1", ".mp4"), ("MJPG", ".avi"), ("XVID", ".avi"))
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


def open_video_writer(stem: Path, fps: float, size: tuple[int, int]) -> tuple[Any, Path]:
    """Open a ``cv2.VideoWriter`` at ``stem`` + the container of the first codec that works.

    Returns ``(writer, path)``; raises ``VideoReadError`` naming the codecs tried if none open.
    """
    for fourcc, suffix in VIDEO_CODECS:
        path = stem.with_name(stem.name + suffix)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, path
        writer.release()
        path.unlink(missing_ok=True)
    tried = ", ".join(f"{c}{s}" for c, s in VIDEO_CODECS)
    raise VideoReadError(stem, f"no video codec available to write (tried {tried})")


class AnnotatedVideoWriter(BackgroundWorker):
    """Draws results with ``render`` and encodes them, in a background thread.

    ``write`` blocks when ``queue_size`` frames are waiting; ``close`` drains the queue and
    finalizes the container. A thread error is raised again by ``write`` or ``close``.
    """

    def __init__(self, stem: Path, fps: float, size: tuple[int, int],
                 render: Callable[[Result], np.ndarray], queue_size: int = 16) -> None:
        self._writer, self.path = open_video_writer(stem, fps, size)
        self.size = size
        self.render = render
        self.frames = 0
        super().__init__("detseg-video-write", queue_size)

    def write(self, result: Result) -> None:
        self._submit(result)

    def close(self) -> Path:
        self._finish()
        self._writer.release()
        self._raise_pending()
        return self.path

    def _handle(self, result: Result) -> None:
        rgb = self.render(result)
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(rgb[..., ::-1]))
        self.frames += 1


@dataclass
class VideoReport:
    """What a ``VideoRun`` did: outputs, frames processed and failed, throughput."""

    source: Path
    video: Path | None = None
    jsonl: Path | None = None
    frames: int = 0
    expected: int | None = None
    failed_frames: list[int] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    stats: ResultStats = field(default_factory=ResultStats)

    @property
    def fps(self) -> float:
        """Processed frames per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class VideoRun:
    """Runs a ``Predictor`` over one video, writing ``<stem>.jsonl`` and the annotated video.

    The JSONL has one line per processed frame: ``{"frame", "time", "detections": [...]}`` (or
    ``"pixels"`` for semantic models; see ``Result.to_dict``). Construction opens the video
    (``VideoReadError`` if it cannot be read); ``run`` processes it and returns ``report``.
    """

    def __init__(self, predictor: Predictor, path: str | Path, out_dir: str | Path, *,
                 stem: str | None = None, save_video: bool = True, stride: int = 1,
                 start: float | None = None, end: float | None = None,
                 plot_options: dict[str, Any] | None = None,
                 on_error: Callable[[VideoReadError], None] | None = None) -> None:
        self.predictor = predictor
        self.frames = VideoFrames(path, stride=stride, start=start, end=end, on_error=on_error)
        out_dir = Path(out_dir)
        stem = stem or Path(path).stem
        self.report = VideoReport(source=Path(path), expected=self.frames.expected)
        self.jsonl = JsonlWriter(out_dir / f"{stem}.jsonl")
        self.report.jsonl = self.jsonl.path
        options = plot_options or {}
        self.writer: AnnotatedVideoWriter | None = None
        try:
            if save_video:
                self.writer = AnnotatedVideoWriter(
                    out_dir / stem, self.frames.fps / stride, self.frames.size,
                    render=lambda result: result.plot(**options))
                self.report.video = self.writer.path
        except BaseException:
            self._finish()
            raise

    def run(self, on_progress: Callable[[VideoReport], None] | None = None) -> VideoReport:
        """Process every selected frame; ``on_progress(report)`` is called after each batch.

        On any exception (Ctrl-C included) the outputs are finalized before it propagates.
        """
        began = time.perf_counter()
        pending = 0
        try:
            for result in self.predictor.predict_frames(self.frames, self.report.source):
                self.jsonl.write({"frame": result.frame_index,
                                  "time": round(float(result.timestamp or 0.0), 4),
                                  **result.to_dict()})
                if self.writer is not None:
                    self.writer.write(result)
                self.report.stats.add(result)
                self.report.frames += 1
                pending += 1
                if on_progress is not None and pending >= self.predictor.batch_size:
                    pending = 0
                    self.report.seconds = time.perf_counter() - began
                    on_progress(self.report)
        except KeyboardInterrupt:
            self.report.interrupted = True
            raise
        finally:
            self._finish()
            self.report.seconds = time.perf_counter() - began
        if on_progress is not None:
            on_progress(self.report)
        return self.report

    def _finish(self) -> None:
        self.frames.close()
        self.jsonl.close()
        self.report.failed_frames = list(self.frames.failed)
        if self.writer is not None:
            self.writer.close()
