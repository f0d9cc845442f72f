"""The weight files detseg knows: list them, import one by hand, re-hash them.

Which model presets and backbones have torchvision weights is the model registries' business;
callers pass it in as ``PretrainedModel`` rows (the ``detseg weights`` command builds them from
``detseg.models.MODELS`` and ``detseg.backbones.BACKBONES``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detseg.download import (
    hash_matches,
    hash_prefix_from_name,
    normalize_sha256,
    sha256_file,
    url_file_name,
)
from detseg.errors import WeightsError
from detseg.weights.atomic import write_atomic
from detseg.weights.cache import cache_dir, find_cached, shipped_dir, torch_hub_checkpoints
from detseg.weights.checkpoint import read_weights_file
from detseg.weights.manifest import load_manifest
from detseg.weights.references import parse_weights
from detseg.weights.resolve import url_target
from detseg.weights.torchvision_enums import enum_members, enum_name, torchvision_enum


@dataclass(frozen=True)
class PretrainedModel:
    """A model preset or backbone whose pretrained weights are a torchvision weight enum.

    ``kind`` is ``preset`` or ``backbone``; ``weights_enum`` the enum class name
    (``ResNet18_Weights``), whose DEFAULT member ``--weights DEFAULT`` picks.
    """

    name: str
    kind: str
    task: str | None
    weights_enum: str


@dataclass(frozen=True)
class WeightsInfo:
    """A weight file detseg knows about, for ``detseg weights list``.

    ``kind`` is ``manifest`` (weights/manifest.json), ``preset`` (a detection or segmentation
    preset's torchvision weights) or ``backbone`` (ImageNet weights of a backbone).
    ``path`` is the local copy, None when it would have to be downloaded. ``default`` marks
    the member a model's ``--weights DEFAULT`` picks.
    """

    name: str
    kind: str
    file_name: str
    url: str | None
    sha256: str | None
    model: str | None
    task: str | None
    description: str
    path: Path | None
    default: bool = False


@dataclass(frozen=True)
class VerifyResult:
    """One re-hashed file. ``status`` is ``ok``, ``mismatch``, ``missing`` (a shipped file the
    manifest lists is absent) or ``unverified`` (no hash is known for it)."""

    path: Path
    status: str
    expected: str | None
    actual: str | None


def import_weights(file: str | Path, name: str | None = None) -> Path:
    """Copy a user-supplied weight file into the cache where later resolves find it offline.

    Args:
        file: the file to import.
        name: what it is: a manifest name, a torchvision enum name (a bare enum class name
            means its DEFAULT member), a URL, or the cache file name to use. Default: the
            file's own name.

    Returns:
        The cached copy.

    Raises:
        WeightsError: the file is missing, fails the known hash, or (when no hash is known)
            is not a loadable weights file; ``name`` is none of the above.
    """
    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsError(f"{src}: no such file")
    target, expected, label = _import_target(src, name)
    if expected:
        digest = sha256_file(src)
        if not hash_matches(digest, expected):
            raise WeightsError(
                f"{src} is not {label}: its sha256 starts {digest[:12]}, expected "
                f"{normalize_sha256(expected)[:12]}"
            )
    else:
        read_weights_file(src)
    dest = cache_dir() / target
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, lambda tmp: shutil.copyfile(src, tmp))
    return dest


def _import_target(src: Path, name: str | None) -> tuple[str, str | None, str]:
    """``(cache file name, expected hash, description)`` for importing ``src`` as ``name``."""
    if name is None:
        return src.name, _known_hash(src.name), src.name
    try:
        ref = parse_weights(name)
    except WeightsError:
        ref = None
    if ref is None or ref.kind in ("none", "default"):
        raise WeightsError(
            f"--name {name!r} is not a manifest name, a torchvision enum name, a URL, or a file "
            f"name with a suffix (.pth)"
        )
    if ref.kind == "manifest":
        entry = load_manifest()[name]
        return entry.file_name, entry.expected_hash, f"weights {name!r}"
    if ref.kind == "url":
        file_name, expected = url_target(ref)
        return file_name, expected, name
    if ref.kind == "enum":
        member = torchvision_enum(str(ref.enum_name))
        file_name = url_file_name(member.url)
        label = ref.enum_name if ref.enum_name == enum_name(member) else \
            f"{ref.enum_name} ({enum_name(member)})"
        return file_name, hash_prefix_from_name(file_name), str(label)
    if Path(name).name != name:
        raise WeightsError(f"--name {name!r} must be a file name, not a path")
    return name, _known_hash(name), name


def _known_hash(file_name: str) -> str | None:
    """The expected hash for a file name: a manifest entry's sha256, or the name's hash prefix."""
    for entry in load_manifest().values():
        if entry.file_name == file_name and entry.expected_hash:
            return entry.expected_hash
    return hash_prefix_from_name(file_name)


def list_weights(pretrained: Iterable[PretrainedModel] = ()) -> list[WeightsInfo]:
    """Manifest entries, then every member of the ``pretrained`` models' weight enums."""
    infos = []
    for entry in load_manifest().values():
        shipped = shipped_dir() / entry.file_name
        infos.append(WeightsInfo(
            name=entry.name, kind="manifest", file_name=entry.file_name, url=entry.url,
            sha256=entry.expected_hash, model=entry.family, task=entry.task,
            description=entry.description,
            path=shipped if shipped.is_file() else find_cached(entry.file_name),
        ))
    seen = set()
    for model, member in _members(pretrained):
        name = enum_name(member)
        if name in seen:
            continue
        seen.add(name)
        file_name = url_file_name(member.url)
        infos.append(WeightsInfo(
            name=name, kind=model.kind, file_name=file_name, url=member.url,
            sha256=hash_prefix_from_name(file_name), model=model.name, task=model.task,
            description=_describe(member), path=find_cached(file_name),
            default=member is type(member).DEFAULT,
        ))
    return infos


def _members(pretrained: Iterable[PretrainedModel]) -> Iterator[tuple[PretrainedModel, Any]]:
    for model in pretrained:
        for member in enum_members(model.weights_enum):
            yield model, member


def _describe(member: Any) -> str:
    metrics = member.meta.get("_metrics", {})
    parts = []
    for dataset, values in metrics.items():
        shown = ", ".join(f"{k} {v}" for k, v in values.items())
        parts.append(f"{dataset}: {shown}")
    return "; ".join(parts)


def verify_weights(pretrained: Iterable[PretrainedModel] = ()) -> list[VerifyResult]:
    """Re-hash shipped files (against the manifest), cached files (manifest or file-name hash),
    and the files of the ``pretrained`` models' enums found in torch's hub cache."""
    results = []
    manifest = load_manifest()
    for entry in manifest.values():
        shipped = shipped_dir() / entry.file_name
        if shipped.is_file():
            results.append(_verify(shipped, entry.expected_hash))
        elif not entry.url and find_cached(entry.file_name) is None:
            results.append(VerifyResult(shipped, "missing", entry.expected_hash, None))
    folder = cache_dir()
    cached = sorted(folder.iterdir()) if folder.is_dir() else []
    for path in cached:
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".part":
            results.append(_verify(path, _known_hash(path.name)))
    hub = torch_hub_checkpoints()
    for info in list_weights(pretrained):
        if info.kind != "manifest" and info.path is not None and info.path.parent == hub:
            results.append(_verify(info.path, info.sha256))
    return results


def _verify(path: Path, expected: str | None) -> VerifyResult:
    digest = sha256_file(path)
    if not expected:
        return VerifyResult(path, "unverified", None, digest)
    status = "ok" if hash_matches(digest, expected) else "mismatch"
    return VerifyResult(path, status, normalize_sha256(expected), digest)
