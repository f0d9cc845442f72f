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
import csv
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from detseg.engine import distributed as ddp
from detseg.engine.checkpointing import (
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seed_everything,
    spec_for_dataset,
)
from detseg.engine.loading import (
    Batch,
    ResumableSampler,
    SkippingDataset,
    collate_skipping,
    semantic_batch,
    shard_indices,
)
from detseg.engine.optim import build_optimizer, build_scheduler, param_groups
from detseg.errors import DatasetError, NonFiniteLossError, UsageError
from detseg.spec import ModelSpec

if TYPE_CHECKING:
    from detseg.weights import LoadedWeights

IGNORE_INDEX = 255
# The validation metric that decides ``best.pt`` and early stopping, per task.
FITNESS_KEYS = {"detect": "bbox_AP", "instance": "segm_AP", "semantic": "mIoU"}


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
    and after the last one (``0``: never, validation losses only).
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
    roi_samples: int | None = None
    plots: bool = True
    model_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

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

    def on_fit_start(self, trainer: Trainer) -> None: ...

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


class _StopRequested(Exception):
    """Raised inside the epoch loop after the state at an optimizer step has been saved."""


def _plain(t: torch.Tensor) -> torch.Tensor:
    """A tv_tensor (Image, BoundingBoxes, Mask) as a plain tensor."""
    return t.as_subclass(torch.Tensor) if isinstance(t, torch.Tensor) else torch.as_tensor(t)


def _float_image(image: torch.Tensor) -> torch.Tensor:
    """CHW float in [0, 1] from a uint8 or float image tensor."""
    image = _plain(image)
    return image.float().div(255.0) if image.dtype == torch.uint8 else image.float()


def _ignore_sigint_in_worker(_: int) -> None:
    # Ctrl-C reaches the whole process group; only the main process handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - mean soft Dice`` over the classes present in ``target`` or predicted.

    ``logits``: ``N x C x H x W``; ``target``: ``N x H x W`` class indices (``255`` ignored).
    Counters the background's dominance in cross-entropy on images with small objects.
    """
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    probs = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1])
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + eps) / (total + eps)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's CUDA device if there is one, else CPU; otherwise ``name``."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def find_backbone(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The qualified name and module of the feature extractor inside ``model``.

    A detseg backbone is recognised by its ``channels`` and ``strides`` attributes; for
    torchvision presets the ``backbone.body`` (without FPN) or ``backbone`` module is used.
    """
    for name, module in model.named_modules():
        if name and hasattr(module, "channels") and hasattr(module, "strides"):
            return name, module
    for name in ("backbone.body", "backbone", "encoder"):
        with contextlib.suppress(AttributeError):
            return name, model.get_submodule(name)
    return None


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The stages of ``backbone`` in input-to-output order, for ``--freeze N``.

    ``tiny``: stem plus first stage, then one per stride; ResNets: stem (conv1, bn1), layer1..4;
    RegNets: stem, then the trunk blocks; nets with a ``features`` sequence (MobileNet, VGG,
    EfficientNet, ConvNeXt): its blocks; otherwise the parameterized children.
    """
    def params(m: nn.Module) -> bool:
        return any(True for _ in m.parameters())

    stages = getattr(backbone, "stages", None)
    if stages is not None:
        stages = list(stages)
        stem = getattr(backbone, "stem", None)
        return [nn.ModuleList([stem, stages[0]]), *stages[1:]] if stem is not None else stages
    if hasattr(backbone, "layer1"):
        stem = nn.ModuleList([m for n, m in backbone.named_children() if n in ("conv1", "bn1")])
        return [stem, *(getattr(backbone, f"layer{k}") for k in range(1, 5)
                        if hasattr(backbone, f"layer{k}"))]
    if hasattr(backbone, "trunk_output"):
        return [backbone.stem, *backbone.trunk_output.children()]
    if isinstance(getattr(backbone, "features", None), nn.Sequential):
        return [m for m in backbone.features.children() if params(m)]
    return [m for m in backbone.children() if params(m)]


class _FrozenBatchNormGuard:
    """Keeps the BatchNorm layers of frozen stages in eval mode whenever the model trains."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.norms = [m for stage in modules for m in stage.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def apply(self) -> None:
        for m in self.norms:
            m.eval()


def freeze_stages(model: nn.Module, n: int) -> tuple[list[str], _FrozenBatchNormGuard]:
    """Freeze the first ``n`` backbone stages (no gradients, BatchNorm statistics fixed).

    Returns the frozen parameter names and a guard to re-apply after each ``model.train()``.
    """
    found = find_backbone(model)
    if found is None:
        raise UsageError("--freeze: this model has no backbone to freeze")
    _, backbone = found
    stages = backbone_stages(backbone)
    if n > len(stages):
        raise UsageError(f"--freeze {n}: the backbone has only {len(stages)} stages")
    frozen_ids = set()
    for stage in stages[:n]:
        for p in stage.parameters():
            p.requires_grad_(False)
            frozen_ids.add(id(p))
    names = [name for name, p in model.named_parameters() if id(p) in frozen_ids]
    return names, _FrozenBatchNormGuard(stages[:n])


def model_task(model_name: str | None, weights: str | None) -> str:
    """``detect``, ``instance`` or ``semantic`` for a model name or a detseg checkpoint."""
    if model_name is None:
        if weights is None:
            raise UsageError("give --model, or --weights with a detseg checkpoint")
        from detseg.weights import resolve_weights

        spec = resolve_weights(weights).spec
        if spec is None:
            raise UsageError(f"--weights {weights}: not a detseg checkpoint; give --model too")
        return spec.task
    from detseg.models import model_info

    return model_info(model_name)["task"]


class _Shard(torch.utils.data.Dataset):
    """The samples ``indices`` of ``dataset``; other attributes (``to_coco``, ``class_names``)
    are the whole dataset's."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _flat_metrics(raw: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of an ``evaluate_model`` result (``bbox_AP``, ``mIoU``, ...)."""
    return {k: float(v) for k, v in raw.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


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
        self.device = resolve_device(config.device, self.dist.local_rank)
        ddp.init_distributed(self.dist, self.device)
        if config.accumulate < 1 or config.batch_size < 1 or config.epochs < 1:
            raise UsageError("--epochs, --batch-size and --accumulate must be at least 1")
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
        from detseg.data.transforms import build_transforms

        cfg = self.config
        self.task = model_task(cfg.model, cfg.weights)
        if cfg.crop and self.task != "semantic":
            raise UsageError("--crop only applies to semantic models (unet, segnet, ...)")
        train_tf = build_transforms(cfg.augment, train=True, task=self.task,
                                    imgsz=cfg.imgsz, crop=cfg.crop)
        val_tf = build_transforms("none", train=False, task=self.task, imgsz=cfg.imgsz)
        self.train_set = build_dataset(cfg.dataset, cfg.data_root, split=cfg.train_split,
                                       task=self.task, transforms=train_tf)
        self.val_set = build_dataset(cfg.dataset, cfg.data_root, split=cfg.val_split,
                                     task=self.task, transforms=val_tf)
        if len(self.train_set) == 0:
            raise DatasetError(f"{cfg.data_root}: the {cfg.train_split} split has no images")
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
        if cfg.model is None:
            seed_everything(cfg.seed)
            model = build_model(None, num_classes=len(self.class_names), weights=cfg.weights)
            self._message(f"started from {cfg.weights} ({model.spec.family}, "
                          f"{model.spec.backbone})")
        else:
            spec = make_spec(cfg.model, cfg.backbone, len(self.class_names), **options)
            # Seeded after the spec: looking up backbone facts may draw random numbers once.
            seed_everything(cfg.seed)
            model = build_from_spec(spec, pretrained_backbone=cfg.pretrained_backbone)
            if cfg.weights:
                self._load_transfer_weights(model, cfg.weights)
        if cfg.roi_samples:
            sampler = getattr(getattr(model, "roi_heads", None), "fg_bg_sampler", None)
            if sampler is None:
                raise UsageError("--roi-samples only applies to Faster/Mask R-CNN models")
            sampler.batch_size_per_image = cfg.roi_samples
        model.spec = spec_for_dataset(model.spec, self.class_names, self.category_ids, cfg.imgsz)
        self.spec: ModelSpec = model.spec
        self.frozen_guard: _FrozenBatchNormGuard | None = None
        if cfg.freeze:
            names, self.frozen_guard = freeze_stages(model, cfg.freeze)
            self._message(f"froze the first {cfg.freeze} backbone stages ({len(names)} tensors)")
        model.to(self.device)
        self.model = model
        self.ddp_model: nn.Module = model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.task != "semantic",
            )

    def _load_transfer_weights(self, model: nn.Module, weights: str) -> None:
        from detseg.models import load_matching_state_dict, model_info
        from detseg.weights import resolve_weights

        loaded = resolve_weights(weights,
                                 default_enum=model_info(self.config.model)["weights"])
        own = model.state_dict()
        donor = loaded.spec
        if donor is not None and donor.family != model.spec.family \
                and not set(own) <= set(loaded.state_dict):
            self._load_donor_backbone(model, loaded)
            return
        extra = sorted(k for k in loaded.state_dict if k not in own)
        state = {k: v for k, v in loaded.state_dict.items() if k in own}
        if extra:
            # e.g. a Mask R-CNN checkpoint starting a Faster R-CNN: its mask head is not used.
            heads = sorted({k.rsplit(".", 2)[0] for k in extra})
            self._message(f"{loaded.source}: ignored {len(extra)} tensors this model does not "
                          f"have ({', '.join(heads[:4])}{', ...' if len(heads) > 4 else ''})")
        skipped = load_matching_state_dict(model, state)
        if skipped:
            self._message(f"loaded {loaded.source}; replaced {len(skipped)} tensors whose shape "
                          f"differs (class-count heads): {', '.join(skipped)}")
        else:
            self._message(f"loaded {loaded.source}")

    def _load_donor_backbone(self, model: nn.Module, loaded: LoadedWeights) -> None:
        """Load only the backbone of a checkpoint of another family (same backbone name),
        e.g. a U-Net trained on the same images starting a Faster R-CNN."""
        from detseg.models import build_from_spec

        donor_spec = loaded.spec
        if donor_spec.backbone != model.spec.backbone:
            raise UsageError(
                f"--weights {loaded.source}: a {donor_spec.family} over {donor_spec.backbone}; "
                f"only its backbone could start this {model.spec.family}, whose backbone is "
                f"{model.spec.backbone}")
        with torch.device("meta"):
            donor = build_from_spec(donor_spec)
        found_donor, found_own = find_backbone(donor), find_backbone(model)
        if found_donor is None or found_own is None:
            raise UsageError(f"--weights {loaded.source}: no backbone to transfer into "
                             f"{model.spec.family}")
        src, dst = found_donor[0] + ".", found_own[0] + "."
        state = {dst + k[len(src):]: v for k, v in loaded.state_dict.items()
                 if k.startswith(src)}
        own = model.state_dict()
        misfit = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if misfit or not state:
            raise UsageError(f"--weights {loaded.source}: its {donor_spec.backbone} backbone "
                             f"does not fit this model ({misfit[:3]})")
        model.load_state_dict(state, strict=False)
        self._message(f"loaded the {donor_spec.backbone} backbone of {loaded.source} "
                      f"({donor_spec.family}, {len(state)} tensors); the {model.spec.family} "
                      "layers start fresh")

    def _build_optimization(self) -> None:
        cfg = self.config
        transfer = bool(cfg.weights or cfg.pretrained_backbone)
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
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        # The schedule follows the (possibly extended) number of epochs; only its step counts.
        sched = state["scheduler"]
        self.scheduler.last_epoch = sched["last_epoch"]
        self.scheduler._step_count = sched["_step_count"]
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        self.history = list(state.get("history", []))
        self.best_fitness = state.get("best_fitness")
        self.best_epoch = state.get("best_epoch")
        self.bad_total = int(state.get("bad_samples", 0))
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
        settings that do not affect the result (``device``, ``workers``, ``eval_max_images``).
        """
        from detseg.weights import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        if "optimizer" not in ckpt.extra or "train_args" not in ckpt.extra:
            raise UsageError(f"{checkpoint}: not a training checkpoint (use last.pt, or "
                             "--weights to start a new run from it)")
        config = TrainConfig.from_dict(ckpt.extra["train_args"])
        if epochs is not None:
            if epochs < int(ckpt.extra["epoch"]):
                raise UsageError(f"--epochs {epochs}: the run already finished "
                                 f"{ckpt.extra['epoch']} epochs")
            config.epochs = epochs
        for key, value in (overrides or {}).items():
            setattr(config, key, value)
        state = dict(ckpt.extra, model=ckpt.state_dict)
        return cls(config, Path(checkpoint).parent, callbacks, resume_state=state,
                   handle_sigint=handle_sigint)

    def _save(self, name: str, extra: dict[str, Any]) -> Path:
        from detseg.weights import save_checkpoint

        return save_checkpoint(self.out_dir / name, self.model.state_dict(), self.spec, **extra)

    def _save_last(self, epoch: int, batch: int) -> Path | None:
        if not self.dist.is_main:
            return None
        return self._save("last.pt", self._state(epoch, batch))

    # ---------------------------------------------------------------- steps
    def _to_device_detection(self, batch: Batch) -> tuple[list[torch.Tensor], list[dict]]:
        """Images and targets on the device; crowd regions and degenerate boxes dropped."""
        from detseg.data.base import drop_crowd

        keys = ("boxes", "labels", "masks") if self.task == "instance" else ("boxes", "labels")
        images = [_float_image(im).to(self.device, non_blocking=True) for im in batch.images]
        targets = []
        for t in batch.targets:
            t = drop_crowd(t)
            tgt = {k: _plain(t[k]) for k in keys if k in t}
            tgt["boxes"] = tgt["boxes"].float().reshape(-1, 4)
            wh = tgt["boxes"][:, 2:] - tgt["boxes"][:, :2]
            keep = (wh > 0.5).all(dim=1)
            tgt = {k: v[keep] for k, v in tgt.items()}
            tgt["labels"] = tgt["labels"].long()
            if "masks" in tgt:
                tgt["masks"] = tgt["masks"].to(torch.uint8)
            targets.append({k: v.to(self.device, non_blocking=True) for k, v in tgt.items()})
        return images, targets

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        from detseg.data.transforms import normalize

        return normalize(x, self.spec.mean, self.spec.std)

    def _forward_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The loss dict of one batch (model in train mode)."""
        if self.task == "semantic":
            from detseg.models import semantic_logits

            x, y = semantic_batch([_float_image(im) for im in batch.images], batch.targets,
                                  self._normalize)
            x, y = x.to(self.device), y.to(self.device)
            logits = semantic_logits(self.ddp_model(x)).float()
            return {"loss_ce": F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX),
                    "loss_dice": soft_dice_loss(logits, y)}
        images, targets = self._to_device_detection(batch)
        return self.ddp_model(images, targets)

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
            worker_init_fn=_ignore_sigint_in_worker if cfg.workers else None,
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
        loss = sum(loss_dict.values())
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

    # ---------------------------------------------------------------- validation
    def _val_batches(self) -> Iterator[Batch]:
        indices = shard_indices(len(self.val_set), self.dist.rank, self.dist.world_size)
        bs = self.config.batch_size
        data = SkippingDataset(self.val_set)
        for start in range(0, len(indices), bs):
            yield collate_skipping([data[j] for j in indices[start:start + bs]])

    @torch.no_grad()
    def _validation_losses(self) -> dict[str, float]:
        """Mean validation losses (model in train mode with BatchNorm frozen, no updates)."""
        sums: dict[str, float] = {}
        n = 0
        with torch.random.fork_rng(devices=[]):
            # Detectors only return losses in train mode; BatchNorm statistics stay untouched.
            self.model.train(self.task != "semantic")
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
            for batch in self._val_batches():
                if not batch.images:
                    continue
                with torch.autocast(self.device.type, enabled=self.use_amp):
                    losses = self._forward_losses_unwrapped(batch)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(batch.images)
                sums["loss"] = sums.get("loss", 0.0) + float(sum(losses.values())) * len(
                    batch.images)
                n += len(batch.images)
        means = {k: v / max(n, 1) for k, v in sums.items()}
        return ddp.reduce_mean(means, float(n), self.device)

    def _forward_losses_unwrapped(self, batch: Batch) -> dict[str, torch.Tensor]:
        wrapped, self.ddp_model = self.ddp_model, self.model
        try:
            return self._forward_losses(batch)
        finally:
            self.ddp_model = wrapped

    def _validation_metrics(self) -> dict[str, float]:
        """Task metrics on the validation split (``detseg.eval.runner``).

        Under DDP every rank predicts its share of the images; predictions (detection) or
        confusion matrices (semantic) are gathered and rank 0 scores them all.
        """
        from detseg.eval.runner import evaluate_model

        cfg = self.config
        n = len(self.val_set) if cfg.eval_max_images is None else \
            min(cfg.eval_max_images, len(self.val_set))
        self.model.eval()
        if not self.dist.enabled:
            raw = evaluate_model(self.model, self.val_set, batch_size=cfg.batch_size,
                                 device=self.device, max_images=n)
            return _flat_metrics(raw)
        shard = _Shard(self.val_set, shard_indices(n, self.dist.rank, self.dist.world_size))
        raw = evaluate_model(self.model, shard, batch_size=cfg.batch_size,
                             device=self.device) if len(shard) else {}
        if self.task == "semantic":
            part = raw.get("details", {}).get("confusion_matrix")
        else:
            part = raw.get("predictions", [])
        parts = ddp.gather_objects(part)
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            metrics = self._score_gathered(parts, n)
        return ddp.gather_objects(metrics)[0]

    def _score_gathered(self, parts: list[Any], n: int) -> dict[str, float]:
        """Metrics of the predictions (or confusion matrices) gathered from every rank."""
        if self.task == "semantic":
            from detseg.eval.pixels import ConfusionMatrix

            cm = ConfusionMatrix(self.spec.num_classes, class_names=self.spec.names())
            cm.matrix = torch.as_tensor(sum(p for p in parts if p is not None))
            return {k: float(v) for k, v in cm.compute().items()
                    if isinstance(v, (int, float))}
        from detseg.eval.runner import score_detections

        gt = self.val_set.to_coco()
        ids = {im["id"] for im in gt["images"][:n]}
        gt = {**gt, "images": [im for im in gt["images"] if im["id"] in ids],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
        iou_types = ("bbox", "segm") if self.task == "instance" else ("bbox",)
        evals = score_detections(gt, [p for part in parts for p in part], iou_types)
        return {f"{t}_{k}": float(v) for t, m in evals.items() for k, v in m.stats.items()}

    # ---------------------------------------------------------------- loop
    @contextlib.contextmanager
    def _sigint_saves(self) -> Iterator[None]:
        """First Ctrl-C: finish the optimizer step, save ``last.pt``, stop. Second: abort."""
        if not self.handle_sigint or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt
            self._stop.set()
            self._message("interrupt: saving last.pt after this step (Ctrl-C again to abort)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def request_stop(self) -> None:
        """Stop after the current optimizer step, saving ``last.pt`` (what Ctrl-C does)."""
        self._stop.set()

    def fitness(self, row: dict[str, float]) -> float | None:
        """The number ``best.pt`` maximises: the task metric (``None`` in an epoch without
        metrics), or minus the validation loss when metrics are off."""
        if self.config.eval_interval > 0:
            return row.get(f"metrics/{FITNESS_KEYS[self.task]}")
        return -row.get("val/loss", float("inf"))

    def fitness_key(self) -> str:
        return FITNESS_KEYS[self.task] if self.config.eval_interval > 0 else "-val/loss"

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
        row.update({f"val/{k}": v for k, v in self._validation_losses().items()})
        if self._metrics_due(epoch):
            row.update({f"metrics/{k}": v for k, v in self._validation_metrics().items()})
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
                                       "train_args": cfg.to_dict()})
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
        columns: list[str] = []
        for row in self.history:
            columns.extend(k for k in row if k not in columns)
        path = self.out_dir / "results.csv"
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in self.history:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                                 for k, v in row.items()})
        tmp.replace(path)

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
