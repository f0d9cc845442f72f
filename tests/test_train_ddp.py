"""DDP: ``torchrun`` with two CPU processes (gloo) trains one epoch and rank 0 writes the run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    from detseg.data.shapes import generate_shapes

    root = tmp_path / "shapes"
    generate_shapes(root, train=4, val=2, size=64, seed=5, workers=1)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "detseg", "train", "--model", "unet", "--backbone", "tiny", "--dataset", "shapes",
        "--data-root", str(root), "--epochs", "1", "--batch-size", "1", "--imgsz", "64",
        "--augment", "none", "--device", "cpu", "--out", str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 1 and float(rows[0]["train/loss"]) > 0
    from detseg.weights import load_checkpoint

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.extra["world_size"] == 2
    # Two ranks with batch 1 over 4 images: 2 optimizer steps per epoch.
    assert ckpt.extra["scheduler"]["last_epoch"] == 2
    assert not any(k.startswith("module.") for k in ckpt.state_dict)
