"""Reading evaluation input: JSON files, names for messages, and entry values checked one by one.

Every message starts with the source (the file, or the name the caller gave) and the entry,
for example ``results.json: results[17]: ...``.
"""

from __future__ import annotations

import gc
import json
import math
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from detseg.errors import EvalInputError


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: building millions of small lists and dicts (all
    acyclic, freed by reference counting) would otherwise trigger a collection every few
    hundred, each walking the containers built so far."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_json(raw: bytes) -> Any:
    """The JSON document ``raw``: orjson, or the standard library where orjson refuses what it
    accepts (``NaN``/``Infinity``, UTF-16/32 or a byte-order mark) and for the message of a
    malformed document (line and column). orjson reads integers beyond 64 bits as floats."""
    with paused_gc():
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return json.loads(raw)


def load_json(source: Any, what: str) -> Any:
    """``source`` itself, or the parsed JSON file it names; errors name the file."""
    if not isinstance(source, (str, Path)):
        return source
    path = Path(source)
    try:
        return parse_json(path.read_bytes())
    except FileNotFoundError:
        raise EvalInputError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise EvalInputError(f"{path}: {what} file is a folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise EvalInputError(f"{path}: malformed JSON in {what} file: {err}") from None
    except OSError as err:
        raise EvalInputError(f"{path}: cannot read the {what} file: {err.strerror}") from None


def source_name(source: Any, given: str | None, default: str) -> str:
    """The name messages use: ``given``, else the path ``source``, else ``default``."""
    if given:
        return given
    return str(source) if isinstance(source, (str, Path)) else default


def short(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def integer_id(value: Any) -> int | None:
    """``value`` as an int when it is an integer number (numpy's too; bools are not), else None."""
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(float(value))
    return None


def id_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be an id (named ``name`` in the message): not an integer, or
    outside the 64-bit range the arrays hold; None when it can."""
    number = integer_id(value)
    if number is None:
        return f"{name} {short(value)} is not an integer"
    if not -2 ** 63 <= number < 2 ** 63:
        return f"{name} {number} is out of the 64-bit integer range"
    return None


def finite_number(value: Any) -> bool:
    """True for a finite real number (numpy's too; bools are not numbers here)."""
    if type(value) in (int, float):
        return math.isfinite(value)
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def box_problem(box: Any) -> str | None:
    """Why ``box`` is not a usable ``[x, y, w, h]`` (finite, ``w, h >= 0``), or None."""
    if (not isinstance(box, (list, tuple)) or len(box) != 4
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in box)):
        return f"bbox {short(box)} is not [x, y, w, h]"
    if not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
        return f"bbox {short(box)} has a negative or non-finite size"
    return None


def box_array(boxes: list) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 4]`` float64 of ``N`` ``[x, y, w, h]`` values and ``[N]`` flags of the usable ones
    (those ``box_problem`` accepts; the others' rows are left 0)."""
    n = len(boxes)
    if set(map(type, boxes)) <= {list, tuple} and set(map(len, boxes)) <= {4} and set(
            map(type, chain.from_iterable(boxes))) <= {int, float}:
        box = np.fromiter(chain.from_iterable(boxes), dtype=np.float64, count=4 * n).reshape(n, 4)
        ok = np.asarray(np.isfinite(box).all(1) & (box[:, 2:] >= 0).all(1))
        box[~ok] = 0.0
        return box, ok
    ok = np.array([box_problem(b) is None for b in boxes], dtype=bool).reshape(n)
    box = np.zeros((n, 4))
    if ok.any():
        box[ok] = [boxes[j] for j in np.flatnonzero(ok)]
    return box, ok


def all_rejected(source: str, what: str, first_problem: str, count: int) -> EvalInputError:
    """The error when every one of ``count`` entries was rejected: nothing left to evaluate."""
    return EvalInputError(f"{source}: {first_problem} (no {what} is usable: all {count} "
                          f"rejected)")
