"""What a tracking evaluation writes (``metrics.json``, ``per_sequence.csv``) and the tables the
command shows.

``metrics.json``::

    {"units": ..., "class_mode": "pedestrian", "min_visibility": 0.0,
     "combined": {"HOTA": 0.71, "DetA": ..., "AssA": ..., "MOTA": ..., "IDF1": ..., "IDSW": 3,
                  ...},
     "sequences": {"<seq>": {same keys}},          # each sequence, all its classes together
     "classes": {"<label>": {same keys}},          # each class, all sequences together
     "sequence_classes": {"<seq>": {"<label>": {same keys}}},   # --mot-classes each only
     "per_alpha": {"alpha": [0.05, ...], "HOTA": [...], ...},   # combined, per alpha
     "failed": {"<seq>": "why"}, "warnings": [...]}
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .evaluate import MotEvaluation, SequenceResult, alpha_curves, summarise

UNITS = ("HOTA, DetA, AssA, LocA, DetRe, DetPr, AssRe, AssPr, MOTA, MOTP, MODA, CLR_Re, "
         "CLR_Pr, IDF1, IDP, IDR are fractions 0-1 (MOTA and MODA can be negative; HOTA and "
         "its parts are averaged over alpha 0.05..0.95); IDSW, Frag, MT, PT, ML, TP, FP, FN, "
         "IDTP, IDFN, IDFP, GT_dets, GT_ids are counts")
#: the columns of the two printed tables (metrics.json and the CSV have them all)
HOTA_COLUMNS = ["HOTA", "DetA", "AssA", "LocA", "IDF1", "IDP", "IDR"]
CLEAR_COLUMNS = ["MOTA", "MOTP", "IDSW", "Frag", "MT", "PT", "ML", "FP", "FN"]
Table = tuple[str, list[str], list[list[Any]]]


def _of(evaluation: MotEvaluation, sequence: str | None = None,
        label: str | None = None) -> list[SequenceResult]:
    return [r for r in evaluation.results if (sequence is None or r.sequence == sequence)
            and (label is None or r.label == label)]


def metrics_json(evaluation: MotEvaluation) -> dict[str, Any]:
    """The ``metrics.json`` structure (see the module docstring)."""
    metrics: dict[str, Any] = {
        "units": UNITS, "class_mode": evaluation.class_mode,
        "min_visibility": evaluation.min_visibility,
        "combined": summarise(evaluation.results),
        # a sequence's row combines its classes only in the each mode
        "sequences": {s: summarise(_of(evaluation, s), single=evaluation.class_mode != "each")
                      for s in evaluation.sequences},
        "classes": {c: summarise(_of(evaluation, label=c)) for c in evaluation.labels},
    }
    if evaluation.class_mode == "each":
        metrics["sequence_classes"] = {
            s: {r.label: summarise([r], single=True) for r in _of(evaluation, s)}
            for s in evaluation.sequences}
    metrics["per_alpha"] = alpha_curves(evaluation.results)
    metrics["failed"] = dict(evaluation.failed)
    metrics["warnings"] = list(evaluation.warnings)
    return metrics


def _rows(metrics: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(sequence, class, metrics)``: each sequence, each class with more than one, and the
    combined row."""
    labels = list(metrics["classes"])
    overall = labels[0] if len(labels) == 1 else "all"
    rows = [(s, overall, m) for s, m in metrics["sequences"].items()]
    for s, per_class in metrics.get("sequence_classes", {}).items():
        rows += [(s, c, m) for c, m in per_class.items()]
    if len(labels) > 1:
        rows += [("COMBINED", c, m) for c, m in metrics["classes"].items()]
    return rows + [("COMBINED", overall, metrics["combined"])]


def write_mot_files(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``metrics.json`` and ``per_sequence.csv`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "metrics.json", out_dir / "per_sequence.csv"
    json_path.write_text(json.dumps(metrics, indent=2))
    keys = list(metrics["combined"])
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sequence", "class", *keys])
        for sequence, label, values in _rows(metrics):
            writer.writerow([sequence, label, *(values[k] for k in keys)])
    return [json_path, csv_path]


def _cell(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def mot_tables(metrics: dict[str, Any]) -> list[Table]:
    """The HOTA / identity table and the CLEAR table: a row per sequence (and class), and the
    combined row."""
    rows = _rows(metrics)
    several = len(metrics["classes"]) > 1
    head = ["sequence", "class"] if several else ["sequence"]

    def table(title: str, columns: list[str]) -> Table:
        return (title, head + columns,
                [[s, *([c] if several else []), *(_cell(m[k]) for k in columns)]
                 for s, c, m in rows])

    mode = metrics["class_mode"]
    return [table(f"HOTA and identity (--mot-classes {mode}; fractions 0-1)", HOTA_COLUMNS),
            table("CLEAR MOT (MOTA, MOTP fractions; the rest counts)", CLEAR_COLUMNS)]
