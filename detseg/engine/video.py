"""Video inference: threaded decoding, batched frames, a threaded annotated-video writer, JSONL.

``VideoFrames`` decodes in a background thread (``--vid-stride`` frames skipped with ``grab``
only, ``start``/``end`` in seconds); ``AnnotatedVideoWriter`` draws and encodes in another
thread (same size; fps divided by the stride so the clip keeps its duration; the first codec
that opens among ``VIDEO_CODECS``); ``VideoRun`` ties them to a ``Predictor`` and writes one JSONL
line per processed frame. Interrupting a run (Ctrl-C) still closes both files, so what was
written stays playable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from detseg.engine.background import BackgroundWorker
from detseg.engine.frames import VideoFrames
from detseg.engine.results import Result, ResultStats
from detseg.engine.writers import JsonlWriter
from detseg.errors import VideoReadError

if TYPE_CHECKING:
    from detseg.engine.predictor import Predictor

# (fourcc, container) pairs tried in order when writing annotated videos.
VIDEO_CODECS = (("mp4v", ".mp4"), ("avc1", ".mp4"), ("MJPG", ".avi"), ("XVID", ".avi"))


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
