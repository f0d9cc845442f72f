"""``detseg backbones``: the backbone registry as a table or JSON."""

from __future__ import annotations

import typer

from .console import console, fail, print_json


def register(app: typer.Typer) -> None:
    """Add the ``backbones`` command to the detseg app."""
    app.command("backbones")(backbones_command)


def backbones_command(
    pattern: str = typer.Argument(
        "*", help="Shell-style name pattern; 'timm/*' lists timm models when timm is installed."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List backbones: parameters, feature-map channels and strides, ImageNet weights.

    Every model family builds over these (--backbone NAME).

    Params: the backbone's own, without the classifier. Feature maps are keyed s2 .. s32.

    Output strides: 16 where the last stage can be dilated instead (deeplabv3plus uses it).

    Examples:

      detseg backbones

      detseg backbones 'resnet*' --json

      detseg backbones 'timm/convnext*'
    """
    from detseg.backbones import backbone_info, list_backbones

    names = list_backbones(pattern)
    if not names:
        fail(f"no backbone matches {pattern!r}", code=1)
    infos = [backbone_info(name) for name in names]
    if json_out:
        print_json(infos)
        return
    from rich import box
    from rich.table import Table

    table = Table(title="backbones", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    table.add_column("name", no_wrap=True)
    table.add_column("params (M)", justify="right")
    table.add_column("channels", no_wrap=True)
    table.add_column("strides", no_wrap=True)
    table.add_column("output strides", no_wrap=True)
    table.add_column("pretrained")
    for i in infos:
        table.add_row(i["name"], f"{i['params']:.2f}", ",".join(map(str, i["channels"])),
                      ",".join(map(str, i["strides"])), ",".join(map(str, i["output_strides"])),
                      "yes" if i["pretrained"] else "no")
    console.print(table)
