"""The synthetic shapes generator: layout, determinism, consistent truth in every format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from detseg.data.masks import decode_segmentation, mask_box
from detseg.data.shapes import MIN_AREA, SHAPES_CLASSES, generate_shapes
from detseg.errors import UsageError


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), train=60, val=12, size=128,
                           seed=5, workers=1)


def _coco(tree, split):
    return json.loads((tree / "annotations" / f"instances_{split}.json").read_text())


def test_layout(tree) -> None:
    for split, n in (("train", 60), ("val", 12)):
        assert len(list((tree / "images" / split).glob("*.jpg"))) == n
        assert len(list((tree / "masks" / split).glob("*.png"))) == n
        assert len(list((tree / "labels" / split).glob("*.txt"))) == n
        coco = _coco(tree, split)
        assert len(coco["images"]) == n
    assert (tree / "classes.txt").read_text().split() == ["background", *SHAPES_CLASSES]
    yaml = (tree / "data.yaml").read_text()
    assert "train: images/train" in yaml and "val: images/val" in yaml
    assert len(SHAPES_CLASSES) >= 4
    with Image.open(tree / "images" / "train" / "000000.jpg") as img:
        assert img.format == "JPEG" and img.size == (128, 128)


def test_every_format_tells_the_same_truth(tree) -> None:
    coco = _coco(tree, "train")
    by_image: dict[int, list] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for img in coco["images"]:
        stem = img["file_name"][:-4]
        anns = by_image.get(img["id"], [])
        semantic = np.asarray(Image.open(tree / "masks" / "train" / f"{stem}.png"))
        painted = np.zeros_like(semantic)
        owner = np.zeros(semantic.shape, np.int32)
        lines = (tree / "labels" / "train" / f"{stem}.txt").read_text().splitlines()
        assert len(lines) == len(anns)
        for ann, line in zip(anns, lines, strict=True):
            assert len(ann["segmentation"]) == 1
            mask = decode_segmentation(ann["segmentation"], 128, 128)
            # polygons trace the visible pixels exactly: box and area agree with the mask
            x0, y0, x1, y1 = mask_box(mask)
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert ann["area"] == mask.sum() >= MIN_AREA
            assert not (owner[mask > 0]).any(), "two instances claim one pixel"
            owner[mask > 0] = ann["id"]
            painted[mask > 0] = ann["category_id"]
            values = line.split()
            assert int(values[0]) == ann["category_id"] - 1
            coords = np.array(values[1:], float) * 128
            np.testing.assert_allclose(coords, ann["segmentation"][0], atol=1e-4)
        np.testing.assert_array_equal(painted, semantic)


def test_variety(tree) -> None:
    coco = _coco(tree, "train")
    areas = np.array([a["area"] for a in coco["annotations"]]) * (256 / 128) ** 2
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any()
    assert (areas >= 96**2).any()
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, 5))
    used = {a["image_id"] for a in coco["annotations"]}
    assert len(used) < len(coco["images"]), "no image without objects"
    colours = [np.asarray(Image.open(tree / "images" / "train" / f"{i:06d}.jpg")).mean((0, 1))
               for i in range(5)]
    assert np.std(colours, axis=0).mean() > 5


def test_deterministic_and_split_independent(tmp_path) -> None:
    a = generate_shapes(tmp_path / "a", train=6, val=3, size=64, seed=1, workers=1)
    b = generate_shapes(tmp_path / "b", train=2, val=3, size=64, seed=1, workers=1)
    c = generate_shapes(tmp_path / "c", train=6, val=0, size=64, seed=2, workers=1)
    for name in ("000000.jpg", "000002.jpg"):
        assert (a / "images/val" / name).read_bytes() == (b / "images/val" / name).read_bytes()
    assert (a / "annotations/instances_val.json").read_bytes() == \
        (b / "annotations/instances_val.json").read_bytes()
    assert (a / "images/train/000000.jpg").read_bytes() != \
        (c / "images/train/000000.jpg").read_bytes()
    assert not (c / "images" / "val").exists()
    assert "val:" not in (c / "data.yaml").read_text()


def test_workers_give_the_same_files(tmp_path) -> None:
    one = generate_shapes(tmp_path / "one", train=70, val=0, size=64, seed=4, workers=1)
    two = generate_shapes(tmp_path / "two", train=70, val=0, size=64, seed=4, workers=2)
    assert (one / "annotations/instances_train.json").read_bytes() == \
        (two / "annotations/instances_train.json").read_bytes()
    assert (one / "images/train/000069.jpg").read_bytes() == \
        (two / "images/train/000069.jpg").read_bytes()


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(UsageError):
        generate_shapes(tmp_path, train=0, val=0)
    with pytest.raises(UsageError):
        generate_shapes(tmp_path, train=1, val=0, size=8)
