"""Which ground-truth rows are evaluated, which are distractors, which predictions count.

Every ground-truth row gets a role: a **target** (evaluated), a **distractor** (not evaluated,
and a prediction matched to it at IoU >= 0.5 is removed before scoring), **ignored** (not
evaluated; predictions on it stay, so they count as false positives) or **absent** (not part of
this evaluation at all). The class modes, in ``CLASS_MODES``:

- ``pedestrian``: the MOT16/17 conventions, as TrackEval's ``MotChallenge2DBox`` applies them.
  Class 1 rows with a non-zero consider flag are targets; classes 2, 7, 8, 12 (person on
  vehicle, static person, distractor, reflection) are distractors; every other row is ignored.
  Predictions must have no class (-1) or class 1. ``mot20``: the same, with non-MOT vehicles
  (6) distractors too (TrackEval's MOT20 benchmark).
- ``all``: class-agnostic. Every row with a non-zero consider flag is a target, whatever its
  class, against every prediction (TrackEval with preprocessing off).
- ``each``: one evaluation per class k: class-k rows with a non-zero consider flag against the
  class-k predictions (the prediction file must carry classes in column 8).

With a minimum visibility V > 0, a target whose visibility (column 9) is below V becomes a
distractor: it is neither a miss nor a false positive. A ``FrameRange`` keeps the rows of the
frames a tracker ran on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from detseg.errors import EvalInputError, UsageError
from detseg.registry import Registry

from .io import MotTable

ABSENT, IGNORED, TARGET, DISTRACTOR = -1, 0, 1, 2

#: MOTChallenge class ids (MOT16/17/20 ground truth, column 8)
MOT17_CLASSES = {1: "pedestrian", 2: "person_on_vehicle", 3: "car", 4: "bicycle",
                 5: "motorbike", 6: "non_mot_vehicle", 7: "static_person", 8: "distractor",
                 9: "occluder", 10: "occluder_on_ground", 11: "occluder_full", 12: "reflection",
                 13: "crowd"}
MOT17_DISTRACTORS = (2, 7, 8, 12)
MOT20_DISTRACTORS = (*MOT17_DISTRACTORS, 6)
#: the ``--mot-classes`` value that picks ``pedestrian`` or ``all`` from the ground truth
AUTO = "auto"


@dataclass(frozen=True)
class ClassSubset:
    """One evaluation within a sequence: ``label`` (a class name, ``pedestrian`` or ``all``),
    the role of each ground-truth row (int ``[N_gt]``, the module's role constants) and which
    predictions take part (bool ``[N_pred]``)."""

    label: str
    gt_roles: np.ndarray
    pred_mask: np.ndarray


ClassMode = Callable[[MotTable, MotTable, float], list[ClassSubset]]
CLASS_MODES: Registry[ClassMode] = Registry("MOT class mode")


def _considered(gt: MotTable) -> np.ndarray:
    # TrackEval reads the flag as int(conf): 0.5 is "not considered" as 0 is
    return gt.conf.astype(np.int64) != 0


def _roles(target: np.ndarray, distractor: np.ndarray, gt: MotTable,
           min_visibility: float) -> np.ndarray:
    roles = np.full(len(gt), IGNORED, dtype=np.int64)
    roles[distractor] = DISTRACTOR
    roles[target] = TARGET
    if min_visibility > 0:
        roles[target & (gt.visibility < min_visibility)] = DISTRACTOR
    return roles


def _first_bad(table: MotTable, bad: np.ndarray, message: str) -> EvalInputError:
    k = int(np.argmax(bad))
    return EvalInputError(f"{table.path}: line {table.line[k]}: class {table.classes[k]} "
                          f"{message}")


def _pedestrians(gt: MotTable, pred: MotTable, min_visibility: float,
                 distractors: tuple[int, ...]) -> list[ClassSubset]:
    """Class 1 of a MOTChallenge ground truth (a file without a class column is class 1)."""
    classes = np.where(gt.classes < 0, 1, gt.classes)
    bad = ~np.isin(classes, list(MOT17_CLASSES))
    if bad.any():
        raise _first_bad(gt, bad, "is not a MOTChallenge class (1-13); evaluate generic "
                                  "classes with --mot-classes all or each")
    bad = pred.classes > 1
    if bad.any():
        raise _first_bad(pred, bad, "is not pedestrian (1): MOTChallenge evaluates pedestrians "
                                    "only; use --mot-classes all or each")
    target = (classes == 1) & _considered(gt)
    distractor = np.isin(classes, distractors)
    return [ClassSubset("pedestrian", _roles(target, distractor, gt, min_visibility),
                        np.ones(len(pred), dtype=bool))]


@CLASS_MODES.register("pedestrian", summary="MOT16/17 conventions: class 1, distractors "
                      "2/7/8/12 removed, other classes ignored")
def pedestrian(gt: MotTable, pred: MotTable, min_visibility: float) -> list[ClassSubset]:
    """The MOT16/17 evaluation of class 1."""
    return _pedestrians(gt, pred, min_visibility, MOT17_DISTRACTORS)


@CLASS_MODES.register("mot20", summary="MOT20 conventions: as pedestrian, non-MOT vehicles "
                      "(6) are distractors too")
def mot20(gt: MotTable, pred: MotTable, min_visibility: float) -> list[ClassSubset]:
    """The MOT20 evaluation of class 1."""
    return _pedestrians(gt, pred, min_visibility, MOT20_DISTRACTORS)


@CLASS_MODES.register("all", summary="class-agnostic: every considered row against every "
                      "prediction")
def all_classes(gt: MotTable, pred: MotTable, min_visibility: float) -> list[ClassSubset]:
    """Every considered ground-truth row is a target, every prediction takes part."""
    nothing = np.zeros(len(gt), dtype=bool)
    return [ClassSubset("all", _roles(_considered(gt), nothing, gt, min_visibility),
                        np.ones(len(pred), dtype=bool))]


@CLASS_MODES.register("each", summary="one evaluation per class (predictions carry classes "
                      "in column 8), combined over classes by summing counts")
def each_class(gt: MotTable, pred: MotTable, min_visibility: float) -> list[ClassSubset]:
    """Class k's considered rows against class k's predictions, for every class either has."""
    for table, what in ((gt, "ground truth"), (pred, "prediction")):
        bad = table.classes < 0
        if bad.any():
            k = int(np.argmax(bad))
            raise EvalInputError(f"{table.path}: line {table.line[k]}: the {what} has no class "
                                 f"(column 8 missing or -1); --mot-classes each needs classes")
    considered = _considered(gt)
    subsets = []
    nothing = np.zeros(len(gt), dtype=bool)
    for cls in np.union1d(gt.classes, pred.classes).tolist():
        mine = gt.classes == cls
        roles = _roles(mine & considered, nothing, gt, min_visibility)
        roles[~mine] = ABSENT
        subsets.append(ClassSubset(str(cls), roles, pred.classes == cls))
    return subsets


def resolve_class_mode(name: str, ground_truths: Sequence[MotTable]) -> str:
    """The class mode to use: ``name`` itself, or for ``auto``: ``pedestrian`` when the ground
    truth marks rows of classes other than 1 as not considered (flag 0), as MOTChallenge files
    do, else ``all``. ``UsageError`` for an unknown name."""
    if name != AUTO:
        if name not in CLASS_MODES:
            raise UsageError(f"--mot-classes must be {AUTO} or one of "
                             f"{', '.join(CLASS_MODES.names())}, got {name!r}")
        return name
    for gt in ground_truths:
        if np.any((gt.classes > 1) & ~_considered(gt)):
            return "pedestrian"
    return "all"


@dataclass(frozen=True)
class FrameRange:
    """The frames scored: ``start``..``end`` (inclusive, from 1; ``None``: the last), every
    ``step``-th from ``start`` - the frames ``detseg track --start/--end/--vid-stride`` ran."""

    start: int = 1
    end: int | None = None
    step: int = 1

    @classmethod
    def parse(cls, text: str) -> FrameRange:
        """``START:END:STEP`` (any part may be empty: 1, the last frame, 1); ``UsageError``
        naming ``--mot-frames`` for anything else."""
        parts = text.split(":")
        try:
            if len(parts) > 3:
                raise ValueError
            values = [int(p) if p.strip() else None for p in parts] + [None] * (3 - len(parts))
        except ValueError:
            raise UsageError(f"--mot-frames must be START:END:STEP (whole numbers), got "
                             f"{text!r}") from None
        start, end, step = (1 if values[0] is None else values[0], values[1],
                            1 if values[2] is None else values[2])
        if start < 1 or step < 1 or (end is not None and end < start):
            raise UsageError(f"--mot-frames {text!r}: frames count from 1, END must not be "
                             f"before START and STEP must be at least 1")
        return cls(start, end, step)

    def mask(self, frames: np.ndarray) -> np.ndarray:
        """Bool ``[N]``: which of ``frames`` (int ``[N]``) are scored."""
        last = np.inf if self.end is None else self.end
        return (frames >= self.start) & (frames <= last) & ((frames - self.start) % self.step == 0)
