"""One run folder shared by every rank of a (possibly distributed) run: ``detect``/``segment``
and ``track`` process their share of the inputs into it, then rank 0 gathers the reports.

Rank 0 creates and claims the folder (``runs/<command>/exp...`` or ``--out``) and every rank
learns its path, or rank 0's error. The process group is torn down on every way out: waiting
for the other ranks after a normal end, at once after an error or Ctrl-C (which reaches every
rank, so no one waits to gather).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from detseg.engine import distributed as dist
from detseg.errors import UsageError
from detseg.runs import RunFolderClaim, new_run_dir

if TYPE_CHECKING:
    import torch


class ShareReport(Protocol):
    """What a rank's share of the work reports: whether Ctrl-C stopped it."""

    interrupted: bool


R = TypeVar("R", bound=ShareReport)


def open_shared_run_dir(info: dist.DistInfo, command: str, name: str, out: str | Path | None,
                        root: str | Path) -> tuple[Path, RunFolderClaim | None]:
    """Rank 0 creates and claims the run folder; every rank gets its path (the claim on rank 0
    only), or raises rank 0's ``UsageError``."""
    created: str | UsageError | None = None
    claim = None
    if info.is_main:
        try:
            path = new_run_dir(command, name, out, root)
            claim = RunFolderClaim(path, command)
            created = str(path)
        except UsageError as err:
            created = err
    shared = dist.gather_objects(created)[0]
    if isinstance(shared, UsageError):
        raise shared
    return Path(shared), claim


def run_in_shared_folder(info: dist.DistInfo, device: torch.device, command: str, name: str,
                         out: str | Path | None, root: str | Path, share: Callable[[Path], R],
                         gather: Callable[[R], R],
                         finish: Callable[[R], None] | None = None) -> R:
    """``share(run_dir)`` on every rank, then ``gather`` (unless interrupted) and ``finish``
    (inside the folder's claim), with the process group set up and torn down around them."""
    dist.init_distributed(info, device)
    try:
        run_dir, claim = open_shared_run_dir(info, command, name, out, root)
        try:
            report = share(run_dir)
            if not report.interrupted:
                report = gather(report)
            if finish is not None:
                finish(report)
        finally:
            if claim is not None:
                claim.release()
    except BaseException:
        dist.shutdown_distributed(wait=False)
        raise
    dist.shutdown_distributed(wait=True)
    return report
