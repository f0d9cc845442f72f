"""Reading MOTChallenge text files: ``frame,id,x,y,w,h,conf,class,visibility[,...]``.

Ground truth (``gt/gt.txt``) carries ``conf`` as the consider flag (0: ignore the row), the class
and the visibility; tracker output carries ``conf`` as a score and ``-1`` (or a class) after it.
Boxes are ``xywh`` (top-left corner, width, height) in absolute pixels; frames count from 1.
Commas or whitespace separate the columns; blank lines and a trailing separator are allowed.
"""

from __future__ import annotations

import configparser
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detseg.errors import EvalInputError

#: columns a row needs: frame, id, x, y, w, h
MIN_COLUMNS = 6


@dataclass(frozen=True)
class MotTable:
    """The rows of one MOT text file, in file order.

    ``frame``, ``ids``, ``line`` (1-based line numbers): int64 ``[N]``; ``boxes``: float64
    ``[N, 4]`` xywh pixels; ``conf``: float64 ``[N]`` (1 where the file has no column 7);
    ``classes``: int64 ``[N]`` (-1 where the file has no column 8); ``visibility``: float64
    ``[N]`` (1 where the file has no column 9).
    """

    path: Path
    frame: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    conf: np.ndarray
    classes: np.ndarray
    visibility: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def where(self, mask: np.ndarray) -> MotTable:
        """The rows where ``mask`` (bool ``[N]``) is true."""
        return MotTable(self.path, self.frame[mask], self.ids[mask], self.boxes[mask],
                        self.conf[mask], self.classes[mask], self.visibility[mask],
                        self.line[mask])


def _split(text: str) -> list[str]:
    text = text.strip().rstrip(",").strip()
    if "," in text:
        return [field.strip() for field in text.split(",")]
    return text.split()


def _parse_lines(lines: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[N, 9]`` (missing columns NaN) and their line numbers, one line at a time; the
    first line that is not at least 6 numbers raises ``EvalInputError`` naming it."""
    rows: list[list[float]] = []
    numbers: list[int] = []
    for number, raw in enumerate(lines, start=1):
        fields = _split(raw)
        if not fields or fields == [""]:
            continue
        if len(fields) < MIN_COLUMNS:
            raise EvalInputError(f"{path}: line {number}: {len(fields)} columns, a MOT row needs "
                                 f"at least {MIN_COLUMNS} (frame,id,x,y,w,h)")
        try:
            values = [float(f) for f in fields[:9]]
        except ValueError:
            raise EvalInputError(f"{path}: line {number}: not numbers: {raw.strip()[:80]!r}") \
                from None
        rows.append(values + [np.nan] * (9 - len(values)))
        numbers.append(number)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 9), np.asarray(numbers, np.int64)


def _parse(text: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``_parse_lines``' result; numpy's parser reads a regular file at once, and a file it
    refuses is read line by line to name the line at fault."""
    lines = text.splitlines()
    numbers = np.asarray([i for i, raw in enumerate(lines, start=1) if raw.strip()], np.int64)
    if len(numbers) == 0:
        return np.zeros((0, 9)), numbers
    first = lines[numbers[0] - 1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            table = np.loadtxt(io.StringIO(text), delimiter="," if "," in first else None,
                               ndmin=2, dtype=np.float64, comments=None)
    except (ValueError, UserWarning):
        return _parse_lines(lines, path)
    if table.shape != (len(numbers), table.shape[1]) or table.shape[1] < MIN_COLUMNS:
        return _parse_lines(lines, path)
    table = table[:, :9]
    padding = np.full((len(table), 9 - table.shape[1]), np.nan)
    return np.concatenate([table, padding], axis=1), numbers


def _check_rows(table: np.ndarray, numbers: np.ndarray, path: Path,
                seq_length: int | None) -> None:
    """``EvalInputError`` for the first row (in file order) with a non-finite frame, id or box,
    a fractional or out-of-range frame, a fractional or negative id, or a negative size."""
    frame, ids, size = table[:, 0], table[:, 1], table[:, 4:6]
    limit = f"1..{seq_length} (seqLength)" if seq_length is not None else ">= 1"
    checks = [
        (~np.isfinite(table[:, :6]).all(axis=1), lambda k: "frame, id and box must be finite"),
        ((np.abs(table[:, :2]) >= 2**53).any(axis=1), lambda k: "frame or id too large"),
        (frame != np.floor(frame), lambda k: f"frame {frame[k]:g} is not a whole number"),
        ((frame < 1) | (frame > (seq_length or np.inf)),
         lambda k: f"frame {frame[k]:g} is out of range ({limit})"),
        (ids != np.floor(ids), lambda k: f"id {ids[k]:g} is not a whole number"),
        (ids < 0, lambda k: f"id {ids[k]:g} is negative (a detection file rather than tracks?)"),
        ((size < 0).any(axis=1), lambda k: "negative box width or height"),
    ]
    found = [(int(np.argmax(bad)), message) for bad, message in checks if bad.any()]
    if found:
        k, message = min(found, key=lambda item: item[0])
        raise EvalInputError(f"{path}: line {numbers[k]}: {message(k)}")


def read_mot_file(path: str | Path, seq_length: int | None = None) -> MotTable:
    """Read a MOT text file.

    Raises ``EvalInputError`` naming the file and line for a row that is not numbers, has fewer
    than 6 columns, a frame below 1 (or above ``seq_length`` when given), a negative or
    fractional id, a negative or non-finite width/height, or an id used twice in one frame.
    An empty file gives an empty table.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EvalInputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise EvalInputError(f"{path}: is a folder, not a MOT text file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EvalInputError(f"{path}: cannot be read ({err})") from None
    table, numbers = _parse(text, path)
    with np.errstate(invalid="ignore"):
        _check_rows(table, numbers, path, seq_length)
    conf, cls, vis = table[:, 6], table[:, 7], table[:, 8]
    result = MotTable(
        path=path, frame=table[:, 0].astype(np.int64), ids=table[:, 1].astype(np.int64),
        boxes=table[:, 2:6].copy(), conf=np.where(np.isnan(conf), 1.0, conf),
        classes=np.where(np.isfinite(cls), cls, -1).astype(np.int64),
        visibility=np.where(np.isnan(vis), 1.0, vis), line=numbers)
    _check_unique_ids(result)
    return result


def _check_unique_ids(table: MotTable) -> None:
    """``EvalInputError`` naming the file, frame, id and lines of the first id used twice in
    one frame (the metrics need one box per id and frame)."""
    if len(table) < 2:
        return
    order = np.lexsort((table.line, table.ids, table.frame))
    frame, ids = table.frame[order], table.ids[order]
    same = (frame[1:] == frame[:-1]) & (ids[1:] == ids[:-1])
    if same.any():
        k = int(np.argmax(same))
        first, second = table.line[order][k], table.line[order][k + 1]
        raise EvalInputError(f"{table.path}: frame {frame[k]}: id {ids[k]} appears twice "
                             f"(lines {first} and {second})")


def read_seq_length(ini: str | Path) -> int | None:
    """``seqLength`` from a MOTChallenge ``seqinfo.ini``; None when the file does not exist.

    Raises ``EvalInputError`` naming the file for one that cannot be parsed or whose
    ``seqLength`` is missing or not a positive whole number.
    """
    ini = Path(ini)
    if not ini.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read_string(ini.read_text())
        value = parser["Sequence"]["seqLength"]
    except (configparser.Error, KeyError, OSError, UnicodeDecodeError) as err:
        raise EvalInputError(f"{ini}: no readable [Sequence] seqLength ({type(err).__name__})") \
            from None
    try:
        length = int(value)
    except ValueError:
        raise EvalInputError(f"{ini}: seqLength {value!r} is not a whole number") from None
    if length < 1:
        raise EvalInputError(f"{ini}: seqLength {length} must be at least 1")
    return length
