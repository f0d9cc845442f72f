"""Output run folders: ``runs/<command>/<name>``, auto-incremented, never overwritten."""

from __future__ import annotations

from pathlib import Path

from detseg.errors import UsageError


def new_run_dir(command: str, name: str = "exp", out: str | Path | None = None,
                root: str | Path = "runs") -> Path:
    """Create and return a fresh output folder.

    With ``out`` given, that folder is used and must not already hold files. Otherwise
    ``root/command/name``, then ``name2``, ``name3``, ... (as Ultralytics does) until one is free.
    The folder is created atomically with ``mkdir`` so two processes never share one.
    """
    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise UsageError(f"{path}: output folder exists and is not empty; pick another --out")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(root) / command
    base.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        path = base / (name if k == 1 else f"{name}{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            k += 1
