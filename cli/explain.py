"""``detseg explain``: pictures of what a CNN looks at, by the methods registered in
``detseg.explain`` (``detseg explain --list-methods``)."""

from __future__ import annotations

from pathlib import Path

import typer

from .console import console, fail, print_table


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to the detseg app."""
    app.command("explain")(explain_command)


def _list_methods() -> None:
    from detseg.explain import EXPLAIN_METHODS

    rows = [[entry.name, ", ".join(entry.builder.tasks),
             ", ".join(f"--{name}" for name in entry.builder.options) or "-",
             entry.builder.summary] for entry in EXPLAIN_METHODS]
    print_table("explain methods", ["method", "tasks", "options", "summary"], rows)


def explain_command(
    image: Path | None = typer.Argument(None, help="The image to explain."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Preset (its DEFAULT weights) or family (with --weights)."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone for a family."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Checkpoint, manifest name (shapes-unet), enum, DEFAULT, "
        "or none (random initialisation)."),
    method: str = typer.Option(
        "gradcam", "--method", help="Explain method; `detseg explain --list-methods` lists "
        "them with their tasks and options."),
    list_methods: bool = typer.Option(
        False, "--list-methods", help="List the explain methods and exit."),
    layer: str | None = typer.Option(
        None, "--layer", help="Module name, for methods that take a layer; 'list' prints the "
        "names. Default: the backbone's stage outputs."),
    target: str | None = typer.Option(
        None, "--target", help="Detectors: detection index (0 = best) or class name. Semantic: "
        "class name or index. Default: best detection / most frequent class."),
    patch: int | None = typer.Option(
        None, "--patch", min=1, help="Side in pixels of the grey patch, for methods that "
        "occlude (default 1/8 of the shorter side)."),
    stride: int | None = typer.Option(
        None, "--stride", min=1, help="Patch step in pixels (default half the patch)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default runs/explain/exp*)."),
) -> None:
    """Show what the CNN looks at, by one of the registered explain methods (feature maps,
    filters, heatmaps over the image; `detseg explain --list-methods` lists them with the tasks
    they explain and the options they take); writes PNGs of the input image's size. A family
    needs trained --weights (or --weights none for random initialisation).

    Examples:

      detseg explain shapes.png --weights shapes-faster_rcnn --method gradcam --target 0

      detseg explain shapes.png --weights shapes-unet --method occlusion --target circle

      detseg explain photo.jpg --model unet --backbone tiny --weights none --method activations

      detseg explain photo.jpg --weights shapes-unet --layer list
    """
    if list_methods:
        _list_methods()
        return

    from detseg.data.io import read_image
    from detseg.explain import EXPLAIN_METHODS, explain, list_layers
    from detseg.runs import new_run_dir

    from .model_options import build_cli_model

    if method not in EXPLAIN_METHODS:
        fail(f"--method must be one of {', '.join(EXPLAIN_METHODS.names())}, got {method!r}")
    entry = EXPLAIN_METHODS.get(method).builder
    options = {"layer": None if layer == "list" else layer, "target": target, "patch": patch,
               "stride": stride}
    unused = entry.unused(options)
    if unused:
        taken = ", ".join(f"--{name}" for name in entry.options) or "no options"
        verb = "does" if len(unused) == 1 else "do"
        fail(f"{', '.join(f'--{name}' for name in unused)} {verb} not apply to --method "
             f"{method} (it takes {taken})")
    net = build_cli_model(model, backbone, weights, need_trained=True, exported=True)
    if "layer" in entry.options or layer == "list":
        from detseg.runtime import RuntimeModel

        if isinstance(net, RuntimeModel):
            what = "--layer list" if layer == "list" else f"--method {method}"
            fail(f"{what}: it reads the network's layers, which an exported "
                 f"{net.runtime} graph does not expose; use --method occlusion, or the PyTorch "
                 f"checkpoint")
    if layer == "list":
        print_table(f"layers of {net.spec.family}", ["layer", "type", "params"],
                    [[name, kind, f"{params:,}"] for name, kind, params in list_layers(net)])
        return
    if image is None:
        fail("give the IMAGE to explain (or --list-methods, or --layer list)")
    rgb = read_image(image)
    result = explain(net, rgb, method, **options)
    folder = new_run_dir("explain", out=out)
    paths = result.save(folder)
    if result.target is not None:
        console.print(f"target: {result.target.describe()}", highlight=False, soft_wrap=True)
    if result.layers:
        console.print(f"layers: {', '.join(result.layers)}", highlight=False, soft_wrap=True)
    for path in paths:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
