"""The one device picker of every command: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch

from detseg.errors import UsageError


def select_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for ``device``.

    ``auto`` (or ``None``) is this process's CUDA device when CUDA is available (``cuda:<local
    rank>`` under torchrun), else the CPU; a bare ``cuda`` is ``cuda:<local rank>``.

    Raises:
        UsageError: an unknown name, or a CUDA device that is not there (names ``device``).
    """
    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except RuntimeError as err:
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} requested but CUDA is not available here")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        if dev.index >= torch.cuda.device_count():
            raise UsageError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                             f"device(s) present")
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev
