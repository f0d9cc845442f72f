"""From a ``--weights`` value (or its ``WeightsRef``) to a local file, then to tensors.

The weights layer knows nothing of model registries: for ``DEFAULT`` the caller passes
``default_enum``, the torchvision weight-enum class name the model's DEFAULT refers to
(``detseg.models.build_model`` passes its preset's, a backbone its own).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from detseg.download import ProgressCallback, hash_prefix_from_name, url_file_name
from detseg.errors import WeightsError
from detseg.spec import ModelSpec
from detseg.weights.cache import fetch_file
from detseg.weights.checkpoint import LoadedWeights, read_weights_file
from detseg.weights.manifest import load_manifest, manifest_file
from detseg.weights.references import WeightsRef, parse_weights
from detseg.weights.torchvision_enums import enum_name, torchvision_enum, torchvision_file

WeightsValue = str | os.PathLike[str] | WeightsRef


def resolve_weights(
    weights: WeightsValue,
    default_enum: str | None = None,
    progress: ProgressCallback | None = None,
) -> LoadedWeights:
    """The tensors (and, for detseg checkpoints and manifest entries, the spec) ``weights`` names.

    Args:
        weights: a ``--weights`` value or the ``WeightsRef`` ``parse_weights`` made of it.
        default_enum: what ``DEFAULT`` means: a torchvision weight-enum class name such as
            ``FasterRCNN_ResNet50_FPN_V2_Weights`` (its DEFAULT member) or an ``Enum.MEMBER``.
        progress: download progress callback ``(done_bytes, total_bytes or None)``.

    Raises:
        WeightsError (UnsafeCheckpointError for code-running pickles): an unknown name, a
            missing, truncated or malicious file, a failed download, or DEFAULT without
            ``default_enum``; one line naming the value.
    """
    path, facts = weights_file(weights, default_enum, progress)
    loaded = read_weights_file(path)
    if loaded.spec is None and facts.get("spec"):
        loaded.spec = ModelSpec.from_dict(facts["spec"])
    if "enum" in facts:
        loaded.source = f"{facts['enum']} ({path})"
    elif "manifest" in facts:
        loaded.source = f"{facts['manifest']} ({path})"
    loaded.meta.update({k: v for k, v in facts.items() if k in ("enum", "categories")})
    return loaded


def weights_file(
    weights: WeightsValue,
    default_enum: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The local file ``weights`` names (downloading it if needed) and facts about it.

    The facts dict may hold ``enum`` (the torchvision ``Enum.MEMBER``), ``categories``,
    ``manifest`` (the entry name) and ``spec`` (a manifest ModelSpec dict).

    Raises:
        WeightsError: as ``resolve_weights``.
    """
    ref = parse_weights(weights)
    if ref.kind == "none":
        raise WeightsError("--weights none names no weights to load")
    if ref.kind == "default":
        if not default_enum:
            raise WeightsError(
                "--weights DEFAULT: this model has no pretrained weights to default to; use a "
                "torchvision preset (see `detseg models`), a trained checkpoint, or --weights "
                "none"
            )
        return _enum_file(torchvision_enum(default_enum), progress)
    if ref.kind == "enum":
        return _enum_file(torchvision_enum(str(ref.enum_name)), progress)
    if ref.kind == "url":
        file_name, expected = url_target(ref)
        return fetch_file(str(ref.url), file_name, expected, progress), {}
    if ref.kind == "manifest":
        entry = load_manifest()[str(ref.manifest_name)]
        facts: dict[str, Any] = {"manifest": entry.name}
        if entry.spec:
            facts["spec"] = entry.spec
        return manifest_file(entry, progress), facts
    if ref.path is None or not ref.path.is_file():
        raise WeightsError(f"{ref.text}: no such file")
    return ref.path, {}


def download_weights(weights: WeightsValue, progress: ProgressCallback | None = None) -> Path:
    """Make ``weights`` available offline and return its local file (``detseg weights download``).

    Raises:
        WeightsError: as ``resolve_weights``.
    """
    return weights_file(weights, progress=progress)[0]


def url_target(ref: WeightsRef) -> tuple[str, str]:
    """``(cache file name, expected sha256)`` for a ``url`` reference.

    The hash comes from the ``#sha256=<hex>`` fragment, a manifest entry with this URL, or the
    hash prefix in the URL's file name, in that order.

    Raises:
        WeightsError: none of the three gives a hash (an unverifiable download is refused).
    """
    url = str(ref.url)
    name = url_file_name(url)
    if ref.sha256:
        file_name = name if hash_prefix_from_name(name) else _with_hash(name, ref.sha256)
        return file_name, ref.sha256
    for entry in load_manifest().values():
        if entry.url == url and entry.expected_hash:
            return entry.file_name, entry.expected_hash
    prefix = hash_prefix_from_name(name)
    if prefix:
        return name, prefix
    raise WeightsError(
        f"refusing to download {url} unverified: its file name has no -<sha256 prefix> and no "
        f"manifest entry lists it; append #sha256=<hex> to the URL, or download it yourself "
        f"and pass --weights PATH"
    )


def _enum_file(member: Any, progress: ProgressCallback | None) -> tuple[Path, dict[str, Any]]:
    facts: dict[str, Any] = {"enum": enum_name(member)}
    if "categories" in member.meta:
        facts["categories"] = list(member.meta["categories"])
    return torchvision_file(member, progress), facts


def _with_hash(name: str, sha256: str) -> str:
    """``name`` with the first 8 digest digits before the suffix (unique cache names)."""
    path = Path(name)
    return f"{path.stem}-{sha256[:8]}{path.suffix}"
