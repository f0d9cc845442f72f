"""Validation during training: the task metrics exactly as ``detseg eval`` computes them (same
adapter, same scorer, images batched by the adapter's batch key as ``eval`` batches them) and,
optionally, the loss terms on the validation split.

Losses over the whole split cost about as much as the metrics' forward passes, so they run
only when asked (``TrainConfig.val_loss``) or when they are the only validation
(``eval_interval`` 0, where they pick ``best.pt``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from detseg.engine import distributed as ddp
from detseg.engine.loading import SkippingDataset, collate_skipping, shard_indices
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
    mode with its BatchNorm layers in eval mode, so nothing it holds changes; the random
    generators are restored afterwards, so the run does not depend on whether losses ran."""
    sums: dict[str, float] = {}
    n = 0
    data = SkippingDataset(dataset)
    was_training = model.training
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
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
    model.train(was_training)
    return {k: v / max(n, 1) for k, v in sums.items()}, n


def validation_scorer(model: nn.Module, adapter: TaskAdapter, dataset: Any,
                      indices: Sequence[int], batch_size: int,
                      device: torch.device) -> Scorer:
    """The adapter's scorer filled with the predictions for ``indices`` of ``dataset``
    (batched as ``detseg eval`` batches: images of one batch key together)."""
    scorer = adapter.scorer(dataset)
    settings = InferenceSettings()
    adapter.configure(model, settings)
    run_scorer(model, dataset, scorer, indices, batch_size, device, adapter=adapter,
               settings=settings)
    return scorer


class Validation:
    """The validation of one training run: metrics every ``eval_interval`` epochs, losses when
    ``losses`` is on; under DDP every rank takes its share of the images.

    ``dataset`` is the validation split at its original image sizes (metrics are scored
    there); ``loss_transforms`` resize it as training does, for the losses.
    """

    def __init__(self, adapter: TaskAdapter, dataset: Any, loss_transforms: Any,
                 batch_size: int, device: torch.device, dist: ddp.DistInfo, losses: bool,
                 max_images: int | None = None, use_amp: bool = False) -> None:
        self.adapter, self.dataset, self.batch_size = adapter, dataset, batch_size
        self.device, self.dist, self.losses, self.use_amp = device, dist, losses, use_amp
        self.max_images = max_images
        self.loss_set = copy.copy(dataset)
        self.loss_set.transforms = loss_transforms

    def loss_row(self, model: nn.Module) -> dict[str, float]:
        """``val/<term>`` mean losses over the split (all ranks' images); empty when off."""
        if not self.losses:
            return {}
        indices = shard_indices(len(self.loss_set), self.dist.rank, self.dist.world_size)
        means, n = validation_losses(model, self.adapter, self.loss_set, indices,
                                     self.batch_size, self.device, self.use_amp)
        means = ddp.reduce_mean(means, float(n), self.device)
        return {f"val/{k}": v for k, v in means.items()}

    def metric_row(self, model: nn.Module) -> dict[str, float]:
        """``metrics/<name>`` task metrics on the first ``max_images`` images; under DDP every
        rank scores its share and rank 0 merges the scorers."""
        n = len(self.dataset) if self.max_images is None else \
            min(self.max_images, len(self.dataset))
        indices = shard_indices(n, self.dist.rank, self.dist.world_size)
        scorer = validation_scorer(model, self.adapter, self.dataset, indices,
                                   self.batch_size, self.device)
        if not self.dist.enabled:
            metrics = flat_metrics(scorer.compute())
        else:
            states = ddp.gather_objects(scorer.state())
            metrics = {}
            if self.dist.is_main:
                for state in states[1:]:
                    scorer.merge(state)
                metrics = flat_metrics(scorer.compute())
            metrics = ddp.gather_objects(metrics)[0]
        return {f"metrics/{k}": v for k, v in metrics.items()}
