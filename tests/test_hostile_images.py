"""Hostile images through `detseg detect` / `segment`: unreadable files among good ones, names
that look like rich markup, symlink loops in the input folder. Each case asserts the exit code,
the one line naming the culprit, no traceback, and what was still written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from cli_runner import detseg_text
from PIL import Image


def _image(path, height=43, width=61) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(path)


def _written(out) -> list[str]:
    return json.loads((out / "predictions.json").read_text()) if (
        out / "predictions.json").exists() else []


def test_unreadable_images_are_named_and_the_rest_still_runs(monkeypatch, capsys,
                                                             tmp_path) -> None:
    folder = tmp_path / "in"
    _image(folder / "good1.png")
    _image(folder / "good2.jpg", 37, 29)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    good = (folder / "good2.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 3])
    out = tmp_path / "out"
    code, text = detseg_text(monkeypatch, capsys, "detect", folder, "--weights",
                             "shapes-faster_rcnn", "--out", out)
    assert code == 1, text
    for name in ("empty.jpg", "text.png"):
        assert sum(name in line for line in text.splitlines()) >= 1, text
    annotated = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".jpg"))
    assert {"good1.png", "good2.jpg"} <= set(annotated), annotated
    assert isinstance(_written(out), list)


@pytest.mark.parametrize("command,weights", [("detect", "shapes-faster_rcnn"),
                                             ("segment", "shapes-unet")])
def test_names_that_look_like_markup_are_printed_literally(monkeypatch, capsys, tmp_path,
                                                           command, weights) -> None:
    folder = tmp_path / "a["
    _image(folder / "]0.png")
    _image(folder / "[bold]c.png")
    (folder / "[red]broken.png").write_text("nope")
    out = tmp_path / "out"
    code, text = detseg_text(monkeypatch, capsys, command, folder, "--weights", weights,
                        "--out", out)
    assert code == 1, text  # the broken one
    assert "[red]broken.png" in text, text
    written = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
    assert "]0.png" in written and "[bold]c.png" in written, written


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks here")
def test_symlink_loops_do_not_hang_and_each_image_runs_once(monkeypatch, capsys,
                                                            tmp_path) -> None:
    folder = tmp_path / "in"
    _image(folder / "a.png")
    _image(folder / "sub" / "b.png", 30, 50)
    os.symlink(".", folder / "self")
    os.symlink("..", folder / "sub" / "back")
    out = tmp_path / "out"
    code, text = detseg_text(monkeypatch, capsys, "detect", folder, "--weights",
                        "shapes-faster_rcnn", "--out", out, "--conf", "0.0")
    assert code == 0, text
    names = [entry["file_name"] for entry in _written(out)]
    assert len({n for n in names}) <= 2
    annotated = [p for p in out.rglob("*.png")]
    assert len(annotated) == 2, annotated
