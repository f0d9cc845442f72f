"""Measure a model: parameters, FLOPs, latency percentiles, throughput and peak memory.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass (one
multiply-add counts as 2 FLOPs; ops it has no formula for, like NMS, count 0). Latency is
wall time of one forward pass of a whole batch after warm-up, with the device synchronized
before each clock read. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the peak
resident set size of the process during the timed passes on CPU (Linux ``VmHWM`` after a reset;
elsewhere the whole process life).
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from detseg.engine.device import select_device
from detseg.errors import UsageError


def example_inputs(model: nn.Module, imgsz: int | tuple[int, int], batch_size: int = 1,
                   device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> Any:
    """Random inputs in the form the model's forward expects (its task adapter's
    ``example_inputs``): detectors get a list of CHW images in [0, 1], semantic models a
    normalized NCHW batch; a module without a ``spec`` gets a plain NCHW batch in [0, 1].
    ``imgsz`` is one side or ``(height, width)``."""
    from detseg.tasks import task_adapter

    if getattr(model, "spec", None) is None:
        height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        return torch.rand(batch_size, 3, height, width, device=device).to(dtype)
    return task_adapter(model).example_inputs(imgsz, batch_size, device, dtype)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters), shared tensors counted once."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def count_flops(model: nn.Module, inputs: Any) -> int:
    """FLOPs of one forward pass of ``model(inputs)`` in inference mode (no grad)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(inputs)
    return int(counter.get_total_flops())


@dataclass
class BenchmarkResult:
    """One benchmark row; ``to_dict`` gives the JSON keys of ``detseg benchmark --json``."""

    model: str
    backbone: str | None
    imgsz: int
    batch_size: int
    device: str
    params: int
    gflops: float
    latency_ms_p50: float
    latency_ms_p90: float
    throughput: float
    peak_mem_mb: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_rss() -> None:
    """Restart the peak-RSS count where the OS allows it (Linux: ``clear_refs`` 5)."""
    # not Linux, or not permitted: the peak then covers the whole process life
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident set size in MiB: Linux ``VmHWM`` (since ``_reset_peak_rss``), else
    ``getrusage`` (the whole process life; KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def benchmark(model: nn.Module, imgsz: int = 512, batch_size: int = 1,
              device: str | torch.device | None = "cpu", half: bool = False, iters: int = 20,
              warmup: int = 3, name: str | None = None,
              counted_on: nn.Module | None = None) -> BenchmarkResult:
    """Time ``iters`` forward passes of a random batch after ``warmup`` passes.

    ``half`` runs under fp16 autocast. GFLOPs are for the whole batch in fp32 (counting does not
    depend on precision). Throughput is images per second over the timed passes.
    ``counted_on``: count parameters and FLOPs on this module instead of ``model`` (the
    PyTorch network behind an exported ``detseg.runtime.RuntimeModel``, whose graph torch
    cannot count).
    """
    if iters < 1 or warmup < 0 or batch_size < 1 or imgsz < 1:
        raise UsageError("iters, batch size and image size must be positive, warm-up >= 0")
    dev = device if isinstance(device, torch.device) else select_device(device)
    model = model.eval().to(dev)
    spec = getattr(model, "spec", None)
    inputs = example_inputs(model, imgsz, batch_size, dev)
    counter = model if counted_on is None else counted_on.eval().to(dev)
    params, _ = count_params(counter)
    flops = count_flops(counter, inputs if counted_on is None
                        else example_inputs(counter, imgsz, batch_size, dev))

    autocast = (torch.autocast(dev.type, dtype=torch.float16) if half
                else contextlib.nullcontext())
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        _reset_peak_rss()
    times = []
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            model(inputs)
        _synchronize(dev)
        for _ in range(iters):
            start = time.perf_counter()
            model(inputs)
            _synchronize(dev)
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda"
            else peak_rss_mb())
    ms = np.asarray(times) * 1000.0
    return BenchmarkResult(
        model=name or (spec.family if spec is not None else type(model).__name__),
        backbone=spec.backbone if spec is not None else None,
        imgsz=imgsz,
        batch_size=batch_size,
        device=str(dev),
        params=params,
        gflops=round(flops / 1e9, 4),
        latency_ms_p50=round(float(np.percentile(ms, 50)), 3),
        latency_ms_p90=round(float(np.percentile(ms, 90)), 3),
        throughput=round(batch_size * len(times) / float(np.sum(times)), 2),
        peak_mem_mb=round(peak, 1),
    )
