"""``detseg eval --mot GT --predictions PRED``: tracking metrics (HOTA, CLEAR MOT, identity) of
MOTChallenge files, TrackEval's numbers. Imports numpy and scipy only (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .console import console, fail, print_json, print_table, warn

MOT_CLASSES_HELP = (
    "With --mot: which ground-truth classes are evaluated. auto (default): pedestrian for "
    "MOTChallenge ground truth (classes other than 1 marked not considered), else all; "
    "pedestrian: MOT17 conventions (class 1; distractors 2, 7, 8, 12 remove the predictions "
    "on them); mot20: the same with 6 a distractor too; all: class-agnostic; each: per class "
    "(predictions carry classes in column 8), combined by summing counts.")
MOT_VISIBILITY_HELP = ("With --mot: targets less visible than this (column 9, 0-1) become "
                       "distractors (neither missed nor false positives).")
MOT_FRAMES_HELP = ("With --mot: score only frames FIRST:LAST:STEP (from 1, LAST inclusive; "
                   "empty parts: 1, last, 1), e.g. 100:400:2 after `detseg track --start 100 "
                   "--end 400 --vid-stride 2`.")


def mot_command(gt: Path, predictions: Path | None, classes: str, min_visibility: float,
                frames: str | None, out: Path | None, as_json: bool,
                other_flags: dict[str, Any]) -> None:
    """Evaluate, write ``metrics.json`` and ``per_sequence.csv``, print the tables; exit 1 when
    a sequence failed, had no prediction file, or a prediction file had no sequence."""
    from detseg.errors import DetsegError, UsageError
    from detseg.eval.mot import FrameRange, evaluate_mot
    from detseg.eval.mot.tables import metrics_json, mot_tables, write_mot_files
    from detseg.runs import new_run_dir

    for flag, value in other_flags.items():
        if value is not None:
            fail(f"--mot evaluates tracking files: {flag} does not apply")
    if predictions is None:
        fail("--mot needs --predictions (a MOT text file, or a folder of <seq>.txt files)")
    try:
        selection = FrameRange.parse(frames) if frames is not None else None
        evaluation = evaluate_mot(gt, predictions, classes, min_visibility, selection)
    except UsageError as err:
        fail(str(err))
    except DetsegError as err:
        fail(str(err), code=1)
    for name, message in evaluation.failed.items():
        warn(f"sequence {name} not evaluated: {message}")
    for line in evaluation.warnings:
        warn(line)
    if not evaluation.results:
        fail("no sequence could be evaluated", code=1)
    metrics = metrics_json(evaluation)
    try:
        out_dir = new_run_dir("eval", out=out)
        written = write_mot_files(metrics, out_dir)
    except UsageError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write the results ({err})", code=1)
    if as_json:
        print_json(metrics)
    else:
        for title, columns, rows in mot_tables(metrics):
            print_table(title, columns, rows)
        console.print(f"{len(evaluation.sequences)} sequences ({evaluation.class_mode}), wrote "
                      f"{', '.join(p.name for p in written)} to {out_dir}", highlight=False)
    if evaluation.failed or evaluation.warnings:
        raise typer.Exit(1)
