"""Run a detseg model over a detseg dataset and score it (training validation and ``detseg eval``).

The model is fed through its task adapter (``detseg.tasks``), exactly as ``detseg detect`` /
``detseg segment`` feed it, on the dataset's ORIGINAL images (build the dataset without resizing
transforms): detections come back in image coordinates, semantic maps at the image's own
resolution, and the adapter's scorer compares them with the targets there. Images are batched
only with images of the same batch key (``TaskAdapter.batch_key``), so the metrics do not
depend on ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detseg.eval.scorers import BACKENDS, score_detections
from detseg.prediction import Prediction, Scorer
from detseg.tasks import InferenceSettings, TaskAdapter, float_image, task_adapter

__all__ = ["BACKENDS", "evaluate_model", "run_scorer", "score_detections"]

Progress = Callable[[int, int], None]
Observer = Callable[[Prediction, dict], None]


def run_scorer(model: nn.Module, dataset: Any, scorer: Scorer, indices: Iterable[int],
               batch_size: int = 8, device: str | torch.device = "cpu",
               progress: Progress | None = None, adapter: TaskAdapter | None = None,
               settings: InferenceSettings | None = None,
               observer: Observer | None = None) -> int:
    """Predict the samples ``indices`` of ``dataset`` and add them to ``scorer``.

    Returns the number of images scored. ``progress(done, total)`` follows every forward pass;
    ``observer(prediction, target)``, when given, sees every image after the scorer (the
    report's per-image records).
    """
    device = torch.device(device)
    adapter = adapter or task_adapter(model)
    settings = settings or InferenceSettings()
    indices = list(indices)
    batch_size = max(1, int(batch_size))
    pending: dict[Any, list[tuple[torch.Tensor, dict]]] = {}
    done = 0

    def flush(key: Any) -> None:
        nonlocal done
        items = pending.pop(key)
        predictions = adapter.predict(model, [im for im, _ in items], settings)
        for prediction, (_, target) in zip(predictions, items, strict=True):
            scorer.update(prediction, target)
            if observer is not None:
                observer(prediction, target)
        done += len(items)
        if progress is not None:
            progress(done, len(indices))

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for index in indices:
                image, target = dataset[index]
                image = float_image(image, device)
                key = adapter.batch_key(int(image.shape[-2]), int(image.shape[-1]),
                                        settings.imgsz)
                pending.setdefault(key, []).append((image, target))
                if len(pending[key]) >= batch_size:
                    flush(key)
                elif sum(len(v) for v in pending.values()) >= 2 * batch_size:
                    flush(max(pending, key=lambda k: len(pending[k])))
            for key in list(pending):
                flush(key)
    finally:
        model.train(was_training)
    return done


def evaluate_model(model: nn.Module, dataset: Any, batch_size: int = 8,
                   device: str | torch.device = "cpu", max_images: int | None = None,
                   progress: Progress | None = None, iou_types: tuple[str, ...] | None = None,
                   backend: str = "detseg", imgsz: int | None = None,
                   out_dir: Path | None = None, plots: bool = True,
                   observer: Observer | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (with a ``.spec``) on the first ``max_images`` images of ``dataset``.

    Returns the scorer's ``compute()`` plus ``num_images``:
        ``metrics``: the ``metrics.json`` structure (``{"bbox": {AP, AP50, ...}, "segm": ...,
            "per_class": ...}`` for detection/instance models; ``{"pixel_acc", "mean_acc",
            "mIoU", "fwIoU", "mDice", "per_class"}`` for semantic ones, accumulated over the
            dataset at each image's original resolution);
        flat numbers: ``bbox_AP``, ... ``segm_AP``, ... or ``pixel_acc``, ``mIoU``, ...;
        ``predictions``: COCO results (detection/instance; empty for semantic);
        ``details``: ``{"bbox": COCOMetrics, ...}`` or ``{"confusion_matrix", "class_names"}``;
        ``ground_truth``: the COCO ground truth scored (detection/instance; the images run).
    ``iou_types`` defaults to ``bbox`` (+ ``segm`` for instance models); ``imgsz`` overrides the
    model's inference size. With ``out_dir`` the result is also written there (metrics.json,
    per_class.csv, plots, predictions.json): ``written`` lists the files and ``tables`` holds
    ``(title, columns, rows)`` summaries to show. ``observer`` is passed to ``run_scorer``.
    """
    adapter = task_adapter(model)
    settings = InferenceSettings(imgsz=imgsz)
    adapter.configure(model, settings)
    scorer = adapter.scorer(dataset, iou_types, backend)
    n = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    run_scorer(model, dataset, scorer, range(n), batch_size, device, progress, adapter, settings,
               observer)
    out = scorer.compute()
    out["num_images"] = n
    if out_dir is not None:
        out["written"] = scorer.write(out, out_dir, plots)
        out["tables"] = scorer.tables(out)
    return out


def merged_compute(scorer: Scorer, states: Sequence[Any]) -> dict[str, Any]:
    """``scorer.compute()`` after merging the ``state()`` of every other rank's scorer."""
    for state in states:
        scorer.merge(state)
    return scorer.compute()
