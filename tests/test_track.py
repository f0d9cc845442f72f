"""``detseg track``: the shipped shapes YOLO + ByteTrack on a generated clip keeps identities
through a crossing (MOTA and IDF1 from ``detseg eval --mot``), the outputs follow the source's
frame numbers with --vid-stride/--start/--end, hostile inputs are one line each, Ctrl-C leaves
every output readable, and torchrun splits the sequences."""

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
from cli_runner import detseg, frame_count

from detseg.data.shapes_video import generate_shapes_video
from detseg.eval.iou import box_iou

#: shapes-yolo loses the hidden shape of the crossing clip until it is whole again, so the
#: trackers coast it on its velocity; shapes-faster_rcnn (since its 6000-image run) boxes the
#: still-visible sliver instead, a box that shrinks away from the shape's path, and both trackers
#: then give the shape a new id when it comes out
WEIGHTS = "shapes-yolo"


def _track(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    return detseg(monkeypatch, capsys, "track", *args, "--weights", WEIGHTS, "--device", "cpu")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _mot(path: Path) -> np.ndarray:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    assert all(len(r) == 10 and r[7:] == ["-1", "-1", "-1"] for r in rows), rows[:3]
    return np.array(rows, dtype=np.float64).reshape(-1, 10)


@pytest.fixture(scope="module")
def crossing(tmp_path_factory) -> Path:
    """One 40-frame clip (160 x 144) in which shape 1 passes over shape 2 (frames 13-20, down
    to 1 % of shape 2 visible)."""
    root = tmp_path_factory.mktemp("crossing")
    generate_shapes_video(root, sequences=1, frames=40, size=(160, 144), seed=1)
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    generate_shapes_video(root, sequences=2, frames=10, size=(97, 83), seed=2)
    return root


def _xyxy(rows: np.ndarray) -> np.ndarray:
    """Boxes of MOT rows (x, y, w, h in columns 2-5) as corners."""
    return np.c_[rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]]


def _matched_ids(gt: np.ndarray, pred: np.ndarray, track_id: int, frames: range) -> set[int]:
    """Predicted ids matched (IoU >= 0.5) to ground-truth ``track_id`` over ``frames``."""
    ids = set()
    for frame in frames:
        g = gt[(gt[:, 0] == frame) & (gt[:, 1] == track_id)]
        p = pred[pred[:, 0] == frame]
        if not len(g) or not len(p):
            continue
        iou = np.asarray(box_iou(_xyxy(p), _xyxy(g)))[:, 0]
        if iou.max() >= 0.5:
            ids.add(int(p[iou.argmax(), 1]))
    return ids


def test_identities_survive_a_crossing_with_the_shipped_detector(crossing, tmp_path,
                                                                 monkeypatch, capsys) -> None:
    seq = crossing / "shapes-01"
    gt = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",")
    hidden = gt[(gt[:, 1] == 2) & (gt[:, 8] < 0.2), 0]
    assert len(hidden) and hidden.min() > 5 and hidden.max() < 35, "the clip has its crossing"
    out = tmp_path / "run"
    code, stdout, stderr = _track(monkeypatch, capsys, seq, "--out", out)
    assert code == 0, stderr
    assert "shapes-01" in stdout and "tracks" in stdout
    assert frame_count(out / "shapes-01.mp4") == 40
    assert [r["frame"] for r in _jsonl(out / "shapes-01.jsonl")] == list(range(1, 41))
    pred = _mot(out / "shapes-01.txt")
    before, after = range(1, int(hidden.min()) - 2), range(int(hidden.max()) + 3, 41)
    for track_id in (1, 2):
        kept = _matched_ids(gt, pred, track_id, before), _matched_ids(gt, pred, track_id, after)
        assert len(kept[0]) == 1 and kept[0] == kept[1], (track_id, kept)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracker"] == "bytetrack"
    assert summary["sequences"]["shapes-01"]["frames"] == 40
    code, _, stderr = detseg(monkeypatch, capsys, "eval", "--mot", crossing, "--predictions",
                             out, "--out", tmp_path / "eval")
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["combined"]
    assert metrics["MOTA"] >= 0.75 and metrics["IDF1"] >= 0.75, metrics
    assert metrics["IDSW"] <= 2, metrics


def test_frame_numbers_follow_the_source_with_stride_and_range(small, tmp_path, monkeypatch,
                                                               capsys) -> None:
    seq = small / "shapes-01"
    out = tmp_path / "run"
    code, _, stderr = _track(monkeypatch, capsys, seq, seq / "shapes-01.mp4", "--vid-stride",
                             "2", "--start", "3", "--end", "9", "--out", out, "--imgsz", "96",
                             "--conf", "0.05", "--track-high-thresh", "0.3",
                             "--new-track-thresh", "0.3", "--min-hits", "1")
    assert code == 0, stderr
    for name in ("shapes-01", "shapes-01_2"):  # the folder and the video of the same clip
        assert [r["frame"] for r in _jsonl(out / f"{name}.jsonl")] == [3, 5, 7, 9]
        assert frame_count(out / f"{name}.mp4") == 4
        rows = _mot(out / f"{name}.txt")
        assert len(rows) and set(rows[:, 0]) <= {3, 5, 7, 9}
        assert (rows[:, 1] >= 1).all() and (rows[:, 4] > 0).all() and (rows[:, 5] > 0).all()
        for record in _jsonl(out / f"{name}.jsonl"):
            for obj in record["objects"]:
                assert set(obj) == {"id", "class", "label", "score", "box_xyxy"}
                assert obj["class"] in ("circle", "rectangle", "triangle", "star")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"] == {"track_high_thresh": 0.3, "new_track_thresh": 0.3,
                                     "min_hits": 1}
    assert summary["total"]["frames"] == 8 and summary["total"]["sequences"] == 2


def test_a_folder_of_frames_is_numbered_in_name_order(tmp_path, monkeypatch, capsys) -> None:
    frames = tmp_path / "walk"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in (("b.png", (70, 91)), ("a.png", (70, 91)), ("c.png", (64, 80))):
        cv2.imwrite(str(frames / name), rng.integers(0, 255, (h, w, 3), np.uint8))
    out = tmp_path / "run"
    code, _, stderr = _track(monkeypatch, capsys, frames, "--out", out, "--imgsz", "64",
                             "--tracker", "ocsort", "--min-hits", "1")
    assert code == 0, stderr
    assert [r["frame"] for r in _jsonl(out / "walk.jsonl")] == [1, 2, 3]
    assert frame_count(out / "walk.mp4") == 3
    assert json.loads((out / "summary.json").read_text())["tracker"] == "ocsort"


def test_hostile_sources_are_one_line_each_and_the_rest_is_tracked(small, tmp_path, monkeypatch,
                                                                   capsys) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "cut.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    (inputs / "empty.mp4").write_bytes(b"")
    walk = inputs / "walk"
    (walk / "img1").mkdir(parents=True)
    for frame in (1, 2, 4):
        src = small / "shapes-02" / "img1" / f"{frame:06d}.jpg"
        (walk / "img1" / f"{frame:06d}.jpg").write_bytes(src.read_bytes())
    (walk / "img1" / "000003.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    code, _, stderr = _track(monkeypatch, capsys, inputs, tmp_path / "missing.mp4", "--out",
                             out, "--imgsz", "96", "-q")
    assert code == 1, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    for culprit in ("cut.mp4", "empty.mp4", "000003.jpg", "missing.mp4"):
        assert sum(culprit in line for line in lines) == 1, (culprit, lines)
    assert "4 input(s) failed" in stderr
    assert [r["frame"] for r in _jsonl(out / "walk.jsonl")] == [1, 2, 4]
    assert not (out / "cut.txt").exists()


@pytest.mark.parametrize("args, code, message", [
    (["--weights", "shapes-unet"], 2, "semantic segmentation model"),
    (["--delta-t", "2"], 2, "--tracker ocsort"),
    (["--track-buffer", "soon"], 2, "--track-buffer takes an integer"),
    (["--track-high-thresh", "1.5"], 2, "track_high_thresh"),
    (["--start", "5", "--end", "2"], 2, "--end (2) must not be before --start (5)"),
    (["--tracker", "sort"], 2, "sort"),
])
def test_bad_options_are_one_line(small, tmp_path, monkeypatch, capsys, args, code,
                                  message) -> None:
    got, out, err = detseg(monkeypatch, capsys, "track", small / "shapes-01", "--weights",
                           WEIGHTS, "--device", "cpu", "--out", tmp_path / "run", *args)
    assert got == code and message in out + err, out + err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


def test_an_empty_folder_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "nothing").mkdir()
    code, _, err = _track(monkeypatch, capsys, tmp_path / "nothing", "--out", tmp_path / "run")
    assert code == 1 and "holds no videos, frames or sequence folders" in err
    assert "no videos or image sequences" in err


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_leaves_every_output_readable(tmp_path) -> None:
    generate_shapes_video(tmp_path / "clips", sequences=1, frames=200, size=(96, 96), seed=4)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "detseg", "track", str(tmp_path / "clips"), "--weights", WEIGHTS,
         "--device", "cpu", "--imgsz", "96", "--out", str(out)],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    jsonl = out / "shapes-01.jsonl"
    began = time.monotonic()
    while not (jsonl.exists() and len(jsonl.read_text().splitlines()) >= 3):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - began < 120, "timed out waiting for frames"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in stderr, stderr
    assert "Traceback" not in stderr
    records = _jsonl(out / "shapes-01.jsonl")
    assert 3 <= len(records) < 200
    assert [r["frame"] for r in records] == list(range(1, len(records) + 1))
    assert len(records) - 1 <= frame_count(out / "shapes-01.mp4") <= len(records)
    rows = _mot(out / "shapes-01.txt")
    assert set(rows[:, 0]) <= {r["frame"] for r in records}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sequences"]["shapes-01"]["interrupted"] is True
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_torchrun_splits_the_sequences(small, tmp_path) -> None:
    out = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "detseg", "track",
         str(small), "--weights", WEIGHTS, "--device", "cpu", "--imgsz", "64", "--end", "3",
         "--no-save-video", "--out", str(out)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "over 2 processes" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["sequences"]) == ["shapes-01", "shapes-02"]
    assert summary["total"]["frames"] == 6
    for name in ("shapes-01", "shapes-02"):
        assert [r["frame"] for r in _jsonl(out / f"{name}.jsonl")] == [1, 2, 3]
        assert not (out / f"{name}.mp4").exists()
