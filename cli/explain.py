"""``detseg explain``: feature maps, filters, occlusion sensitivity and Grad-CAM pictures."""

from __future__ import annotations

from pathlib import Path

import typer

from detseg.cli.console import console, fail, print_table

METHODS = ("activations", "filters", "occlusion", "gradcam")


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to the detseg app."""
    app.command("explain")(explain_command)


def explain_command(
    image: Path = typer.Argument(..., help="The image to explain."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Family or preset name (optional with --weights)."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone for a family."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Checkpoint, manifest name (shapes-unet), enum or DEFAULT."),
    method: str = typer.Option(
        "gradcam", "--method", help="activations, filters, occlusion or gradcam."),
    layer: str | None = typer.Option(
        None, "--layer", help="Module name (activations, gradcam); 'list' prints the names. "
        "Default: the backbone's stage outputs."),
    target: str | None = typer.Option(
        None, "--target", help="Detectors: detection index (0 = best) or class name. Semantic: "
        "class name or index. Default: best detection / most frequent class."),
    patch: int | None = typer.Option(
        None, "--patch", help="Occlusion patch side in pixels (default 1/8 of the shorter "
        "side)."),
    stride: int | None = typer.Option(
        None, "--stride", help="Occlusion patch step (default half the patch)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default runs/explain/exp*)."),
) -> None:
    """Show what the CNN looks at; writes PNGs of the input image's size.

    activations: grid of a layer's feature maps (strongest channels first); filters: the first
    convolution's kernels; occlusion: heatmap of the target's score drop when a grey patch
    covers each place; gradcam: Grad-CAM of a detection or a segmentation class, over the image.

    Examples:

      detseg explain shapes.png --weights shapes-faster_rcnn --method gradcam --target 0

      detseg explain shapes.png --weights shapes-unet --method occlusion --target circle

      detseg explain photo.jpg --model unet --backbone tiny --method activations

      detseg explain photo.jpg --weights shapes-unet --layer list
    """
    from detseg.cli.model_options import build_cli_model
    from detseg.data.io import read_image
    from detseg.runs import new_run_dir
    from detseg.viz.explain import explain, list_layers

    if method not in METHODS:
        fail(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    net = build_cli_model(model, backbone, weights)
    if layer == "list":
        print_table(f"layers of {net.spec.family}", ["layer", "type", "params"],
                    [[name, kind, f"{params:,}"] for name, kind, params in list_layers(net)])
        return
    rgb = read_image(image)
    result = explain(net, rgb, method, layer=layer, target=target, patch=patch, stride=stride)
    folder = new_run_dir("explain", out=out)
    paths = result.save(folder)
    if result.target is not None:
        console.print(f"target: {result.target.describe()}", highlight=False, soft_wrap=True)
    if result.layers:
        console.print(f"layers: {', '.join(result.layers)}", highlight=False, soft_wrap=True)
    for path in paths:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
