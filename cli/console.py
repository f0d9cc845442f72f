"""Shared terminal helpers for the command modules: errors, tables, JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

# User text (paths, class names, messages) is printed literally: markup is off everywhere, and
# the few styled words are ``Text`` objects.
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def styled(label: str, style: str, message: object) -> Text:
    """``label message`` with the label in ``style`` and the message literal."""
    return Text.assemble((label, style), " ", str(message))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr (the message literally, never as markup) and exit
    with ``code``."""
    err_console.print(styled("error:", "red", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    err_console.print(styled("warning:", "yellow", message), highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colours), for machines."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout."""
    table = Table(title=Text(title) if title else None, show_lines=False)
    for col in columns:
        table.add_column(Text(str(col)))
    for row in rows:
        table.add_row(*(Text(str(v)) for v in row))
    console.print(table)


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 image"``, ``"3 images"`` (``plural_form`` for irregular nouns: ``entries``)."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def split_values(values: list[str] | None) -> list[str] | None:
    """A repeatable option's values, each also split at commas (``--classes a,b --classes c``);
    ``None`` when none was given."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
