"""``detseg dataset``: generate the synthetic shapes set, convert, describe, check and view."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from detseg.cli.console import console, fail

dataset_app = typer.Typer(
    name="dataset",
    help="Generate, convert, describe, check and view datasets (COCO, VOC, YOLO, mask folders).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register(app: typer.Typer) -> None:
    """Add the ``dataset`` command group."""
    app.add_typer(dataset_app, name="dataset")


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
        fail(f"{out}: folder exists and is not empty; pick another --out")
    start = time.perf_counter()
    generate_shapes(out, train=train, val=val, size=size, seed=seed, workers=workers)
    took = time.perf_counter() - start
    console.print(f"wrote {train + val} images ({train} train, {val} val) of {size}x{size} "
                  f"to {out} in {took:.1f} s", highlight=False)


@dataset_app.command("convert")
def convert_command(
    src: Path = typer.Argument(..., help="Source dataset root (or COCO annotation file)."),
    dst: Path = typer.Argument(..., help="New folder for the converted dataset."),
    src_format: str = typer.Option(..., "--from", help="Source format: coco, voc, yolo, masks."),
    dst_format: str = typer.Option(..., "--to", help="Target format: coco or yolo."),
    split: list[str] = typer.Option(
        [], "--split", help="Split(s) to convert (repeatable; default: every split found)."),
    labels: str = typer.Option(
        "auto", "--labels",
        help="YOLO label lines: auto (polygons when every object has a mask), box, polygon."),
    task: str | None = typer.Option(
        None, "--task", help="Read objects as detect or instance (VOC: instance reads "
        "SegmentationObject instead of the XML boxes)."),
) -> None:
    """Convert a dataset to COCO or YOLO. Images are copied; the source is never modified.

    COCO output: DST/images/<split>/, DST/annotations/instances_<split>.json (masks as
    polygons where exact, else RLE). YOLO output: DST/images/<split>/, DST/labels/<split>/,
    DST/data.yaml. Crowd regions (and VOC difficult objects) have no YOLO form: left out.

    Examples:

      detseg dataset convert --from coco --to yolo data/shapes data/shapes_yolo

      detseg dataset convert --from yolo --to coco data/shapes_yolo data/shapes_coco

      detseg dataset convert --from voc --to coco VOCdevkit data/voc_coco --split val
    """
    from detseg.cli.console import print_table, warn
    from detseg.data.convert import convert

    report = convert(src_format, src, dst_format, dst, splits=split or None, labels=labels,
                     task=task)
    for line in report.warnings[:20]:
        warn(line)
    if len(report.warnings) > 20:
        warn(f"... and {len(report.warnings) - 20} more skipped entries")
    rows = [(s, c["images"], c["objects"], c["left_out"]) for s, c in report.splits.items()]
    print_table(f"{src} ({src_format}) -> {dst} ({dst_format})",
                ["split", "images", "objects", "left out"], rows)


@dataset_app.command("stats")
def stats_command(
    path: Path = typer.Argument(..., help="Dataset root or COCO annotation file."),
    fmt: str | None = typer.Option(
        None, "--format", help="coco, voc, yolo, masks or shapes (default: guessed)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Images, empty images, instances per class and box sizes by COCO area range
    (small < 32^2 <= medium < 96^2 <= large pixels), per split.

    Examples:

      detseg dataset stats data/shapes

      detseg dataset stats annotations/instances_val2017.json --json
    """
    from detseg.cli.console import print_json, print_table
    from detseg.data.stats import dataset_stats

    stats = dataset_stats(path, fmt)
    if json_out:
        print_json(stats)
        return
    for split, s in stats["splits"].items():
        lo, hi = s["image_size"]["min"], s["image_size"]["max"]
        console.print(f"[bold]{split}[/bold] ({stats['format']}): {s['images']} images, "
                      f"{s['empty_images']} without objects, {s['instances']} instances, "
                      f"{s['crowd']} crowd; image sizes {lo[0]}x{lo[1]} .. {hi[0]}x{hi[1]}",
                      highlight=False)
        rows = [(name, count, *s["per_class_sizes"][name].values())
                for name, count in s["per_class"].items()]
        rows.append(("all", s["instances"], *s["sizes"].values()))
        print_table(None, ["class", "instances", "small", "medium", "large"], rows)


@dataset_app.command("check")
def check_command(
    path: Path = typer.Argument(..., help="Dataset root or annotation file."),
    images: Path | None = typer.Option(
        None, "--images", help="Image folder, where it is not where the format implies."),
    fmt: str | None = typer.Option(
        None, "--format", help="coco, voc, yolo, masks or shapes (default: guessed)."),
    json_out: bool = typer.Option(False, "--json", help="Print the problems as JSON."),
) -> None:
    """Find problems: boxes outside the image or of zero/negative size, unknown categories,
    missing or unreadable images, duplicate ids, masks whose size differs from the image.
    Every problem is listed with its ids; the exit code is 1 if there is any.

    Examples:

      detseg dataset check data/shapes

      detseg dataset check annotations.json --images photos/
    """
    from detseg.cli.console import print_json, print_table
    from detseg.data.check import check_dataset

    problems = check_dataset(path, fmt, images)
    if json_out:
        print_json([p.as_dict() for p in problems])
    elif problems:
        rows = [(p.split or "-", p.code, ", ".join(str(i) for i in p.ids), p.message)
                for p in problems]
        print_table(f"{len(problems)} problem(s) in {path}", ["split", "problem", "ids",
                                                             "details"], rows)
    else:
        console.print(f"{path}: no problems found", highlight=False)
    if problems:
        raise typer.Exit(1)


@dataset_app.command("view")
def view_command(
    path: Path = typer.Argument(..., help="Dataset root or annotation file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the drawn images (new)."),
    fmt: str | None = typer.Option(
        None, "--format", help="coco, voc, yolo, masks or shapes (default: guessed)."),
    split: str | None = typer.Option(None, "--split", help="Split to draw (default: first)."),
    task: str | None = typer.Option(
        None, "--task", help="detect, instance or semantic (default: instance where masks "
        "exist; semantic for mask folders)."),
    augment: str | None = typer.Option(
        None, "--augment", help="Draw after a training augmentation preset: light or strong."),
    count: int = typer.Option(16, "-n", "--count", help="Number of images to draw."),
    seed: int = typer.Option(0, "--seed", help="Seed of the augmentation draws."),
) -> None:
    """Draw ground truth (boxes, class names, mask overlays) to check that boxes and masks
    line up, before and after augmentation.

    Examples:

      detseg dataset view data/shapes --out runs/view -n 8

      detseg dataset view data/shapes --out runs/view_aug --augment strong --task instance
    """
    import numpy as np
    import torch

    from detseg.data.convert import detect_format, find_splits, open_split
    from detseg.data.io import read_image
    from detseg.data.transforms import build_transforms
    from detseg.runs import new_run_dir
    from detseg.viz.draw import draw_detections, draw_semantic

    kind = fmt or detect_format(path)
    splits = find_splits(kind, path)
    chosen = split if split is not None else splits[0]
    if task is None:
        task = "semantic" if kind == "masks" else "detect" if kind == "voc" else "instance"
    ds = open_split(kind, path, chosen, task=task)
    if augment is not None:
        ds.transforms = build_transforms(augment, train=True, task=task)
    out_dir = new_run_dir("dataset", out=out)
    torch.manual_seed(seed)
    import cv2

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
    console.print(f"drew {written} images of {path} ({kind}, {chosen or 'all'}, {task}"
                  f"{', ' + augment if augment else ''}) to {out_dir}", highlight=False)
