"""``detseg detect`` and ``detseg segment``: batched inference on images, folders and videos."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from .console import console, err_console, fail, plural, print_table, split_values, warn

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


class _Terminal:
    """Shows a run (a ``RunListener``): a header, progress bars on stderr, and every failure
    as one warning."""

    def __init__(self, command: str, predictor: Any, show: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.command, self.predictor, self.show = command, predictor, show
        self.progress = Progress(TextColumn("{task.description}", markup=False),
                                 BarColumn(bar_width=30), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                 console=err_console, disable=not show, transient=False)
        self._task: Any = None
        self._unit = ""

    def on_start(self, run_dir: Path, images: int, videos: int, world_size: int) -> None:
        if not self.show:
            return
        spec = self.predictor.spec
        what = plural(images, "image") + (f", {plural(videos, 'video')}" if videos else "")
        shard = f" over {world_size} processes" if world_size > 1 else ""
        console.print(f"{self.command}: {spec.family} ({spec.backbone or 'preset'}), {what}"
                      f"{shard}, device {self.predictor.device}, batch "
                      f"{self.predictor.batch_size} -> {run_dir}", highlight=False)

    def on_failure(self, message: str) -> None:
        warn(message)

    def on_stage(self, label: str, total: int | None, unit: str) -> None:
        self._task = self.progress.add_task(label, total=total, rate="")
        self._unit = unit

    def on_progress(self, done: int, rate: float) -> None:
        self.progress.update(self._task, completed=done, rate=f"{rate:.1f} {self._unit}")


def _run(command: str, sources: list[str], *, model: str | None, weights: str | None,
         backbone: str | None, conf: float | None, iou: float | None, classes: list[str] | None,
         max_det: int, imgsz: int | None, batch_size: int, device: str, half: bool,
         out: Path | None, name: str, save_images: bool, save_json: bool, save_txt: bool,
         save_masks: bool, line_width: int | None, hide_labels: bool, hide_conf: bool,
         vid_stride: int, start: float | None, end: float | None, quiet: bool,
         slice_size: int | None = None, slice_overlap: float | None = None,
         slice_merge: str = "nms",
         slice_full: bool = False, threads: int | None = None) -> None:
    # Our own one-line messages say what is wrong with a video; FFmpeg's log would come first.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    from detseg.engine.device import select_device
    from detseg.engine.distributed import dist_info_from_env
    from detseg.engine.inference_run import (
        InferenceRun,
        OutputOptions,
        VideoOptions,
        find_inputs,
    )
    from detseg.engine.predictor import Predictor
    from detseg.engine.slicing import DEFAULT_OVERLAP, SliceOptions
    from detseg.errors import UsageError
    from detseg.runs import check_run_name

    if iou is not None and command == "segment":
        fail("--iou applies to detectors (`detseg detect`)")
    if out is None:
        check_run_name(name)
    if slice_size is None and (slice_overlap is not None or slice_merge != "nms" or slice_full):
        fail("--slice-overlap, --slice-merge and --slice-full apply with --slice SIZE")
    slicing = None
    if slice_size is not None:
        overlap = DEFAULT_OVERLAP if slice_overlap is None else slice_overlap
        slicing = SliceOptions(slice_size, overlap, slice_merge, slice_full)
    outputs = OutputOptions(save_images=save_images, save_json=save_json, save_txt=save_txt,
                            save_masks=save_masks, line_width=line_width,
                            hide_labels=hide_labels, hide_conf=hide_conf)
    video = VideoOptions(stride=vid_stride, start=start, end=end)
    info = dist_info_from_env()
    if info.enabled:  # this rank's own GPU where there are GPUs
        device = str(select_device(device, info.local_rank))
    inputs = find_inputs(sources)
    if info.is_main:
        for message in inputs.failures + inputs.notes:
            warn(message)
    if not inputs.images and not inputs.videos:
        fail("no readable images or videos among the sources", code=1)
    if model is None and weights is None:
        model = DEFAULT_MODELS[command]
    if threads is not None:  # before the model: ONNX Runtime sessions take torch's count
        import torch

        torch.set_num_threads(threads)
    predictor = Predictor(model=model, weights=weights, backbone=backbone, device=device,
                          conf=conf, classes=split_values(classes), max_det=max_det,
                          imgsz=imgsz, batch_size=batch_size, half=half, iou=iou,
                          need_trained=True, slicing=slicing)
    semantic = predictor.task == "semantic"
    if semantic and command == "detect":
        raise UsageError(f"{predictor.spec.family} is a semantic segmentation model; use "
                         f"`detseg segment`")
    if not semantic and command == "segment":
        raise UsageError(f"{predictor.spec.family} is a {predictor.task} model; use "
                         f"`detseg detect`")
    if info.is_main and half and not predictor.half_active:
        warn("--half needs a CUDA device; running in float32")
    if info.is_main and outputs.save_masks and predictor.task == "detect":
        warn(f"{predictor.spec.family} predicts no masks; --save-masks writes nothing")
    if info.is_main and outputs.save_txt and semantic:
        warn("--save-txt writes YOLO boxes; a semantic model has none (use --save-masks)")

    terminal = _Terminal(command, predictor, show=info.is_main and not quiet)
    with terminal.progress:
        report = InferenceRun(predictor, inputs, command, out=out, name=name, outputs=outputs,
                              video=video, listener=terminal).run()
    if report.interrupted:
        err_console.print("interrupted: outputs written so far were finalized", highlight=False)
        raise typer.Exit(130)
    if report.is_main and not quiet:
        _summary(report, predictor, semantic)
    failed_inputs = len(inputs.failures) + len(report.failures)
    if report.is_main and report.stopped:
        err_console.print(f"stopped: {plural(len(report.output_failures), 'output')} could not "
                          f"be written; the outputs written before were kept",
                          highlight=False)
    elif report.is_main and failed_inputs:
        err_console.print(f"{failed_inputs} input(s) failed; the rest were processed",
                          highlight=False)
    if failed_inputs or report.output_failures:
        raise typer.Exit(1)


def _summary(report: Any, predictor: Any, semantic: bool) -> None:
    stats = report.stats
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
    if predictor.slicing is not None:
        console.print(f"sliced: {predictor.slicing.describe(blend=semantic)} (pictures larger "
                      f"than a tile)", highlight=False)
    for video in report.videos:
        console.print(f"video {video.source}: {video.frames} frames at {video.fps:.1f} fps -> "
                      f"{video.output}", highlight=False)
    saved = []
    files = report.files
    if files["images"]:
        saved.append(plural(files["images"], "annotated image"))
    if report.json_path is not None:
        saved.append(f"{report.json_path.name} "
                     f"({plural(report.json_entries, 'entry', 'entries')})")
    if files["labels"]:
        saved.append(plural(files["labels"], "label file") + " in labels/")
    if files["masks"]:
        saved.append(plural(files["masks"], "mask PNG") + " in masks/")
    if files["videos"]:
        saved.append(plural(files["videos"], "annotated video"))
    if files["jsonl"]:
        saved.append(plural(files["jsonl"], "frame JSONL file"))
    counted = f"{plural(report.images, 'image')}, {plural(report.frames, 'video frame')}"
    console.print(f"{counted}; saved {', '.join(saved) or 'nothing'} in {report.run_dir}",
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
        iou: float | None = typer.Option(
            None, "--iou", min=0.0, max=1.0, hidden=semantic,
            help="NMS IoU threshold: of two boxes of one class overlapping more than this, the "
                 "lower-scored is dropped (default: the model's, 0.5 for R-CNNs)."),
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
            None, "--out", "-o",
            help="Output folder; must be new or empty (the run folders of earlier runs inside "
                 "an input folder are skipped)."),
        name: str = typer.Option("exp", "--name",
                                 help=f"Run name under runs/{command}/ (exp, exp2, ...); one "
                                      f"folder name."),
        save_images: bool = typer.Option(True, "--save-images/--no-save-images",
                                         help="Write annotated images and videos."),
        save_json: bool = typer.Option(
            True, "--save-json/--no-save-json",
            help="Write predictions.json for images (COCO results: bbox = [x, y, width, "
                 "height] in pixels, file_name = path relative to the inputs' common folder). "
                 "Videos always get <video>.jsonl, one line per frame with box_xyxy = [x1, y1, "
                 "x2, y2] and, for instance models, RLE masks."),
        save_txt: bool = typer.Option(
            False, "--save-txt",
            help="Write YOLO txt labels in labels/, coordinates normalized to [0, 1]: `class cx "
                 "cy w h conf` for detectors, polygons `class x1 y1 x2 y2 ... conf` for instance "
                 "models; one file per image and per processed video frame "
                 "(<video>_<frame>.txt)."),
        save_masks: bool = typer.Option(
            False, "--save-masks",
            help="Write mask PNGs in masks/ (instance numbers in predictions.json order, or class "
                 "ids); one per image and per processed video frame (<video>_<frame>.png)."),
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
        slice_size: int | None = typer.Option(
            None, "--slice", metavar="SIZE",
            help="Sliced inference for small objects in large pictures: cut pictures larger "
                 "than SIZE pixels into overlapping SIZE x SIZE tiles, run the tiles "
                 "(--batch-size at a time) and "
                 + ("blend their class scores over the overlap." if semantic
                    else "merge their detections per class, one per object.")),
        slice_overlap: float | None = typer.Option(
            None, "--slice-overlap", metavar="FRAC",
            help="Overlap of neighbouring tiles, a fraction of SIZE in [0, 1) (default 0.3)."),
        slice_merge: str = typer.Option(
            "nms", "--slice-merge", hidden=semantic,
            help="How matched detections of neighbouring tiles become one: nms (keep the best) "
                 "or gnmm (greedy merging as SAHI: the union of their boxes and masks)."),
        slice_full: bool = typer.Option(
            False, "--slice-full/--no-slice-full",
            help="Also run the whole picture and merge it in (large objects no tile holds "
                 "whole)."),
        threads: int | None = typer.Option(
            None, "--threads", min=1,
            help="CPU threads of torch, and of ONNX Runtime for an exported --weights model "
                 "(default: torch's own choice, OMP_NUM_THREADS where set)."),
    ) -> None:
        _run(command, sources, model=model, weights=weights, backbone=backbone, conf=conf,
             iou=iou, classes=classes, max_det=max_det, imgsz=imgsz, batch_size=batch_size,
             device=device, half=half, out=out, name=name, save_images=save_images,
             save_json=save_json, save_txt=save_txt, save_masks=save_masks,
             line_width=line_width, hide_labels=hide_labels, hide_conf=hide_conf,
             vid_stride=vid_stride, start=start, end=end, quiet=quiet, slice_size=slice_size,
             slice_overlap=slice_overlap, slice_merge=slice_merge, slice_full=slice_full,
             threads=threads)

    what = ("Semantic segmentation (one class per pixel)" if semantic
            else "Object detection and instance segmentation")
    run.__doc__ = f"{what} on images, folders, globs, lists and videos.\n{EXAMPLES[command]}"
    return run


def register(app: typer.Typer) -> None:
    """Add ``detect`` and ``segment`` to ``app``."""
    app.command("detect", no_args_is_help=True)(_command("detect"))
    app.command("segment", no_args_is_help=True)(_command("segment"))
