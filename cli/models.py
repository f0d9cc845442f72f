"""``detseg models``: model families and torchvision presets as a table or JSON."""

from __future__ import annotations

import typer

from .console import console, fail, print_json

TASKS = ("detect", "instance", "semantic")


def register(app: typer.Typer) -> None:
    """Add the ``models`` command to the detseg app."""
    app.command("models")(models_command)


def models_command(
    pattern: str = typer.Argument("*", help="Shell-style name pattern, e.g. 'fasterrcnn_*'."),
    task: str | None = typer.Option(
        None, "--task", "-t", help="Only one task: detect, instance or semantic."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List model families and presets: task, default backbone, pretrained weights.

    Families (faster_rcnn, mask_rcnn, ssd, ssdlite, unet, segnet) build over any backbone.

    Presets are torchvision's networks under torchvision's names (--weights DEFAULT).

    --json adds each model's family (faster_rcnn, retinanet, deeplabv3, ...).

    Examples:

      detseg models

      detseg models --task semantic

      detseg models 'fasterrcnn_*' --json
    """
    if task is not None and task not in TASKS:
        fail(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    from detseg.models import list_models, model_info

    names = list_models(pattern, task=task)
    if not names:
        fail(f"no model matches {pattern!r}" + (f" with task {task}" if task else ""), code=1)
    infos = [model_info(name) for name in names]
    rows = [{k: info[k] for k in ("name", "task", "family", "backbone", "pretrained")}
            for info in infos]
    if json_out:
        print_json(rows)
        return
    from rich import box
    from rich.table import Table

    table = Table(title="models: families build over any backbone, presets are torchvision's",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("name", "task", "default backbone", "weights"):
        table.add_column(column, no_wrap=True)
    for i in infos:
        table.add_row(i["name"], i["task"], i["backbone"], "yes" if i["pretrained"] else "no")
    console.print(table)
