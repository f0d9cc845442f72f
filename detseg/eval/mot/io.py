"""Reading MOTChallenge text files: ``frame,id,x,y,w,h,conf,class,visibility[,...]``.

Ground truth (``gt/gt.txt``) carries ``conf`` as the consider flag (0: ignore the row), the class
and the visibility; tracker output carries ``conf`` as a score and ``-1`` (or a class) after it.
Boxes are ``xywh`` (top-left corner, width, height) in absolute pixels; frames count from 1.
Commas or whitespace separate the columns; blank lines and a trailing separator are allowed.
"""

from __future__ import annotations

import configparser
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


def _integral(value: float, what: str, path: Path, number: int) -> int:
    if not np.isfinite(value) or value != int(value):
        raise EvalInputError(f"{path}: line {number}: {what} {value:g} is not a whole number")
    return int(value)


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
    rows: list[list[float]] = []
    numbers: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
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
        if not all(np.isfinite(values[:6])):
            raise EvalInputError(f"{path}: line {number}: frame, id and box must be finite")
        frame = _integral(values[0], "frame", path, number)
        if frame < 1 or (seq_length is not None and frame > seq_length):
            limit = f"1..{seq_length} (seqLength)" if seq_length is not None else ">= 1"
            raise EvalInputError(f"{path}: line {number}: frame {frame} is out of range "
                                 f"({limit})")
        if _integral(values[1], "id", path, number) < 0:
            raise EvalInputError(f"{path}: line {number}: id {values[1]:g} is negative (a "
                                 f"detection file rather than tracks?)")
        if values[4] < 0 or values[5] < 0:
            raise EvalInputError(f"{path}: line {number}: negative box width or height")
        rows.append(values + [np.nan] * (9 - len(values)))
        numbers.append(number)
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 9)
    conf, cls, vis = table[:, 6], table[:, 7], table[:, 8]
    result = MotTable(
        path=path, frame=table[:, 0].astype(np.int64), ids=table[:, 1].astype(np.int64),
        boxes=table[:, 2:6].copy(), conf=np.where(np.isnan(conf), 1.0, conf),
        classes=np.where(np.isfinite(cls), cls, -1).astype(np.int64),
        visibility=np.where(np.isnan(vis), 1.0, vis), line=np.asarray(numbers, dtype=np.int64))
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
