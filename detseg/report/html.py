"""Small HTML builders of the report: escaping, tables, number cards, embedded JSON.

Every piece of user text (class names, file names, messages) goes through ``esc``; numbers are
formatted here so the page reads the same everywhere.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any


def esc(text: object) -> str:
    """``text`` as HTML text or attribute value (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def fmt(value: float | int | None, digits: int = 3) -> str:
    """A number for a table cell: ``-`` when undefined (``None``, NaN or negative -1)."""
    if value is None or (isinstance(value, float) and (math.isnan(value) or value < 0)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def sort_key(value: object) -> str:
    """The ``data-v`` a sortable cell sorts by: the number, or -1e300 for undefined ones."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return esc(value)
    if math.isnan(value) or value < 0:
        return "-1e300"
    return repr(float(value))


def table(table_id: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
          sortable: bool = True, caption: str | None = None) -> str:
    """An HTML table; cells hold ``fmt`` text and their raw value in ``data-v`` (for sorting).

    A column header gets ``data-col`` (its name), so a sort can be given by name in the URL
    fragment (``#sort=TABLE_ID:COLUMN:desc``).
    """
    head = "".join(f'<th data-col="{esc(c)}">{esc(c)}</th>' for c in columns)
    body = []
    for row in rows:
        cells = []
        for value in row:
            text = esc(value) if isinstance(value, str) else fmt(value)
            cells.append(f'<td data-v="{sort_key(value)}">{text}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    cls = ' class="sortable"' if sortable else ""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<table id="{esc(table_id)}"{cls}>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def cards(items: Sequence[tuple[str, float | None, str]]) -> str:
    """A row of number cards: ``(label, value, hint)`` each (the hint is the tooltip)."""
    out = [f'<div class="card" title="{esc(hint)}"><div class="value">{fmt(value)}</div>'
           f'<div class="label">{esc(label)}</div></div>' for label, value, hint in items]
    return f'<div class="cards">{"".join(out)}</div>'


def json_script(element_id: str, data: Any) -> str:
    """``data`` as an inline ``application/json`` script the page's JS reads (``<``, ``>`` and
    ``&`` written as ``\\u`` escapes, so no string can close or change the element)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def note(text: str, kind: str = "note") -> str:
    """A paragraph of explanation (``kind``: ``note`` or ``warning``)."""
    return f'<p class="{kind}">{esc(text)}</p>'
