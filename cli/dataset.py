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
