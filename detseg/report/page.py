"""Assemble the report page: header, sections, embedded data, style and script, in one file.

The page requests nothing from any server (inline CSS and JS, pictures as ``data:`` URIs,
system fonts), so it opens offline and travels as an e-mail attachment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detseg.errors import OutputError
from detseg.report.html import esc, json_script
from detseg.report.script import JS
from detseg.report.style import CSS
from detseg.runs import temporary_path


@dataclass
class Section:
    """One part of the report: ``body`` is HTML; ``data`` entries join the page's JSON (keys
    are the ``data-src`` names the body's views read)."""

    section_id: str
    title: str
    body: str
    data: dict[str, Any] = field(default_factory=dict)


def render_page(title: str, meta: list[str], sections: list[Section]) -> str:
    """The whole HTML document of ``sections`` under a header of ``title`` and ``meta`` lines."""
    data: dict[str, Any] = {}
    for section in sections:
        data.update(section.data)
    nav = "".join(f'<a href="#{esc(s.section_id)}">{esc(s.title)}</a>' for s in sections)
    parts = "".join(f'<section class="part" id="{esc(s.section_id)}"><h2>{esc(s.title)}</h2>'
                    f"{s.body}</section>" for s in sections)
    meta_html = "".join(f'<div class="meta">{esc(line)}</div>' for line in meta)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1>{meta_html}<nav>{nav}</nav></header>"
        f"<main>{parts}</main>"
        '<div id="lightbox"><img alt=""><div></div></div>'
        f"{json_script('report-data', data)}<script>{JS}</script></body></html>\n")


def write_page(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` under a temporary name, then rename it into place."""
    tmp = temporary_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the report ({err.strerror or err})") from err
    return path
