"""``weights/manifest.json``: named weight files, read and written.

The manifest is a JSON object of name -> entry; an entry has a ``file`` (a name in the shipped
folder, and the cache name of a download) and/or a ``url``, optionally ``sha256`` (a digest or a
prefix of 8+ hex digits), ``task``/``family``/``backbone``, ``description`` and ``spec`` (a
ModelSpec dict for plain state dicts). Other keys (``command``, ...) are kept as ``extra``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detseg.download import (
    ProgressCallback,
    hash_prefix_from_name,
    normalize_sha256,
    url_file_name,
)
from detseg.errors import WeightsError
from detseg.weights.atomic import write_atomic
from detseg.weights.cache import fetch_file, find_cached, shipped_dir

_MANIFEST_FIELDS = ("file", "url", "sha256", "task", "family", "backbone", "description", "spec")


@dataclass(frozen=True)
class ManifestEntry:
    """One named weight file in ``weights/manifest.json``.

    ``file`` is a file name in the shipped weights folder (and the cache name of a download);
    ``url`` where to download it when it is not shipped. ``sha256`` is a full digest or a prefix.
    ``spec`` (optional) is a ModelSpec dict for files that are plain state dicts.
    """

    name: str
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    task: str | None = None
    family: str | None = None
    backbone: str | None = None
    description: str = ""
    spec: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        """The name the file has in the shipped folder and the cache."""
        return self.file or url_file_name(self.url or "")

    @property
    def expected_hash(self) -> str | None:
        """The sha256 (or prefix) the file must have, if known."""
        return self.sha256 or hash_prefix_from_name(self.file_name)

    def to_dict(self) -> dict[str, Any]:
        """The entry as the manifest stores it (its fields that are set, then ``extra``)."""
        known = {key: getattr(self, key) for key in _MANIFEST_FIELDS if getattr(self, key)}
        return {**known, **self.extra}


def manifest_path() -> Path:
    """``manifest.json`` in the shipped weights folder."""
    return shipped_dir() / "manifest.json"


def load_manifest(path: str | Path | None = None) -> dict[str, ManifestEntry]:
    """Entries of the weights manifest by name; an absent manifest is empty.

    Raises:
        WeightsError: the file is not valid JSON, an entry lacks both ``file`` and ``url``, or
            its ``sha256`` is not hex.
    """
    path = Path(path) if path is not None else manifest_path()
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: not a readable JSON manifest ({err})") from None
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: the manifest must be a JSON object of name -> entry")
    entries = {}
    for name, item in raw.items():
        if not isinstance(item, dict) or not (item.get("file") or item.get("url")):
            raise WeightsError(f"{path}: entry {name!r} needs a 'file' or a 'url'")
        if item.get("sha256"):
            try:
                normalize_sha256(str(item["sha256"]))
            except WeightsError as err:
                raise WeightsError(f"{path}: entry {name!r}: {err}") from None
        known = {k: item[k] for k in _MANIFEST_FIELDS if k in item}
        extra = {k: v for k, v in item.items() if k not in _MANIFEST_FIELDS}
        entries[name] = ManifestEntry(name=name, extra=extra, **known)
    return entries


def save_manifest(entries: Iterable[ManifestEntry], path: str | Path | None = None) -> Path:
    """Write ``entries`` as a manifest (atomically; names in the given order) and return its path.

    Raises:
        WeightsError: two entries share a name, or an entry has neither ``file`` nor ``url``.
    """
    path = Path(path) if path is not None else manifest_path()
    data: dict[str, Any] = {}
    for entry in entries:
        if entry.name in data:
            raise WeightsError(f"{path}: two manifest entries are named {entry.name!r}")
        if not (entry.file or entry.url):
            raise WeightsError(f"{path}: entry {entry.name!r} needs a 'file' or a 'url'")
        data[entry.name] = entry.to_dict()
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def manifest_file(entry: ManifestEntry, progress: ProgressCallback | None = None) -> Path:
    """The local file of a manifest entry: shipped, cached, or downloaded now.

    Raises:
        WeightsError: a shipped-only entry whose file is missing, or a failed download.
    """
    shipped = shipped_dir() / entry.file_name
    if shipped.is_file():
        return shipped
    if entry.url:
        return fetch_file(entry.url, entry.file_name, entry.expected_hash, progress)
    cached = find_cached(entry.file_name)
    if cached is not None:
        return cached
    raise WeightsError(
        f"weights {entry.name!r}: {entry.file_name} is listed in {manifest_path()} but is not in "
        f"{shipped_dir()} (run `detseg weights import FILE --name {entry.name}`)"
    )
