"""``torch.load`` that never runs code from the file.

Files are read with ``weights_only=True``: tensors, plain Python values, and an allow-list of
harmless classes that training scripts commonly leave in checkpoints (``argparse.Namespace``
from torchvision's reference scripts, ``pathlib`` paths, numpy scalars). The allow-list is
added only for the duration of one load. A pickle that needs anything else (a function to call,
a class to build) raises ``UnsafeCheckpointError`` naming it, and nothing in it runs.
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detseg.errors import UnsafeCheckpointError, WeightsError


def harmless_globals() -> list[Any]:
    """What ``safe_torch_load`` lets a pickle build besides tensors and plain values.

    Each only stores the values it is given: nothing is imported, opened or called.
    """
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 moved it to the private _core
    multiarray = core.multiarray
    dtypes = [type(np.dtype(kind)) for kind in "?bBhHiIlLqQefdgFDG"]
    return [
        argparse.Namespace,
        pathlib.PosixPath, pathlib.PurePosixPath, pathlib.PureWindowsPath,
        np.dtype, *dtypes,
        multiarray.scalar,
        (multiarray.scalar, "numpy.core.multiarray.scalar"),  # written under numpy 1
    ]


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` plus ``harmless_globals``.

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
        with warnings.catch_warnings(), torch.serialization.safe_globals(harmless_globals()):
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
        raise WeightsError(f"{path}: corrupt or not a torch file ({first_line(err)})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise WeightsError(
            f"{path}: corrupt or truncated ({first_line(err)}); delete it and download or "
            f"copy it again (`detseg weights verify` checks cached files)"
        ) from None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].rstrip(".")


def _unsafe_global(message: str) -> str | None:
    """The global torch's weights-only unpickler refused, from its error message."""
    match = re.search(r"GLOBAL\s+([\w.]+)", message) or re.search(
        r"but got <class '([\w.]+)'>", message)
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
