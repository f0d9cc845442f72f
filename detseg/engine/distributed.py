"""Distributed data parallel helpers for runs launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them everything here
degrades to a single process (rank 0 of 1) and no process group is created.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
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


# How long a rank that left the process group waits for the others to leave too.
LEAVE_TIMEOUT = timedelta(minutes=5)
_shutdown_count = 0


def shutdown_distributed(wait: bool | None = None) -> None:
    """Leave the process group if one is active and, with ``wait``, return only once every rank
    has left.

    A process that exits while another rank still holds the gloo group aborts at exit
    (``terminate called without an active exception``, SIGABRT), so after destroying the group
    each rank marks itself gone in the rendezvous store and waits for the others' marks
    (``LEAVE_TIMEOUT`` at most). ``wait=None`` waits unless an exception is on its way out (a
    failing rank leaves at once: torchrun then stops the others).
    """
    global _shutdown_count
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait is None:
        wait = sys.exc_info()[0] is None
    rank, world_size = dist.get_rank(), dist.get_world_size()
    store = dist.distributed_c10d._get_default_store()  # kept alive past the group
    dist.destroy_process_group()
    _shutdown_count += 1
    if not wait:
        return
    keys = [f"detseg/left/{_shutdown_count}/{r}" for r in range(world_size)]
    try:
        store.set(keys[rank], "1")
        store.wait(keys, LEAVE_TIMEOUT)
    except (RuntimeError, OSError):  # the store is gone or a rank never came: nothing to wait on
        pass


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
