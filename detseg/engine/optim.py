"""Optimizers and learning-rate schedules for training.

Parameters are split into groups: weights of convolutions and linear layers get weight decay,
normalization parameters and biases do not; parameters under the backbone prefix get their
learning rate scaled by ``backbone_lr_scale``. Schedules are per iteration: a linear warmup from
``warmup_ratio * lr`` to ``lr``, then cosine decay to ``min_lr_ratio * lr`` or step decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from detseg.errors import UsageError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


def _is_no_decay(module: nn.Module, param_name: str, param: torch.Tensor) -> bool:
    return isinstance(module, _NORM_TYPES) or param_name == "bias" or param.ndim <= 1


def param_groups(model: nn.Module, weight_decay: float, backbone_prefix: str | None = None,
                 backbone_lr_scale: float = 1.0) -> list[dict]:
    """Trainable parameters of ``model`` in up to four groups (decay x backbone).

    Each group carries ``weight_decay`` and ``lr_scale`` (1.0, or ``backbone_lr_scale`` for
    parameters whose qualified name starts with ``backbone_prefix``) and a ``name`` for logs.
    Frozen parameters (``requires_grad=False``) are left out.
    """
    buckets: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            in_backbone = bool(backbone_prefix and (
                full == backbone_prefix or full.startswith(backbone_prefix + ".")
            ))
            buckets.setdefault((in_backbone, _is_no_decay(module, p_name, param)), []).append(param)
    groups = []
    for (in_backbone, no_decay), params in sorted(buckets.items()):
        groups.append({
            "params": params,
            "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": backbone_lr_scale if in_backbone else 1.0,
            "name": ("backbone" if in_backbone else "head")
            + ("_no_decay" if no_decay else "_decay"),
        })
    return groups


def build_optimizer(name: str, groups: list[dict], lr: float, momentum: float = 0.9,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW over ``groups``; each group's lr is ``lr * lr_scale``."""
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    raise UsageError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_factor(kind: str, total_iters: int, warmup_iters: int, warmup_ratio: float = 0.001,
              min_lr_ratio: float = 0.01, milestones: Sequence[float] = (0.7, 0.9),
              gamma: float = 0.1) -> Callable[[int], float]:
    """The multiplier of the base learning rate at iteration ``i`` (0-based).

    ``milestones`` are fractions of ``total_iters`` where the step schedule multiplies by
    ``gamma``.
    """
    if kind not in SCHEDULES:
        raise UsageError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    total_iters = max(1, total_iters)
    warmup_iters = min(max(0, warmup_iters), total_iters - 1)
    steps = [int(m * total_iters) for m in milestones]

    def factor(i: int) -> float:
        if i < warmup_iters:
            return warmup_ratio + (1.0 - warmup_ratio) * i / warmup_iters
        if kind == "cosine":
            progress = min(1.0, (i - warmup_iters) / max(1, total_iters - warmup_iters))
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return gamma ** sum(i >= s for s in steps)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, total_iters: int,
                    warmup_iters: int, **kwargs: Any) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` following ``lr_factor`` (call ``step()`` after each update);
    ``kwargs`` are ``lr_factor``'s keyword options (``warmup_ratio``, ``milestones``, ...)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(kind, total_iters, warmup_iters, **kwargs)
    )


def restore_schedule(optimizer: torch.optim.Optimizer, scheduler: Any,
                     state: dict[str, Any]) -> None:
    """Resume ``scheduler`` (a ``LambdaLR`` from ``build_scheduler``) at the step counts of
    its saved ``state``; the schedule follows the current (possibly extended) length."""
    scheduler.last_epoch = state["last_epoch"]
    scheduler._step_count = state["_step_count"]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs,
                                   scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
