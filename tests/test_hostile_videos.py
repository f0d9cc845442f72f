"""Hostile videos for ``detseg detect``: empty, cut and fake files, per-frame labels and masks,
instance masks in the JSONL, and a run killed (SIGKILL) in the middle of a video. Each case
asserts the exit code of the real entry point, the one line naming the culprit, no traceback
(and no FFmpeg log line), and what was still written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_runner import detseg, frame_count, random_checkpoint
from pycocotools import mask as mask_utils

from detseg.runs import RUN_MARKER

SIZE = (56, 40)  # width, height



def _clip(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, SIZE)
    rng = np.random.default_rng(frames)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (SIZE[1], SIZE[0], 3), np.uint8))
    writer.release()
    return path



@pytest.fixture(scope="module")
def mask_ckpt(tmp_path_factory) -> str:
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "mask.pt", "mask_rcnn")


def _detect(monkeypatch, capsys, ckpt, *args) -> tuple[int, str, str]:
    return detseg(monkeypatch, capsys, "detect", *args, "--weights", ckpt, "--device", "cpu",
                  "--conf", "0", "--max-det", "2")


def test_empty_cut_and_fake_videos_are_one_line_each(mask_ckpt, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = _clip(folder / "good.mp4", 6)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (folder / "notes.avi").write_text("not a video")
    out = tmp_path / "run"
    # A fresh process: FFmpeg reads its log level once, at the first video opened.
    done = subprocess.run(
        [sys.executable, "-m", "detseg", "detect", str(folder), "--weights", mask_ckpt,
         "--device", "cpu", "--conf", "0", "--max-det", "2", "--out", str(out), "-q"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert sum("empty.mp4: empty file (0 bytes)" in line for line in lines) == 1, lines
    for name in ("cut.mp4", "notes.avi"):
        assert sum(name in line and "cannot open video" in line for line in lines) == 1, lines
    assert "moov atom" not in done.stderr, "FFmpeg's own log reached the terminal"
    assert "3 input(s) failed" in done.stderr and len(lines) == 4, lines
    assert frame_count(out / "good.mp4") == 6
    assert len((out / "good.jsonl").read_text().splitlines()) == 6


def test_video_jsonl_carries_boxes_xyxy_and_instance_masks(mask_ckpt, tmp_path, monkeypatch,
                                                           capsys) -> None:
    clip = _clip(tmp_path / "clip.mp4", 4)
    out = tmp_path / "run"
    code, stdout, stderr = _detect(monkeypatch, capsys, mask_ckpt, clip, "--out", out,
                                   "--save-txt", "--save-masks", "--vid-stride", "2")
    assert code == 0, stderr
    records = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 2]
    detection = records[0]["detections"][0]
    assert set(detection) == {"label", "name", "score", "box_xyxy", "mask"}
    x1, y1, x2, y2 = detection["box_xyxy"]
    assert 0 <= x1 <= x2 <= SIZE[0] and 0 <= y1 <= y2 <= SIZE[1]
    mask = mask_utils.decode(detection["mask"])
    assert mask.shape == (SIZE[1], SIZE[0])
    # per processed frame: a YOLO polygon file and an instance-id mask PNG
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["clip_0.txt", "clip_2.txt"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["clip_0.png", "clip_2.png"]
    png = cv2.imread(str(out / "masks" / "clip_2.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (SIZE[1], SIZE[0]) and png.max() <= 2
    assert "2 label files in labels/" in stdout and "2 mask PNGs in masks/" in stdout


def test_sigkill_mid_video_leaves_no_unplayable_video_and_the_next_run_cleans_up(
        mask_ckpt, tmp_path) -> None:
    clip = _clip(tmp_path / "long.mp4", 3000)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "detseg", "detect", str(clip), "--weights", mask_ckpt,
               "--device", "cpu", "--conf", "0", "--max-det", "2", "--out", str(out), "-q"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    jsonl = out / "long.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.is_file() and len(jsonl.read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "long.mp4").exists(), "no video under its final name"
    assert (out / ".long.tmp.mp4").is_file(), "the partial video is a hidden temporary"
    assert all(json.loads(line) for line in jsonl.read_bytes().splitlines()[:-1])
    # The next run into that folder removes the stale temporary (and refuses the used folder).
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not empty" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER, "long.jsonl"]
