"""Where weights come from, where they are cached, and how checkpoints are read and written.

``resolve_weights`` turns a ``--weights`` value into tensors:

- ``DEFAULT``: the preset's torchvision weights (its weight enum's ``.DEFAULT``);
- a torchvision enum name such as ``FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1``;
- a local ``.pt`` / ``.pth`` / ``.safetensors`` file (a detseg checkpoint or a plain state dict);
- a name in ``weights/manifest.json`` (``shapes-faster_rcnn``);
- an ``http(s)://`` URL, verified by the manifest's sha256, the hash prefix in its file name
  (``name-<hex>.pth``) or a ``#sha256=<hex>`` fragment.

Downloads are cached under ``$DETSEG_HOME/weights`` (default ``~/.cache/detseg/weights``);
files already in torch's hub cache (``torch.hub.get_dir()/checkpoints``) are used as they are.
Shipped files live in the repository's ``weights/`` folder (``$DETSEG_WEIGHTS_DIR`` overrides).

Every file is read with ``torch.load(weights_only=True)`` or safetensors: a pickle that needs
arbitrary code raises ``UnsafeCheckpointError`` and nothing in it runs. Checkpoints are written
to a temporary file and renamed, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import pickletools
import re
import secrets
import shutil
import urllib.parse
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detseg.download import (
    ProgressCallback,
    download,
    hash_matches,
    hash_prefix_from_name,
    normalize_sha256,
    sha256_file,
    url_file_name,
)
from detseg.errors import UnsafeCheckpointError, UsageError, WeightsError
from detseg.spec import ModelSpec

HOME_ENV = "DETSEG_HOME"
WEIGHTS_DIR_ENV = "DETSEG_WEIGHTS_DIR"
CHECKPOINT_FORMAT = "detseg-checkpoint"
CHECKPOINT_VERSION = 1
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")
# Checkpoint keys written by save_checkpoint itself; ``extra`` may not use them.
_RESERVED = ("format", "version", "spec", "model", "half")
_ENUM_NAME = re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*_Weights\.[A-Za-z0-9_]+$")
_FP16_MAX = 65504.0


# --------------------------------------------------------------------------- locations


def detseg_home() -> Path:
    """detseg's cache root: ``$DETSEG_HOME`` or ``~/.cache/detseg``."""
    return Path(os.environ.get(HOME_ENV) or "~/.cache/detseg").expanduser()


def cache_dir() -> Path:
    """Where downloaded and imported weight files are kept: ``<detseg_home>/weights``."""
    return detseg_home() / "weights"


def shipped_dir() -> Path:
    """The folder of shipped weights and ``manifest.json`` (``$DETSEG_WEIGHTS_DIR`` overrides).

    Defaults to the repository's ``weights/`` folder next to the ``detseg`` package, which is
    where it is for a source checkout and an editable install.
    """
    override = os.environ.get(WEIGHTS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[1] / "weights"


def torch_hub_checkpoints() -> Path:
    """torch's own download cache (``torch.hub.get_dir()/checkpoints``), reused read-only."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_cached(file_name: str) -> Path | None:
    """The first existing copy of ``file_name`` in detseg's cache, then torch's hub cache."""
    for folder in (cache_dir(), torch_hub_checkpoints()):
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    return None


def fetch_file(
    url: str,
    file_name: str | None = None,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """A local copy of ``url``: the cached file if there is one, else a verified download.

    ``file_name`` is the cache name (default: the URL's); ``sha256`` the expected digest or
    prefix (default: the hash prefix in the file name).
    """
    file_name = file_name or url_file_name(url)
    cached = find_cached(file_name)
    if cached is not None:
        return cached
    return download(url, cache_dir() / file_name, sha256=sha256, progress=progress)


# --------------------------------------------------------------------------- manifest


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


_MANIFEST_FIELDS = ("file", "url", "sha256", "task", "family", "backbone", "description", "spec")


def manifest_path() -> Path:
    """``manifest.json`` in the shipped weights folder."""
    return shipped_dir() / "manifest.json"


def load_manifest(path: str | Path | None = None) -> dict[str, ManifestEntry]:
    """Entries of the weights manifest by name; an absent manifest is empty.

    Raises:
        WeightsError: the file is not valid JSON or an entry lacks both ``file`` and ``url``.
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
            normalize_sha256(item["sha256"])
        known = {k: item[k] for k in _MANIFEST_FIELDS if k in item}
        extra = {k: v for k, v in item.items() if k not in _MANIFEST_FIELDS}
        entries[name] = ManifestEntry(name=name, extra=extra, **known)
    return entries


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


# --------------------------------------------------------------------------- torchvision enums


def torchvision_enum(name: str) -> Any:
    """The torchvision weight enum member named ``name`` (``ResNet50_Weights.IMAGENET1K_V2``).

    Raises:
        WeightsError: no such enum or member (the message lists the members that exist).
    """
    from torchvision.models import get_weight

    enum_name, _, member = name.partition(".")
    try:
        return get_weight(name)
    except KeyError:
        members = [m.name for m in type(get_weight(f"{enum_name}.DEFAULT"))]
        raise WeightsError(
            f"{enum_name} has no weights {member!r}; it has {', '.join(members)} and DEFAULT"
        ) from None
    except ValueError:
        raise WeightsError(f"torchvision has no weight enum {enum_name!r}") from None


def default_weights_enum(preset: str) -> Any:
    """The torchvision ``.DEFAULT`` weights of model preset (or backbone) ``preset``.

    The enum comes from the model registry's metadata, then the backbone registry's, falling
    back to torchvision's own table for torchvision model names.

    Raises:
        WeightsError: the model has no pretrained weights.
    """
    enum_cls = _registry_weights_enum(preset)
    if enum_cls is None:
        from torchvision.models import get_model_weights

        try:
            enum_cls = get_model_weights(preset)
        except ValueError:
            enum_cls = None
    if enum_cls is None:
        raise WeightsError(
            f"model {preset!r} has no pretrained weights, so --weights DEFAULT does not apply; "
            f"use a torchvision preset (see `detseg models`), a trained checkpoint, or "
            f"--weights none"
        )
    return enum_cls.DEFAULT if isinstance(enum_cls, type) else type(enum_cls).DEFAULT


_REGISTRIES = (("preset", "detseg.models", "MODELS"), ("backbone", "detseg.backbones", "BACKBONES"))


def _registries() -> Iterator[tuple[str, Any]]:
    """``(kind, registry)`` for the model and backbone registries that import."""
    for kind, module_name, attr in _REGISTRIES:
        try:
            yield kind, getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue


def _registry_weights_enum(name: str) -> Any:
    """The weight enum (class or member) a registry records for ``name``, if any."""
    for _kind, registry in _registries():
        if name in registry:
            return _enum_in(registry.get(name).meta)
    return None


def _enum_in(info: dict[str, Any]) -> Any:
    """A weight enum recorded in registry metadata (class, member, or ``Enum.MEMBER`` string)."""
    from torchvision.models import WeightsEnum

    for key in ("weights_enum", "weights", "pretrained_weights"):
        value = info.get(key)
        if isinstance(value, type) and issubclass(value, WeightsEnum):
            return value
        if isinstance(value, WeightsEnum):
            return value
        if isinstance(value, str) and _ENUM_NAME.match(value):
            return torchvision_enum(value)
        if isinstance(value, str) and re.match(r"^\w+_Weights$", value):
            return type(torchvision_enum(f"{value}.DEFAULT"))
    return None


def torchvision_file(enum_member: Any, progress: ProgressCallback | None = None) -> Path:
    """The local file of a torchvision weight enum member (cached, or downloaded and verified)."""
    return fetch_file(enum_member.url, progress=progress)


def load_torchvision_weights(
    enum_member: Any, progress: ProgressCallback | None = None
) -> dict[str, Tensor]:
    """The state dict of a torchvision weight enum member (or its ``Enum.MEMBER`` name).

    Cached under ``$DETSEG_HOME/weights`` (torch's hub cache is used when it has the file),
    verified by the hash prefix in the file name, read with ``torch.load(weights_only=True)``.
    """
    if isinstance(enum_member, str):
        enum_member = torchvision_enum(enum_member)
    return read_weights_file(torchvision_file(enum_member, progress)).state_dict


# --------------------------------------------------------------------------- resolving --weights


@dataclass
class LoadedWeights:
    """Tensors resolved from a ``--weights`` value.

    Attributes:
        state_dict: parameter name -> tensor (CPU).
        spec: the ModelSpec a detseg checkpoint carries; None for plain (torchvision) state
            dicts, for which the caller builds the preset itself.
        source: a human description of where the tensors came from (file path, enum name).
        meta: extra facts, e.g. ``categories`` of torchvision weights, ``extra`` of checkpoints.
    """

    state_dict: dict[str, Tensor]
    spec: ModelSpec | None
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def weights_file(
    weights: str | os.PathLike, preset: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The local file a ``--weights`` value names (downloading it if needed) and facts about it.

    The facts dict may hold ``enum`` (torchvision enum name), ``categories``, ``manifest``
    (the entry name) and ``spec`` (a manifest ModelSpec dict).

    Raises:
        UsageError: ``DEFAULT`` without a preset.
        WeightsError: unknown name, missing file, unverifiable URL or failed download.
    """
    text = str(weights).strip()
    if text.upper() == "DEFAULT":
        if not preset:
            raise UsageError("--weights DEFAULT needs a model preset name (e.g. "
                             "--model fasterrcnn_resnet50_fpn_v2)")
        return _enum_file(default_weights_enum(preset), progress)
    if "://" in text:
        url, file_name, expected = url_target(text)
        return fetch_file(url, file_name, expected, progress), {}
    path = Path(text).expanduser()
    if path.is_file():
        return path, {}
    if path.is_dir():
        raise WeightsError(f"{text}: a folder, not a weights file (.pt, .pth, .safetensors)")
    manifest = load_manifest()
    if text in manifest:
        entry = manifest[text]
        facts: dict[str, Any] = {"manifest": entry.name}
        if entry.spec:
            facts["spec"] = entry.spec
        return manifest_file(entry, progress), facts
    if _ENUM_NAME.match(text):
        return _enum_file(torchvision_enum(text), progress)
    if path.suffix in WEIGHT_SUFFIXES or os.sep in text or "/" in text:
        raise WeightsError(f"{text}: no such file")
    hint = f" (manifest names: {', '.join(sorted(manifest))})" if manifest else ""
    raise WeightsError(
        f"unknown weights {text!r}: not a file, a name in weights/manifest.json{hint}, a "
        f"torchvision enum name like ResNet50_Weights.IMAGENET1K_V2, DEFAULT, or a URL "
        f"(list known weights with `detseg weights list`)"
    )


def download_weights(name: str, progress: ProgressCallback | None = None) -> Path:
    """Make ``name`` available offline and return its local file (``detseg weights download``).

    ``name`` is anything ``resolve_weights`` accepts, or a model preset name, meaning that
    preset's DEFAULT weights.
    """
    text = name.strip()
    if (
        "://" not in text
        and not Path(text).suffix
        and text not in load_manifest()
        and not _ENUM_NAME.match(text)
        and text.upper() != "DEFAULT"
    ):
        return weights_file("DEFAULT", preset=text, progress=progress)[0]
    return weights_file(text, progress=progress)[0]


def _enum_file(enum_member: Any, progress: ProgressCallback | None) -> tuple[Path, dict]:
    facts = {"enum": f"{type(enum_member).__name__}.{enum_member.name}"}
    if "categories" in enum_member.meta:
        facts["categories"] = list(enum_member.meta["categories"])
    return torchvision_file(enum_member, progress), facts


def url_target(url: str) -> tuple[str, str, str]:
    """``(download URL, cache file name, expected sha256)`` for a weights URL.

    The hash comes from a ``#sha256=<hex>`` fragment, a manifest entry with this URL, or the
    hash prefix in the URL's file name, in that order.

    Raises:
        WeightsError: none of the three gives a hash (an unverifiable download is refused).
    """
    parts = urllib.parse.urldefrag(url)
    bare, fragment = parts.url, parts.fragment
    name = url_file_name(bare)
    params = urllib.parse.parse_qs(fragment)
    if "sha256" in params:
        expected = normalize_sha256(params["sha256"][0])
        file_name = name if hash_prefix_from_name(name) else _with_hash(name, expected)
        return bare, file_name, expected
    for entry in load_manifest().values():
        if entry.url == bare and entry.expected_hash:
            return bare, entry.file_name, entry.expected_hash
    prefix = hash_prefix_from_name(name)
    if prefix:
        return bare, name, prefix
    raise WeightsError(
        f"refusing to download {bare} unverified: its file name has no -<sha256 prefix> and no "
        f"manifest entry lists it; append #sha256=<hex> to the URL, or download it yourself "
        f"and pass --weights PATH"
    )


def _with_hash(name: str, sha256: str) -> str:
    """``name`` with the first 8 digest digits before the suffix (unique cache names)."""
    path = Path(name)
    return f"{path.stem}-{sha256[:8]}{path.suffix}"


def resolve_weights(
    weights: str | os.PathLike, preset: str | None = None,
    progress: ProgressCallback | None = None,
) -> LoadedWeights:
    """Resolve a ``--weights`` value (see the module docstring) to tensors and maybe a spec.

    Args:
        weights: ``DEFAULT``, an enum name, a file path, a manifest name or a URL.
        preset: the model name; needed for ``DEFAULT``.
        progress: download progress callback ``(done_bytes, total_bytes or None)``.

    Raises:
        WeightsError / UnsafeCheckpointError / UsageError with a one-line message.
    """
    path, facts = weights_file(weights, preset, progress)
    loaded = read_weights_file(path)
    if loaded.spec is None and facts.get("spec"):
        loaded.spec = ModelSpec.from_dict(facts["spec"])
    if "enum" in facts:
        loaded.source = f"{facts['enum']} ({path})"
    elif "manifest" in facts:
        loaded.source = f"{facts['manifest']} ({path})"
    loaded.meta.update({k: v for k, v in facts.items() if k in ("enum", "categories")})
    return loaded


# --------------------------------------------------------------------------- reading files


def read_weights_file(path: str | Path) -> LoadedWeights:
    """Tensors (and the spec, for detseg checkpoints) from a ``.pt``/``.pth``/``.safetensors``.

    Accepts a detseg checkpoint, a plain state dict, or a training checkpoint that keeps the
    state dict under ``model`` or ``state_dict``.

    Raises:
        UnsafeCheckpointError: the pickle needs arbitrary code.
        WeightsError: missing, corrupt, truncated, or holding no state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return _from_checkpoint_dict(obj, path)
    state = _find_state_dict(obj)
    if state is None:
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{path}: holds no state dict of tensors (found {keys})")
    return LoadedWeights(state_dict=state, spec=None, source=str(path))


def _find_state_dict(obj: Any) -> dict[str, Tensor] | None:
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if _is_state_dict(obj.get(key)):
                return obj[key]
    return None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with typed, one-line errors.

    Raises:
        UnsafeCheckpointError: the pickle references code (a class or function to call).
        WeightsError: the file is missing, empty, truncated or not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        culprit = _unsafe_global(str(err)) or _pickle_code_reference(path)
        if culprit:
            raise UnsafeCheckpointError(
                f"{path}: refusing to load, unpickling it would import and call {culprit}; "
                f"detseg only loads weights-only checkpoints (tensors and plain values). If you "
                f"trust the file, re-save just its state dict with torch.save(model.state_dict())"
            ) from None
        raise WeightsError(f"{path}: corrupt or not a torch file ({_first_line(err)})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise WeightsError(
            f"{path}: corrupt or truncated ({_first_line(err)}); delete it and download or "
            f"copy it again (`detseg weights verify` checks cached files)"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].rstrip(".")


def _unsafe_global(message: str) -> str | None:
    """The global torch's weights-only unpickler refused, from its error message."""
    match = re.search(r"GLOBAL\s+([\w.]+)", message)
    return match.group(1) if match else None


def _pickle_code_reference(path: Path) -> str | None:
    """The first importable reference in a raw (non-torch) pickle, or None.

    torch reports a protocol-4 pickle as an unsupported operand before it reaches the global,
    so a static walk over the opcodes (nothing is executed) names what it would have imported.
    """
    strings: list[str] = []
    try:
        with open(path, "rb") as fh:
            for op, arg, _pos in pickletools.genops(fh):
                if op.name in ("GLOBAL", "INST"):
                    return str(arg).replace(" ", ".")
                if op.name == "STACK_GLOBAL":
                    return ".".join(strings[-2:]) if len(strings) >= 2 else "a global"
                if isinstance(arg, str):
                    strings.append(arg)
                if op.name == "STOP":
                    return None
    except Exception:  # anything unparsable is simply not a readable pickle
        return None
    return None


def _read_safetensors(path: Path) -> LoadedWeights:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise WeightsError(
            f"{path}: reading .safetensors needs `pip install safetensors`"
        ) from None
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            state = OrderedDict((k, fh.get_tensor(k)) for k in fh.keys())  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(
            f"{path}: corrupt or truncated safetensors ({_first_line(err)})"
        ) from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        return LoadedWeights(state_dict=state, spec=None, source=str(path))
    try:
        obj = {
            "format": CHECKPOINT_FORMAT,
            "version": int(metadata.get("version", CHECKPOINT_VERSION)),
            "spec": json.loads(metadata["spec"]),
            "model": state,
            "half": json.loads(metadata.get("half", "{}")),
            **json.loads(metadata.get("extra", "{}")),
        }
    except (KeyError, ValueError) as err:
        raise WeightsError(f"{path}: damaged detseg metadata ({_first_line(err)})") from None
    return _from_checkpoint_dict(obj, path)


def _from_checkpoint_dict(obj: dict[str, Any], path: Path) -> LoadedWeights:
    version = obj.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise WeightsError(
            f"{path}: checkpoint format version {version!r} is newer than this detseg "
            f"understands ({CHECKPOINT_VERSION}); upgrade detseg"
        )
    state = obj.get("model")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path}: detseg checkpoint without a 'model' state dict")
    try:
        spec = ModelSpec.from_dict(dict(obj["spec"]))
    except (KeyError, TypeError, WeightsError) as err:
        raise WeightsError(f"{path}: the checkpoint's ModelSpec is unusable ({err})") from None
    half = obj.get("half") or {}
    state = OrderedDict(
        (k, v.to(getattr(torch, half[k])) if k in half else v) for k, v in state.items()
    )
    extra = {k: v for k, v in obj.items() if k not in _RESERVED}
    return LoadedWeights(state_dict=state, spec=spec, source=str(path), meta={"extra": extra})


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """A detseg checkpoint: the spec that rebuilds the model, its tensors, and extra entries
    (epoch, metrics, optimizer state, ...) exactly as they were saved."""

    spec: ModelSpec
    state_dict: dict[str, Tensor]
    extra: dict[str, Any]


def save_checkpoint(
    path: str | Path,
    model_state: dict[str, Tensor],
    spec: ModelSpec,
    *,
    half: bool = False,
    **extra: Any,
) -> Path:
    """Write a detseg checkpoint atomically (temporary file in the same folder, then rename).

    The file holds ``{"format": "detseg-checkpoint", "version": 1, "spec": spec.to_dict(),
    "model": state_dict, **extra}``; a ``.safetensors`` path stores the tensors with safetensors
    and the rest as JSON metadata (``extra`` must then be JSON-serializable).

    Args:
        path: destination; parent folders are created.
        model_state: ``model.state_dict()``.
        spec: how to rebuild the model.
        half: store float32/float64 tensors as float16 (half the size); ``load_checkpoint``
            restores their original dtype. Tensors whose values exceed float16's range stay
            as they are.
        extra: more entries (epoch, metrics, optimizer state...): tensors and plain Python
            values only, so that ``torch.load(weights_only=True)`` can read them back.

    Raises:
        WeightsError: ``extra`` uses a reserved key or holds a value that could not be loaded.
    """
    path = Path(path)
    for key in extra:
        if key in _RESERVED:
            raise WeightsError(f"checkpoint extra entry {key!r} clashes with a reserved key")
    extra = {key: _plain(value, f"extra[{key!r}]") for key, value in extra.items()}
    state = OrderedDict((k, v.detach()) for k, v in model_state.items())
    half_dtypes: dict[str, str] = {}
    if half:
        for key, tensor in state.items():
            if _fits_fp16(tensor):
                half_dtypes[key] = str(tensor.dtype).removeprefix("torch.")
                state[key] = tensor.to(torch.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        _write_atomic(path, lambda tmp: _save_safetensors(tmp, state, spec, half_dtypes, extra))
    else:
        obj = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "spec": spec.to_dict(),
            "model": state,
            **({"half": half_dtypes} if half_dtypes else {}),
            **extra,
        }
        _write_atomic(path, lambda tmp: torch.save(obj, tmp))
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a detseg checkpoint written by ``save_checkpoint`` (float16 storage is undone).

    Raises:
        UnsafeCheckpointError: the file needs arbitrary code to unpickle.
        WeightsError: corrupt or truncated, or a plain state dict without a ModelSpec.
    """
    loaded = read_weights_file(path)
    if loaded.spec is None:
        raise WeightsError(
            f"{path}: a plain state dict, not a detseg checkpoint (it carries no ModelSpec); "
            f"name the model with --model and pass the file as --weights"
        )
    return Checkpoint(spec=loaded.spec, state_dict=loaded.state_dict,
                      extra=loaded.meta.get("extra", {}))


def _fits_fp16(tensor: Tensor) -> bool:
    """Whether a float32/float64 tensor survives float16 storage without overflowing."""
    if tensor.dtype not in (torch.float32, torch.float64):
        return False
    finite = tensor[torch.isfinite(tensor)]
    return finite.numel() == 0 or bool(finite.abs().max() <= _FP16_MAX)


_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any, where: str) -> Any:
    """``value`` made of tensors and plain Python values only, so ``weights_only`` loads it.

    numpy scalars (metrics often are) become Python numbers; dict subclasses other than
    OrderedDict become dicts and tuple subclasses tuples. Anything else raises.
    """
    if type(value) in _SCALARS or isinstance(value, (Tensor, torch.dtype, torch.Size)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        out = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            if type(key) not in (str, int):
                raise WeightsError(f"checkpoint {where} has a {type(key).__name__} key {key!r}")
            out[key] = _plain(item, f"{where}[{key!r}]")
        return out
    raise WeightsError(
        f"checkpoint {where} is a {type(value).__name__}; checkpoints keep tensors and plain "
        f"values only (str, int, float, bool, None, list, tuple, dict) so they load safely"
    )


def _save_safetensors(
    tmp: Path, state: dict[str, Tensor], spec: ModelSpec, half: dict[str, str],
    extra: dict[str, Any],
) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise WeightsError("writing .safetensors needs `pip install safetensors`") from None
    try:
        extra_json = json.dumps(extra)
    except TypeError as err:
        raise WeightsError(f"safetensors checkpoints need JSON extra entries ({err})") from None
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "version": str(CHECKPOINT_VERSION),
        "spec": json.dumps(spec.to_dict()),
        "half": json.dumps(half),
        "extra": extra_json,
    }
    tensors = {k: v.contiguous().clone() for k, v in state.items()}  # no shared storage
    save_file(tensors, str(tmp), metadata=metadata)


def _write_atomic(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync, then rename over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- import / list / verify


def import_weights(file: str | Path, name: str | None = None) -> Path:
    """Copy a user-supplied weight file into the cache where later resolves find it offline.

    Args:
        file: the file to import.
        name: what it is: a manifest name, a torchvision enum name, a model preset (its
            DEFAULT weights), a URL, or the cache file name to use. Default: the file's name.

    Returns:
        The cached copy.

    Raises:
        WeightsError: the file is missing, fails the known hash, or (when no hash is known)
            is not a loadable weights file.
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
    _write_atomic(dest, lambda tmp: shutil.copyfile(src, tmp))
    return dest


def _import_target(src: Path, name: str | None) -> tuple[str, str | None, str]:
    """``(cache file name, expected hash, description)`` for importing ``src`` as ``name``."""
    if name is None:
        return src.name, _known_hash(src.name), src.name
    manifest = load_manifest()
    if name in manifest:
        entry = manifest[name]
        return entry.file_name, entry.expected_hash, f"weights {name!r}"
    if "://" in name:
        _url, file_name, expected = url_target(name)
        return file_name, expected, name
    if _ENUM_NAME.match(name):
        member = torchvision_enum(name)
        file_name = url_file_name(member.url)
        return file_name, hash_prefix_from_name(file_name), name
    if not Path(name).suffix:
        try:
            member = default_weights_enum(name)
        except (WeightsError, UsageError):
            raise WeightsError(
                f"--name {name!r} is not a manifest name, a torchvision enum name, a model "
                f"preset with pretrained weights, a URL, or a file name with a suffix (.pth)"
            ) from None
        file_name = url_file_name(member.url)
        return file_name, hash_prefix_from_name(file_name), f"{name}'s DEFAULT weights"
    if Path(name).name != name:
        raise WeightsError(f"--name {name!r} must be a file name, not a path")
    return name, _known_hash(name), name


def _known_hash(file_name: str) -> str | None:
    """The expected hash for a file name: a manifest entry's sha256, or the name's hash prefix."""
    for entry in load_manifest().values():
        if entry.file_name == file_name and entry.expected_hash:
            return entry.expected_hash
    return hash_prefix_from_name(file_name)


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


def list_weights() -> list[WeightsInfo]:
    """Manifest entries, then the torchvision weights of model presets and backbones."""
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
    for kind, model, task, member in _torchvision_members():
        enum_name = f"{type(member).__name__}.{member.name}"
        if enum_name in seen:
            continue
        seen.add(enum_name)
        file_name = url_file_name(member.url)
        infos.append(WeightsInfo(
            name=enum_name, kind=kind, file_name=file_name, url=member.url,
            sha256=hash_prefix_from_name(file_name), model=model, task=task,
            description=_describe(member), path=find_cached(file_name),
            default=member is type(member).DEFAULT,
        ))
    return infos


def _describe(member: Any) -> str:
    metrics = member.meta.get("_metrics", {})
    parts = []
    for dataset, values in metrics.items():
        shown = ", ".join(f"{k} {v}" for k, v in values.items())
        parts.append(f"{dataset}: {shown}")
    return "; ".join(parts)


def _torchvision_members() -> Iterator[tuple[str, str, str | None, Any]]:
    """``(kind, model name, task, enum member)`` for every registry entry with weights.

    Reads the registries' metadata directly (no network, no model is built).
    """
    for kind, registry in _registries():
        for entry in registry:
            found = _enum_in(entry.meta)
            if found is not None:
                yield from _members(kind, entry.name, entry.meta.get("task"), found)


def _members(kind: str, model: str, task: str | None, found: Any) -> Iterator[tuple]:
    enum_cls = found if isinstance(found, type) else type(found)
    for member in enum_cls:
        yield kind, model, task, member


@dataclass(frozen=True)
class VerifyResult:
    """One re-hashed file. ``status`` is ``ok``, ``mismatch``, ``missing`` (a shipped file the
    manifest lists is absent) or ``unverified`` (no hash is known for it)."""

    path: Path
    status: str
    expected: str | None
    actual: str | None


def verify_weights() -> list[VerifyResult]:
    """Re-hash shipped files (against the manifest), cached files (manifest or file-name hash),
    and torchvision files in torch's hub cache that detseg would use."""
    results = []
    manifest = load_manifest()
    shipped_names = set()
    for entry in manifest.values():
        shipped = shipped_dir() / entry.file_name
        if shipped.is_file():
            shipped_names.add(entry.file_name)
            results.append(_verify(shipped, entry.expected_hash))
        elif not entry.url and find_cached(entry.file_name) is None:
            results.append(VerifyResult(shipped, "missing", entry.expected_hash, None))
    folder = cache_dir()
    cached = sorted(folder.iterdir()) if folder.is_dir() else []
    for path in cached:
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".part":
            results.append(_verify(path, _known_hash(path.name)))
    hub = torch_hub_checkpoints()
    for info in list_weights():
        if info.kind != "manifest" and info.path is not None and info.path.parent == hub:
            results.append(_verify(info.path, info.sha256))
    return results


def _verify(path: Path, expected: str | None) -> VerifyResult:
    digest = sha256_file(path)
    if not expected:
        return VerifyResult(path, "unverified", None, digest)
    status = "ok" if hash_matches(digest, expected) else "mismatch"
    return VerifyResult(path, status, normalize_sha256(expected), digest)
