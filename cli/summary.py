"""``detseg summary``: a model layer by layer, with strides and receptive fields."""

from __future__ import annotations

import typer

from detseg.spec import MAX_IMGSZ, MIN_IMGSZ

from .console import console, fail, print_json


def register(app: typer.Typer) -> None:
    """Add the ``summary`` command to the detseg app."""
    app.command("summary")(summary_command)


def summary_command(
    model: str | None = typer.Option(
        None, "--model", "-m", help="Family or preset name (optional with --weights)."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone for a family."),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Weights to load."),
    num_classes: int | None = typer.Option(
        None, "--num-classes", min=1, help="Outputs of a new model."),
    imgsz: int | None = typer.Option(
        None, "--imgsz", min=MIN_IMGSZ, max=MAX_IMGSZ,
        help="Square input side; a family without --weights is built for it "
        "(default: the spec's input size)."),
    depth: int = typer.Option(
        3, "--depth", "-d", min=0, help="Fold modules nested deeper than this."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Print the network layer by layer, like Keras' and torchinfo's summaries.

    Each row: layer name (indented by depth), type, output shape, parameters (including
    folded sub-layers), and inside the backbone the cumulative stride and receptive field in
    input pixels (from kernel, stride, padding and dilation). Then the backbone's feature maps
    and the totals: params, trainable params, GFLOPs, weight size.

    Examples:

      detseg summary --model unet --backbone tiny --imgsz 256

      detseg summary --model faster_rcnn --backbone resnet50 --depth 2

      detseg summary --weights shapes-faster_rcnn --json
    """
    from rich.console import JustifyMethod
    from rich.table import Table

    from detseg.summary import format_shape, summarize

    from .model_options import build_cli_model

    if depth < 1:
        fail("--depth must be at least 1")
    net = build_cli_model(model, backbone, weights, num_classes, imgsz)
    result = summarize(net, imgsz or net.spec.input_size, depth=depth)
    if json_out:
        print_json(result.to_dict())
        return
    title = f"{result.model}" + (f" ({result.backbone})" if result.backbone else "")
    table = Table(title=f"{title}, input {format_shape(result.input_shape)}")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("layer", "left"), ("type", "left"), ("output shape", "left"), ("params", "right"),
        ("stride", "right"), ("RF", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify, overflow="fold")
    for row in result.layers:
        calls = f" x{row.calls}" if row.calls > 1 else ""
        table.add_row("  " * (row.depth - 1) + row.name.rsplit(".", 1)[-1], row.type + calls,
                      format_shape(row.output_shape), f"{row.params:,}",
                      "" if row.stride is None else str(row.stride),
                      "" if row.receptive_field is None else str(row.receptive_field))
    console.print(table)
    if result.stages:
        stages = Table(title=f"backbone feature maps ({result.backbone_module or 'model'})")
        for column in ("map", "channels", "stride", "shape", "receptive field"):
            stages.add_column(column)
        for stage in result.stages:
            stages.add_row(stage["name"], str(stage["channels"]), str(stage["stride"]),
                           format_shape(stage["output_shape"]), str(stage["receptive_field"]))
        console.print(stages)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(
        f"params {result.params:,}  trainable {result.trainable_params:,}  "
        f"GFLOPs {result.gflops:.3f}  weights {result.weight_mb:.2f} MB", highlight=False)
