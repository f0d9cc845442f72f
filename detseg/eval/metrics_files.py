"""What an evaluation writes into its run folder, and the tables it shows.

``metrics.json`` (the structure documented in ``detseg.eval.runner.evaluate_model``),
``per_class.csv``, the plots (PR curves per IoU type, or the pixel confusion matrix) and, for
detection models, ``predictions.json`` (COCO results). Used by ``detseg eval`` and by the
scorers; only the command prints the tables.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

Table = tuple[str | None, list[str], list[list[Any]]]


def _fmt(value: float | None) -> str:
    return "-" if value is None or value < 0 else f"{value:.4f}"


def write_detection_files(metrics: dict[str, Any], evals: dict[str, Any], out_dir: Path,
                          plots: bool = True,
                          predictions: list[dict] | None = None) -> list[Path]:
    """Write the detection metrics files into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json", out_dir / "per_class.csv"]
    written[0].write_text(json.dumps(metrics, indent=2))
    types = [t for t in ("bbox", "segm") if t in evals]
    with open(written[1], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", *(f"{t}_AP" for t in types)])
        for name, row in metrics["per_class"].items():
            writer.writerow([name, *(row[t] for t in types)])
    if predictions is not None:
        path = out_dir / "predictions.json"
        path.write_text(json.dumps(predictions))
        written.append(path)
    if plots:
        from detseg.eval.plots import plot_pr_curves

        for t in types:
            written += list(plot_pr_curves(evals[t], out_dir, prefix=f"{t}_"))
    return written


def detection_tables(metrics: dict[str, Any], evals: dict[str, Any]) -> list[Table]:
    """The summary numbers per IoU type, and AP per class."""
    types = [t for t in ("bbox", "segm") if t in evals]
    first = evals[types[0]]
    return [(None, ["metric", *types],
             [[key, *(_fmt(metrics[t][key]) for t in types)] for key in first.stats]),
            ("per class AP@[.5:.95]", ["class", *types],
             [[name, *(_fmt(row[t]) for t in types)]
              for name, row in metrics["per_class"].items()])]


def write_semantic_files(metrics: dict[str, Any], details: dict[str, Any], out_dir: Path,
                         plots: bool = True) -> list[Path]:
    """Write the per-pixel metrics files into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json", out_dir / "per_class.csv"]
    written[0].write_text(json.dumps(metrics, indent=2))
    with open(written[1], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "IoU", "acc", "Dice", "pixels"])
        for name, row in metrics["per_class"].items():
            writer.writerow([name, *("" if row[k] is None else row[k]
                                     for k in ("IoU", "acc", "Dice")), row["pixels"]])
    if plots:
        from detseg.eval.plots import plot_confusion_matrix

        path = out_dir / "confusion_matrix.png"
        plot_confusion_matrix(details["confusion_matrix"], details["class_names"], path)
        written.append(path)
    return written


def semantic_tables(metrics: dict[str, Any]) -> list[Table]:
    """The dataset-level pixel metrics, and IoU / accuracy / Dice per class."""
    return [(None, ["metric", "value"],
             [[k, f"{metrics[k]:.4f}"] for k in ("pixel_acc", "mean_acc", "mIoU", "fwIoU",
                                                 "mDice")]),
            ("per class", ["class", "IoU", "acc", "Dice", "pixels"],
             [[name, _fmt(row["IoU"]), _fmt(row["acc"]), _fmt(row["Dice"]), row["pixels"]]
              for name, row in metrics["per_class"].items()])]
