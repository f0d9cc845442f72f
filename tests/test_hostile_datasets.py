"""Hostile datasets: symlink loops, JSON that is not COCO, NaN and infinity in labels, invalid
RLE, zero sizes, empty splits, markup-looking text and YAML alias bombs. Each case asserts
the exit code of the real ``detseg`` entry point, the one line naming the culprit, no
traceback, and what was still read or written."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from cli_runner import detseg
from PIL import Image

from detseg.cli.console import console
from detseg.data import build_dataset
from detseg.data.io import expand_sources
from detseg.data.masks import encode_rle
from detseg.errors import DatasetError


def _rgb(path, width, height, seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(path)


@pytest.fixture()
def yolo_root(tmp_path):
    """A YOLO tree of two odd-sized images; ``a`` has a NaN line and an infinite one."""
    root = tmp_path / "yolo"
    _rgb(root / "images" / "val" / "a.png", 53, 37)
    _rgb(root / "images" / "val" / "b.png", 29, 47, seed=1)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n1 nan 0.5 0.2 0.2\n1 0.3 0.3 inf 0.1\n7 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "val" / "b.txt").write_text("1 0.5 0.5 0.4 0.4\n")
    (root / "data.yaml").write_text("val: images/val\nnames: [cat, dog]\n")
    return root


def _coco_file(root, annotations, images=None) -> None:
    _rgb(root / "val2017" / "p.jpg", 45, 31)
    data = {"images": images if images is not None else
            [{"id": 1, "file_name": "p.jpg", "width": 45, "height": 31}],
            "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))


def _ann(aid, bbox, **extra) -> dict:
    return {"id": aid, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0, **extra}


# ---------------------------------------------------------------- symlink loops


def test_folder_walk_visits_each_real_folder_once_and_names_the_links(tmp_path) -> None:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for rel in ("a.jpg", "sub/b.jpg"):
        (root / rel).write_bytes(b"x")
    (root / "self").symlink_to(".")
    (root / "sub" / "back").symlink_to("..")
    (root / "sub" / "again").symlink_to("../sub")
    start = time.perf_counter()
    sources = expand_sources([root])
    assert time.perf_counter() - start < 5
    assert [p.relative_to(root).as_posix() for p in sources.images] == ["a.jpg", "sub/b.jpg"]
    assert sorted(link.split(" -> ")[0] for link in sources.skipped_links) == [
        str(root / "self"), str(root / "sub" / "again"), str(root / "sub" / "back")]
    outside = tmp_path / "outside"
    (outside / "c.png").parent.mkdir()
    (outside / "c.png").write_bytes(b"x")
    (root / "link_out").symlink_to(outside)  # a link elsewhere is still followed, once
    sources = expand_sources([root, root / "sub"])
    assert sorted(p.name for p in sources.images) == ["a.jpg", "b.jpg", "c.png"]


# ---------------------------------------------------------------- COCO


@pytest.mark.parametrize("text", ["[1, 2, 3]", "[" * 100_000 + "]" * 100_000, "{"])
def test_check_on_json_that_is_no_coco_file_names_the_file(tmp_path, monkeypatch, capsys,
                                                           text) -> None:
    bad = tmp_path / "list.json"
    bad.write_text(text)
    code, _, err = detseg(monkeypatch, capsys, "dataset", "check", bad)
    assert code == 1 and f"{bad}: not a " in err
    assert len(err.strip().splitlines()) == 1


def test_non_finite_and_invalid_coco_entries_are_skipped_everywhere(tmp_path, monkeypatch,
                                                                   capsys) -> None:
    root = tmp_path / "coco"
    ok = encode_rle(np.pad(np.ones((5, 7), np.uint8), ((3, 23), (4, 34))))
    _coco_file(root, [
        _ann(1, [4, 3, 7, 5], segmentation=ok, area=35),
        _ann(2, [float("nan"), 3, 5, 5]),
        _ann(3, [2, 2, 5, 5], area=float("inf")),
        _ann(4, [2, 2, 5, 5], segmentation=[[1, 1, float("nan"), 1, 4, 4]]),
        _ann(5, [2, 2, 5, 5], segmentation={"size": [31, 45], "counts": [10, 20]}),
        _ann(6, [2, 2, 5, 5], segmentation={"size": [31, 45], "counts": "0z"}),
    ])
    ds = build_dataset("coco", root, split="val", task="instance")
    assert [i.source_id for i in ds.records[0].instances] == [1]
    assert ds.left_out == 5
    for aid in (2, 3, 4, 5, 6):
        assert any(f"annotation {aid}:" in w and "instances_val2017.json" in w
                   for w in ds.warnings), aid
    assert [a["id"] for a in ds.to_coco()["annotations"]] == [1]  # evaluation ground truth
    assert ds[0][1]["masks"].shape == (1, 31, 45)

    code, out, _ = detseg(monkeypatch, capsys, "dataset", "check", root, "--json")
    assert code == 1
    found = {(p["code"], p["ids"][0]) for p in json.loads(out)}
    assert {("non-finite", 2), ("non-finite", 3), ("bad-segmentation", 4),
            ("bad-segmentation", 5), ("bad-segmentation", 6)} <= found
    assert not any(aid == 1 for _, aid in found)

    dst = tmp_path / "out"
    code, out, err = detseg(monkeypatch, capsys, "dataset", "convert", "--from", "coco",
                            "--to", "coco", root, dst)
    assert code == 0 and "annotation 2" in err
    assert "│ val2017 │ 1      │ 1       │ 5        │" in out
    written = (dst / "annotations" / "instances_val2017.json").read_text()
    assert "NaN" not in written and "Infinity" not in written


def test_check_flags_zero_sizes_bad_rle_and_prints_brackets_literally(tmp_path, monkeypatch,
                                                                      capsys) -> None:
    root = tmp_path / "coco"
    short = encode_rle(np.ones((10, 10), np.uint8))["counts"]  # runs of 100 pixels, not 31x45
    _coco_file(root, [_ann(1, [30, 20, 30, 20]), _ann(2, "[x, y]"),
                      _ann(3, [1, 1, 3, 3], segmentation={"size": [31, 45], "counts": short})],
               images=[{"id": 1, "file_name": "p.jpg", "width": 45, "height": 31},
                       {"id": 2, "file_name": "p.jpg", "width": 0, "height": 31}])
    monkeypatch.setattr(console, "width", 400)  # one table row a line
    code, out, _ = detseg(monkeypatch, capsys, "dataset", "check", root)
    assert code == 1
    text = " ".join(out.split())
    assert "box [30, 20, 30, 20] leaves the 45x31 image" in text
    assert 'bbox "[x, y]" is not [x, y, w, h]' in text
    assert "zero-size" in text and "width 0" in text
    assert "RLE run lengths sum to 100, not 31x45 = 1395" in text


def test_empty_coco_split_is_an_error_everywhere(tmp_path, monkeypatch, capsys) -> None:
    root = tmp_path / "coco"
    _coco_file(root, [], images=[])
    with pytest.raises(DatasetError, match="0 images found: .*instances_val2017.json lists no"):
        build_dataset("coco", root, split="val2017")
    for command in (["stats", root], ["convert", "--from", "coco", "--to", "yolo", root,
                                      tmp_path / "out"]):
        code, _, err = detseg(monkeypatch, capsys, "dataset", *command)
        assert code == 1 and "0 images found" in err and "lists no images" in err
    code, out, _ = detseg(monkeypatch, capsys, "dataset", "check", root, "--json")
    assert code == 1 and [p["code"] for p in json.loads(out)] == ["empty"]


# ---------------------------------------------------------------- YOLO


def test_non_finite_yolo_lines_are_reported_with_file_and_line(yolo_root, tmp_path, monkeypatch,
                                                               capsys) -> None:
    labels = yolo_root / "labels" / "val" / "a.txt"
    ds = build_dataset("yolo", yolo_root, split="val", task="detect")
    assert ds[0][1]["labels"].tolist() == [1] and ds[1][1]["labels"].tolist() == [2]
    assert ds.left_out == 3
    assert any(w.startswith(f"{labels}:2: non-finite number") for w in ds.warnings)
    assert any(w.startswith(f"{labels}:3: non-finite number") for w in ds.warnings)
    assert len(ds.to_coco()["annotations"]) == 2

    code, out, _ = detseg(monkeypatch, capsys, "dataset", "check", yolo_root, "--json")
    assert code == 1
    found = {(p["code"], p["ids"][0]) for p in json.loads(out)}
    assert found == {("non-finite", "a.txt:2"), ("non-finite", "a.txt:3"),
                     ("unknown-category", "a.txt:4")}

    dst = tmp_path / "coco"
    code, out, err = detseg(monkeypatch, capsys, "dataset", "convert", "--from", "yolo",
                            "--to", "coco", yolo_root, dst)
    assert code == 0 and f"{labels}:2" in err
    assert "│ val   │ 2      │ 2       │ 3        │" in out  # every skipped line is left out
    written = (dst / "annotations" / "instances_val.json").read_text()
    assert "NaN" not in written and "Infinity" not in written


def test_yaml_alias_bomb_is_refused_fast(yolo_root, monkeypatch, capsys) -> None:
    lines = ["val: images/val", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 9)]
    lines.append("names: *a8")
    (yolo_root / "data.yaml").write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    code, _, err = detseg(monkeypatch, capsys, "dataset", "stats", yolo_root)
    assert time.perf_counter() - start < 5
    assert code == 1 and "data.yaml" in err and "aliases" in err
    assert len(err.strip().splitlines()) == 1


def test_yaml_nested_too_deeply_is_refused(yolo_root) -> None:
    (yolo_root / "data.yaml").write_text("val: images/val\nnames: " + "[" * 50_000
                                         + "]" * 50_000 + "\n")
    with pytest.raises(DatasetError, match="data.yaml: YAML nested too deeply"):
        build_dataset("yolo", yolo_root, split="val")


def test_yaml_names_of_the_wrong_type_are_refused(yolo_root) -> None:
    (yolo_root / "data.yaml").write_text("val: images/val\nnames: {a: {b: c}}\n")
    with pytest.raises(DatasetError, match="class id 'a' is not an integer"):
        build_dataset("yolo", yolo_root, split="val")
    (yolo_root / "data.yaml").write_text("val: images/val\nnames: 12\n")
    with pytest.raises(DatasetError, match="names: expected a list or a mapping"):
        build_dataset("yolo", yolo_root, split="val")


def test_empty_yolo_split_says_where_it_looked(yolo_root, monkeypatch, capsys) -> None:
    (yolo_root / "images" / "test").mkdir()
    (yolo_root / "data.yaml").write_text("val: images/val\ntest: images/test\nnames: [a, b]\n")
    with pytest.raises(DatasetError, match="0 images found: .*data.yaml: split 'test'"):
        build_dataset("yolo", yolo_root, split="test")
    code, _, err = detseg(monkeypatch, capsys, "dataset", "stats", yolo_root)
    assert code == 1 and "split 'test'" in err


# ---------------------------------------------------------------- mask folders


def test_bad_masks_are_skipped_with_one_line_each(tmp_path) -> None:
    root = tmp_path / "m"
    for k, (w, h) in enumerate([(41, 27), (33, 45), (20, 20)]):
        _rgb(root / "images" / f"i{k}.png", w, h, seed=k)
    ids = np.zeros((27, 41), np.uint8)
    ids[3:9, 4:10] = 1
    (root / "masks").mkdir()
    Image.fromarray(ids).save(root / "masks" / "i0.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "i1.png")  # wrong size
    (root / "masks" / "i2.png").write_text("not a png")
    ds = build_dataset("masks", root, task="detect", mask_type="instance")
    assert len(ds) == 1 and ds[0][1]["boxes"].tolist() == [[4, 3, 10, 9]]
    assert any("i1.png: mask is 10x10, image is 33x45" in w for w in ds.warnings)
    assert any("i2.png: cannot read mask" in w for w in ds.warnings)
    (root / "masks" / "i0.png").unlink()
    with pytest.raises(DatasetError, match=r"0 images found: .* no image with a readable mask "
                       r"\(3 warning\(s\), the first: 1 of 3 images"):
        build_dataset("masks", root, task="detect", mask_type="instance")
