"""Kills: Ctrl-C (SIGINT) and SIGKILL sent to real `detseg` processes. Whatever was written
stays readable (predictions.json valid JSON, last.pt loadable), nothing half-written sits under
a final name, and an interrupted training resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detseg.weights import load_checkpoint

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    """``detseg ARGS`` with Ctrl-C's default disposition: a suite started in the background by
    a non-interactive shell inherits SIGINT ignored, and Python then installs no handler."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "detseg", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0) -> None:
    start = time.monotonic()
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.communicate()}")
        if time.monotonic() - start > timeout:
            process.kill()
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        h, w = int(rng.integers(90, 140)), int(rng.integers(90, 160))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _predictions(out: Path) -> list:
    return json.loads((out / "predictions.json").read_text())


def _no_partial_files(out: Path) -> None:
    finals = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    for path in finals:
        if path.suffix == ".png":
            with Image.open(path) as img:
                img.verify()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_killed_detect_leaves_readable_outputs(images, tmp_path, sig) -> None:
    out = tmp_path / "out"
    process = _start(["detect", str(images), "--weights", "shapes-faster_rcnn", "--out",
                      str(out), "--conf", "0.05"], tmp_path)
    _wait_for(lambda: len([p for p in out.glob("*.png")]) >= 3, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr
    if sig == signal.SIGINT:
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr
    entries = _predictions(out)
    assert isinstance(entries, list)
    assert all({"image_id", "bbox", "score", "file_name"} <= set(e) for e in entries)
    _no_partial_files(out)


def test_ctrl_c_during_training_saves_last_pt_and_resume_finishes(tmp_path) -> None:
    data = tmp_path / "shapes"
    subprocess.run([sys.executable, "-m", "detseg", "dataset", "shapes", "--out", str(data),
                    "--train", "48", "--val", "4", "--size", "96", "--seed", "3"],
                   check=True, capture_output=True)
    run = tmp_path / "run"
    args = ["train", "--model", "unet", "--backbone", "tiny", "--dataset", "shapes",
            "--data-root", str(data), "--imgsz", "96", "--batch-size", "2", "--epochs", "2",
            "--threads", "1", "--out", str(run)]
    process = _start(args, tmp_path)
    # SIGINT once the first epoch is under way (the progress line reports batches)
    _wait_for(lambda: (run / ".detseg-run").exists() or run.exists(), process)
    time.sleep(3.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert "Traceback" not in stderr, stderr
    assert process.returncode in (0, 130), stdout + stderr
    checkpoint = load_checkpoint(run / "last.pt")
    assert "optimizer" in checkpoint.extra
    assert not list(run.glob(".last.pt.*.tmp")) and not list(run.glob("*.tmp"))
    if process.returncode == 130:
        assert "--resume" in stdout and "--threads 1" in stdout
        resumed = subprocess.run([sys.executable, "-m", "detseg", "train", "--resume",
                                  str(run / "last.pt"), "--threads", "1"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert load_checkpoint(run / "last.pt").extra["epoch"] == 2
