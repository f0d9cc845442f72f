"""Validation during training: losses on the validation split, and the task metrics exactly as
``detseg eval`` computes them (same adapter, same scorer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from detseg.engine.loading import SkippingDataset, collate_skipping
from detseg.eval.runner import run_scorer
from detseg.prediction import Scorer
from detseg.tasks import InferenceSettings, TaskAdapter, float_image


def flat_metrics(raw: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of a scorer's result (``bbox_AP``, ``mIoU``, ...)."""
    return {k: float(v) for k, v in raw.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


@torch.no_grad()
def validation_losses(model: nn.Module, adapter: TaskAdapter, dataset: Any,
                      indices: Sequence[int], batch_size: int, device: torch.device,
                      use_amp: bool = False) -> tuple[dict[str, float], int]:
    """Mean loss terms (and their sum, ``loss``) over ``indices`` of ``dataset``, and the
    number of images. Detectors only give losses in train mode: the model is put in train
    mode with its BatchNorm layers in eval mode, so nothing it holds changes."""
    sums: dict[str, float] = {}
    n = 0
    data = SkippingDataset(dataset)
    with torch.random.fork_rng(devices=[]):
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        for start in range(0, len(indices), batch_size):
            batch = collate_skipping([data[j] for j in indices[start:start + batch_size]])
            if not batch.images:
                continue
            images = [float_image(im, device) for im in batch.images]
            with torch.autocast(device.type, enabled=use_amp):
                losses = adapter.loss(model, images, batch.targets)
            size = len(batch.images)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v) * size
            sums["loss"] = sums.get("loss", 0.0) + float(sum(losses.values())) * size
            n += size
    return {k: v / max(n, 1) for k, v in sums.items()}, n


def validation_scorer(model: nn.Module, adapter: TaskAdapter, dataset: Any,
                      indices: Sequence[int], batch_size: int,
                      device: torch.device) -> Scorer:
    """The adapter's scorer filled with the predictions for ``indices`` of ``dataset``."""
    scorer = adapter.scorer(dataset)
    settings = InferenceSettings()
    adapter.configure(model, settings)
    run_scorer(model, dataset, scorer, indices, batch_size, device, adapter=adapter,
               settings=settings)
    return scorer
