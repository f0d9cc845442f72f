"""Tracking evaluation of MOTChallenge files: HOTA, CLEAR MOT and identity metrics per sequence
(and class), combined as TrackEval combines them.

A sequence whose files cannot be read is reported in ``failed`` (one line naming the file and
the problem) and left out of the combined numbers; the other sequences are still evaluated. A
sequence without a prediction file is evaluated as all missed, with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detseg.errors import EvalInputError, UsageError

from .clear import ClearCounts, clear_counts, clear_summary, combine_clear
from .hota import ALPHAS, HotaCounts, combine_hota, hota_counts, hota_curves, hota_summary
from .identity import IdentityCounts, combine_identity, identity_counts, identity_summary
from .io import MotTable, read_mot_file, read_seq_length
from .layout import SequencePair, pair_sequences
from .preprocess import AUTO, CLASS_MODES, FrameRange, resolve_class_mode
from .sequence import build_sequence


@dataclass(frozen=True)
class SequenceResult:
    """The metric counts of one sequence for one class subset (``label``)."""

    sequence: str
    label: str
    hota: HotaCounts
    clear: ClearCounts
    identity: IdentityCounts


@dataclass
class MotEvaluation:
    """What ``evaluate_mot`` found: the class mode used, the results per (sequence, class),
    the sequences that failed (name -> message) and the warnings, in order."""

    class_mode: str
    min_visibility: float
    results: list[SequenceResult] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def sequences(self) -> list[str]:
        """The evaluated sequences, in order."""
        return list(dict.fromkeys(r.sequence for r in self.results))

    @property
    def labels(self) -> list[str]:
        """The class labels evaluated, in order of first appearance."""
        return list(dict.fromkeys(r.label for r in self.results))


def summarise(results: Sequence[SequenceResult], single: bool = False
              ) -> dict[str, float | int]:
    """The metrics of ``results`` together (TrackEval's combination: HOTA's per-alpha counts
    summed with TP-weighted association, CLEAR and identity counts summed): fractions 0-1
    (HOTA averaged over alpha), and counts. Also ``GT_dets`` and ``GT_ids``. ``single``: the
    row of one sequence and class, not a combination: without ground truth its MOTA and MODA
    are 0, as TrackEval reports them (a combination gives -FP)."""
    clear = combine_clear([r.clear for r in results])
    metrics: dict[str, float | int] = {}
    metrics.update(hota_summary(combine_hota([r.hota for r in results])))
    clear_values = clear_summary(clear)
    if single and clear.tp + clear.fn == 0:
        clear_values.update(MOTA=0.0, MODA=0.0)
    metrics.update(clear_values)
    metrics.update(identity_summary(combine_identity([r.identity for r in results])))
    metrics["GT_dets"] = clear.tp + clear.fn
    metrics["GT_ids"] = clear.mt + clear.pt + clear.ml
    return metrics


def alpha_curves(results: Sequence[SequenceResult]) -> dict[str, list[float]]:
    """``alpha`` and the HOTA metrics at each alpha, for ``results`` together."""
    curves = hota_curves(combine_hota([r.hota for r in results]))
    return {"alpha": [round(float(a), 2) for a in ALPHAS],
            **{k: [float(v) for v in curve] for k, curve in curves.items()}}


def _empty_table(path: Path) -> MotTable:
    return MotTable(path, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)),
                    np.zeros(0), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))


def _read_gt(pair: SequencePair) -> tuple[MotTable, int | None]:
    length = read_seq_length(pair.seqinfo)
    return read_mot_file(pair.gt, length), length


def _select(evaluation: MotEvaluation, name: str, gt: MotTable, pred: MotTable,
            frames: FrameRange | None) -> tuple[MotTable, MotTable]:
    if frames is None:
        return gt, pred
    kept = frames.mask(pred.frame)
    if not kept.all():
        evaluation.warnings.append(f"sequence {name}: {int((~kept).sum())} predictions in "
                                   f"frames outside --mot-frames left out")
    return gt.where(frames.mask(gt.frame)), pred.where(kept)


def evaluate_mot(gt: str | Path, predictions: str | Path, class_mode: str = AUTO,
                 min_visibility: float = 0.0, frames: FrameRange | None = None
                 ) -> MotEvaluation:
    """Evaluate MOT predictions against MOTChallenge ground truth (see ``layout`` for the
    accepted files and folders, ``preprocess`` for ``class_mode``; ``min_visibility`` in 0-1
    turns less visible targets into distractors; ``frames``: score only those frames, the
    others' ground truth is left out).

    Raises ``UsageError`` for missing paths, folders without ground truth or a bad option; a
    problem inside one sequence's files fails that sequence only (``failed``).
    """
    if not 0.0 <= min_visibility <= 1.0:
        raise UsageError(f"--mot-min-visibility must be in 0-1, got {min_visibility}")
    pairing = pair_sequences(gt, predictions)
    failed: dict[str, str] = {}
    loaded: list[tuple[SequencePair, MotTable, int | None]] = []
    for pair in pairing.pairs:
        try:
            loaded.append((pair, *_read_gt(pair)))
        except EvalInputError as err:
            failed[pair.name] = str(err)
    mode = resolve_class_mode(class_mode, [table for _, table, _ in loaded])
    evaluation = MotEvaluation(mode, min_visibility, failed=failed)
    split = CLASS_MODES.get(mode).builder
    for pair, gt_table, length in loaded:
        if pair.pred is None:
            evaluation.warnings.append(f"sequence {pair.name}: no prediction file in "
                                       f"{predictions} ({pair.name}.txt): counted as all missed")
        try:
            pred_table = (read_mot_file(pair.pred, length) if pair.pred is not None
                          else _empty_table(Path(predictions)))
            gt_used, pred_used = _select(evaluation, pair.name, gt_table, pred_table, frames)
            subsets = split(gt_used, pred_used, min_visibility)
        except EvalInputError as err:
            evaluation.failed[pair.name] = str(err)
            continue
        for subset in subsets:
            data = build_sequence(gt_used, pred_used, subset)
            evaluation.results.append(SequenceResult(
                pair.name, subset.label, hota_counts(data), clear_counts(data),
                identity_counts(data)))
    evaluation.warnings += [f"{path}: no ground-truth sequence of that name; not evaluated"
                            for path in pairing.unclaimed]
    evaluation.warnings += [f"{folder}: a sequence folder without gt/gt.txt; not evaluated"
                            for folder in pairing.without_gt]
    return evaluation
