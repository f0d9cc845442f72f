"""Training curves: one small plot per loss and metric column of ``results.csv``, as a PNG."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

# Metric columns worth a panel; the others (AR, per-size AP, counts) stay in results.csv.
MAIN_METRICS = ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "mIoU", "mDice", "pixel_acc")


def plot_results(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Plot the ``train/`` and ``val/`` losses and the main ``metrics/`` columns of ``history``
    (``MAIN_METRICS``) against the epoch.

    Training and validation curves of the same loss share a panel. Returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    panels: dict[str, list[str]] = {}
    for row in history:
        for key in row:
            prefix, _, name = key.partition("/")
            if prefix in ("train", "val"):
                panels.setdefault(f"loss: {name}", [])
                if key not in panels[f"loss: {name}"]:
                    panels[f"loss: {name}"].append(key)
            elif prefix == "metrics" and name in MAIN_METRICS:
                panels.setdefault(name, [key])
    n = max(1, len(panels))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels.items(), strict=False):
        for key in keys:
            ys = [row.get(key, math.nan) for row in history]
            ax.plot(epochs, ys, marker=".", label=key.split("/")[0])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_results_csv(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """One row per epoch (every key any row has, in first-seen order), written atomically."""
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    tmp.replace(path)
    return path
