"""What a training run depends on (``TrainConfig``, the one source of training defaults), the
hooks it calls (``TrainCallback``) and how it ended (``TrainResult``).

The command line passes only the options a user gave; every default lives here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from detseg.data.transforms import PRESETS as AUGMENTS
from detseg.engine.optim import OPTIMIZERS, SCHEDULES
from detseg.errors import UsageError
from detseg.tasks import MAX_IMGSZ, MIN_IMGSZ


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in every checkpoint as ``train_args``).

    ``lr`` and ``weight_decay`` default per optimizer (SGD 0.01 / 1e-4, AdamW 0.001 / 0.05);
    ``backbone_lr_scale`` defaults to 0.1 when starting from pretrained weights, else 1.0.
    ``warmup_epochs`` may be fractional. ``crop`` (semantic models only) trains on random
    ``crop`` x ``crop`` windows at full resolution while the model's input size stays ``imgsz``.
    ``max_bad_fraction`` is the share of samples of one
    epoch allowed to fail loading before the run stops. ``roi_samples`` sets how many proposals
    per image the R-CNN box head samples while training (torchvision's 512); fewer is cheaper,
    and inference is unchanged. Validation metrics are computed every ``eval_interval`` epochs
    and after the last one (``0``: never, validation losses only). ``val_loss`` adds the loss
    terms on the validation split to every epoch (``val/`` columns of ``results.csv``); off by
    default, as they cost about one more pass over the split; always on when
    ``eval_interval`` is 0, where they pick ``best.pt``. ``ema`` keeps an exponential moving
    average of the weights (decay ``ema_decay``, ramped up over the first 2000 steps): it is
    what validation scores and what ``best.pt`` holds. ``mosaic`` is the probability that a
    detection training sample is a four-image mosaic (0: off), switched off for the last
    ``close_mosaic`` epochs.
    """

    model: str | None
    dataset: str
    data_root: str
    backbone: str | None = None
    epochs: int = 30
    batch_size: int = 8
    imgsz: int | None = None
    crop: int | None = None
    lr: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    clip_grad: float = 10.0
    seed: int = 0
    augment: str = "light"
    workers: int = 0
    weights: str | None = None
    pretrained_backbone: bool = False
    freeze: int = 0
    backbone_lr_scale: float | None = None
    accumulate: int = 1
    patience: int = 0
    amp: bool = True
    device: str = "auto"
    train_split: str = "train"
    val_split: str = "val"
    max_bad_fraction: float = 0.1
    eval_max_images: int | None = None
    eval_interval: int = 1
    val_loss: bool = False
    ema: bool = False
    ema_decay: float = 0.9999
    mosaic: float = 0.0
    close_mosaic: int = 10
    roi_samples: int | None = None
    plots: bool = True
    threads: int | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``UsageError`` naming the first field whose value cannot work."""
        at_least = {"epochs": 1, "batch_size": 1, "accumulate": 1, "workers": 0, "freeze": 0,
                    "patience": 0, "eval_interval": 0, "imgsz": MIN_IMGSZ, "crop": MIN_IMGSZ,
                    "eval_max_images": 1, "roi_samples": 1, "threads": 1, "close_mosaic": 0}
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise UsageError(f"{name} must be at least {low}, got {value}")
        for name in ("imgsz", "crop"):
            value = getattr(self, name)
            if value is not None and value > MAX_IMGSZ:
                raise UsageError(f"{name} must be at most {MAX_IMGSZ}, got {value}")
        positive = {"lr": self.lr, "backbone_lr_scale": self.backbone_lr_scale}
        for name, value in positive.items():
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a positive number, got {value}")
        non_negative = {"weight_decay": self.weight_decay, "warmup_epochs": self.warmup_epochs,
                        "clip_grad": self.clip_grad, "momentum": self.momentum,
                        "min_lr_ratio": self.min_lr_ratio}
        for name, value in non_negative.items():
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be a number >= 0, got {value}")
        if not 0 < self.ema_decay < 1:
            raise UsageError(f"ema_decay must be within (0, 1), got {self.ema_decay}")
        if not 0 <= self.mosaic <= 1:
            raise UsageError(f"mosaic must be a probability within [0, 1], got {self.mosaic}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise UsageError(f"max_bad_fraction must be within [0, 1], got "
                             f"{self.max_bad_fraction}")
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment": AUGMENTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, got "
                                 f"{getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def for_resume(cls, state: dict[str, Any], source: str, epochs: int | None,
                   overrides: dict[str, Any]) -> TrainConfig:
        """The config of the run whose training ``state`` (a ``last.pt``'s extras) is resumed.

        ``epochs`` larger than the original extends a finished run; ``overrides`` change
        settings that do not affect the result (``device``, ``workers``, ``threads``,
        ``eval_max_images``, ``val_loss``). A run saved before ``val_loss`` existed resumes
        with the default (off).
        """
        if "optimizer" not in state or "train_args" not in state:
            raise UsageError(f"{source}: not a training checkpoint (use last.pt, or "
                             "--weights to start a new run from it)")
        config = cls.from_dict(state["train_args"])
        if epochs is not None:
            if epochs < int(state["epoch"]):
                raise UsageError(f"epochs {epochs}: the run already finished "
                                 f"{state['epoch']} epochs")
            config.epochs = epochs
        for key, value in overrides.items():
            setattr(config, key, value)
        config.validate()
        return config

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.01 if self.optimizer == "sgd" else 0.001

    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 1e-4 if self.optimizer == "sgd" else 0.05


class TrainCallback:
    """Hooks the trainer calls on rank 0; override what you need (all default to no-ops)."""

    def on_fit_start(self, trainer: Any) -> None:
        """``trainer`` is the ``detseg.engine.trainer.Trainer`` about to train."""

    def on_epoch_start(self, epoch: int, num_batches: int, start_batch: int) -> None: ...

    def on_batch_end(self, epoch: int, batch: int, num_batches: int,
                     losses: dict[str, float], lr: float) -> None: ...

    def on_validation_start(self, epoch: int) -> None: ...

    def on_epoch_end(self, epoch: int, row: dict[str, float]) -> None: ...

    def on_message(self, text: str) -> None: ...

    def on_fit_end(self, result: TrainResult) -> None: ...


@dataclass
class TrainResult:
    """How a run ended: ``status`` is ``completed``, ``early_stopped`` or ``interrupted``."""

    out_dir: Path
    status: str
    epochs_done: int
    best_epoch: int | None
    best_fitness: float | None
    fitness_key: str
    last_path: Path
    best_path: Path | None
    history: list[dict[str, float]]
    bad_samples: int
