"""One inference run of ``detect`` / ``segment``: inputs, run folder, outputs, torchrun split.

``find_inputs`` expands the sources and leaves out the folders of earlier runs found inside
them. ``InferenceRun(predictor, inputs, command).run()`` writes into a new run folder (see
``detseg.runs``) the annotated images, predictions.json, YOLO labels and mask PNGs
(``RunWriter``), and per video a JSONL and an annotated video (``VideoRun``). Under ``torchrun``
every rank takes every N-th input, rank 0 creates the folder and tells the others, and merges
the ranks' predictions.json at the end. Nothing prints: a ``RunListener`` hears progress and
failures, and ``run`` returns a ``RunReport``.

A bad input is one failure line and the run goes on; an output that cannot be written (a full
disk) is one failure line and the run stops, with every file written so far finalized.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from detseg.data.io import expand_sources
from detseg.engine import distributed as dist
from detseg.engine.results import ResultStats
from detseg.engine.shared_run import run_in_shared_folder
from detseg.engine.video import VideoRun
from detseg.engine.writers import (
    RunWriter,
    image_ids,
    input_names,
    merge_coco_parts,
    output_stems,
)
from detseg.errors import ImageReadError, OutputError, UsageError
from detseg.runs import is_run_folder, temporary_path

if TYPE_CHECKING:
    from detseg.engine.predictor import Predictor

JSON_NAME = "predictions.json"


@dataclass
class Inputs:
    """Expanded sources: ``images`` and ``videos`` in order, ``failures`` (one line per source
    that gave nothing) and ``notes`` (folder links and earlier run folders left out)."""

    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _run_folder_between(path: Path, root: Path, known: dict[Path, bool]) -> Path | None:
    """The outermost run folder strictly below ``root`` that holds ``path``, if any."""
    for folder in reversed(path.relative_to(root).parents[:-1]):
        folder = root / folder
        if folder not in known:
            known[folder] = is_run_folder(folder)
        if known[folder]:
            return folder
    return None


def find_inputs(sources: Sequence[str | Path]) -> Inputs:
    """Images and videos of ``sources`` (files, folders, globs, ``.txt`` lists).

    Inside a folder source, the output folders of earlier detect/segment runs (``--out`` inside
    the input folder) are left out, each with a note; a run folder named as the source itself
    is read.
    """
    found = expand_sources(list(sources))
    inputs = Inputs(failures=[m if m.endswith(")") else f"{m}: no such file or folder"
                              for m in found.missing],
                    notes=[f"skipped folder link {link}" for link in found.skipped_links])
    roots = [Path(s).expanduser() for s in sources if Path(s).expanduser().is_dir()]
    known: dict[Path, bool] = {}
    skipped: Counter[Path] = Counter()
    for kind, paths in (("images", found.images), ("videos", found.videos)):
        for path in paths:
            root = next((r for r in roots if path.is_relative_to(r)), None)
            run_folder = _run_folder_between(path, root, known) if root is not None else None
            if run_folder is not None:
                skipped[run_folder] += 1
            else:
                getattr(inputs, kind).append(path)
    inputs.notes += [f"skipped {folder}: output folder of an earlier detseg run ({count} files)"
                     for folder, count in skipped.items()]
    return inputs


@dataclass(frozen=True)
class OutputOptions:
    """What a run writes besides the per-video JSONL (see ``RunWriter`` and ``VideoRun``):
    annotated images and videos, predictions.json, YOLO labels, mask PNGs, and how to draw."""

    save_images: bool = True
    save_json: bool = True
    save_txt: bool = False
    save_masks: bool = False
    line_width: int | None = None
    hide_labels: bool = False
    hide_conf: bool = False

    def plot_options(self) -> dict[str, Any]:
        return {"line_width": self.line_width, "hide_labels": self.hide_labels,
                "hide_conf": self.hide_conf}


@dataclass(frozen=True)
class VideoOptions:
    """Which frames of a video are processed: every ``stride``-th, from ``start`` to ``end``
    seconds."""

    stride: int = 1
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise UsageError(f"vid_stride must be >= 1, got {self.stride}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise UsageError(f"end ({self.end}s) must be after start ({self.start}s)")


@dataclass
class VideoSummary:
    """One video processed: its ``source``, main ``output`` file, ``frames`` and ``fps``."""

    source: Path
    output: Path | None
    frames: int
    fps: float


@dataclass
class RunReport:
    """What a run did; on rank 0 of a torchrun job, every rank's share added up.

    Attributes:
        run_dir: the output folder.
        images, frames: images and video frames processed.
        failures: one line per input that failed.
        output_failures: one line per output that could not be written.
        stats: detections per class and time per stage.
        files: files written by kind (``images``, ``labels``, ``masks``, ``videos``, ``jsonl``).
        videos: one summary per video processed.
        json_path: predictions.json, when written; ``json_entries`` its entries.
        stopped: an output could not be written, so (this rank's share of) the run stopped.
        interrupted: Ctrl-C stopped the run (outputs written so far were finalized).
        world_size, is_main: the torchrun job size and whether this is rank 0.
    """

    run_dir: Path
    images: int = 0
    frames: int = 0
    failures: list[str] = field(default_factory=list)
    output_failures: list[str] = field(default_factory=list)
    stats: ResultStats = field(default_factory=ResultStats)
    files: Counter[str] = field(default_factory=Counter)
    videos: list[VideoSummary] = field(default_factory=list)
    json_path: Path | None = None
    json_entries: int = 0
    stopped: bool = False
    interrupted: bool = False
    world_size: int = 1
    is_main: bool = True

    def add(self, other: RunReport) -> None:
        """Count ``other`` (another rank's share) in."""
        self.images += other.images
        self.frames += other.frames
        self.failures += other.failures
        self.output_failures += other.output_failures
        self.stats.merge(other.stats)
        self.files.update(other.files)
        self.videos += other.videos
        self.json_entries += other.json_entries
        self.stopped = self.stopped or other.stopped


class RunListener(Protocol):
    """How a run tells its caller what happens (the CLI shows it; ``SilentListener`` ignores
    it). Rank 0 calls ``on_start``, ``on_stage`` and ``on_progress``; every rank calls
    ``on_failure`` for its own failures."""

    def on_start(self, run_dir: Path, images: int, videos: int, world_size: int) -> None:
        """The run folder is ready; ``images`` and ``videos`` will be processed."""

    def on_failure(self, message: str) -> None:
        """One input or output failed (``message`` names it and says why)."""

    def on_stage(self, label: str, total: int | None, unit: str) -> None:
        """A stage begins: ``images``, or one video (by name); ``total`` items if known,
        rates in ``unit`` (``img/s``, ``fps``)."""

    def on_progress(self, done: int, rate: float) -> None:
        """``done`` items of the current stage are finished, at ``rate`` per second."""


class SilentListener:
    """A ``RunListener`` that ignores everything."""

    def on_start(self, run_dir: Path, images: int, videos: int, world_size: int) -> None:
        pass

    def on_failure(self, message: str) -> None:
        pass

    def on_stage(self, label: str, total: int | None, unit: str) -> None:
        pass

    def on_progress(self, done: int, rate: float) -> None:
        pass


class InferenceRun:
    """Runs ``predictor`` over ``inputs`` into a new run folder (see the module docstring).

    Args:
        predictor: the model, ready to run.
        inputs: what ``find_inputs`` found.
        command: ``detect`` or ``segment`` (the ``runs/<command>`` folder).
        out: the output folder (new or empty), or ``None`` for ``root/command/name[N]``.
        name, root: the run name and the runs folder when ``out`` is not given.
        outputs, video: what to write, and which video frames to process.
        listener: told about progress and failures.
    """

    def __init__(self, predictor: Predictor, inputs: Inputs, command: str, *,
                 out: str | Path | None = None, name: str = "exp", root: str | Path = "runs",
                 outputs: OutputOptions | None = None, video: VideoOptions | None = None,
                 listener: RunListener | None = None) -> None:
        self.predictor = predictor
        self.inputs = inputs
        self.command = command
        self.out, self.name, self.root = out, name, root
        self.outputs = outputs or OutputOptions()
        self.video = video or VideoOptions()
        self.listener: RunListener = listener or SilentListener()
        self.info = dist.dist_info_from_env()
        self._quiet = SilentListener()
        every = inputs.images + inputs.videos
        self._stems = dict(zip(every, output_stems(every), strict=True))
        self._ids = dict(zip(inputs.images, image_ids(inputs.images), strict=True))
        self._names = dict(zip(inputs.images, input_names(inputs.images), strict=True))

    @property
    def _shown(self) -> RunListener:
        """The listener for progress: rank 0's only."""
        return self.listener if self.info.is_main else self._quiet

    def run(self) -> RunReport:
        """Process the inputs; ``OutputFolderError`` when the run folder cannot be made."""
        return run_in_shared_folder(self.info, self.predictor.device, self.command, self.name,
                                    self.out, self.root, self._predict_share, self._gathered)

    def _json_name(self, rank: int) -> str:
        if not self.info.enabled:
            return JSON_NAME
        return temporary_path(Path(f"predictions.rank{rank}.json")).name

    # ------------------------------------------------------------------ this rank's share
    def _fail(self, report: RunReport, message: str) -> None:
        report.failures.append(message)
        self.listener.on_failure(message)

    def _fail_output(self, report: RunReport, err: OutputError) -> None:
        report.output_failures.append(str(err))
        report.stopped = True
        self.listener.on_failure(str(err))

    def _predict_share(self, run_dir: Path) -> RunReport:
        info, inputs, outputs = self.info, self.inputs, self.outputs
        report = RunReport(run_dir=run_dir, world_size=info.world_size, is_main=info.is_main)
        self._shown.on_start(run_dir, len(inputs.images), len(inputs.videos), info.world_size)
        images = inputs.images[info.rank::info.world_size]
        videos = inputs.videos[info.rank::info.world_size]
        write_json = outputs.save_json and bool(inputs.images)
        try:
            writer = RunWriter(run_dir, save_images=outputs.save_images,
                               json_name=self._json_name(info.rank) if write_json else None,
                               save_txt=outputs.save_txt, save_masks=outputs.save_masks,
                               plot_options=outputs.plot_options())
        except OutputError as err:
            self._fail_output(report, err)
            return report
        try:
            self._predict_images(images, writer, report)
            writer.close()
            for path in videos:
                self._predict_video(path, run_dir, report)
        except OutputError as err:
            self._fail_output(report, err)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            try:
                writer.close()
            except OutputError as err:
                self._fail_output(report, err)
        report.images = writer.stats.images
        report.stats.merge(writer.stats)
        report.files.update(writer.files)
        del report.files["json"]
        if writer.coco is not None:
            report.json_entries = writer.coco.count
            report.json_path = writer.coco.path
        return report

    def _on_input_error(self, report: RunReport) -> Callable[[ImageReadError], None]:
        return lambda err: self._fail(report, str(err))

    def _predict_images(self, images: list[Path], writer: RunWriter, report: RunReport) -> None:
        if not images:
            return
        self._shown.on_stage("images", len(images), "img/s")
        began = time.perf_counter()
        results = self.predictor.predict_paths(images, on_error=self._on_input_error(report))
        for done, result in enumerate(results, 1):
            path = result.path
            assert path is not None, "predict_paths gives each result its file"
            writer.add(result, self._ids[path], self._stems[path], self._names[path])
            self._shown.on_progress(done, done / max(time.perf_counter() - began, 1e-9))
        elapsed = max(time.perf_counter() - began, 1e-9)
        self._shown.on_progress(len(images), len(images) / elapsed)  # failed ones included

    def _predict_video(self, path: Path, run_dir: Path, report: RunReport) -> None:
        outputs, video = self.outputs, self.video
        try:
            job = VideoRun(self.predictor, path, run_dir, stem=self._stems[path],
                           save_video=outputs.save_images, save_txt=outputs.save_txt,
                           save_masks=outputs.save_masks, stride=video.stride,
                           start=video.start, end=video.end,
                           plot_options=outputs.plot_options(),
                           on_error=self._on_input_error(report))
        except ImageReadError as err:
            self._fail(report, str(err))
            return
        self._shown.on_stage(path.name, job.report.expected, "fps")
        try:
            job.run(lambda state: self._shown.on_progress(state.frames, state.fps))
        finally:
            state = job.report
            report.frames += state.frames
            report.stats.merge(state.stats)
            report.files.update(state.files)
            report.files["videos"] += int(state.video is not None)
            report.files["jsonl"] += 1
            report.videos.append(VideoSummary(path, state.video or state.jsonl, state.frames,
                                              state.fps))

    # ------------------------------------------------------------------ all ranks
    def _gathered(self, report: RunReport) -> RunReport:
        """Rank 0: every rank's report added up, and the ranks' JSON parts merged."""
        reports: list[RunReport] = dist.gather_objects(report)
        if not self.info.enabled or not self.info.is_main:
            return report
        total = RunReport(run_dir=report.run_dir, world_size=self.info.world_size)
        for share in reports:
            total.add(share)
        parts = [report.run_dir / self._json_name(r) for r in range(self.info.world_size)]
        parts = [p for p in parts if p.is_file()]
        if parts:
            try:
                total.json_entries = merge_coco_parts(parts, report.run_dir / JSON_NAME)
                total.json_path = report.run_dir / JSON_NAME
            except OutputError as err:
                self._fail_output(total, err)
        return total
