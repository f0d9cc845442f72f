"""One ``detseg track`` run: detections through the Predictor, identities through a tracker.

``TrackingRun(predictor, found, options).run()`` makes a new run folder (``detseg.runs``) and,
for each sequence (``detseg.engine.sequences``), streams its selected frames through the
Predictor in batches, feeds each frame's detections to a fresh tracker (``detseg.track``) and
writes ``<seq>.txt`` (MOTChallenge: ``frame,id,x,y,w,h,conf,-1,-1,-1``, frames numbered as in
the source), ``<seq>.jsonl`` (a line per frame) and ``<seq>.mp4`` (ids and trails), see
``detseg.engine.track_outputs``; then ``summary.json`` (per sequence and in total: frames,
tracks, mean track length, ids per class). Under ``torchrun`` every rank takes every N-th
sequence and rank 0 writes the summary of all.

A sequence that cannot be opened, or a frame that cannot be read, is one failure line and the
run goes on (a frame lost between two frames still advances the tracker, with no detections);
an output that cannot be written stops the run. Ctrl-C stops the run after the frame being
tracked (a flag the loop reads, so no interrupt is lost inside a finalizer; a second Ctrl-C
raises at once) and every file is closed (``report.interrupted``). Nothing prints: a
``TrackListener`` hears progress.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from detseg.engine import distributed as dist
from detseg.engine.interrupts import stop_on_sigint
from detseg.engine.sequences import FoundSequences, FrameRange, SequenceFrames, TrackSource
from detseg.engine.shared_run import run_in_shared_folder
from detseg.engine.track_outputs import SequenceOutputs
from detseg.engine.writers import write_file
from detseg.errors import ImageReadError, OutputError, UsageError
from detseg.track import build_tracker

if TYPE_CHECKING:
    from detseg.engine.predictor import Predictor

SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class TrackOptions:
    """The tracker (a ``detseg.track.TRACKERS`` name and parameter overrides), which frames,
    whether to write annotated videos, and the trail length in frames."""

    tracker: str = "bytetrack"
    params: dict[str, Any] = field(default_factory=dict)
    frames: FrameRange = field(default_factory=FrameRange)
    save_video: bool = True
    trail: int = 30


@dataclass
class SequenceReport:
    """One sequence tracked: its outputs, frames processed / failed, identities, speed."""

    name: str
    source: Path
    mot: Path | None = None
    frames: int = 0
    failed_frames: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "frames": self.frames,
                "failed_frames": self.failed_frames, **self.summary,
                "interrupted": self.interrupted}


@dataclass
class TrackReport:
    """What a run did (on rank 0 of a torchrun job, every rank's share)."""

    run_dir: Path
    sequences: list[SequenceReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    output_failures: list[str] = field(default_factory=list)
    stopped: bool = False
    interrupted: bool = False
    world_size: int = 1
    is_main: bool = True
    summary_path: Path | None = None

    def totals(self) -> dict[str, Any]:
        """Frames, tracks, mean track length and ids per class over every sequence."""
        tracks = sum(s.summary.get("tracks", 0) for s in self.sequences)
        length = sum(s.summary.get("tracks", 0) * s.summary.get("mean_length", 0.0)
                     for s in self.sequences)
        per_class: dict[str, int] = {}
        for s in self.sequences:
            for name, count in s.summary.get("ids_per_class", {}).items():
                per_class[name] = per_class.get(name, 0) + count
        return {"sequences": len(self.sequences), "frames": sum(s.frames for s in self.sequences),
                "tracks": tracks, "mean_length": round(length / tracks, 2) if tracks else 0.0,
                "ids_per_class": dict(sorted(per_class.items()))}


class TrackListener(Protocol):
    """How a run tells its caller what happens; rank 0 hears start, stages and progress, every
    rank its own failures."""

    def on_start(self, run_dir: Path, sequences: int, world_size: int) -> None: ...

    def on_failure(self, message: str) -> None: ...

    def on_stage(self, label: str, total: int | None) -> None: ...

    def on_progress(self, done: int, fps: float) -> None: ...


class _Silent:
    def on_start(self, run_dir: Path, sequences: int, world_size: int) -> None:
        pass

    def on_failure(self, message: str) -> None:
        pass

    def on_stage(self, label: str, total: int | None) -> None:
        pass

    def on_progress(self, done: int, fps: float) -> None:
        pass


class TrackingRun:
    """Tracks ``found.sequences`` with ``predictor`` into a new run folder (module docstring).

    Args:
        predictor: a detection or instance model (``UsageError`` for a semantic one).
        found: what ``find_sequences`` found.
        options: tracker, frames, outputs.
        out: the output folder (new or empty), or ``None`` for ``root/track/name[N]``.
        listener: told about progress and failures.
    """

    def __init__(self, predictor: Predictor, found: FoundSequences,
                 options: TrackOptions | None = None, *, out: str | Path | None = None,
                 name: str = "exp", root: str | Path = "runs",
                 listener: TrackListener | None = None) -> None:
        if predictor.task == "semantic":
            raise UsageError(f"{predictor.spec.family} is a semantic segmentation model; "
                             f"tracking needs a detection or instance segmentation model")
        self.predictor = predictor
        self.found = found
        self.options = options or TrackOptions()
        build_tracker(self.options.tracker, **self.options.params)  # bad parameters: now
        self.out, self.name, self.root = out, name, root
        self.listener: TrackListener = listener or _Silent()
        self.info = dist.dist_info_from_env()
        self._shown: TrackListener = self.listener if self.info.is_main else _Silent()
        self._stop = threading.Event()

    def run(self) -> TrackReport:
        """Track every sequence; ``OutputFolderError`` when the run folder cannot be made."""
        return run_in_shared_folder(self.info, self.predictor.device, "track", self.name,
                                    self.out, self.root, self._track_share, self._gathered,
                                    self._write_summary_on_main)

    def _write_summary_on_main(self, report: TrackReport) -> None:
        if report.is_main:
            self._write_summary(report)

    def _fail(self, report: TrackReport, message: str) -> None:
        report.failures.append(message)
        self.listener.on_failure(message)

    def _track_share(self, run_dir: Path) -> TrackReport:
        info = self.info
        report = TrackReport(run_dir=run_dir, world_size=info.world_size, is_main=info.is_main)
        self._shown.on_start(run_dir, len(self.found.sequences), info.world_size)
        try:
            with stop_on_sigint(self._stop, lambda: None):
                for source in self.found.sequences[info.rank::info.world_size]:
                    self._track_sequence(source, run_dir, report)
                    if self._stop.is_set():
                        report.interrupted = True
                        break
        except OutputError as err:
            report.output_failures.append(str(err))
            report.stopped = True
            self.listener.on_failure(str(err))
        except KeyboardInterrupt:
            report.interrupted = True
        return report

    def _track_sequence(self, source: TrackSource, run_dir: Path, report: TrackReport) -> None:
        def on_error(err: ImageReadError) -> None:
            state.failed_frames += 1
            self._fail(report, str(err))

        state = SequenceReport(source.name, source.path)
        try:
            frames = SequenceFrames(source, self.options.frames, on_error)
        except ImageReadError as err:
            self._fail(report, str(err))
            return
        except OSError as err:
            self._fail(report, f"{source.path}: cannot read ({err.strerror or err})")
            return
        stride = self.options.frames.stride
        try:
            outputs = SequenceOutputs(run_dir, source.name, self.predictor.names,
                                      frames.fps / stride, self.options.save_video,
                                      self.options.trail)
        except BaseException:
            frames.close()
            raise
        state.mot = outputs.mot.path
        report.sequences.append(state)
        tracker = build_tracker(self.options.tracker, frame_rate=frames.fps / stride,
                                **self.options.params)
        self._shown.on_stage(source.name, frames.expected)
        began = time.perf_counter()
        previous: int | None = None
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        results = self.predictor.predict_frames(frames, source.path)
        try:
            for result in results:
                number = int(result.frame_index or 0) + 1
                if previous is not None:  # frames lost in between: time passes, nothing seen
                    for _ in range((number - previous) // stride - 1):
                        tracker.update(*empty)
                previous = number
                tracked = tracker.update(result.boxes, result.scores, result.labels)
                outputs.write(number, result.image, tracked)
                state.frames += 1
                if state.frames % self.predictor.batch_size == 0:
                    self._shown.on_progress(state.frames, state.frames /
                                            max(time.perf_counter() - began, 1e-9))
                if self._stop.is_set():
                    state.interrupted = True
                    break
        except KeyboardInterrupt:
            state.interrupted = True
            raise
        finally:
            state.seconds = time.perf_counter() - began
            getattr(results, "close", lambda: None)()  # a generator: stop its batching now
            frames.close()
            state.summary = outputs.stats.summary()
            outputs.close()
        self._shown.on_progress(state.frames, state.fps)

    def _gathered(self, report: TrackReport) -> TrackReport:
        reports: list[TrackReport] = dist.gather_objects(report)
        if not self.info.enabled or not self.info.is_main:
            return report
        total = TrackReport(run_dir=report.run_dir, world_size=self.info.world_size)
        for share in reports:
            total.sequences += share.sequences
            total.failures += share.failures
            total.output_failures += share.output_failures
            total.stopped = total.stopped or share.stopped
        order = {s.name: i for i, s in enumerate(self.found.sequences)}
        total.sequences.sort(key=lambda s: order.get(s.name, len(order)))
        return total

    def _write_summary(self, report: TrackReport) -> None:
        summary = {"tracker": self.options.tracker, "parameters": self.options.params,
                   "total": report.totals(),
                   "sequences": {s.name: s.as_dict() for s in report.sequences}}
        path = report.run_dir / SUMMARY_NAME
        try:
            write_file(path, (json.dumps(summary, indent=2) + "\n").encode())
        except OutputError as err:
            report.output_failures.append(str(err))
            self.listener.on_failure(str(err))
            return
        report.summary_path = path
