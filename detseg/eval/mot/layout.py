"""Pairing ground-truth sequences with prediction files.

Ground truth is a MOT text file, one MOTChallenge sequence folder (``SEQ/gt/gt.txt``, with
``SEQ/seqinfo.ini``), or a folder of them laid out like MOT17 (``GT/<seq>/gt/gt.txt``).
Predictions are a MOT text file (against a single sequence), or a folder holding ``<seq>.txt``
(also found as ``data/<seq>.txt``, ``<seq>/<seq>.txt`` or the only ``.txt`` in ``<seq>/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detseg.errors import UsageError


@dataclass(frozen=True)
class SequencePair:
    """One sequence to evaluate: its ground truth, its prediction file (None: not found) and
    the ``seqinfo.ini`` that may give its length."""

    name: str
    gt: Path
    pred: Path | None
    seqinfo: Path


@dataclass
class Pairing:
    """The sequences to evaluate, the prediction files no sequence claimed, and the sequence
    folders (with a ``seqinfo.ini`` or a ``gt/`` folder) that have no ``gt/gt.txt``."""

    pairs: list[SequencePair]
    unclaimed: list[Path] = field(default_factory=list)
    without_gt: list[Path] = field(default_factory=list)


def _gt_sequences(gt: Path) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """``(name, gt.txt, seqinfo.ini)`` for each sequence under ``gt``, and the sequence
    folders without ``gt/gt.txt``."""
    if gt.is_file():
        folder = gt.parent.parent if gt.parent.name == "gt" else gt.parent
        name = folder.name if gt.parent.name == "gt" else gt.stem
        return [(name, gt, folder / "seqinfo.ini")], []
    if (gt / "gt" / "gt.txt").is_file():
        return [(gt.resolve().name, gt / "gt" / "gt.txt", gt / "seqinfo.ini")], []
    try:
        folders = sorted(d for d in gt.iterdir() if d.is_dir())
    except OSError as err:
        raise UsageError(f"--mot {gt}: cannot read the folder ({err.strerror or err})") from None
    found = [(d.name, d / "gt" / "gt.txt", d / "seqinfo.ini") for d in folders
             if (d / "gt" / "gt.txt").is_file()]
    if not found:
        raise UsageError(f"--mot {gt}: no ground truth found (expected a MOT text file, "
                         f"SEQ/gt/gt.txt, or <seq>/gt/gt.txt folders)")
    without = [d for d in folders if not (d / "gt" / "gt.txt").is_file()
               and ((d / "seqinfo.ini").is_file() or (d / "gt").is_dir())]
    return found, without


def _prediction_for(pred: Path, name: str) -> Path | None:
    for candidate in (pred / f"{name}.txt", pred / "data" / f"{name}.txt",
                      pred / name / f"{name}.txt"):
        if candidate.is_file():
            return candidate
    inside = sorted(p for p in (pred / name).glob("*.txt") if p.is_file()) \
        if (pred / name).is_dir() else []
    return inside[0] if len(inside) == 1 else None


def _prediction_files(pred: Path) -> list[Path]:
    try:
        return sorted(p for p in [*pred.glob("*.txt"), *pred.glob("data/*.txt")] if p.is_file())
    except OSError as err:
        raise UsageError(f"--predictions {pred}: cannot read the folder ({err.strerror or err})") \
            from None


def pair_sequences(gt: str | Path, pred: str | Path) -> Pairing:
    """Match each ground-truth sequence with its prediction file.

    Raises ``UsageError`` (naming the path) for a missing path, a folder without ground truth,
    or a single prediction file given against several sequences. A sequence without a
    prediction file gets ``pred=None``. Prediction files found directly in the folder (or in
    ``data/``) that no sequence claims are listed in ``unclaimed``, sequence folders without
    ``gt/gt.txt`` in ``without_gt``.
    """
    gt, pred = Path(gt), Path(pred)
    for flag, path in (("--mot", gt), ("--predictions", pred)):
        if not path.exists():
            raise UsageError(f"{flag} {path}: no such file or folder")
    sequences, without_gt = _gt_sequences(gt)
    if pred.is_file():
        if len(sequences) != 1:
            raise UsageError(f"--predictions {pred} is one file but --mot {gt} holds "
                             f"{len(sequences)} sequences: give a folder of <seq>.txt files")
        name, gt_file, ini = sequences[0]
        return Pairing([SequencePair(name, gt_file, pred, ini)], without_gt=without_gt)
    pairs = [SequencePair(name, gt_file, _prediction_for(pred, name), ini)
             for name, gt_file, ini in sequences]
    claimed = {p.pred.resolve() for p in pairs if p.pred is not None}
    unclaimed = [p for p in _prediction_files(pred) if p.resolve() not in claimed]
    return Pairing(pairs, unclaimed, without_gt)
