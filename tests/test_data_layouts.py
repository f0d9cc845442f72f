"""The layouts users have, each built by hand with odd non-square sizes: standard COCO trees,
mask folders (``_mask`` instance ids, ``classes.txt`` class indices, explicit folders) and
YOLO names dicts of non-contiguous ids; the dataset-format registry behind them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.data import DATASET_KINDS, build_dataset, dataset_formats
from detseg.errors import DatasetError, UsageError

runner = CliRunner()
SIZES = [(61, 43), (37, 59), (50, 33)]  # (width, height)


def _rgb(path, width, height, seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(path)


def _cli(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


# ---------------------------------------------------------------- registry


def test_every_format_is_registered_and_dispatched() -> None:
    formats = dataset_formats()
    assert DATASET_KINDS == tuple(formats.names()) == ("coco", "masks", "shapes", "voc", "yolo")
    for entry in formats:
        assert entry.meta["summary"] and entry.meta["read_task"] in entry.meta["tasks"]
    with pytest.raises(UsageError, match="did you mean coco"):
        build_dataset("cocoo", ".")
    with pytest.raises(UsageError, match="mask_type does not apply to dataset format 'coco'"):
        build_dataset("coco", ".", mask_type="instance")
    listing = _cli("dataset", "formats")
    assert listing.exit_code == 0
    assert all(name in listing.output for name in DATASET_KINDS)


def test_import_detseg_data_stays_light() -> None:
    code = "import sys, detseg.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- COCO trees


def _coco_tree(root, split: str, image_folder: str, ann_name: str) -> list[dict]:
    """Images of SIZES under ``root/image_folder`` and their COCO file; returns the boxes."""
    images, anns = [], []
    for k, (w, h) in enumerate(SIZES):
        _rgb(root / image_folder / f"{k:04d}.jpg", w, h, seed=k)
        images.append({"id": 100 + k, "file_name": f"{k:04d}.jpg", "width": w, "height": h})
        anns.append({"id": k + 1, "image_id": 100 + k, "category_id": 7 + k % 2,
                     "bbox": [2.0 + k, 3.0, 11.0, 13.0 + k], "area": 143.0, "iscrowd": 0})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 7, "name": "kite"}, {"id": 8, "name": "person"}]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / ann_name).write_text(json.dumps(data))
    return anns


@pytest.mark.parametrize("image_folder", ["train2017", "images/train", "train"])
def test_standard_coco_tree_from_root_split_or_file(tmp_path, image_folder) -> None:
    anns = _coco_tree(tmp_path, "train", image_folder, "instances_train2017.json")
    ann_file = tmp_path / "annotations" / "instances_train2017.json"
    for ds in (build_dataset("coco", tmp_path, split="train"),
               build_dataset("coco", tmp_path, split="train2017"),
               build_dataset("coco", ann_file)):
        assert len(ds) == 3 and ds.category_ids == [0, 7, 8]
        assert ds.images_dir == tmp_path / image_folder
        for k, (w, h) in enumerate(SIZES):
            image, target = ds[k]
            assert image.shape == (3, h, w)
            x, y, bw, bh = anns[k]["bbox"]
            assert target["boxes"].tolist() == [[x, y, x + bw, y + bh]]


def test_coco_convert_from_the_annotation_file_of_a_standard_tree(tmp_path) -> None:
    root = tmp_path / "coco"
    _coco_tree(root, "train", "train2017", "instances_train2017.json")
    out = tmp_path / "yolo"
    result = _cli("dataset", "convert", "--from", "coco", "--to", "yolo",
                  root / "annotations" / "instances_train2017.json", out)
    assert result.exit_code == 0, result.output
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve())
    assert data["train"] == data["val"] == "images/train2017"
    assert data["names"] == {0: "kite", 1: "person"} and data["coco_category_ids"] == [7, 8]
    assert len(list((out / "labels" / "train2017").glob("*.txt"))) == 3
    back = build_dataset("yolo", out / "data.yaml", split="train")
    original = build_dataset("coco", root, split="train")
    assert back.category_ids == original.category_ids
    for k in range(3):
        np.testing.assert_allclose(back[k][1]["boxes"], original[k][1]["boxes"], atol=1e-3)


def test_coco_says_where_it_looked(tmp_path) -> None:
    _coco_tree(tmp_path, "val", "elsewhere", "instances_val.json")
    with pytest.raises(DatasetError) as info:
        build_dataset("coco", tmp_path, split="val")
    message = str(info.value)
    assert "0000.jpg" in message and str(tmp_path / "val2017") in message
    assert str(tmp_path / "images" / "val") in message
    ds = build_dataset("coco", tmp_path, split="val", images_dir=tmp_path / "elsewhere")
    assert len(ds) == 3
    with pytest.raises(DatasetError, match="instances_test.json"):
        build_dataset("coco", tmp_path, split="test")


# ---------------------------------------------------------------- mask folders


def _instance_folder(root, suffix: str = "_mask") -> list[list[list[int]]]:
    """Penn-Fudan style: PNGImages/ + PedMasks/NAME_mask.png of instance ids; returns each
    image's object boxes (xyxy pixel edges)."""
    boxes = []
    for k, (w, h) in enumerate(SIZES):
        _rgb(root / "PNGImages" / f"Ped{k:05d}.png", w, h, seed=k)
        ids = np.zeros((h, w), np.uint8)
        ids[2:20, 3:15] = 1
        ids[21:31, 17 + k:30 + k] = 2
        if k == 1:
            ids[40:55, 5:9] = 3  # only the tall image has a third person
        (root / "PedMasks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids).save(root / "PedMasks" / f"Ped{k:05d}{suffix}.png")
        boxes.append([[3, 2, 15, 20], [17 + k, 21, 30 + k, 31]]
                     + ([[5, 40, 9, 55]] if k == 1 else []))
    return boxes


def test_mask_suffix_instance_folder_reads_and_converts_to_matching_boxes(tmp_path) -> None:
    root = tmp_path / "PennFudanPed"
    boxes = _instance_folder(root)
    ds = build_dataset("masks", root, task="instance")
    assert ds.mask_suffix == "_mask" and ds.mask_type == "instance"
    assert ds.class_names == ["__background__", "object"]
    assert any("no classes.txt" in w for w in ds.warnings)
    for k in range(3):
        _, target = ds[k]
        assert target["boxes"].tolist() == boxes[k]
        assert target["labels"].tolist() == [1] * len(boxes[k])
    semantic = build_dataset("masks", root, task="semantic")  # one-class targets for a U-Net
    _, target = semantic[1]
    mask = target["mask"].numpy()
    assert semantic.num_classes == 2 and set(np.unique(mask)) == {0, 1}
    assert mask[45, 6] == 1 and mask[0, 0] == 0

    out = tmp_path / "coco"
    result = _cli("dataset", "convert", "--from", "masks", "--to", "coco", root, out)
    assert result.exit_code == 0, result.output
    gt = json.loads((out / "annotations" / "instances_all.json").read_text())
    got = {}
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        got.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
    assert [got[img["id"]] for img in gt["images"]] == boxes


def test_one_mask_type_for_every_command(tmp_path) -> None:
    root = tmp_path / "peds"
    _instance_folder(root)
    (root / "classes.txt").write_text("background\nperson\n")
    check = _cli("dataset", "check", root)
    assert check.exit_code == 0, check.output  # instance ids are not class values
    stats = json.loads(_cli("dataset", "stats", root, "--json").output)
    assert stats["splits"]["all"]["per_class"] == {"person": 7}
    view = _cli("dataset", "view", root, "--out", tmp_path / "view", "-n", "1")
    assert view.exit_code == 0 and "instance" in view.output
    forced = _cli("dataset", "check", root, "--mask-type", "class", "--json")
    assert forced.exit_code == 1
    assert {p["code"] for p in json.loads(forced.output)} == {"unknown-category"}
    as_classes = build_dataset("masks", root, task="detect", mask_type="class")
    assert as_classes.class_names == ["__background__", "person"]
    assert len(as_classes[1][1]["labels"]) == 1  # values 2 and 3 are no class of classes.txt
    assert as_classes.left_out == 4 and "4 regions in 3 image(s) skipped" in as_classes.warnings[0]
    with pytest.raises(DatasetError, match="mask_type must be"):
        build_dataset("masks", root, mask_type="panoptic")


def test_class_mask_folder_with_explicit_folders_suffix_and_a_missing_mask(tmp_path) -> None:
    photos, labels = tmp_path / "photos", tmp_path / "annots"
    for k, (w, h) in enumerate(SIZES):
        _rgb(photos / f"img_{k}.jpg", w, h, seed=k)
        if k == 2:
            continue  # this image has no mask
        values = np.zeros((h, w), np.uint8)
        values[1:9, 2:12] = 1
        values[12:30, 4:20] = 2
        values[0, :] = 255
        labels.mkdir(exist_ok=True)
        Image.fromarray(values).save(labels / f"img_{k}_seg.png")
    (labels / "classes.txt").write_text("background\nroad\ncar\n")
    ds = build_dataset("masks", tmp_path, task="semantic", images_dir=photos, masks_dir=labels)
    assert ds.mask_suffix == "_seg" and ds.mask_type == "class" and len(ds) == 2
    assert ds.class_names == ["background", "road", "car"]
    assert len(ds.warnings) == 1 and "1 of 3 images" in ds.warnings[0]
    assert "img_2.jpg" in ds.warnings[0]
    mask = ds[0][1]["mask"].numpy()
    assert mask[5, 5] == 1 and mask[20, 10] == 2 and mask[0, 3] == 255
    det = build_dataset("masks", tmp_path, task="detect", images_dir=photos, masks_dir=labels)
    assert det[1][1]["boxes"].tolist() == [[2, 1, 12, 9], [4, 12, 20, 30]]
    with pytest.raises(DatasetError, match="no mask in"):
        build_dataset("masks", tmp_path, images_dir=photos, masks_dir=labels, mask_suffix="_gt")
    check = _cli("dataset", "check", tmp_path, "--format", "masks", "--images", photos,
                 "--masks", labels, "--json")
    assert [(p["code"], p["ids"]) for p in json.loads(check.output)] == [
        ("missing-mask", ["img_2"])]


# ---------------------------------------------------------------- YOLO


def _yolo_tree(root, yaml_name: str, names: object) -> None:
    for split in ("train", "holdout"):
        for k, (w, h) in enumerate(SIZES):
            _rgb(root / "images" / split / f"{k}.png", w, h, seed=k)
        (root / "labels" / split).mkdir(parents=True)
        (root / "labels" / split / "0.png".replace(".png", ".txt")).write_text(
            "1 0.5 0.5 0.2 0.4\n90 0.25 0.25 0.1 0.1\n")
        (root / "labels" / split / "1.txt").write_text("3 0.5 0.5 0.5 0.5\n2 0.5 0.5 0.1 0.1\n")
    (root / yaml_name).write_text(yaml.safe_dump(
        {"path": "/moved/elsewhere", "train": "images/train", "holdout": "images/holdout",
         "names": names}))


def test_yolo_names_dict_of_non_contiguous_ids_in_any_yaml(tmp_path) -> None:
    _yolo_tree(tmp_path, "config.yaml", {1: "person", 3: "car", 90: "toothbrush"})
    ds = build_dataset("yolo", tmp_path / "config.yaml", split="train", task="detect")
    assert ds.class_names == ["__background__", "person", "car", "toothbrush"]
    assert ds.category_ids == [0, 1, 3, 90]
    assert ds[0][1]["labels"].tolist() == [1, 3]  # line ids 1 and 90
    assert ds[1][1]["labels"].tolist() == [2]
    assert ds.left_out == 1 and any("1.txt:2: class 2 is not in names" in w
                                    for w in ds.warnings)
    assert any("/moved/elsewhere not found" in w for w in ds.warnings)
    gt = ds.to_coco()
    assert sorted(a["category_id"] for a in gt["annotations"]) == [1, 3, 90]
    assert build_dataset("yolo", tmp_path, split="holdout").category_ids == [0, 1, 3, 90]

    out = tmp_path.parent / f"{tmp_path.name}_coco"
    result = _cli("dataset", "convert", "--from", "yolo", "--to", "coco", tmp_path, out,
                  "--split", "holdout")
    assert result.exit_code == 0, result.output
    assert "│ holdout │ 3      │ 3       │ 1        │" in result.output
    coco = json.loads((out / "annotations" / "instances_holdout.json").read_text())
    assert {c["id"]: c["name"] for c in coco["categories"]} == {1: "person", 3: "car",
                                                                90: "toothbrush"}


def test_yolo_names_list_and_contiguous_dict_read_alike(tmp_path) -> None:
    for sub, names in (("a", ["x", "y", "z", "w"]), ("b", {0: "x", 1: "y", 2: "z", 3: "w"})):
        root = tmp_path / sub
        _yolo_tree(root, "data.yaml", names)
        (root / "labels" / "train" / "0.txt").write_text("3 0.5 0.5 0.2 0.4\n")
        ds = build_dataset("yolo", root, split="train")
        assert ds.class_names[1:] == ["x", "y", "z", "w"] and ds.category_ids == [0, 1, 2, 3, 4]
        assert ds[0][1]["labels"].tolist() == [4]
