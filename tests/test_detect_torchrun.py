"""``torchrun --nproc-per-node 2 -m detseg detect``: the images are split across two CPU
processes (gloo) and rank 0 merges one ``predictions.json`` covering every image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from detseg.models import build_from_spec, make_spec
from detseg.weights import save_checkpoint

IMAGES = 4


def test_torchrun_splits_sources_and_rank0_merges_the_json(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = make_spec("faster_rcnn", "tiny", class_names=["__background__", "a", "b"],
                     input_size=64)
    ckpt = save_checkpoint(tmp_path / "det.pt", build_from_spec(spec).state_dict(), spec)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(IMAGES):
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    out = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "detseg", "detect",
         str(folder), "--weights", str(ckpt), "--device", "cpu", "--conf", "0", "--max-det",
         "2", "--out", str(out), "--no-save-images"],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [".detseg-run", "predictions.json"], \
        "parts were merged"
    entries = json.loads((out / "predictions.json").read_text())
    assert [e["image_id"] for e in entries] == sorted(e["image_id"] for e in entries)
    assert {e["file_name"] for e in entries} == {f"img{i}.png" for i in range(IMAGES)}
    assert len(entries) == 2 * IMAGES
    assert "over 2 processes" in done.stdout and f"{IMAGES} images" in done.stdout
