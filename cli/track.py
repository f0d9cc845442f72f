"""``detseg track``: identities across the frames of videos and image sequences."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import typer

from .console import console, err_console, fail, plural, print_table, split_values, warn

DEFAULT_MODEL = "fasterrcnn_resnet50_fpn_v2"


def _convert(flag: str, kind: type, text: str) -> Any:
    """``text`` as a value of ``kind`` for option ``flag`` (``UsageError`` naming it)."""
    from detseg.errors import UsageError

    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{flag} takes true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{flag} takes {'an integer' if kind is int else 'a number'}, got "
                         f"{text!r}") from None


def split_tracker_options(tokens: list[str], tracker: str) -> tuple[list[str], dict[str, Any]]:
    """Sources and tracker parameter overrides from the command line's left-over tokens.

    Every field of ``TRACKERS[tracker].params`` is an option ``--field-name VALUE`` (or
    ``--field-name=VALUE``; booleans ``--name`` / ``--no-name``). ``UsageError`` names an
    unknown option (and the tracker that has it, if another does) or a bad value.
    """
    from detseg.errors import UsageError
    from detseg.track import TRACKERS

    fields = {f.name: f for f in dataclasses.fields(TRACKERS[tracker].params)}
    sources: list[str] = []
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--") or token == "--":
            sources.append(token)
            continue
        key, has_value, value = token[2:].partition("=")
        name = key.replace("-", "_")
        negated = name.startswith("no_") and name[3:] in fields and name not in fields
        field = fields.get(name[3:] if negated else name)
        if field is None:
            owners = [e.name for e in TRACKERS
                      if name in {f.name for f in dataclasses.fields(e.builder.params)}]
            where = f" (a parameter of --tracker {owners[0]})" if owners else ""
            raise UsageError(f"no such option: --{key}{where}; `detseg track --list-trackers` "
                             f"lists the options of each tracker")
        kind = type(field.default)
        if kind is bool and not has_value:
            overrides[field.name] = not negated
            continue
        if not has_value:
            if i >= len(tokens):
                raise UsageError(f"--{key} needs a value")
            value = tokens[i]
            i += 1
        overrides[field.name] = _convert(f"--{key}", kind, value)
    return sources, overrides


def _list_trackers() -> None:
    from detseg.track import TRACKERS

    rows = []
    for entry in TRACKERS:
        for f in dataclasses.fields(entry.builder.params):
            flag = "--" + f.name.replace("_", "-")
            if isinstance(f.default, bool):
                flag += f" / --no-{f.name.replace('_', '-')}"
            rows.append((entry.name, flag, f.default, f.metadata.get("help", "")))
    print_table("trackers and their options", ["tracker", "option", "default", "meaning"], rows)


class _Terminal:
    """A ``TrackListener``: header, progress bars on stderr, every failure as one warning."""

    def __init__(self, predictor: Any, tracker: str, show: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.predictor, self.tracker, self.show = predictor, tracker, show
        self.progress = Progress(TextColumn("{task.description}", markup=False),
                                 BarColumn(bar_width=30), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                 console=err_console, disable=not show, transient=False)
        self._task: Any = None

    def on_start(self, run_dir: Path, sequences: int, world_size: int) -> None:
        if not self.show:
            return
        spec = self.predictor.spec
        shard = f" over {world_size} processes" if world_size > 1 else ""
        console.print(f"track: {spec.family} ({spec.backbone or 'preset'}) + {self.tracker}, "
                      f"{plural(sequences, 'sequence')}{shard}, device "
                      f"{self.predictor.device}, batch {self.predictor.batch_size} -> {run_dir}",
                      highlight=False)

    def on_failure(self, message: str) -> None:
        warn(message)

    def on_stage(self, label: str, total: int | None) -> None:
        self._task = self.progress.add_task(label, total=total, rate="")

    def on_progress(self, done: int, fps: float) -> None:
        self.progress.update(self._task, completed=done, rate=f"{fps:.1f} fps")


def _summary(report: Any) -> None:
    def per_class(counts: dict[str, int]) -> str:
        return ", ".join(f"{name} {count}" for name, count in counts.items()) or "-"

    rows = [(s.name, s.frames, s.summary.get("tracks", 0), s.summary.get("mean_length", 0.0),
             per_class(s.summary.get("ids_per_class", {})))
            for s in report.sequences]
    total = report.totals()
    if len(rows) > 1:
        rows.append(("all", total["frames"], total["tracks"], total["mean_length"],
                     per_class(total["ids_per_class"])))
    print_table(f"{plural(total['tracks'], 'track')}", ["sequence", "frames", "tracks",
                                                         "mean length (frames)",
                                                         "ids per class"], rows)
    where = f"{report.summary_path.name}, " if report.summary_path is not None else ""
    console.print(f"saved {where}<sequence>.txt (MOTChallenge), .jsonl and .mp4 per sequence "
                  f"in {report.run_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``track`` to ``app``."""
    app.command("track", no_args_is_help=True, context_settings={
        "allow_extra_args": True, "ignore_unknown_options": True})(track_command)


def track_command(
    sources: list[str] | None = typer.Argument(
        None, metavar="SOURCE...",
        help="Videos, sequence folders (MOT17 SEQ/img1/ or a folder of frames) and folders of "
             "them; tracker options (--track-buffer 60, ...) may come among them."),
    weights: str | None = typer.Option(
        None, "--weights", "-w",
        help="The detector: a checkpoint, a manifest name (shapes-faster_rcnn, ...), a "
             "torchvision enum, an https URL (default: DEFAULT of the --model preset)."),
    model: str | None = typer.Option(
        None, "--model", "-m",
        help=f"Model preset or family (default: {DEFAULT_MODEL}, or the model --weights "
             f"describes)."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone of a family model."),
    tracker: str = typer.Option("bytetrack", "--tracker",
                                help="bytetrack or ocsort (`--list-trackers`: their options)."),
    list_trackers: bool = typer.Option(False, "--list-trackers",
                                       help="List the trackers and their options, then exit."),
    conf: float = typer.Option(
        0.1, "--conf", min=0.0, max=1.0,
        help="Lowest detection score handed to the tracker (ByteTrack uses scores down to its "
             "--track-low-thresh)."),
    iou: float | None = typer.Option(None, "--iou", min=0.0, max=1.0,
                                     help="The detector's NMS IoU threshold."),
    classes: list[str] | None = typer.Option(
        None, "--classes", help="Track only these classes: names or label ids, repeated or "
                                "comma-separated."),
    max_det: int = typer.Option(100, "--max-det", min=1, help="Most detections per frame."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=32,
                                     help="Inference size in pixels (default: the model's)."),
    vid_stride: int = typer.Option(1, "--vid-stride", min=1, help="Track every N-th frame."),
    start: int | None = typer.Option(None, "--start", min=1,
                                     help="First frame number to track (from 1, as in gt.txt)."),
    end: int | None = typer.Option(None, "--end", min=1,
                                   help="Last frame number to track (inclusive)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Output folder; must be new or empty."),
    name: str = typer.Option("exp", "--name",
                             help="Run name under runs/track/ (exp, exp2, ...)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", min=1,
                                   help="Frames per forward pass."),
    threads: int | None = typer.Option(
        None, "--threads", min=1,
        help="CPU threads for torch (default: OMP_NUM_THREADS or torch's own choice)."),
    half: bool = typer.Option(False, "--half", help="float16 autocast (CUDA only)."),
    save_video: bool = typer.Option(True, "--save-video/--no-save-video",
                                    help="Write the annotated video of each sequence."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary."),
) -> None:
    """Track objects through videos and image sequences: a detector on every frame,
    ByteTrack or OC-SORT linking the detections into identities.

    Writes per sequence, in the run folder:
    <seq>.txt    MOTChallenge results, frame,id,x,y,w,h,conf,-1,-1,-1, frames
                 numbered as in the source (also with --vid-stride, --start,
                 --end), so `detseg eval --mot` scores it against gt.txt
                 (give eval the same frames: after --vid-stride 2
                 --start 3 --end 9, `eval --mot ... --mot-frames 3:9:2`);
    <seq>.jsonl  a line per frame: frame, objects (id, class, score, box_xyxy);
    <seq>.mp4    boxes, #id class labels, trails of the last 30 centres;
    and summary.json (tracks, mean track length, ids per class).

    Tracker options: the tracker's parameters as --name-with-dashes VALUE
    (`detseg track --list-trackers` lists them with their defaults).

    Examples:

      detseg track data/shapes-video --weights shapes-faster_rcnn

      detseg track clip.mp4 -w shapes-mask_rcnn --tracker ocsort --min-hits 2

      detseg track MOT17/train/MOT17-02 --vid-stride 2 --start 100 --end 400

      torchrun --nproc-per-node 2 -m detseg track clips/ -w shapes-ssd
    """
    if list_trackers:
        _list_trackers()
        return
    # Our own one-line messages say what is wrong with a video; FFmpeg's log would come first.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import torch

    from detseg.engine.device import select_device
    from detseg.engine.distributed import dist_info_from_env
    from detseg.engine.predictor import Predictor
    from detseg.engine.sequences import FrameRange, find_sequences
    from detseg.engine.tracking_run import TrackingRun, TrackOptions
    from detseg.runs import check_run_name

    paths, params = split_tracker_options(list(sources or []), tracker)
    if not paths:
        fail("give at least one SOURCE (a video, a sequence folder or a folder of them)")
    if out is None:
        check_run_name(name)
    options = TrackOptions(tracker=tracker, params=params,
                           frames=FrameRange(vid_stride, start, end), save_video=save_video)
    if threads is not None:  # else torch's own choice, which follows OMP_NUM_THREADS
        torch.set_num_threads(threads)
    info = dist_info_from_env()
    if info.enabled:  # this rank's own GPU where there are GPUs
        device = str(select_device(device, info.local_rank))
    found = find_sequences(paths)
    if info.is_main:
        for message in found.failures + found.notes:
            warn(message)
    if not found.sequences:
        fail("no videos or image sequences among the sources", code=1)
    if model is None and weights is None:
        model = DEFAULT_MODEL
    predictor = Predictor(model=model, weights=weights, backbone=backbone, device=device,
                          conf=conf, classes=split_values(classes), max_det=max_det,
                          imgsz=imgsz, batch_size=batch_size, half=half, iou=iou,
                          need_trained=True)
    if info.is_main and half and not predictor.half_active:
        warn("--half needs a CUDA device; running in float32")
    terminal = _Terminal(predictor, tracker, show=info.is_main and not quiet)
    run = TrackingRun(predictor, found, options, out=out, name=name, listener=terminal)
    with terminal.progress:
        report = run.run()
    if report.interrupted:
        err_console.print("interrupted: outputs written so far were finalized", highlight=False)
        raise typer.Exit(130)
    if report.is_main and not quiet:
        _summary(report)
    failed = len(found.failures) + len(report.failures)
    if report.is_main and report.stopped:
        err_console.print("stopped: an output could not be written; the outputs written "
                          "before were kept", highlight=False)
    elif report.is_main and failed:
        err_console.print(f"{failed} input(s) failed; the rest were tracked", highlight=False)
    if failed or report.output_failures:
        raise typer.Exit(1)
