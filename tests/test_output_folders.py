"""Hostile output folders for ``detseg detect``: ``--out`` that is a file or lies below one, a
read-only folder, a disk that fills up during the run, ``--name`` that tries to leave runs/,
``--out`` inside the input folder, inputs that share a name, stale temporaries of a killed run,
and a folder a live run holds. Each case asserts the exit code of the real entry point, the one
line naming the culprit, no traceback, and what was still written."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_runner import detseg, random_checkpoint
from PIL import Image

from detseg.runs import RUN_MARKER, RunFolderClaim, remove_stale_temporaries


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _picture(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "det.pt", "faster_rcnn")


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "in"
    _picture(folder / "a.png", 45, 37)
    _picture(folder / "b.jpg", 29, 51, seed=1)
    return folder


def _detect(monkeypatch, capsys, ckpt, *args) -> tuple[int, str, str]:
    return detseg(monkeypatch, capsys, "detect", *args, "--weights", ckpt, "--device", "cpu",
                  "--conf", "0", "--max-det", "3")


@pytest.fixture()
def tmpfs(tmp_path):
    """``make(size, read_only)``: a small tmpfs mounted under ``tmp_path`` (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def make(size: str, read_only: bool = False) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_out_that_is_a_file_or_below_one(images, ckpt, tmp_path, monkeypatch, capsys) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    for out, culprit in ((taken, "a file has that name"), (taken / "sub", "is a file")):
        code, _, stderr = _detect(monkeypatch, capsys, ckpt, images, "--out", out)
        lines = _lines(stderr)
        assert code == 2 and len(lines) == 1, stderr
        assert lines[0].startswith("error:") and str(taken) in lines[0] and culprit in lines[0]
    assert taken.read_text() == "keep me"


def test_read_only_output_folder_is_a_setup_error(images, ckpt, tmpfs, monkeypatch,
                                                  capsys) -> None:
    read_only = tmpfs("1m", read_only=True)
    for out in (read_only, read_only / "run"):
        code, _, stderr = _detect(monkeypatch, capsys, ckpt, images, "--out", out)
        lines = _lines(stderr)
        assert code == 2 and len(lines) == 1, stderr
        assert str(out) in lines[0] and "Read-only file system" in lines[0]


def test_unwritable_folder_without_root(images, ckpt, tmp_path, monkeypatch, capsys) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes through permission bits (the tmpfs case covers root)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, _, stderr = _detect(monkeypatch, capsys, ckpt, images, "--out", locked / "run")
    assert code == 2 and "Permission denied" in stderr and len(_lines(stderr)) == 1


def test_disk_full_during_detect_keeps_what_was_written(ckpt, tmp_path, tmpfs, monkeypatch,
                                                         capsys) -> None:
    folder = tmp_path / "noise"
    for i in range(12):  # annotated PNGs of noise do not compress: ~0.4 MB each
        _picture(folder / f"{i:02d}.png", 381, 373, seed=i)
    out = tmpfs("2m") / "run"
    code, _, stderr = _detect(monkeypatch, capsys, ckpt, folder, "--out", out, "-q")
    assert code == 1, stderr
    failed = [line for line in _lines(stderr) if "No space left on device" in line]
    assert len(failed) == 1 and str(out) in failed[0], stderr
    assert "stopped: 1 output could not be written" in stderr
    entries = json.loads((out / "predictions.json").read_text())  # still valid JSON
    drawn = sorted(p.name for p in out.glob("*.png"))
    assert 0 < len(drawn) < 12
    assert {e["file_name"] for e in entries} >= set(drawn)
    for name in drawn:  # every annotated image under its final name is complete
        assert Image.open(out / name).load() is not None
    assert not [p for p in out.iterdir() if p.name.endswith((".tmp", ".tmp.png", ".tmp.json"))]


def test_name_cannot_leave_the_runs_folder(images, ckpt, tmp_path, monkeypatch,
                                           capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("../../x", "..", "a/b", ""):
        code, _, stderr = _detect(monkeypatch, capsys, ckpt, images, "--name", name)
        lines = _lines(stderr)
        assert code == 2 and len(lines) == 1 and "plain folder name" in lines[0], stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "work"]
    assert not (work / "runs").exists()
    code, _, _ = _detect(monkeypatch, capsys, ckpt, images, "--name", "mine", "-q")
    assert code == 0 and (work / "runs" / "detect" / "mine" / "a.png").is_file()


def test_out_inside_the_input_folder_is_skipped_next_time(images, ckpt, monkeypatch,
                                                          capsys) -> None:
    first = images / "run1"
    assert _detect(monkeypatch, capsys, ckpt, images, "--out", first, "-q")[0] == 0
    assert sorted(p.name for p in first.iterdir()) == [RUN_MARKER, "a.png", "b.jpg",
                                                       "predictions.json"]
    code, stdout, stderr = _detect(monkeypatch, capsys, ckpt, images, "--out", images / "run2")
    assert code == 0, stderr
    assert f"skipped {first}: output folder of an earlier detseg run (2 files)" in stderr
    assert "2 images," in stdout
    entries = json.loads((images / "run2" / "predictions.json").read_text())
    assert {e["file_name"] for e in entries} == {"a.png", "b.jpg"}
    # a run folder named as the source itself is read
    code, stdout, _ = _detect(monkeypatch, capsys, ckpt, first, "--out", images / "run3")
    assert code == 0 and "2 images," in stdout


def test_file_names_are_relative_to_the_inputs_common_folder(ckpt, tmp_path, monkeypatch,
                                                             capsys) -> None:
    root = tmp_path / "photos"
    _picture(root / "x" / "b.jpg", 33, 41)
    _picture(root / "y" / "b.jpg", 47, 31, seed=1)
    out = tmp_path / "run"
    assert _detect(monkeypatch, capsys, ckpt, root, "--out", out, "-q")[0] == 0
    entries = json.loads((out / "predictions.json").read_text())
    by_name = {}
    for entry in entries:
        by_name.setdefault(entry["file_name"], set()).add(entry["image_id"])
    assert set(by_name) == {"x/b.jpg", "y/b.jpg"}
    assert by_name["x/b.jpg"].isdisjoint(by_name["y/b.jpg"])
    assert sorted(p.name for p in out.glob("*.jpg")) == ["b.jpg", "b_2.jpg"]


def test_stale_temporaries_of_a_killed_run_are_removed_by_the_next(images, ckpt, tmp_path,
                                                                   monkeypatch, capsys) -> None:
    out = tmp_path / "killed"
    out.mkdir()
    (out / RUN_MARKER).write_text("")  # the marker of a run that is gone (nobody holds it)
    stale = [out / ".a.tmp.png", out / ".predictions.tmp.json", out / ".clip.tmp.mp4"]
    for path in stale:
        path.write_bytes(b"half")
    code, _, stderr = _detect(monkeypatch, capsys, ckpt, images, "--out", out, "-q")
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER, "a.png", "b.jpg",
                                                     "predictions.json"]


def test_a_folder_a_live_run_holds_is_refused_and_left_alone(images, ckpt, tmp_path,
                                                             monkeypatch, capsys) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    claim = RunFolderClaim(out, "detect")
    (out / ".a.tmp.png").write_bytes(b"being written")
    try:
        code, _, stderr = _detect(monkeypatch, capsys, ckpt, images, "--out", out)
    finally:
        claim.release()
    lines = _lines(stderr)
    assert code == 2 and len(lines) == 1 and "in use by a running detseg" in lines[0]
    assert (out / ".a.tmp.png").read_bytes() == b"being written"


def test_stale_checkpoint_temporaries_are_found_and_removed(tmp_path) -> None:
    run = tmp_path / "train"
    (run / "labels").mkdir(parents=True)
    keep = [run / "last.pt", run / "results.csv", run / ".hidden-notes", run / "x.tmp"]
    stale = [run / ".last.pt.1a2b3c4d.tmp", run / ".best.tmp.pt", run / "labels" / ".0.tmp.txt"]
    for path in keep + stale:
        path.write_bytes(b"x")
    os.symlink(run / "last.pt", run / ".link.tmp")  # links are not followed or removed
    assert sorted(remove_stale_temporaries(run)) == sorted(stale)
    assert all(p.exists() for p in keep) and (run / ".link.tmp").is_symlink()


def test_train_resume_removes_the_temporaries_of_a_killed_save(tmp_path, monkeypatch,
                                                               capsys) -> None:
    from detseg.data.shapes import generate_shapes

    root = generate_shapes(tmp_path / "shapes", train=2, val=1, size=48, seed=3, workers=1)
    run = tmp_path / "train"
    code, _, stderr = detseg(monkeypatch, capsys, "train", "--model", "unet", "--backbone",
                             "tiny", "--dataset", "shapes", "--data-root", root, "--epochs", "1",
                             "--batch-size", "2", "--imgsz", "48", "--device", "cpu",
                             "--out", run)
    assert code == 0, stderr
    stale = run / ".last.pt.0badf00d.tmp"  # what write_atomic leaves when killed mid-save
    stale.write_bytes(b"half a checkpoint")
    code, _, stderr = detseg(monkeypatch, capsys, "train", "--resume", run / "last.pt",
                             "--epochs", "2", "--device", "cpu")
    assert code == 0, stderr
    assert not stale.exists() and (run / "last.pt").is_file()
