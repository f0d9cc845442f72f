"""The ``detseg`` typer app: one module per command, registered here.

Command modules import torch and the heavy parts of the library inside their command
functions, so ``detseg --help`` and ``detseg eval --predictions`` start fast.
Exit codes: 0 ok, 1 some inputs failed, 2 usage or setup error.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from detseg import __version__
from detseg.errors import DetsegError, UsageError, WeightsError

from .console import console

app = typer.Typer(
    name="detseg",
    help="Object detection and segmentation with convolutional networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module defines ``register(app: typer.Typer) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "dataset",
    "detect",
    "train",
    "weights",
    "export",
    "benchmark",
    "summary",
    "explain",
    "backbones",
    "models",
    "eval",
    "track",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"detseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """detseg: detect, segment, evaluate and train CNN models from the command line.

    Examples:

      detseg detect photo.jpg --weights shapes-faster_rcnn

      detseg segment images/ --model deeplabv3_resnet50

      detseg eval --dataset shapes --data-root data/shapes --weights runs/train/exp/best.pt
    """
    # Each command starts talking: --quiet of an earlier command in the same process (tests,
    # an embedding program) does not carry over.
    console.quiet = False


for _name in COMMAND_MODULES:
    importlib.import_module(f"detseg.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point: runs the app and turns detseg errors into one-line messages."""
    try:
        app()
    except (UsageError, WeightsError) as err:
        # a bad option, or weights that cannot be found, read or fitted: a setup error
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except DetsegError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except MemoryError:
        typer.echo("error: out of memory (try a smaller --imgsz or --batch-size)", err=True)
        sys.exit(1)
    except Exception as err:  # a bug: one line for users, the traceback on request
        if os.environ.get("DETSEG_DEBUG"):
            raise
        typer.echo(f"error: internal error ({type(err).__name__}: {err}); this is a detseg "
                   f"bug, please report it with the traceback DETSEG_DEBUG=1 shows", err=True)
        sys.exit(1)
