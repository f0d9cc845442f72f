"""Hostile arguments: numbers out of range, unknown names, models without trained weights,
weights that are missing or cannot be downloaded. Each case asserts exit code 2 (a usage or
setup error), one line naming the option or file, and no traceback."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runner import detseg_text
from PIL import Image


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.full((41, 57, 3), 120, np.uint8)).save(path)
    return path


@pytest.fixture()
def data(tmp_path):
    """A one-class mask folder (two odd-sized images) for train/eval arguments."""
    for split in ("train", "val"):
        (tmp_path / "d" / "images" / split).mkdir(parents=True)
        (tmp_path / "d" / "masks" / split).mkdir(parents=True)
        for i, (h, w) in enumerate([(33, 47), (40, 29)]):
            Image.fromarray(np.full((h, w, 3), 90 + i, np.uint8)).save(
                tmp_path / "d" / "images" / split / f"{i}.png")
            mask = np.zeros((h, w), np.uint8)
            mask[5:15, 5:15] = 1
            Image.fromarray(mask).save(tmp_path / "d" / "masks" / split / f"{i}.png")
    (tmp_path / "d" / "classes.txt").write_text("background\nthing\n")
    return tmp_path / "d"


TRAIN = ["train", "--model", "unet", "--backbone", "tiny", "--dataset", "masks"]


@pytest.mark.parametrize(("extra", "named"), [
    (["--epochs", "0"], "--epochs"),
    (["--lr", "-1"], "--lr"),
    (["--workers", "-1"], "--workers"),
    (["--imgsz", "7"], "--imgsz"),
    (["--imgsz", "100000"], "--imgsz"),
    (["--batch-size", "0"], "--batch-size"),
    (["--accumulate", "0"], "--accumulate"),
    (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--threads", "0"], "--threads"),
    (["--optimizer", "adam"], "optimizer"),
    (["--augment", "wild"], "augment"),
    (["--lr", "0"], "lr"),
])
def test_train_refuses_numbers_and_choices_out_of_range(monkeypatch, capsys, data, tmp_path,
                                                        extra, named) -> None:
    code, text = detseg_text(monkeypatch, capsys, *TRAIN, "--data-root", data,
                        "--out", tmp_path / "run", "--epochs", "1", *extra)
    assert code == 2 and named in text, text
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("args", [
    ["detect", "{image}", "--weights", "shapes-faster_rcnn", "--imgsz", "100000"],
    ["detect", "{image}", "--weights", "shapes-faster_rcnn", "--imgsz", "8"],
    ["segment", "{image}", "--weights", "shapes-unet", "--imgsz", "100000"],
    ["detect", "{image}", "--weights", "shapes-faster_rcnn", "--conf", "1.5"],
    ["detect", "{image}", "--weights", "shapes-faster_rcnn", "--max-det", "0"],
    ["export", "--model", "unet", "--backbone", "tiny", "--imgsz", "0"],
    ["export", "--model", "unet", "--backbone", "tiny", "--num-classes", "0"],
    ["export", "--model", "unet", "--backbone", "tiny", "--check-image", "{image}"],
    ["benchmark", "--model", "unet", "--backbone", "tiny", "--iters", "0"],
    ["summary", "--model", "unet", "--backbone", "tiny", "--imgsz", "100000"],
    ["eval", "--dataset", "masks", "--data-root", "{data}", "--weights", "shapes-unet",
     "-b", "0"],
    ["eval", "--dataset", "masks", "--data-root", "{data}", "--weights", "shapes-unet",
     "--max-images", "0"],
])
def test_every_command_bounds_its_numbers(monkeypatch, capsys, image, data, args) -> None:
    args = [a.format(image=image, data=data) for a in args]
    code, text = detseg_text(monkeypatch, capsys, *args)
    assert code == 2, text


@pytest.mark.parametrize(("args", "named"), [
    (["detect", "{image}", "--model", "faster_rcnn", "--backbone", "tiny"], "trained weights"),
    (["eval", "--dataset", "masks", "--data-root", "{data}", "--model", "unet",
      "--backbone", "tiny"], "trained weights"),
    (["detect", "{image}", "--weights", "{missing}"], "no such file"),
    (["detect", "{image}", "--weights", "no-such-manifest-name"], "no-such-manifest-name"),
    (["detect", "{image}", "--model", "no_such_model"], "no_such_model"),
    (["detect", "{image}", "--model", "faster_rcnn", "--backbone", "no_such_net",
      "--weights", "none"], "no_such_net"),
    (["train", "--model", "unet", "--backbone", "tiny", "--dataset", "pascal",
      "--data-root", "{data}"], "pascal"),
    (["eval", "--dataset", "masks", "--data-root", "{data}", "--model", "fcn_resnet50"],
     "weights"),
])
def test_unknown_names_and_untrained_models_are_setup_errors(monkeypatch, capsys, image, data,
                                                             tmp_path, args, named) -> None:
    monkeypatch.setenv("DETSEG_HOME", str(tmp_path / "home"))  # an empty weights cache
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    args = [a.format(image=image, data=data, missing=tmp_path / "nope.pt") for a in args]
    code, text = detseg_text(monkeypatch, capsys, *args)
    assert code == 2 and named in text, text
    assert len([line for line in text.splitlines() if line.startswith("error:")]) == 1, text
