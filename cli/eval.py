"""``detseg eval``: COCO mAP (bbox/segm) or pixel metrics of a model, or of a results file.

The ``--predictions`` path imports only numpy, pycocotools and the light detseg modules (no
torch), so scoring a results file starts fast; matplotlib comes in last, for the plots.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import typer

from .console import console, fail, print_table, warn
from .eval_mot import MOT_CLASSES_HELP, MOT_FRAMES_HELP, MOT_VISIBILITY_HELP, mot_command
from .eval_report import (
    check_images_folder,
    load_inputs,
    observer,
    report_from_files,
    report_from_model,
)

DATA_ENV = "DETSEG_DATA"
#: the report's default score threshold (``--report-conf``)
REPORT_CONF = 0.5

EXAMPLES = """
Examples:

  detseg eval --dataset shapes --data-root data/shapes --weights shapes-faster_rcnn

  detseg eval --dataset coco --download --model fasterrcnn_resnet50_fpn_v2 -b 4

  detseg eval --ann instances_val2017.json --predictions results.json --iou-type segm

  detseg eval --ann instances_val2017.json --images val2017/ --weights runs/train/exp/best.pt

  detseg eval --dataset masks --data-root data/roads --weights roads-unet --max-images 50

  detseg eval --ann gt.json --predictions results.json --backend pycocotools   # reference

  detseg eval --ann gt.json --predictions results.json --images val2017/ --report   # report.html

  detseg eval --mot MOT17/train --predictions runs/track/exp   # HOTA, MOTA, IDF1 per sequence
"""


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command."""
    app.command("eval", epilog=EXAMPLES)(eval_command)


def eval_command(
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Dataset format (see `detseg dataset formats`)."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Dataset folder (default: $DETSEG_DATA/<dataset>, "
        "$DETSEG_DATA defaulting to ./data). COCO: val2017/ + annotations/."),
    ann: Path | None = typer.Option(
        None, "--ann", help="COCO annotation JSON (instead of --dataset; with --images or "
        "--predictions)."),
    images: Path | None = typer.Option(
        None, "--images", help="Image folder (of --ann, or of a mask-folder dataset)."),
    masks: Path | None = typer.Option(None, "--masks", help="Mask folder of a masks dataset."),
    mask_type: str | None = typer.Option(
        None, "--mask-type", help="Mask folders: instance (ids per object) or class (class "
        "indices); default from classes.txt."),
    mask_suffix: str | None = typer.Option(
        None, "--mask-suffix", help="Mask folders: the suffix of mask names (e.g. _mask); "
        "default: found automatically."),
    split: str = typer.Option("val", "--split", help="Dataset split to evaluate."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model family or preset (optional with a detseg checkpoint)."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone of a family model."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Checkpoint file, manifest name, URL, DEFAULT or enum "
        "(a preset alone: its DEFAULT weights)."),
    predictions: Path | None = typer.Option(
        None, "--predictions", "-p", help="COCO results JSON to score against --ann (no model, "
        "no images)."),
    iou_type: str | None = typer.Option(
        None, "--iou-type", help="bbox or segm (default: what the model produces, bbox and "
        "segm for instance models; bbox for --predictions)."),
    backend: str = typer.Option(
        "detseg", "--backend", help="detseg (fast) or pycocotools (the reference; slow)."),
    max_images: int | None = typer.Option(
        None, "--max-images", min=1, help="Evaluate only the first N images."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1,
                                   help="Images per model batch (the metrics do not depend "
                                        "on it)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default: runs/eval/exp, exp2, ...)."),
    download: bool = typer.Option(
        False, "--download", help="COCO: fetch val2017 images and annotations first (resumable; "
        "$DETSEG_COCO_URL_BASE overrides the server)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PR curves / heatmap."),
    report: bool = typer.Option(
        False, "--report", help="Also write report.html, one offline page (per-class table, "
        "PR curves, confusion matrix, TIDE errors and picture galleries; semantic: both mIoUs "
        "and the worst images), and errors.json; with --predictions, --images adds pictures."),
    report_conf: float | None = typer.Option(
        None, "--report-conf", min=0.0, max=1.0, help="With --report: score threshold of the "
        "report's counts, confusion matrix and galleries (TIDE and the mAP use every "
        "detection). [default: 0.5]"),
    mot: Path | None = typer.Option(
        None, "--mot", help="MOTChallenge ground truth (gt.txt, a sequence folder or a MOT17-style "
        "folder): tracking metrics (HOTA, MOTA, IDF1) of --predictions (MOT txt or folder)."),
    mot_classes: str = typer.Option("auto", "--mot-classes", help=MOT_CLASSES_HELP),
    mot_min_visibility: float = typer.Option(0.0, "--mot-min-visibility",
                                             help=MOT_VISIBILITY_HELP),
    mot_frames: str | None = typer.Option(None, "--mot-frames", help=MOT_FRAMES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No tables, summary or progress bar; warnings and errors "
                               "still go to stderr."),
) -> None:
    """Evaluate a model on a dataset, or score a COCO results file.

    Detection/instance models: COCO mAP (bbox, segm), pycocotools' numbers exactly.

    Semantic models: pixel accuracy, mean accuracy, mIoU, frequency-weighted IoU, Dice.

    Writes metrics.json, per_class.csv, plots and (for a model) predictions.json into OUT.
    """
    if quiet:
        console.quiet = True
    if report_conf is not None and not report:
        fail("--report-conf sets the score threshold of the HTML report: add --report")
    report_threshold = REPORT_CONF if report_conf is None else report_conf
    if mot is not None:
        mot_command(mot, predictions, mot_classes, mot_min_visibility, mot_frames, out, as_json,
                    {"--dataset": dataset, "--ann": ann, "--images": images, "--model": model,
                     "--weights": weights, "--report": report or None})
        return
    if backend not in ("detseg", "pycocotools"):
        fail(f"--backend must be detseg or pycocotools, got {backend!r}")
    if iou_type not in (None, "bbox", "segm"):
        fail(f"--iou-type must be bbox or segm, got {iou_type!r}")
    if predictions is not None:
        if ann is None:
            fail("--predictions needs --ann (the COCO ground-truth JSON)")
        for flag, value in (("--dataset", dataset), ("--model", model),
                            ("--backbone", backbone), ("--images", None if report else images),
                            ("--weights", weights), ("--download", download or None)):
            if value is not None:
                fail(f"--predictions scores a results file: {flag} does not apply")
        problem = check_images_folder(images)
        if problem:
            fail(problem)
        _score_file(ann, predictions, iou_type or "bbox", backend, out, plots, as_json, report,
                    images, report_threshold)
        return
    root = _data_root(dataset, data_root, ann, images)
    if download:
        if dataset != "coco":
            fail("--download is for --dataset coco")
        _download_coco(root)
        if model is None and weights is None:
            return
    if model is None and weights is None:
        fail("give --model and/or --weights (or --predictions with --ann)")
    options = {"images_dir": images, "masks_dir": masks, "mask_type": mask_type,
               "mask_suffix": mask_suffix}
    _evaluate(dataset or "coco", root, ann, options, split, model, backbone, weights, iou_type,
              backend, max_images, batch_size, device, out, plots, as_json, report,
              report_threshold)


def _data_root(dataset: str | None, data_root: Path | None, ann: Path | None,
               images: Path | None) -> Path:
    if dataset is None:
        if ann is None:
            fail("give --dataset (with --data-root) or --ann with --images")
        if images is None:
            fail("--ann needs --images to run a model (or --predictions to score a file)")
        return ann.parent
    if ann is not None and dataset != "coco":
        fail("--ann goes with COCO data")
    return data_root or Path(os.environ.get(DATA_ENV) or "data") / dataset


def _download_coco(root: Path) -> None:
    from detseg.eval.coco_download import download_coco_val2017

    fetched = download_coco_val2017(root)
    if fetched:
        console.print(f"COCO val2017 is ready under {root}", highlight=False)
    else:
        console.print(f"COCO val2017 already present under {root}", highlight=False)


def _out_dir(out: Path | None) -> Path:
    from detseg.runs import new_run_dir

    return new_run_dir("eval", out=out)


def _score_file(ann: Path, predictions: Path, iou_type: str, backend: str, out: Path | None,
                plots: bool, as_json: bool, report: bool = False,
                images: Path | None = None, report_conf: float = REPORT_CONF) -> None:
    from detseg.eval.coco_map import COCOEvaluator, evaluate_with_pycocotools, metrics_json
    from detseg.eval.metrics_files import detection_tables, write_detection_files

    gt, results = load_inputs(ann, predictions) if report else (ann, predictions)
    parsed = None  # the evaluator's arrays of both files, which the report's analysis reuses
    if backend == "pycocotools":
        evaluation = evaluate_with_pycocotools(gt, results, iou_type, source=str(predictions),
                                               gt_source=str(ann))
    else:
        evaluator = COCOEvaluator(gt, iou_type, source=str(ann))
        parsed = (evaluator.gt, evaluator.parse(results, source=str(predictions)))
        evaluation = evaluator.evaluate(parsed[1])
    for line in evaluation.warnings:  # entries skipped or ignored, each named
        warn(line)
    evals = {iou_type: evaluation}
    metrics = metrics_json(evals)
    out_dir = _out_dir(out)
    written = write_detection_files(metrics, evals, out_dir, plots)
    pictures_failed = False
    if report:
        extra, pictures_failed = report_from_files(ann, predictions, gt, results, images,
                                                   evals, out_dir, report_conf, parsed)
        written += extra
    if as_json:
        from .console import print_json

        print_json(metrics)
    else:
        for title, columns, rows in detection_tables(metrics, evals):
            print_table(title, columns, rows)
        console.print(f"wrote {', '.join(p.name for p in written)} to {out_dir}",
                      highlight=False)
    if evaluation.warnings or pictures_failed:
        raise typer.Exit(1)


def _evaluate(dataset: str, root: Path, ann: Path | None, options: dict[str, Any], split: str,
              model_name: str | None, backbone: str | None, weights: str | None,
              iou_type: str | None, backend: str, max_images: int | None, batch_size: int,
              device: str, out: Path | None, plots: bool, as_json: bool,
              report: bool = False, report_conf: float = REPORT_CONF) -> None:
    from detseg.data import build_dataset
    from detseg.engine.device import select_device
    from detseg.eval.runner import evaluate_model
    from detseg.models.loading import load_model
    from detseg.spec import model_spec

    torch_device = select_device(device)
    model = load_model(model_name, weights, backbone).to(torch_device).eval()
    spec = model_spec(model)
    options = {k: v for k, v in options.items() if v is not None}
    if ann is not None:
        options["ann_file"] = ann
    transforms = None  # the task adapter resizes, as detect/segment do; metrics at full size
    data = build_dataset(dataset, root, split=split, task=spec.task, transforms=transforms,
                         **options)
    for line in getattr(data, "warnings", [])[:5]:
        warn(line)
    if len(data) == 0:
        fail(f"{root}: the {split} split has no images", code=1)
    total = len(data) if max_images is None else min(max_images, len(data))
    run = _ProgressRun(total) if not console.quiet else contextlib.nullcontext(None)
    out_dir = _out_dir(out)
    watcher = observer(report, spec.num_classes)
    with run as progress:
        result = evaluate_model(model, data, batch_size=batch_size, device=torch_device,
                                max_images=max_images, progress=progress,
                                iou_types=(iou_type,) if iou_type else None, backend=backend,
                                out_dir=out_dir, plots=plots, observer=watcher)
    pictures_failed = False
    if report:
        extra, pictures_failed = report_from_model(
            result, watcher, data, out_dir, [f"model {weights or model_name}", f"data {root}"],
            report_conf)
        result["written"] = [*result["written"], *extra]
    if result.get("dropped_predictions"):
        warn(f"{result['dropped_predictions']} predictions of categories the dataset does not "
             f"have were left out")
    skipped = result.get("warnings", [])
    for line in skipped[:20]:  # ground-truth entries skipped or ignored, each named
        warn(line)
    if len(skipped) > 20:
        warn(f"... and {len(skipped) - 20} more entries skipped (all in metrics.json)")
    if as_json:
        from .console import print_json

        print_json(result["metrics"])
    else:
        for title, columns, rows in result["tables"]:
            print_table(title, columns, rows)
        console.print(f"{result['num_images']} images, wrote "
                      f"{', '.join(p.name for p in result['written'])} to {out_dir}",
                      highlight=False)
    if skipped or pictures_failed:
        raise typer.Exit(1)


class _ProgressRun:
    """A rich progress bar over images, as a context manager giving ``progress(done, total)``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from .console import err_console

        self.bar = Progress("evaluating", BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=err_console, transient=True)
        self.bar.start()
        task = self.bar.add_task("eval", total=self.total)
        return lambda done, total: self.bar.update(task, completed=done)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
