"""``detseg detect`` and ``detseg segment``: batched inference on images, folders and videos."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from detseg.cli.console import console, err_console, fail, print_table, warn

DEFAULT_MODELS = {"detect": "fasterrcnn_resnet50_fpn_v2", "segment": "deeplabv3_resnet50"}

EXAMPLES = {
    "detect": """
Examples:

  detseg detect photo.jpg                      # COCO Faster R-CNN v2 (downloads DEFAULT weights)

  detseg detect images/ clip.mp4 --weights shapes-faster_rcnn --conf 0.4

  detseg detect "data/*.png" --model maskrcnn_resnet50_fpn --save-masks --save-txt

  detseg detect list.txt --weights runs/train/exp/best.pt --classes circle,square -b 8

  detseg detect street.mp4 --vid-stride 2 --start 10 --end 40 --half --device cuda:0

  torchrun --nproc-per-node 4 -m detseg detect big_folder/ -b 8   # one share per GPU
""",
    "segment": """
Examples:

  detseg segment photo.jpg                     # COCO-VOC DeepLabV3 (downloads DEFAULT weights)

  detseg segment images/ --weights shapes-unet --save-masks

  detseg segment clip.mp4 --model lraspp_mobilenet_v3_large --imgsz 512
""",
}


@dataclass
class _RankReport:
    """What one process did; gathered on rank 0 for the summary."""

    images: int = 0
    frames: int = 0
    failures: list[str] = field(default_factory=list)
    stats: Any = None
    files: Counter = field(default_factory=Counter)
    videos: list[tuple[str, str, int, float]] = field(default_factory=list)
    json_entries: int = 0
    interrupted: bool = False


def _split_classes(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _run(command: str, sources: list[str], *, model: str | None, weights: str | None,
         backbone: str | None, conf: float | None, classes: list[str] | None, max_det: int,
         imgsz: int | None, batch_size: int, device: str, half: bool, out: Path | None,
         name: str, save_images: bool, save_json: bool, save_txt: bool, save_masks: bool,
         line_width: int | None, hide_labels: bool, hide_conf: bool, vid_stride: int,
         start: float | None, end: float | None, quiet: bool) -> None:
    import torch

    from detseg.data.io import expand_sources
    from detseg.engine import distributed as dist
    from detseg.engine.predictor import Predictor
    from detseg.engine.results import ResultStats
    from detseg.engine.writers import RunWriter, image_ids, output_stems
    from detseg.errors import DetsegError, UsageError
    from detseg.runs import new_run_dir

    info = dist.dist_info_from_env()
    if info.enabled and device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{info.local_rank}"
    found = expand_sources(sources)
    failures = [m if m.endswith(")") else f"{m}: no such file or folder" for m in found.missing]
    if info.is_main:
        for message in failures:
            warn(message)
    if not found.images and not found.videos:
        fail("no readable images or videos among the sources", code=1)
    if model is None and weights is None:
        model = DEFAULT_MODELS[command]
    predictor = Predictor(model=model, weights=weights, backbone=backbone, device=device,
                          conf=conf, classes=_split_classes(classes), max_det=max_det,
                          imgsz=imgsz, batch_size=batch_size, half=half, need_trained=True)
    semantic = predictor.task == "semantic"
    if semantic and command == "detect":
        raise UsageError(f"{predictor.spec.family} is a semantic segmentation model; use "
                         f"`detseg segment`")
    if not semantic and command == "segment":
        raise UsageError(f"{predictor.spec.family} is a {predictor.task} model; use "
                         f"`detseg detect`")
    if info.is_main and half and not predictor.half_active:
        warn("--half needs a CUDA device; running in float32")
    if info.is_main and save_masks and predictor.task == "detect":
        warn(f"{predictor.spec.family} predicts no masks; --save-masks writes nothing")
    if info.is_main and save_txt and semantic:
        warn("--save-txt writes YOLO boxes; a semantic model has none (use --save-masks)")

    dist.init_distributed(info, predictor.device)
    created: str | UsageError | None = None
    if info.is_main:
        try:
            created = str(new_run_dir(command, name, out))
        except UsageError as err:
            created = err
    shared = dist.gather_objects(created)[0]  # every rank learns rank 0's folder, or its error
    if isinstance(shared, UsageError):
        dist.shutdown_distributed()
        raise shared
    run_dir = Path(shared)
    images, videos = found.images, found.videos
    ids = dict(zip(images, image_ids(images), strict=True))
    stems = dict(zip(images + videos, output_stems(images + videos), strict=True))
    save_json = save_json and bool(images)
    json_name = ("predictions.json" if not info.enabled
                 else f"predictions.rank{info.rank}.json") if save_json else None
    plot_options = {"line_width": line_width, "hide_labels": hide_labels, "hide_conf": hide_conf}
    report = _RankReport(stats=ResultStats())
    show = info.is_main and not quiet
    if show:
        what = _plural(len(images), "image") + (f", {_plural(len(videos), 'video')}"
                                                 if videos else "")
        shard = f" over {info.world_size} processes" if info.enabled else ""
        console.print(f"{command}: {predictor.spec.family} ({predictor.spec.backbone or 'preset'}"
                      f"), {what}{shard}, device {predictor.device}, batch {batch_size} "
                      f"-> {run_dir}", highlight=False)

    def on_error(err: DetsegError) -> None:
        report.failures.append(str(err))
        warn(str(err))

    writer = RunWriter(run_dir, save_images=save_images, json_name=json_name, save_txt=save_txt,
                       save_masks=save_masks, plot_options=plot_options)
    progress = _progress(show)
    try:
        with progress:
            _predict_images(predictor, images[info.rank::info.world_size], writer, ids, stems,
                            progress, on_error)
            writer.close()
            for video in videos[info.rank::info.world_size]:
                _predict_video(predictor, video, run_dir, stems[video], save_images,
                               vid_stride, start, end, plot_options, progress, on_error, report)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        writer.close()
    report.images = writer.stats.images
    report.stats.merge(writer.stats)
    report.files.update(writer.files)
    report.json_entries = writer.coco.count if writer.coco is not None else 0
    if report.interrupted:
        err_console.print("interrupted: outputs written so far were finalized", highlight=False)
        raise typer.Exit(130)

    reports: list[_RankReport] = dist.gather_objects(report)
    if info.is_main and info.enabled and save_json:
        from detseg.engine.writers import merge_coco_parts

        merge_coco_parts([run_dir / f"predictions.rank{r}.json" for r in range(info.world_size)],
                         run_dir / "predictions.json")
    dist.barrier()
    dist.shutdown_distributed()
    total = _merge(reports)
    if info.is_main and not quiet:
        _summary(total, predictor, run_dir, save_json, semantic)
    if failures or total.failures:
        if info.is_main:
            err_console.print(f"{len(failures) + len(total.failures)} input(s) failed; the "
                              f"rest were processed", highlight=False)
        raise typer.Exit(1)


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}", markup=False), BarColumn(bar_width=30),
                    MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), console=err_console, disable=not enabled,
                    transient=False)


def _predict_images(predictor, images, writer, ids, stems, progress, on_error) -> None:
    if not images:
        return
    task = progress.add_task("images", total=len(images), rate="")
    began = time.perf_counter()
    for done, result in enumerate(predictor.predict_paths(images, on_error=on_error), 1):
        writer.add(result, ids[result.path], stems[result.path])
        rate = done / max(time.perf_counter() - began, 1e-9)
        progress.update(task, advance=1, rate=f"{rate:.1f} img/s")
    progress.update(task, completed=len(images))


def _predict_video(predictor, video, run_dir, stem, save_video, vid_stride, start, end,
                   plot_options, progress, on_error, report: _RankReport) -> None:
    from detseg.engine.video import VideoRun
    from detseg.errors import ImageReadError

    try:
        job = VideoRun(predictor, video, run_dir, stem=stem, save_video=save_video,
                       stride=vid_stride, start=start, end=end, plot_options=plot_options,
                       on_error=on_error)
    except ImageReadError as err:
        on_error(err)
        return
    task = progress.add_task(video.name, total=job.report.expected, rate="")

    def on_progress(state) -> None:
        progress.update(task, completed=state.frames, rate=f"{state.fps:.1f} fps")

    try:
        job.run(on_progress)
    finally:
        state = job.report
        report.frames += state.frames
        report.stats.merge(state.stats)
        report.files["videos"] += 1 if state.video is not None else 0
        report.files["jsonl"] += 1
        report.videos.append((str(video), str(state.video or state.jsonl), state.frames,
                              state.fps))


def _merge(reports: list[_RankReport]) -> _RankReport:
    from detseg.engine.results import ResultStats

    total = _RankReport(stats=ResultStats())
    for r in reports:
        total.images += r.images
        total.frames += r.frames
        total.failures += r.failures
        total.stats.merge(r.stats)
        total.files.update(r.files)
        total.videos += r.videos
        total.json_entries += r.json_entries
    return total


def _summary(total: _RankReport, predictor, run_dir: Path, save_json: bool,
             semantic: bool) -> None:
    stats = total.stats
    unit = "images with class" if semantic else "detections"
    rows = [(name, count) for name, count in stats.class_counts.most_common()]
    if rows:
        print_table(f"{stats.detections} detections" if not semantic else "classes found",
                    ["class", unit], rows)
    else:
        console.print("no detections above the threshold" if not semantic
                      else "no labeled pixels", highlight=False)
    ms = stats.mean_ms()
    console.print(f"speed per image: {ms['preprocess']:.1f} ms preprocess, "
                  f"{ms['inference']:.1f} ms inference, {ms['postprocess']:.1f} ms postprocess "
                  f"(batch {predictor.batch_size}, {predictor.device}"
                  f"{', fp16' if predictor.half_active else ''})", highlight=False)
    for source, output, frames, fps in total.videos:
        console.print(f"video {source}: {frames} frames at {fps:.1f} fps -> {output}",
                      highlight=False)
    saved = []
    files = total.files
    if files["images"]:
        saved.append(_plural(files["images"], "annotated image"))
    if save_json:
        saved.append(f"predictions.json ({_plural(total.json_entries, 'entry', 'entries')})")
    if files["labels"]:
        saved.append(_plural(files["labels"], "label file") + " in labels/")
    if files["masks"]:
        saved.append(_plural(files["masks"], "mask PNG") + " in masks/")
    if files["videos"]:
        saved.append(_plural(files["videos"], "annotated video"))
    if files["jsonl"]:
        saved.append(_plural(files["jsonl"], "frame JSONL file"))
    counted = f"{_plural(total.images, 'image')}, {_plural(total.frames, 'video frame')}"
    console.print(f"{counted}; saved {', '.join(saved) or 'nothing'} in {run_dir}",
                  highlight=False)


def _command(command: str):
    semantic = command == "segment"
    conf_help = ("pixels whose top class probability is below this are left unlabeled (255)"
                 if semantic else "minimum detection score")

    def run(
        sources: list[str] = typer.Argument(
            ..., metavar="SOURCE...",
            help="Image files, folders, globs, videos (mp4, avi, mov, mkv, webm), .txt lists."),
        model: str | None = typer.Option(
            None, "--model", "-m",
            help=f"Model preset or family (default: {DEFAULT_MODELS[command]}, or the model "
                 f"a --weights checkpoint describes)."),
        weights: str | None = typer.Option(
            None, "--weights", "-w",
            help="DEFAULT, a torchvision enum name, a checkpoint file, a manifest name "
                 "(shapes-...), an https URL, or none (default: DEFAULT for presets)."),
        backbone: str | None = typer.Option(None, "--backbone",
                                            help="Backbone of a family model."),
        conf: float | None = typer.Option(
            None, "--conf", min=0.0, max=1.0,
            help=f"{conf_help.capitalize()} (default: {0.0 if semantic else 0.25})."),
        classes: list[str] | None = typer.Option(
            None, "--classes", help="Keep only these classes: names or label ids, repeated or "
                                    "comma-separated."),
        max_det: int = typer.Option(100, "--max-det", min=1,
                                    help="Most detections kept per image."),
        imgsz: int | None = typer.Option(
            None, "--imgsz", min=32,
            help="Inference size in pixels (R-CNN shorter side, SSD square side, semantic "
                 "longer side) (default: the model's)."),
        batch_size: int = typer.Option(1, "--batch-size", "-b", min=1,
                                       help="Images or frames per forward pass."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        half: bool = typer.Option(False, "--half", help="float16 autocast (CUDA only)."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Output folder; must be new or empty."),
        name: str = typer.Option("exp", "--name",
                                 help=f"Run name under runs/{command}/ (exp, exp2, ...)."),
        save_images: bool = typer.Option(True, "--save-images/--no-save-images",
                                         help="Write annotated images and videos."),
        save_json: bool = typer.Option(True, "--save-json/--no-save-json",
                                       help="Write predictions.json (COCO results format)."),
        save_txt: bool = typer.Option(False, "--save-txt",
                                      help="Write YOLO txt labels (class cx cy w h conf)."),
        save_masks: bool = typer.Option(False, "--save-masks",
                                        help="Write mask PNGs (instance ids or class ids)."),
        line_width: int | None = typer.Option(None, "--line-width", min=1,
                                              help="Box line width (default: by image size)."),
        hide_labels: bool = typer.Option(False, "--hide-labels", help="Draw no class names."),
        hide_conf: bool = typer.Option(False, "--hide-conf", help="Draw no scores."),
        vid_stride: int = typer.Option(1, "--vid-stride", min=1,
                                       help="Process every N-th video frame."),
        start: float | None = typer.Option(None, "--start", min=0.0,
                                           help="Video start time in seconds."),
        end: float | None = typer.Option(None, "--end", min=0.0,
                                         help="Video end time in seconds."),
        quiet: bool = typer.Option(False, "--quiet", "-q",
                                   help="No progress bars or summary; errors only."),
    ) -> None:
        _run(command, sources, model=model, weights=weights, backbone=backbone, conf=conf,
             classes=classes, max_det=max_det, imgsz=imgsz, batch_size=batch_size,
             device=device, half=half, out=out, name=name, save_images=save_images,
             save_json=save_json, save_txt=save_txt, save_masks=save_masks,
             line_width=line_width, hide_labels=hide_labels, hide_conf=hide_conf,
             vid_stride=vid_stride, start=start, end=end, quiet=quiet)

    what = ("Semantic segmentation (one class per pixel)" if semantic
            else "Object detection and instance segmentation")
    run.__doc__ = f"{what} on images, folders, globs, lists and videos.\n{EXAMPLES[command]}"
    return run


def register(app: typer.Typer) -> None:
    """Add ``detect`` and ``segment`` to ``app``."""
    app.command("detect", no_args_is_help=True)(_command("detect"))
    app.command("segment", no_args_is_help=True)(_command("segment"))
