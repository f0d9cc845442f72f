"""The training loop of ``detseg train``: every family, transfer learning, exact resume, DDP.

``Trainer(config, out_dir).fit()`` trains on a dataset built by ``detseg.data.build_dataset``
and writes into ``out_dir``: ``last.pt`` (full state, every epoch and on interruption),
``best.pt`` (weights, spec and metrics of the best epoch), ``results.csv`` (one row per epoch)
and ``results.png`` (curves). ``Trainer.resume(path)`` continues a run from its ``last.pt``.

The library never prints: progress and notices go to ``TrainCallback`` objects.
Repeatability: every random generator is reseeded from ``(seed, epoch, rank)`` at each epoch
start and the shuffling order only depends on those, so on CPU a run interrupted at an optimizer
step and resumed ends bit-for-bit where the uninterrupted run ends (with ``workers=0``; with
worker processes, epochs resumed from their start are exact too).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from detseg.data.mosaic import MosaicDataset
from detseg.engine import distributed as ddp
from detseg.engine.checkpointing import (
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seed_everything,
    spec_for_dataset,
)
from detseg.engine.curves import write_results_csv
from detseg.engine.device import select_device
from detseg.engine.ema import ModelEMA
from detseg.engine.interrupts import ignore_sigint, stop_on_sigint
from detseg.engine.loading import (
    Batch,
    ResumableSampler,
    SkippingDataset,
    collate_skipping,
)
from detseg.engine.optim import build_optimizer, build_scheduler, param_groups, restore_schedule
from detseg.engine.train_config import TrainCallback, TrainConfig, TrainResult
from detseg.engine.transfer import (
    FrozenBatchNormGuard,
    find_backbone,
    freeze_stages,
    inherited_options,
    load_transfer_weights,
    resolve_transfer_weights,
)
from detseg.engine.validation import Validation
from detseg.errors import DatasetError, NonFiniteLossError, UsageError
from detseg.models.loading import checkpoint_spec, model_task, training_weights
from detseg.spec import model_spec
from detseg.tasks import TASK_ADAPTERS, float_image, task_adapter, total_loss

__all__ = ["TrainCallback", "TrainConfig", "TrainResult", "Trainer"]


class _StopRequested(Exception):
    """Raised inside the epoch loop after the state at an optimizer step has been saved."""


class Trainer:
    """Trains one model on one dataset; see the module docstring for what it writes."""

    def __init__(self, config: TrainConfig, out_dir: str | Path,
                 callbacks: Sequence[TrainCallback] = (), resume_state: dict | None = None,
                 handle_sigint: bool = True) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.dist = ddp.dist_info_from_env()
        self.callbacks = list(callbacks) if self.dist.is_main else []
        self.handle_sigint = handle_sigint
        self._stop = threading.Event()
        config.validate()
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = select_device(config.device, self.dist.local_rank)
        ddp.init_distributed(self.dist, self.device)
        seed_everything(config.seed)
        self._build_data()
        self._build_model()
        self._build_optimization()
        self.start_epoch = 0
        self.start_batch = 0
        self.history: list[dict[str, float]] = []
        self.best_fitness: float | None = None
        self.best_epoch: int | None = None
        self.bad_total = 0
        self._resume_rng: dict | None = None
        if resume_state is not None:
            self._load_state(resume_state)

    # ---------------------------------------------------------------- construction
    def _message(self, text: str) -> None:
        for cb in self.callbacks:
            cb.on_message(text)

    def _build_data(self) -> None:
        from detseg.data import build_dataset

        cfg = self.config
        self.task = model_task(cfg.model, cfg.weights)
        if cfg.crop and not TASK_ADAPTERS.get(self.task).builder.pixel_targets:
            raise UsageError("crop only applies to models with per-pixel targets (semantic)")
        # The training transforms need the model's input size: set in _build_model. The
        # validation images stay as they are; the task adapter resizes them, as in `eval`.
        self.train_set = build_dataset(cfg.dataset, cfg.data_root, split=cfg.train_split,
                                       task=self.task, **cfg.dataset_options)
        self.val_set = build_dataset(cfg.dataset, cfg.data_root, split=cfg.val_split,
                                     task=self.task, **cfg.dataset_options)
        for line in [*getattr(self.train_set, "warnings", []),
                     *getattr(self.val_set, "warnings", [])][:10]:
            self._message(line)
        self.class_names = list(self.train_set.class_names)
        self.category_ids = list(getattr(self.train_set, "category_ids", []) or [])
        self.sampler = ResumableSampler(len(self.train_set), cfg.seed, self.dist.rank,
                                        self.dist.world_size)
        self.batches_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.accumulate)

    def _build_model(self) -> None:
        from detseg.models import build_from_spec, build_model, make_spec

        cfg = self.config
        options = dict(cfg.model_options)
        if cfg.imgsz:
            options.setdefault("input_size", cfg.imgsz)
        self.start_weights = training_weights(cfg.model, cfg.weights)
        family, backbone = cfg.model, cfg.backbone
        if family is None and cfg.model_options and self.start_weights:  # rebuilt with them
            donor = checkpoint_spec(self.start_weights)
            family, backbone = donor.family, donor.backbone
        loaded = None
        if family is not None and self.start_weights:
            loaded = resolve_transfer_weights(self.start_weights, preset=family)
            # --model-option wins over what the checkpoint was built with
            options = {**inherited_options(loaded, family, backbone), **options}
        if family is None:
            seed_everything(cfg.seed)
            model = build_model(None, num_classes=len(self.class_names), weights=cfg.weights)
            spec = model_spec(model)
            self._message(f"started from {cfg.weights} ({spec.family}, {spec.backbone})")
        else:
            spec = make_spec(family, backbone, len(self.class_names), **options)
            # Seeded after the spec: looking up backbone facts may draw random numbers once.
            seed_everything(cfg.seed)
            model = build_from_spec(spec, pretrained_backbone=cfg.pretrained_backbone)
            if loaded is not None:
                for note in load_transfer_weights(model, loaded):
                    self._message(note)
        if cfg.roi_samples:
            sampler = getattr(getattr(model, "roi_heads", None), "fg_bg_sampler", None)
            if sampler is None:
                raise UsageError("--roi-samples only applies to Faster/Mask R-CNN models")
            sampler.batch_size_per_image = cfg.roi_samples
        self.spec = spec_for_dataset(spec, self.class_names, self.category_ids, cfg.imgsz)
        model.spec = self.spec  # type: ignore[assignment]  # a plain attribute (build_from_spec)
        self.adapter = task_adapter(self.spec)
        self._set_train_transforms()
        self.frozen_guard: FrozenBatchNormGuard | None = None
        if cfg.freeze:
            names, self.frozen_guard = freeze_stages(model, cfg.freeze)
            self._message(f"froze the first {cfg.freeze} backbone stages ({len(names)} tensors)")
        model.to(self.device)
        self.model = model
        self.ema = ModelEMA(model, cfg.ema_decay) if cfg.ema else None
        self.ddp_model: nn.Module = model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=not self.adapter.all_parameters_used,
            )

    def _set_train_transforms(self) -> None:
        """Augmentation of the training split; semantic images are resized to the model's
        input size first (so objects keep the scale evaluation gives them)."""
        from detseg.data.transforms import build_transforms

        cfg, imgsz = self.config, self.config.imgsz or self.spec.input_size
        if cfg.mosaic and not isinstance(self.train_set, MosaicDataset):
            self.train_set = MosaicDataset(self.train_set, imgsz, p=cfg.mosaic)
        self.train_set.transforms = build_transforms(cfg.augment, train=True, task=self.task,
                                                     imgsz=imgsz, crop=cfg.crop)
        # Validation losses see images as training does (metrics use the originals).
        self.validation = Validation(
            self.adapter, self.val_set,
            build_transforms("none", train=False, task=self.task, imgsz=imgsz),
            cfg.batch_size, self.device, self.dist, cfg.val_loss or cfg.eval_interval == 0,
            cfg.eval_max_images, cfg.amp and self.device.type == "cuda")

    def _build_optimization(self) -> None:
        cfg = self.config
        transfer = bool(self.start_weights or cfg.pretrained_backbone)
        scale = cfg.backbone_lr_scale
        if scale is None:
            scale = 0.1 if transfer else 1.0
        found = find_backbone(self.model)
        groups = param_groups(self.model, cfg.resolved_weight_decay(),
                              backbone_prefix=found[0] if found else None,
                              backbone_lr_scale=scale)
        self.optimizer = build_optimizer(cfg.optimizer, groups, cfg.resolved_lr(), cfg.momentum)
        total = self.steps_per_epoch * cfg.epochs
        warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, total, warmup,
                                         min_lr_ratio=cfg.min_lr_ratio)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    # ---------------------------------------------------------------- state
    def _state(self, epoch: int, batch: int) -> dict[str, Any]:
        """Training state after ``batch`` batches of ``epoch`` (batch 0: epoch not started)."""
        return {
            "epoch": epoch,
            "batch": batch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "train_args": self.config.to_dict(),
            "history": self.history,
            "best_fitness": self.best_fitness,
            "best_epoch": self.best_epoch,
            "bad_samples": self.bad_total,
            "world_size": self.dist.world_size,
            **({"ema": self.ema.state_dict()} if self.ema else {}),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        restore_schedule(self.optimizer, self.scheduler, state["scheduler"])
        self.history = list(state.get("history", []))
        self.best_fitness = state.get("best_fitness")
        self.best_epoch = state.get("best_epoch")
        self.bad_total = int(state.get("bad_samples", 0))
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.start_epoch = int(state["epoch"])
        self.start_batch = int(state["batch"])
        if self.start_batch:
            self._resume_rng = state["rng"]
        if state.get("world_size", 1) != self.dist.world_size:
            self._message("resuming with a different number of processes: the data order "
                          "differs from the original run")

    @classmethod
    def resume(cls, checkpoint: str | Path, epochs: int | None = None,
               callbacks: Sequence[TrainCallback] = (), overrides: dict | None = None,
               handle_sigint: bool = True) -> Trainer:
        """A trainer continuing the run that wrote ``checkpoint`` (its ``last.pt``).

        ``epochs`` larger than the original extends a finished run; ``overrides`` may change
        settings that do not affect the result (``device``, ``workers``, ``eval_max_images``,
        ``val_loss``).
        """
        from detseg.weights import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        config = TrainConfig.for_resume(ckpt.extra, str(checkpoint), epochs, overrides or {})
        state = dict(ckpt.extra, model=ckpt.state_dict)
        return cls(config, Path(checkpoint).parent, callbacks, resume_state=state,
                   handle_sigint=handle_sigint)

    def _save(self, name: str, extra: dict[str, Any], model: nn.Module | None = None) -> Path:
        from detseg.weights import save_checkpoint

        weights = (model or self.model).state_dict()
        return save_checkpoint(self.out_dir / name, weights, self.spec, **extra)

    def _save_last(self, epoch: int, batch: int) -> Path | None:
        if not self.dist.is_main:
            return None
        return self._save("last.pt", self._state(epoch, batch))

    # ---------------------------------------------------------------- steps
    def _forward_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The loss dict of one batch (model in train mode), from the task adapter."""
        images = [float_image(im, self.device) for im in batch.images]
        return self.adapter.loss(self.ddp_model, images, batch.targets)

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.frozen_guard is not None:
            self.frozen_guard.apply()

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        cfg = self.config
        self.sampler.set_epoch(epoch, start=start_batch * cfg.batch_size)
        gen = torch.Generator()
        gen.manual_seed(derive_seed(cfg.seed, epoch, self.dist.rank))
        return DataLoader(
            SkippingDataset(self.train_set), batch_size=cfg.batch_size, sampler=self.sampler,
            num_workers=cfg.workers, collate_fn=collate_skipping, generator=gen,
            worker_init_fn=ignore_sigint if cfg.workers else None,
            pin_memory=self.device.type == "cuda",
        )

    def _train_epoch(self, epoch: int, start_batch: int) -> tuple[dict[str, float], int]:
        """One epoch from ``start_batch``; returns mean training losses and bad-sample count."""
        cfg = self.config
        if start_batch and self._resume_rng is not None:
            restore_rng_state(self._resume_rng)
            self._resume_rng = None
        else:
            seed_everything(derive_seed(cfg.seed, epoch, self.dist.rank))
        if isinstance(self.train_set, MosaicDataset):
            self.train_set.enabled = epoch < cfg.epochs - cfg.close_mosaic
        self._set_train_mode()
        loader = self._loader(epoch, start_batch)
        nb = self.batches_per_epoch
        for cb in self.callbacks:
            cb.on_epoch_start(epoch, nb, start_batch)
        sums: dict[str, float] = {}
        count = 0
        bad = 0
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(loader, start=start_batch):
            bad += len(batch.bad)
            for sample in batch.bad:
                self._message(f"skipped sample {sample.ident}: {sample.reason}")
            self._check_bad_fraction(bad, epoch)
            step_now = (i + 1) % cfg.accumulate == 0 or i + 1 == nb
            if batch.images:
                losses = self._backward(batch, epoch, i)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            else:
                losses = {}
            if step_now:
                self._optimizer_step()
            for cb in self.callbacks:
                cb.on_batch_end(epoch, i, nb, {k: v / max(count, 1) for k, v in sums.items()},
                                self.optimizer.param_groups[0]["lr"])
            if step_now and self._stop.is_set() and i + 1 < nb:
                self._save_last(epoch, i + 1)
                raise _StopRequested
        means = {k: v / max(count, 1) for k, v in sums.items()}
        means = ddp.reduce_mean(means, float(count), self.device)
        return means, ddp.reduce_sum_int(bad, self.device)

    def _check_bad_fraction(self, bad: int, epoch: int) -> None:
        limit = self.config.max_bad_fraction * len(self.sampler)
        if bad > max(limit, 0):
            raise DatasetError(
                f"epoch {epoch + 1}: {bad} samples failed to load (more than "
                f"{self.config.max_bad_fraction:.0%} of {len(self.sampler)}); fix the dataset"
            )

    def _backward(self, batch: Batch, epoch: int, i: int) -> dict[str, float]:
        with torch.autocast(self.device.type, enabled=self.use_amp):
            loss_dict = self._forward_losses(batch)
        loss = total_loss(loss_dict)
        if not torch.isfinite(loss).all():
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
            where = self.out_dir / "last.pt"
            kept = f"the last good checkpoint is {where}" if where.exists() else \
                "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"epoch {epoch + 1}, batch {i + 1}: the loss is not finite ({parts}); "
                f"training stopped, {kept}. Try a lower --lr or check the labels"
            )
        self.scaler.scale(loss / self.config.accumulate).backward()
        out = {k: float(v.detach()) for k, v in loss_dict.items()}
        out["loss"] = float(loss.detach())
        return out

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.config.clip_grad > 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)

    # ---------------------------------------------------------------- loop
    def _sigint_saves(self) -> contextlib.AbstractContextManager:
        """First Ctrl-C: finish the optimizer step, save ``last.pt``, stop. Second: abort."""
        if not self.handle_sigint:
            return contextlib.nullcontext()
        return stop_on_sigint(self._stop, lambda: self._message(
            "interrupt: saving last.pt after this step (Ctrl-C again to abort)"))

    def request_stop(self) -> None:
        """Stop after the current optimizer step, saving ``last.pt`` (what Ctrl-C does)."""
        self._stop.set()

    def fitness(self, row: dict[str, float]) -> float | None:
        """The number ``best.pt`` maximises: the task metric (``None`` in an epoch without
        metrics), or minus the validation loss when metrics are off."""
        if self.config.eval_interval > 0:
            return row.get(f"metrics/{self.adapter.fitness_key}")
        return -row.get("val/loss", float("inf"))

    def fitness_key(self) -> str:
        return self.adapter.fitness_key if self.config.eval_interval > 0 else "-val/loss"

    def _metrics_due(self, epoch: int) -> bool:
        every = self.config.eval_interval
        return every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == self.config.epochs)

    def fit(self) -> TrainResult:
        """Train until ``config.epochs``, early stopping, or a stop request."""
        cfg = self.config
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        status = "completed"
        epoch = self.start_epoch
        with self._sigint_saves():
            try:
                for epoch in range(self.start_epoch, cfg.epochs):
                    status = self._run_epoch(epoch)
                    if status != "running":
                        break
                else:
                    status = "completed"
            except _StopRequested:
                status = "interrupted"
        ddp.barrier()
        result = self._result(status)
        if self.dist.is_main and self.history and cfg.plots:
            from detseg.engine.curves import plot_results

            plot_results(self.history, self.out_dir / "results.png")
        for cb in self.callbacks:
            cb.on_fit_end(result)
        return result

    def _run_epoch(self, epoch: int) -> str:
        cfg = self.config
        t0 = time.perf_counter()
        start = self.start_batch if epoch == self.start_epoch else 0
        train_losses, bad = self._train_epoch(epoch, start)
        self.bad_total += bad
        if bad:
            self._message(f"epoch {epoch + 1}: skipped {bad} samples that failed to load")
        for cb in self.callbacks:
            cb.on_validation_start(epoch)
        row: dict[str, float] = {"epoch": epoch + 1}
        row.update({f"train/{k}": v for k, v in train_losses.items()})
        scored = self.ema.module if self.ema is not None else self.model
        row.update(self.validation.loss_row(scored))
        if self._metrics_due(epoch):
            row.update(self.validation.metric_row(scored))
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["time_s"] = time.perf_counter() - t0
        self.history.append(row)
        fit = self.fitness(row)
        improved = fit is not None and (self.best_fitness is None or fit > self.best_fitness)
        if improved:
            self.best_fitness, self.best_epoch = fit, epoch + 1
        if self.dist.is_main:
            self._write_csv()
            self._save_last(epoch + 1, 0)
            if improved:
                self._save("best.pt", {"epoch": epoch + 1, "metrics": row,
                                       "train_args": cfg.to_dict()}, scored)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, row)
        if cfg.patience and self.best_epoch is not None \
                and epoch + 1 - self.best_epoch >= cfg.patience:
            self._message(f"early stop: no improvement of {self.fitness_key()} for "
                          f"{cfg.patience} epochs (best epoch {self.best_epoch})")
            return "early_stopped"
        if self._stop.is_set():
            return "interrupted"
        return "running"

    def _write_csv(self) -> None:
        write_results_csv(self.history, self.out_dir / "results.csv")

    def _result(self, status: str) -> TrainResult:
        best = self.out_dir / "best.pt"
        return TrainResult(
            out_dir=self.out_dir, status=status, epochs_done=len(self.history),
            best_epoch=self.best_epoch, best_fitness=self.best_fitness,
            fitness_key=self.fitness_key(), last_path=self.out_dir / "last.pt",
            best_path=best if best.exists() else None, history=self.history,
            bad_samples=self.bad_total,
        )

    def close(self) -> None:
        """Leave the DDP process group (call once, after ``fit``)."""
        ddp.shutdown_distributed()
