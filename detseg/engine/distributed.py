"""Distributed data parallel helpers for runs launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them everything here
degrades to a single process (rank 0 of 1) and no process group is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, GPU index ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    """Read the ``torchrun`` environment variables (single process when absent)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) unless it exists or is not needed."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def shutdown_distributed() -> None:
    """Leave the process group if one is active."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def reduce_mean(values: dict[str, float], weight: float, device: torch.device) -> dict[str, float]:
    """Weighted mean of per-rank ``values`` (weight = samples seen by this rank) across ranks."""
    if not (dist.is_available() and dist.is_initialized()):
        return dict(values)
    keys = sorted(values)
    buf = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64,
                       device=device)
    dist.all_reduce(buf)
    total = buf[-1].item()
    return {k: buf[i].item() / max(total, 1e-12) for i, k in enumerate(keys)}


def reduce_sum_int(value: int, device: torch.device) -> int:
    """Sum of an integer over ranks."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    buf = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(buf)
    return int(buf.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
