"""``detseg detect`` / ``detseg segment`` end to end on shapes images with tiny random models:
outputs, COCO results that pycocotools loads, YOLO txt and mask PNGs, bad inputs, run folders
that are never overwritten, and the one-line error when default weights cannot be fetched."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from typer.testing import CliRunner

from detseg.cli.main import app, main
from detseg.data.shapes import SHAPES_CLASSES, generate_shapes
from detseg.models import build_from_spec, make_spec
from detseg.weights import save_checkpoint

VAL_IMAGES = 3


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), train=0, val=VAL_IMAGES, size=64,
                           workers=1)


def _checkpoint(path: Path, family: str, names: list[str]) -> str:
    torch.manual_seed(0)
    spec = make_spec(family, "tiny", class_names=names, input_size=64)
    save_checkpoint(path, build_from_spec(spec).state_dict(), spec)
    return str(path)


@pytest.fixture(scope="module")
def det_ckpt(tmp_path_factory) -> str:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "det.pt", "mask_rcnn",
                       ["__background__", *SHAPES_CLASSES])


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory) -> str:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "seg.pt", "unet",
                       ["background", *SHAPES_CLASSES])


def run(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run the ``detseg`` entry point in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["detseg", *args])
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_detect_writes_images_coco_json_yolo_txt_and_masks(shapes, det_ckpt, tmp_path,
                                                          monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, stderr = run(
        ["detect", str(shapes / "images" / "val"), "--weights", det_ckpt, "--device", "cpu",
         "--conf", "0", "--max-det", "4", "-b", "2", "--out", str(out), "--save-txt",
         "--save-masks", "--line-width", "1"], monkeypatch, capsys)
    assert code == 0, stderr
    names = [f"{i:06d}" for i in range(VAL_IMAGES)]
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"{n}.jpg" for n in names]
    assert sorted(p.stem for p in (out / "labels").iterdir()) == names
    lines = (out / "labels" / "000000.txt").read_text().splitlines()
    assert len(lines) == 4
    for line in lines:
        values = line.split()
        assert 0 <= int(values[0]) < len(SHAPES_CLASSES)
        assert all(0.0 <= float(v) <= 1.0 for v in values[1:])
    mask = cv2.imread(str(out / "masks" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (64, 64) and mask.max() <= 4
    gt = COCO(str(shapes / "annotations" / "instances_val.json"))
    results = gt.loadRes(str(out / "predictions.json"))
    anns = results.loadAnns(results.getAnnIds())
    assert len(anns) == 4 * VAL_IMAGES
    assert {a["image_id"] for a in anns} == set(gt.getImgIds())
    assert {a["category_id"] for a in anns} <= set(gt.getCatIds())
    by_id = {img["id"]: img["file_name"] for img in gt.dataset["images"]}
    assert all(by_id[a["image_id"]] == a["file_name"] for a in anns)
    assert all("segmentation" in a and "counts" in a["segmentation"] for a in anns)
    assert "ms preprocess" in stdout and "ms inference" in stdout
    assert f"{4 * VAL_IMAGES} detections" in stdout


def test_segment_writes_overlays_masks_and_coco_rle(shapes, seg_ckpt, tmp_path, monkeypatch,
                                                    capsys) -> None:
    out = tmp_path / "seg"
    image = shapes / "images" / "val" / "000001.jpg"
    code, stdout, stderr = run(["segment", str(image), "--weights", seg_ckpt, "--device", "cpu",
                                "--out", str(out), "--save-masks"], monkeypatch, capsys)
    assert code == 0, stderr
    assert (out / "000001.jpg").is_file()
    mask = cv2.imread(str(out / "masks" / "000001.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (64, 64) and mask.max() <= 4
    entries = json.loads((out / "predictions.json").read_text())
    assert {e["image_id"] for e in entries} == {1}
    assert sum(e["segmentation"]["counts"] != "" for e in entries) == len(np.unique(mask))
    assert "classes found" in stdout


def test_bad_files_are_listed_and_the_rest_processed(shapes, det_ckpt, tmp_path, monkeypatch,
                                                     capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = shapes / "images" / "val" / "000002.jpg"
    (folder / "good.jpg").write_bytes(good.read_bytes())
    (folder / "broken.jpg").write_bytes(good.read_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "run"
    code, _, stderr = run(["detect", str(folder), str(tmp_path / "nope.jpg"), "--weights",
                           det_ckpt, "--device", "cpu", "--out", str(out), "--quiet"],
                          monkeypatch, capsys)
    assert code == 1
    flat = " ".join(stderr.split())
    assert re.search(r"broken\.jpg: (truncated|corrupt) image data", flat)
    assert "empty.png: empty file" in flat and "nope.jpg: no such file" in flat
    assert "3 input(s) failed" in flat and "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == [".detseg-run", "good.jpg",
                                                     "predictions.json"]
    assert sorted(p.name for p in folder.iterdir()) == ["broken.jpg", "empty.png", "good.jpg"]


def test_run_folders_are_never_overwritten(shapes, det_ckpt, tmp_path, monkeypatch,
                                           capsys) -> None:
    image = shapes / "images" / "val" / "000000.jpg"
    monkeypatch.chdir(tmp_path)
    base = ["detect", str(image), "--weights", det_ckpt, "--device", "cpu", "--quiet",
            "--no-save-images"]
    assert run(base, monkeypatch, capsys)[0] == 0
    assert run(base, monkeypatch, capsys)[0] == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "detect").iterdir()) == ["exp", "exp2"]
    before = sorted(p.name for p in image.parent.iterdir())
    code, _, stderr = run([*base, "--out", str(image.parent)], monkeypatch, capsys)
    assert code == 2 and "not empty" in stderr
    assert sorted(p.name for p in image.parent.iterdir()) == before


def test_default_weights_offline_is_a_one_line_error(tmp_path, monkeypatch, capsys) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run(["detect", str(image), "--device", "cpu"], monkeypatch, capsys)
    assert code in (1, 2)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in stderr
    assert not (tmp_path / "runs").exists(), "no run folder for a run that never started"


def test_task_mismatch_and_help(det_ckpt, seg_ckpt, tmp_path, monkeypatch, capsys) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    code, _, stderr = run(["segment", str(image), "--weights", det_ckpt, "--device", "cpu",
                           "--out", str(tmp_path / "o")], monkeypatch, capsys)
    assert code == 2 and "use `detseg detect`" in stderr
    for command in ("detect", "segment"):
        shown = CliRunner().invoke(app, [command, "--help"], terminal_width=120).output
        assert "Examples" in shown and "--vid-stride" in shown and "--save-masks" in shown


def test_iou_sets_the_nms_threshold_of_detect_only(shapes, det_ckpt, tmp_path, monkeypatch,
                                                   capsys) -> None:
    image = shapes / "images" / "val" / "000001.jpg"
    counts = {}
    for iou in ("0.0", "0.9"):
        out = tmp_path / f"iou{iou}"
        code, _, stderr = run(["detect", str(image), "--weights", det_ckpt, "--device", "cpu",
                               "--conf", "0", "--iou", iou, "--max-det", "1000", "--out", str(out),
                               "-q"],
                              monkeypatch, capsys)
        assert code == 0, stderr
        entries = json.loads((out / "predictions.json").read_text())
        counts[iou] = len(entries)
        boxes = {}
        for e in entries:
            boxes.setdefault(e["category_id"], []).append(e["bbox"])
        if iou == "0.0":  # no two boxes of one class may overlap at all
            for same in boxes.values():
                for i, (x, y, w, h) in enumerate(same):
                    for (u, v, p, q) in same[i + 1:]:
                        # (bbox values are rounded to 0.01 px: touching is not overlapping)
                        assert (min(x + w, u + p) <= max(x, u) + 0.02
                                or min(y + h, v + q) <= max(y, v) + 0.02)
    assert counts["0.0"] < counts["0.9"]
    code, _, stderr = run(["segment", str(image), "--iou", "0.5", "--device", "cpu"],
                          monkeypatch, capsys)
    assert code == 2 and "--iou applies to detectors" in stderr


def test_instances_of_one_class_get_their_own_colours() -> None:
    from detseg.viz.draw import draw_detections

    image = np.full((60, 90, 3), 128, np.uint8)
    masks = np.zeros((2, 60, 90), bool)
    masks[0, 10:50, 5:45] = True
    masks[1, 10:50, 40:85] = True  # touches and overlaps the first
    drawn = draw_detections(image, [[5, 10, 45, 50], [40, 10, 85, 50]], [1, 1], ["bg", "cell"],
                            scores=[0.9, 0.8], masks=masks, hide_labels=True)
    first, second = drawn[30, 20].astype(int), drawn[30, 70].astype(int)
    assert (first != 128).any() and (second != 128).any(), "masks drawn"
    assert np.abs(first - second).sum() > 60, "two cells of one class look apart"


def test_labels_stay_inside_the_picture() -> None:
    from detseg.viz.draw import draw_detections

    image = np.zeros((40, 70, 3), np.uint8)
    drawn = draw_detections(image, [[30, 0, 70, 12]], [1], ["bg", "a-very-long-class-name"],
                            scores=[0.5], line_width=1)
    inked = np.argwhere((drawn != 0).any(axis=2))
    assert inked[:, 0].min() == 0 and inked[:, 1].max() == 69
    # the label's filled box starts inside the picture and its text is on it, not cut off
    rows = np.argwhere((drawn[:, :, :] != 0).all(axis=2).sum(axis=1) > 30)
    assert len(rows) >= 5, "a label band several rows high"
    assert (drawn[:, 0] != 0).any(), "a label too wide for the image starts at its left edge"


def test_help_names_box_conventions_and_polygons() -> None:
    import typer

    commands = typer.main.get_command(app).commands
    helps = {c: {p.name: " ".join((getattr(p, "help", "") or "").split())
                 for p in commands[c].params if not getattr(p, "hidden", False)}
             for c in ("detect", "segment")}
    detect = helps["detect"]
    assert "bbox = [x, y, width, height]" in detect["save_json"]
    assert "box_xyxy = [x1, y1, x2, y2]" in detect["save_json"]
    assert "polygons" in detect["save_txt"] and "per processed video frame" in detect["save_txt"]
    assert "NMS IoU" in detect["iou"] and "iou" not in helps["segment"]
