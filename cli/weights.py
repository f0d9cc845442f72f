"""``detseg weights``: list, download, import and verify weight files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from .console import console, err_console, print_json, print_table, styled, warn

weights_app = typer.Typer(
    name="weights",
    help="List, download, import and verify weight files (cache: $DETSEG_HOME/weights).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register(app: typer.Typer) -> None:
    """Add the ``weights`` command group, and draw a progress bar for every download any
    command makes (``detseg.download.set_progress_factory``)."""
    from detseg.download import set_progress_factory

    set_progress_factory(_ProgressBar)
    app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def list_command(
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    cached: bool = typer.Option(False, "--cached", help="Only weights available offline."),
    kind: str | None = typer.Option(
        None, "--kind", help="Only one kind: manifest, preset or backbone."
    ),
) -> None:
    """List known weights and where each is cached.

    Manifest entries, then the torchvision weights of model presets and backbones.

    Examples:

      detseg weights list

      detseg weights list --cached

      detseg weights list --kind preset --json
    """
    from detseg.weights import list_weights

    infos = [
        info for info in list_weights(pretrained_models())
        if (not cached or info.path is not None) and (kind is None or info.kind == kind)
    ]
    if json_out:
        print_json([_info_dict(info) for info in infos])
        return
    from rich.table import Table

    from detseg.weights import shipped_dir, torch_hub_checkpoints

    places = {shipped_dir(): "shipped", torch_hub_checkpoints(): "torch hub"}
    table = Table(title="weights (* = the model's DEFAULT)")
    table.add_column("weights", no_wrap=True)
    table.add_column("model", overflow="fold")
    table.add_column("kind", overflow="fold")
    table.add_column("cached", overflow="fold")
    for info in infos:
        where = "no" if info.path is None else places.get(info.path.parent, "yes")
        name = f"{info.name} *" if info.default else info.name
        table.add_row(name, info.model or "", info.kind, where)
    console.print(table)


def pretrained_models() -> list[Any]:
    """``PretrainedModel`` rows for every preset and backbone the registries give a weight enum."""
    from detseg.backbones import BACKBONES
    from detseg.models import MODELS
    from detseg.weights import PretrainedModel

    return [
        PretrainedModel(entry.name, kind, entry.meta.get("task"), entry.meta["weights"])
        for kind, registry in (("preset", MODELS), ("backbone", BACKBONES))
        for entry in registry
        if entry.meta.get("weights")
    ]


def _enum_of_model(name: str) -> str:
    """The weight-enum class name of preset or backbone ``name`` (its DEFAULT weights), else
    ``name`` itself."""
    enums = {model.name: model.weights_enum for model in pretrained_models()}
    return enums.get(name, name)


def _info_dict(info: Any) -> dict[str, Any]:
    return {
        "name": info.name, "kind": info.kind, "model": info.model, "task": info.task,
        "file": info.file_name, "url": info.url, "sha256": info.sha256,
        "description": info.description, "default": info.default,
        "path": str(info.path) if info.path else None,
    }


@weights_app.command("download")
def download_command(
    names: list[str] = typer.Argument(
        ..., help="Manifest names, torchvision enum names, preset names (their DEFAULT "
        "weights) or URLs."
    ),
) -> None:
    """Download weights into the cache so later runs work offline.

    Examples:

      detseg weights download fasterrcnn_resnet50_fpn_v2

      detseg weights download FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1 ResNet18_Weights.DEFAULT

      detseg weights download https://example.org/model-1a2b3c4d.pth
    """
    from detseg.errors import DetsegError
    from detseg.weights import download_weights

    failed = 0
    for name in names:
        try:
            bar = _ProgressBar(name)
            with bar as update:
                path = download_weights(_enum_of_model(name), progress=update)
        except DetsegError as err:
            err_console.print(styled("error:", "red", err), highlight=False,
                              soft_wrap=True)
            failed += 1
            continue
        verb = "downloaded" if bar.used else "cached"
        console.print(f"{name}: {verb} {path}", highlight=False, soft_wrap=True, markup=False)
    if failed:
        raise typer.Exit(1)


class _ProgressBar:
    """A rich download bar on stderr, drawn only once bytes start to arrive.

    ``with _ProgressBar(label) as update:`` gives the ``update(done, total)`` callback.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.used = False
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int, int | None], None]:
        return self.update

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int, total: int | None) -> None:
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), console=err_console,
            )
            self._progress.start()
            self._task = self._progress.add_task(escape(self.label), total=total)
            self.used = True
        self._progress.update(self._task, completed=done, total=total)


@weights_app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="The weight file you downloaded yourself."),
    name: str = typer.Option(
        None, "--name", "-n",
        help="What the file is: a manifest name, a torchvision enum name, a preset name, a "
        "URL, or a cache file name. Default: the file's own name.",
    ),
) -> None:
    """Copy a weight file you fetched yourself into the cache, for offline use.

    Its sha256 is checked whenever the name it is imported as has a known hash.

    Examples:

      detseg weights import ~/Downloads/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth

      detseg weights import frcnn.pth --name FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1

      detseg weights import best.pt --name shapes-faster_rcnn
    """
    from detseg.weights import import_weights

    path = import_weights(file, _enum_of_model(name) if name else None)
    console.print(f"imported {file} -> {path}", highlight=False, soft_wrap=True, markup=False)


@weights_app.command("verify")
def verify_command(
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Re-hash shipped and cached weight files (exit 1 on a mismatch or a missing file).

    Examples:

      detseg weights verify

      DETSEG_HOME=/data/detseg detseg weights verify --json
    """
    from detseg.weights import cache_dir, verify_weights

    results = verify_weights(pretrained_models())
    bad = [r for r in results if r.status in ("mismatch", "missing")]
    if json_out:
        print_json([
            {"path": str(r.path), "status": r.status, "expected": r.expected, "actual": r.actual}
            for r in results
        ])
    elif not results:
        console.print(f"no weight files to verify (cache: {cache_dir()})", highlight=False,
                      markup=False)
    else:
        rows = [
            (str(r.path), r.status, (r.expected or "")[:16], (r.actual or "")[:16])
            for r in results
        ]
        print_table("weights verify", ["file", "status", "expected", "sha256"], rows)
    for r in bad:
        warn(f"{r.path}: {r.status}")
    if bad:
        raise typer.Exit(1)
