"""Evaluation plots as PNG files: COCO precision/recall curves and confusion matrices.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend change),
so plotting works headless and in threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detseg.eval.coco_map import COCOMetrics

_LEGEND_MAX = 20  # classes listed in a legend; beyond that only the mean is labeled


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def pr_curves(metrics: COCOMetrics) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Precision over recall thresholds, per class, at IoU 0.5 and averaged over 0.5:0.95.

    Returns ``{"0.5": (recall [R], {name: precision [R]}), "0.5:0.95": ...}`` for all areas and
    the most detections; classes without ground truth are left out.
    """
    prec = metrics.precision[:, :, :, 0, -1]                        # [T, R, K]
    out = {}
    for label, rows in (("0.5", prec[:1]), ("0.5:0.95", prec)):
        curves = {}
        for k, name in enumerate(metrics.category_names):
            p = rows[:, :, k]
            if (p > -1).any():
                curves[name] = np.where(p > -1, p, np.nan).mean(axis=0)
        out[label] = (metrics.recall_thresholds, curves)
    return out


def plot_pr_curves(metrics: COCOMetrics, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Write ``{prefix}pr_curve_iou50.png`` and ``{prefix}pr_curve_iou50-95.png``.

    Each shows one thin line per class (labeled with its AP when there are at most 20 classes)
    and the mean over classes in bold, labeled with the mAP.
    """
    paths = []
    for label, (recall, curves) in pr_curves(metrics).items():
        fig = Figure(figsize=(6.4, 4.8))
        ax = fig.add_subplot()
        for name, p in curves.items():
            ax.plot(recall, p, linewidth=1, alpha=0.6,
                    label=f"{name} {np.mean(p):.3f}" if len(curves) <= _LEGEND_MAX else None)
        if curves:
            mean = np.mean(np.stack(list(curves.values())), axis=0)
            ax.plot(recall, mean, color="black", linewidth=2.5,
                    label=f"all classes {np.mean(mean):.3f}")
            ax.legend(fontsize="small", loc="lower left")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{metrics.iou_type} precision-recall, IoU {label}")
        ax.grid(alpha=0.3)
        name = "iou50" if label == "0.5" else "iou50-95"
        paths.append(_save(fig, Path(out_dir) / f"{prefix}pr_curve_{name}.png"))
    return paths


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | Path,
                          normalize: bool = True) -> Path:
    """Heatmap of a ``C x C`` confusion matrix (rows truth, columns prediction).

    With ``normalize`` each row is divided by its total (rows without pixels stay 0), so the
    diagonal shows per-class accuracy. Cell values are printed when ``C <= 20``.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if normalize:
        totals = m.sum(axis=1, keepdims=True)
        m = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
    c = len(class_names)
    side = min(4 + 0.45 * c, 24)
    fig = Figure(figsize=(side, side * 0.85))
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(c), labels=class_names, rotation=90 if c > 8 else 0)
    ax.set_yticks(range(c), labels=class_names)
    ax.set(xlabel="predicted", ylabel="true",
           title="confusion matrix" + (" (row-normalized)" if normalize else ""))
    if c <= 20:
        fmt = "{:.2f}" if normalize else "{:.0f}"
        for i in range(c):
            for j in range(c):
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > 0.6 * max(m.max(), 1e-12) else "black")
    fig.tight_layout()
    return _save(fig, Path(path))
