"""Video inference: threaded decoding, batched frames, a threaded annotated-video writer, JSONL.

``VideoFrames`` decodes in a background thread (``--vid-stride`` frames skipped with ``grab``
only, ``start``/``end`` in seconds); ``AnnotatedVideoWriter`` draws and encodes in another
thread (same size; fps divided by the stride so the clip keeps its duration; the first codec
that opens among ``VIDEO_CODECS``) into a temporary file renamed into place when closed, so a
killed run leaves no unplayable video under the final name; ``VideoRun`` ties them to a
``Predictor``, writes one JSONL line per processed frame and, when asked, YOLO labels and mask
PNGs per frame. Interrupting a run (Ctrl-C) still closes every file, so what was written stays
playable.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import cv2
import numpy as np

from detseg.engine.background import BackgroundWorker
from detseg.engine.frames import VideoFrames
from detseg.engine.results import Result, ResultStats
from detseg.engine.writers import JsonlWriter, RunWriter
from detseg.errors import OutputError, VideoReadError

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
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, path
        writer.release()
        path.unlink(missing_ok=True)
    tried = ", ".join(f"{c}{s}" for c, s in VIDEO_CODECS)
    raise VideoReadError(stem, f"no video codec available to write (tried {tried})")


Frame = TypeVar("Frame")  # what a writer draws: a Result, or a frame with its tracks


class AnnotatedVideoWriter(BackgroundWorker, Generic[Frame]):
    """Draws frames with ``render`` (an RGB ``H x W x 3`` uint8 picture back, resized to
    ``size`` when it differs) and encodes them, in a background thread, in ``write`` order.

    The video is written as ``.STEM.tmp.SUFFIX`` and renamed to ``path`` (``STEM.SUFFIX``) by
    ``close``. ``write`` blocks when ``queue_size`` frames are waiting; ``close`` drains the
    queue and finalizes the container. A thread error is raised again by ``write`` or ``close``.
    """

    def __init__(self, stem: Path, fps: float, size: tuple[int, int],
                 render: Callable[[Frame], np.ndarray], queue_size: int = 16,
                 thread_name: str = "detseg-video-write") -> None:
        self._writer, self._temporary = open_video_writer(stem.with_name(f".{stem.name}.tmp"),
                                                          fps, size)
        self.path = stem.with_name(stem.name + self._temporary.suffix)
        self.size = size
        self.render = render
        self.frames = 0
        super().__init__(thread_name, queue_size)

    def write(self, frame: Frame) -> None:
        self._submit(frame)

    def close(self) -> Path:
        """Finish the container and rename it into place (safe to call twice); raises
        ``OutputError`` when the rename fails, and any error of the drawing thread."""
        self._finish()
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            try:
                os.replace(self._temporary, self.path)
            except OSError as err:
                raise OutputError(f"{self.path}: cannot write ({err.strerror or err})") from err
        self._raise_pending()
        return self.path

    def _handle(self, frame: Frame) -> None:
        rgb = self.render(frame)
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
    files: Counter[str] = field(default_factory=Counter)

    @property
    def fps(self) -> float:
        """Processed frames per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class VideoRun:
    """Runs a ``Predictor`` over one video, writing ``<stem>.jsonl`` and the annotated video.

    The JSONL has one line per processed frame: ``{"frame", "time", "detections": [...]}`` (or
    ``"pixels"`` for semantic models; see ``Result.to_dict``). With ``save_txt`` /
    ``save_masks`` each processed frame also gets ``labels/<stem>_<frame>.txt`` /
    ``masks/<stem>_<frame>.png`` (as images do; ``frame`` is its 0-based index in the video).
    Construction opens the video (``VideoReadError`` if it cannot be read); ``run`` processes it
    and returns ``report``. An output that cannot be written raises ``OutputError``.
    """

    def __init__(self, predictor: Predictor, path: str | Path, out_dir: str | Path, *,
                 stem: str | None = None, save_video: bool = True, save_txt: bool = False,
                 save_masks: bool = False, stride: int = 1, start: float | None = None,
                 end: float | None = None, plot_options: dict[str, Any] | None = None,
                 on_error: Callable[[VideoReadError], None] | None = None) -> None:
        self.predictor = predictor
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            raise VideoReadError(path, "empty file (0 bytes)")
        self.frames = VideoFrames(path, stride=stride, start=start, end=end, on_error=on_error)
        out_dir = Path(out_dir)
        self.stem = stem or Path(path).stem
        self.report = VideoReport(source=Path(path), expected=self.frames.expected)
        self.writer: AnnotatedVideoWriter[Result] | None = None
        self.frame_files: RunWriter | None = None
        try:
            self.jsonl = JsonlWriter(out_dir / f"{self.stem}.jsonl")
        except BaseException:
            self.frames.close()
            raise
        self.report.jsonl = self.jsonl.path
        options = plot_options or {}
        try:
            if save_txt or save_masks:
                self.frame_files = RunWriter(out_dir, save_images=False, json_name=None,
                                             save_txt=save_txt, save_masks=save_masks)
            if save_video:
                self.writer = AnnotatedVideoWriter(
                    out_dir / self.stem, self.frames.fps / stride, self.frames.size,
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
                if self.frame_files is not None:
                    self.frame_files.add(result, 0, f"{self.stem}_{result.frame_index}")
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
            self.report.seconds = time.perf_counter() - began
            self._finish()
        if on_progress is not None:
            on_progress(self.report)
        return self.report

    def _finish(self) -> None:
        """Close the video and every output, even when one of them fails; the first
        ``OutputError`` is raised after all are closed."""
        failure: OutputError | None = None
        closers = [self.frames.close, self.jsonl.close]
        closers += [w.close for w in (self.writer, self.frame_files) if w is not None]
        for close in closers:
            try:
                close()
            except OutputError as err:
                failure = failure or err
        self.report.failed_frames = list(self.frames.failed)
        if self.frame_files is not None:
            self.report.files.update(self.frame_files.files)
        if failure is not None:
            raise failure
