"""``--weights`` values parsed once into a typed ``WeightsRef``.

A value is, in this order: ``none`` (no weights); ``DEFAULT`` (the model's default torchvision
weights); an ``http(s)://`` URL (optionally ending ``#sha256=<hex>``); an existing file; a name in
``weights/manifest.json``; a torchvision enum name (``ResNet18_Weights.IMAGENET1K_V1``, or the
bare ``ResNet18_Weights`` meaning its DEFAULT member); or a path that looks like a weights file
(a known suffix or a folder separator), which resolving then reports as missing.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detseg.download import normalize_sha256
from detseg.errors import WeightsError
from detseg.weights.manifest import load_manifest
from detseg.weights.torchvision_enums import torchvision_enum

WeightsKind = Literal["file", "manifest", "enum", "url", "default", "none"]
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")
_ENUM_NAME = re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*_Weights(?:\.[A-Za-z0-9_]+)?$")


@dataclass(frozen=True)
class WeightsRef:
    """A parsed ``--weights`` value.

    Attributes:
        kind: ``file``, ``manifest``, ``enum``, ``url``, ``default`` or ``none``.
        text: the value as given.
        path: the file (kind ``file``; it may not exist, resolving says so).
        manifest_name: the manifest entry's name (kind ``manifest``).
        enum_name: ``Enum.MEMBER`` (kind ``enum``; a bare enum class name gets ``.DEFAULT``).
        url: the address without its fragment (kind ``url``).
        sha256: the digest or prefix from a URL's ``#sha256=`` fragment, if it has one.
    """

    kind: WeightsKind
    text: str
    path: Path | None = None
    manifest_name: str | None = None
    enum_name: str | None = None
    url: str | None = None
    sha256: str | None = None


def parse_weights(value: str | os.PathLike[str] | WeightsRef) -> WeightsRef:
    """The ``WeightsRef`` a ``--weights`` value names (see the module doc for the order).

    Enum names are checked against torchvision here, manifest names against the manifest.

    Raises:
        WeightsError: an empty value, a folder, a URL of another scheme or with a bad sha256,
            an unknown enum or member, or a name that is none of the kinds.
    """
    if isinstance(value, WeightsRef):
        return value
    text = str(value).strip()
    if not text:
        raise WeightsError("--weights is empty: give a file, a manifest name, an enum name, "
                           "DEFAULT, a URL or none")
    if text.lower() == "none":
        return WeightsRef("none", text)
    if text.upper() == "DEFAULT":
        return WeightsRef("default", text)
    if "://" in text:
        return _parse_url(text)
    path = Path(text).expanduser()
    if path.is_file():
        return WeightsRef("file", text, path=path)
    if path.is_dir():
        raise WeightsError(f"{text}: a folder, not a weights file (.pt, .pth, .safetensors)")
    manifest = load_manifest()
    if text in manifest:
        return WeightsRef("manifest", text, manifest_name=text)
    if _ENUM_NAME.match(text):
        member = torchvision_enum(text)
        member_name = text.partition(".")[2] or "DEFAULT"
        return WeightsRef("enum", text, enum_name=f"{type(member).__name__}.{member_name}")
    if path.suffix in WEIGHT_SUFFIXES or os.sep in text or "/" in text:
        return WeightsRef("file", text, path=path)
    hint = f" (manifest names: {', '.join(sorted(manifest))})" if manifest else ""
    raise WeightsError(
        f"unknown weights {text!r}: not a file, a name in weights/manifest.json{hint}, a "
        f"torchvision enum name like ResNet50_Weights.IMAGENET1K_V2, DEFAULT, or a URL "
        f"(list known weights with `detseg weights list`)"
    )


def _parse_url(text: str) -> WeightsRef:
    """A ``url`` reference; the ``#sha256=`` fragment, if any, becomes ``sha256``."""
    parts = urllib.parse.urldefrag(text)
    if urllib.parse.urlparse(parts.url).scheme not in ("http", "https"):
        raise WeightsError(f"cannot download {text!r}: only http:// and https:// URLs are "
                           f"supported")
    digest = urllib.parse.parse_qs(parts.fragment).get("sha256")
    sha256 = normalize_sha256(digest[0]) if digest else None
    return WeightsRef("url", text, url=parts.url, sha256=sha256)
