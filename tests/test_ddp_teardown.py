"""torchrun teardown: a process that exits while another rank still holds the gloo group aborts
at exit (SIGABRT, "terminate called without an active exception"), so
``shutdown_distributed`` returns only once every rank has left. Two CPU processes; rank 1 is
late on purpose, and rank 0 must not return before rank 1 began to leave."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys, time
import torch
import torch.distributed as dist
from detseg.engine import distributed as ddp

info = ddp.dist_info_from_env()
ddp.init_distributed(info, torch.device("cpu"))
total = torch.ones(1)
dist.all_reduce(total)
if info.rank == 1:
    time.sleep(1.5)  # a slow rank: rank 0 is long done with its share
began = time.time()
ddp.shutdown_distributed()
left = time.time()
assert not dist.is_initialized()
ddp.shutdown_distributed()  # a second call is a no-op
with open(f"rank{info.rank}.txt", "w") as out:  # one file each: the two stdouts interleave
    out.write(f"{total.item():.0f} {began:.3f} {left:.3f}")
"""


def test_no_rank_leaves_before_every_rank_has_left(tmp_path: Path) -> None:
    script = tmp_path / "leave.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", str(script)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "terminate called" not in done.stderr
    times = {}
    for rank in (0, 1):
        total, began, left = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert total == "2"
        times[rank] = (float(began), float(left))
    assert times[0][1] >= times[1][0], "rank 0 waited until rank 1 left the group"
