"""``detseg dataset``: generate the synthetic shapes set, convert, describe, check and view."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from .console import console, err_console

FORMATS_HINT = "list them with `detseg dataset formats`"
MASK_TYPE_HELP = ("Mask folders: what mask values are, instance (ids, one class) or class "
                  "(indices named by classes.txt); default: class when classes.txt names "
                  "two or more classes.")
MASK_SUFFIX_HELP = ("Mask folders: the suffix of mask names (NAME_mask.png: _mask); default: "
                    "the one matching the most images.")
IMAGES_HELP = "Image folder, where it is not where the format implies."
MASKS_HELP = "Mask folders: the mask folder, where it is not masks/ beside images/."

dataset_app = typer.Typer(
    name="dataset",
    help="Generate, convert, describe, check and view datasets (COCO, VOC, YOLO, mask folders).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register(app: typer.Typer) -> None:
    """Add the ``dataset`` command group."""
    app.add_typer(dataset_app, name="dataset")


def _error(message: str, code: int = 2) -> None:
    """``error: message`` on stderr, printed literally, and exit with ``code``."""
    err_console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    raise typer.Exit(code)


def _warn(lines: Sequence[str], limit: int = 20) -> None:
    """The first ``limit`` warnings on stderr (printed literally), then how many more."""
    for line in lines[:limit]:
        err_console.print(Text.assemble(("warning:", "yellow"), " ", line), soft_wrap=True)
    if len(lines) > limit:
        err_console.print(Text(f"warning: ... and {len(lines) - limit} more", style="yellow"))


def _table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table whose cells are printed literally (``[x, y, w, h]`` is not markup)."""
    table = Table(title=Text(title) if title else None, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(Text(str(v)) for v in row))
    console.print(table)


def _folders(images: Path | None, masks: Path | None, mask_type: str | None,
             mask_suffix: str | None) -> dict[str, Any]:
    """Dataset options of the mask-folder flags (``None`` ones are ignored downstream)."""
    return {"images_dir": images, "masks_dir": masks, "mask_type": mask_type,
            "mask_suffix": mask_suffix}


@dataset_app.command("formats")
def formats_command() -> None:
    """List the dataset formats detseg reads: name, tasks, options, layout.

    Examples:

      detseg dataset formats
    """
    from detseg.data import dataset_formats

    rows = [(e.name, ", ".join(e.meta["tasks"]), ", ".join(e.meta["options"]) or "-",
             e.meta["summary"]) for e in dataset_formats()]
    _table(None, ["format", "tasks", "options", "layout"], rows)


@dataset_app.command("shapes")
def shapes_command(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the dataset into."),
    train: int = typer.Option(200, "--train", help="Training images (0 skips the split)."),
    val: int = typer.Option(50, "--val", help="Validation images (0 skips the split)."),
    size: int = typer.Option(256, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    workers: int | None = typer.Option(
        None, "--workers", help="Processes drawing in parallel (default: CPU count, max 8)."
    ),
) -> None:
    """Write the synthetic shapes dataset: JPEG images, COCO JSON (polygons),
    class-index PNG masks + classes.txt and YOLO labels + data.yaml, all from one truth.

    Layout: OUT/images/{train,val}/*.jpg, OUT/annotations/instances_{train,val}.json,
    OUT/masks/{train,val}/*.png, OUT/classes.txt, OUT/labels/{train,val}/*.txt, OUT/data.yaml.

    Examples:

      detseg dataset shapes --out data/shapes

      detseg dataset shapes --out data/tiny --train 64 --val 16 --size 128 --seed 1
    """
    from detseg.data.shapes import generate_shapes

    if out.exists() and any(out.iterdir()):
        _error(f"{out}: folder exists and is not empty; pick another --out")
    start = time.perf_counter()
    generate_shapes(out, train=train, val=val, size=size, seed=seed, workers=workers)
    took = time.perf_counter() - start
    console.print(Text(f"wrote {train + val} images ({train} train, {val} val) of "
                       f"{size}x{size} to {out} in {took:.1f} s"))


@dataset_app.command("shapes-video")
def shapes_video_command(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the clips into."),
    sequences: int = typer.Option(4, "--sequences", min=1, help="Number of clips."),
    frames: int = typer.Option(90, "--frames", min=1, help="Frames per clip."),
    size: str = typer.Option("256x256", "--size",
                             help="Frame size WIDTHxHEIGHT in pixels (the shipped shapes "
                                  "detectors were trained on 256 x 256 pictures)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    fps: float = typer.Option(30.0, "--fps", min=0.001, help="Frame rate (seqinfo.ini, .mp4)."),
) -> None:
    """Write tracking clips of moving, crossing and occluding shapes with exact MOTChallenge
    ground truth (the shapes of `detseg dataset shapes`).

    Layout per clip:
    OUT/shapes-NN/img1/000001.jpg ...  the frames
    OUT/shapes-NN/gt/gt.txt            frame,id,x,y,w,h,1,class,visibility: the
                                       whole box of each shape and the fraction
                                       seen (shapes hidden completely left out)
    OUT/shapes-NN/seqinfo.ini          frame rate, length, size
    OUT/shapes-NN/shapes-NN.mp4        the same frames as a video

    Examples:

      detseg dataset shapes-video --out data/shapes-video

      detseg dataset shapes-video --out data/clips --sequences 2 --size 320x240
    """
    from detseg.data.shapes_video import generate_shapes_video, parse_size
    from detseg.errors import DetsegError, UsageError

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        _error(f"{out}: exists and is not an empty folder; pick another --out")
    start = time.perf_counter()
    try:
        folders = generate_shapes_video(out, sequences=sequences, frames=frames,
                                        size=parse_size(size), seed=seed, fps=fps)
    except UsageError as err:
        _error(str(err))
    except DetsegError as err:  # a file that cannot be written
        _error(str(err), code=1)
    took = time.perf_counter() - start
    console.print(Text(f"wrote {len(folders)} clips of {frames} frames ({size}) to {out} in "
                       f"{took:.1f} s"))


@dataset_app.command("convert")
def convert_command(
    src: Path = typer.Argument(..., help="Source dataset root (or COCO annotation file)."),
    dst: Path = typer.Argument(..., help="New folder for the converted dataset."),
    src_format: str = typer.Option(..., "--from", help=f"Source format ({FORMATS_HINT})."),
    dst_format: str = typer.Option(..., "--to", help="Target format: coco or yolo."),
    split: list[str] = typer.Option(
        [], "--split", help="Split(s) to convert (repeatable; default: every split found)."),
    labels: str = typer.Option(
        "auto", "--labels",
        help="YOLO label lines: auto (polygons when every object has a mask), box, polygon."),
    task: str | None = typer.Option(
        None, "--task", help="Read objects as detect or instance (VOC: instance reads "
        "SegmentationObject instead of the XML boxes)."),
    images: Path | None = typer.Option(None, "--images", help=IMAGES_HELP),
    masks: Path | None = typer.Option(None, "--masks", help=MASKS_HELP),
    mask_type: str | None = typer.Option(None, "--mask-type", help=MASK_TYPE_HELP),
    mask_suffix: str | None = typer.Option(None, "--mask-suffix", help=MASK_SUFFIX_HELP),
) -> None:
    """Convert a dataset to COCO or YOLO. Images are copied; the source is never modified.

    COCO output: DST/images/<split>/, DST/annotations/instances_<split>.json (masks as
    polygons where exact, else RLE). YOLO output: DST/images/<split>/, DST/labels/<split>/,
    DST/data.yaml (path, train, val, names). Crowd regions (and VOC difficult objects) have
    no YOLO form: left out, as are entries that cannot be read (each one warned about).

    Examples:

      detseg dataset convert --from coco --to yolo data/shapes data/shapes_yolo

      detseg dataset convert --from coco --to yolo coco/annotations/instances_val2017.json out

      detseg dataset convert --from masks --to coco PennFudanPed data/penn --mask-type instance

      detseg dataset convert --from voc --to coco VOCdevkit data/voc_coco --split val
    """
    from detseg.data.convert import convert

    report = convert(src_format, src, dst_format, dst, splits=split or None, labels=labels,
                     task=task, **_folders(images, masks, mask_type, mask_suffix))
    _warn(report.warnings)
    rows = [(s, c["images"], c["objects"], c["left_out"]) for s, c in report.splits.items()]
    _table(f"{src} ({src_format}) -> {dst} ({dst_format})",
           ["split", "images", "objects", "left out"], rows)


@dataset_app.command("stats")
def stats_command(
    path: Path = typer.Argument(..., help="Dataset root or COCO annotation file."),
    fmt: str | None = typer.Option(
        None, "--format", help=f"Dataset format (default: guessed; {FORMATS_HINT})."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    images: Path | None = typer.Option(None, "--images", help=IMAGES_HELP),
    masks: Path | None = typer.Option(None, "--masks", help=MASKS_HELP),
    mask_type: str | None = typer.Option(None, "--mask-type", help=MASK_TYPE_HELP),
    mask_suffix: str | None = typer.Option(None, "--mask-suffix", help=MASK_SUFFIX_HELP),
) -> None:
    """Images, empty images, instances per class and box sizes by COCO area range
    (small < 32^2 <= medium < 96^2 <= large pixels), per split.

    Examples:

      detseg dataset stats data/shapes

      detseg dataset stats annotations/instances_val2017.json --json
    """
    from detseg.data.stats import dataset_stats

    from .console import print_json

    stats = dataset_stats(path, fmt, **_folders(images, masks, mask_type, mask_suffix))
    if json_out:
        print_json(stats)
        return
    for split, s in stats["splits"].items():
        _warn(s["warnings"], limit=5)
        lo, hi = s["image_size"]["min"], s["image_size"]["max"]
        console.print(Text.assemble(
            (split, "bold"), f" ({stats['format']}): {s['images']} images, "
            f"{s['empty_images']} without objects, {s['instances']} instances, "
            f"{s['crowd']} crowd, {s['left_out']} left out; image sizes {lo[0]}x{lo[1]} .. "
            f"{hi[0]}x{hi[1]}"))
        rows = [(name, count, *s["per_class_sizes"][name].values())
                for name, count in s["per_class"].items()]
        rows.append(("all", s["instances"], *s["sizes"].values()))
        _table(None, ["class", "instances", "small", "medium", "large"], rows)


@dataset_app.command("check")
def check_command(
    path: Path = typer.Argument(..., help="Dataset root or annotation file."),
    images: Path | None = typer.Option(None, "--images", help=IMAGES_HELP),
    fmt: str | None = typer.Option(
        None, "--format", help=f"Dataset format (default: guessed; {FORMATS_HINT})."),
    json_out: bool = typer.Option(False, "--json", help="Print the problems as JSON."),
    masks: Path | None = typer.Option(None, "--masks", help=MASKS_HELP),
    mask_type: str | None = typer.Option(None, "--mask-type", help=MASK_TYPE_HELP),
    mask_suffix: str | None = typer.Option(None, "--mask-suffix", help=MASK_SUFFIX_HELP),
) -> None:
    """Find problems: boxes outside the image, of zero/negative size or with NaN/inf,
    unknown categories, missing or unreadable images, image entries of size 0, duplicate
    ids, invalid polygons or RLE, masks whose size differs from the image, missing masks,
    an empty dataset. Every problem is listed with its ids; the exit code is 1 if there is any.

    Examples:

      detseg dataset check data/shapes

      detseg dataset check annotations.json --images photos/

      detseg dataset check PennFudanPed --mask-type instance
    """
    from detseg.data.check import check_dataset

    from .console import print_json

    problems = check_dataset(path, fmt, images, masks, mask_type, mask_suffix)
    if json_out:
        print_json([p.as_dict() for p in problems])
    elif problems:
        rows = [(p.split or "-", p.code, ", ".join(str(i) for i in p.ids), p.message)
                for p in problems]
        _table(f"{len(problems)} problem(s) in {path}", ["split", "problem", "ids", "details"],
               rows)
    else:
        console.print(Text(f"{path}: no problems found"))
    if problems:
        raise typer.Exit(1)


@dataset_app.command("view")
def view_command(
    path: Path = typer.Argument(..., help="Dataset root or annotation file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the drawn images (new)."),
    fmt: str | None = typer.Option(
        None, "--format", help=f"Dataset format (default: guessed; {FORMATS_HINT})."),
    split: str | None = typer.Option(None, "--split", help="Split to draw (default: first)."),
    task: str | None = typer.Option(
        None, "--task", help="detect, instance or semantic (default: detect for VOC, else "
        "instance)."),
    augment: str | None = typer.Option(
        None, "--augment", help="Draw after a training augmentation preset: light or strong."),
    count: int = typer.Option(16, "-n", "--count", min=1, help="Number of images to draw."),
    seed: int = typer.Option(0, "--seed", help="Seed of the augmentation draws."),
    images: Path | None = typer.Option(None, "--images", help=IMAGES_HELP),
    masks: Path | None = typer.Option(None, "--masks", help=MASKS_HELP),
    mask_type: str | None = typer.Option(None, "--mask-type", help=MASK_TYPE_HELP),
    mask_suffix: str | None = typer.Option(None, "--mask-suffix", help=MASK_SUFFIX_HELP),
) -> None:
    """Draw ground truth (boxes, class names, mask overlays) to check that boxes and masks
    line up, before and after augmentation.

    Examples:

      detseg dataset view data/shapes --out runs/view -n 8

      detseg dataset view data/shapes --out runs/view_aug --augment strong --task instance

      detseg dataset view PennFudanPed --out runs/penn --mask-type instance
    """
    import cv2
    import numpy as np
    import torch

    from detseg.data.datasets import (
        default_task,
        detect_format,
        find_splits,
        format_options,
        open_split,
    )
    from detseg.data.io import read_image
    from detseg.data.transforms import build_transforms
    from detseg.runs import new_run_dir
    from detseg.viz.draw import draw_detections, draw_semantic

    options = _folders(images, masks, mask_type, mask_suffix)
    kind = fmt or detect_format(path)
    chosen = split if split is not None else find_splits(
        kind, path, **format_options(kind, **options))[0]
    task = task or default_task(kind)
    ds = open_split(kind, path, chosen, task=task, **options)
    _warn(ds.warnings, limit=5)
    if augment is not None:
        ds.transforms = build_transforms(augment, train=True, task=task)
    out_dir = new_run_dir("dataset", out=out)
    torch.manual_seed(seed)
    written = 0
    for k in range(min(count, len(ds))):
        image, target = ds[k]
        if augment is not None:
            rgb = (image.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        else:
            rgb = read_image(ds.records[k].path)
        if task == "semantic":
            drawn = draw_semantic(rgb, target["mask"].numpy(), ds.class_names)
        else:
            drawn = draw_detections(rgb, target["boxes"], target["labels"], ds.class_names,
                                    masks=target.get("masks"))
        name = f"{k:04d}_{ds.records[k].path.stem}.jpg"
        cv2.imwrite(str(out_dir / name), drawn[:, :, ::-1])
        written += 1
    console.print(Text(f"drew {written} images of {path} ({kind}, {chosen or 'all'}, {task}"
                       f"{', ' + augment if augment else ''}) to {out_dir}"))
