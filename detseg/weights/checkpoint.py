"""Reading weight files of every supported layout, and writing detseg checkpoints.

``read_weights_file`` accepts:

- a detseg checkpoint (``save_checkpoint``'s ``.pt`` or ``.safetensors``), which carries the
  ModelSpec that rebuilds its model;
- a bare state dict (``torch.save(model.state_dict())``) or a plain ``.safetensors`` file;
- a training checkpoint keeping the state dict under ``model`` (torchvision's
  references/detection/train.py, with ``optimizer``, ``lr_scheduler``, ``args`` (an
  ``argparse.Namespace``), ``epoch`` and maybe ``model_ema`` beside it), ``model_state_dict`` or
  ``model_state``;
- a Lightning-style checkpoint (``state_dict`` whose keys carry the LightningModule's attribute,
  ``model.``, which is stripped when every key has it).

A ``module.`` (DistributedDataParallel) or ``_orig_mod.`` (``torch.compile``) prefix on every
key is stripped too. Nothing in a file can run code (see ``safe_load``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detseg.errors import WeightsError
from detseg.spec import ModelSpec
from detseg.weights.atomic import write_atomic
from detseg.weights.safe_load import first_line, safe_torch_load

CHECKPOINT_FORMAT = "detseg-checkpoint"
CHECKPOINT_VERSION = 1
# Checkpoint keys written by save_checkpoint itself; ``extra`` may not use them.
_RESERVED = ("format", "version", "spec", "model", "half")
_FP16_MAX = 65504.0
# Where training scripts keep the state dict: (key, layout, wrapper prefixes to strip).
_NESTED_LAYOUTS = (
    ("model", "training checkpoint ('model')", ()),
    ("state_dict", "Lightning-style checkpoint ('state_dict')", ("model.",)),
    ("model_state_dict", "training checkpoint ('model_state_dict')", ()),
    ("model_state", "training checkpoint ('model_state')", ()),
)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadedWeights:
    """Tensors resolved from a ``--weights`` value.

    Attributes:
        state_dict: parameter name -> tensor (CPU).
        spec: the ModelSpec a detseg checkpoint carries; None for plain (torchvision) state
            dicts, for which the caller builds the preset itself.
        source: a human description of where the tensors came from (file path, enum name).
        meta: extra facts: ``layout`` (which kind of file), ``stripped_prefix`` (wrapper
            prefixes removed from the keys, if any), ``categories`` of torchvision weights,
            ``enum``, ``extra`` entries of detseg checkpoints.
    """

    state_dict: dict[str, Tensor]
    spec: ModelSpec | None
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A detseg checkpoint: the spec that rebuilds the model, its tensors, and extra entries
    (epoch, metrics, optimizer state, ...) exactly as they were saved."""

    spec: ModelSpec
    state_dict: dict[str, Tensor]
    extra: dict[str, Any]


# --------------------------------------------------------------------------- reading


def read_weights_file(path: str | Path) -> LoadedWeights:
    """Tensors (and the spec, for detseg checkpoints) from a file of any layout in the module doc.

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
    if _is_state_dict(obj):
        return _plain_weights(obj, path, "state dict", ())
    if isinstance(obj, dict):
        for key, layout, prefixes in _NESTED_LAYOUTS:
            if _is_state_dict(obj.get(key)):
                return _plain_weights(obj[key], path, layout, prefixes)
    found = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise WeightsError(
        f"{path}: holds no state dict of tensors (found {found}); detseg reads state dicts, "
        f"and checkpoints keeping one under 'model', 'state_dict' or 'model_state_dict'"
    )


def _plain_weights(state: dict[str, Tensor], path: Path, layout: str,
                   prefixes: tuple[str, ...]) -> LoadedWeights:
    """A spec-less ``LoadedWeights`` with common wrapper prefixes taken off the keys."""
    stripped = []
    while prefix := _shared_prefix(state, (*prefixes, *_WRAPPER_PREFIXES)):
        state = OrderedDict((k[len(prefix):], v) for k, v in state.items())
        stripped.append(prefix)
    meta: dict[str, Any] = {"layout": layout}
    if stripped:
        meta["stripped_prefix"] = "".join(stripped)
    return LoadedWeights(state_dict=state, spec=None, source=str(path), meta=meta)


def _shared_prefix(state: dict[str, Tensor], prefixes: tuple[str, ...]) -> str | None:
    """The first of ``prefixes`` that every key of a non-empty ``state`` starts with."""
    for prefix in prefixes:
        if state and all(key.startswith(prefix) for key in state):
            return prefix
    return None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


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
            f"{path}: corrupt or truncated safetensors ({first_line(err)})"
        ) from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        if not state:
            raise WeightsError(f"{path}: a safetensors file without tensors")
        return _plain_weights(state, path, "safetensors state dict", ())
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
        raise WeightsError(f"{path}: damaged detseg metadata ({first_line(err)})") from None
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
    return LoadedWeights(state_dict=state, spec=spec, source=str(path),
                         meta={"layout": "detseg checkpoint", "extra": extra})


# --------------------------------------------------------------------------- detseg checkpoints


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
        write_atomic(path, lambda tmp: _save_safetensors(tmp, state, spec, half_dtypes, extra))
    else:
        obj = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "spec": spec.to_dict(),
            "model": state,
            **({"half": half_dtypes} if half_dtypes else {}),
            **extra,
        }
        write_atomic(path, lambda tmp: torch.save(obj, tmp))
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
