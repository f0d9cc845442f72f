"""Every dataset loader on files written for it: COCO, shapes, mask folders, VOC, YOLO."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from detseg.data import build_dataset, collate
from detseg.data.base import drop_crowd
from detseg.data.masks import encode_rle, masks_boxes
from detseg.data.shapes import SHAPES_CLASSES, generate_shapes
from detseg.errors import DatasetError, UsageError

H, W = 40, 50


def _write_rgb(path, h=H, w=W, seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)
    Image.fromarray(rgb).save(path)


def _rect(x0, y0, x1, y1, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


@pytest.fixture(scope="module")
def shapes_tree(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), train=8, val=6, size=96, seed=2,
                           workers=1)


@pytest.fixture()
def coco_tree(tmp_path):
    for k in range(3):
        _write_rgb(tmp_path / "images" / "val" / f"im{k}.png", seed=k)
    crowd = encode_rle(_rect(30, 5, 45, 20))
    crowd_uncompressed = {"size": [H, W], "counts": _uncompressed(_rect(30, 5, 45, 20))}
    data = {
        "images": [{"id": 10, "file_name": "im0.png", "width": W, "height": H},
                   {"id": 11, "file_name": "im1.png", "width": W, "height": H},
                   {"id": 12, "file_name": "im2.png", "width": W, "height": H}],
        "categories": [{"id": 12, "name": "cat"}, {"id": 3, "name": "dog"},
                       {"id": 7, "name": "bird"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [2, 3, 10, 8],
             "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]], "area": 80, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 12, "bbox": [30, 5, 15, 15],
             "segmentation": crowd, "area": 225, "iscrowd": 1},
            {"id": 3, "image_id": 11, "category_id": 7, "bbox": [30, 5, 15, 15],
             "segmentation": crowd_uncompressed, "area": 225, "iscrowd": 0},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(data))
    return tmp_path


def _uncompressed(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return counts


def test_coco_detect_and_instance(coco_tree) -> None:
    ds = build_dataset("coco", coco_tree, split="val", task="instance")
    assert ds.class_names == ["__background__", "dog", "bird", "cat"]
    assert ds.category_ids == [0, 3, 7, 12]
    assert len(ds) == 3
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert image.shape == (3, H, W)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].tolist() == [[2, 3, 12, 11], [30, 5, 45, 20]]
    assert target["labels"].tolist() == [1, 3]
    assert target["iscrowd"].tolist() == [0, 1]
    assert target["image_id"] == 10
    masks = target["masks"].numpy()
    assert masks.shape == (2, H, W)
    np.testing.assert_array_equal(masks[0], _rect(2, 3, 12, 11))  # polygon
    np.testing.assert_array_equal(masks[1], _rect(30, 5, 45, 20))  # compressed RLE (crowd)
    _, target = ds[1]
    np.testing.assert_array_equal(target["masks"][0].numpy(), _rect(30, 5, 45, 20))
    _, empty = ds[2]  # an image without annotations
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert empty["masks"].shape == (0, H, W)
    assert drop_crowd(ds[0][1])["labels"].tolist() == [1]
    gt = ds.to_coco()
    assert {c["id"] for c in gt["categories"]} == {3, 7, 12}
    assert [i["id"] for i in gt["images"]] == [10, 11, 12]


def test_coco_semantic_paints_instances_and_ignores_crowd(coco_tree) -> None:
    ds = build_dataset("coco", coco_tree, split="val", task="semantic")
    assert ds.class_names[0] == "background"
    _, target = ds[0]
    mask = target["mask"].numpy()
    assert mask.dtype == np.int64
    assert (mask[3:11, 2:12] == 1).all() and (mask[5:20, 30:45] == 255).all()
    assert (mask == 0).sum() == H * W - 80 - 225


@pytest.mark.parametrize("name", ["../outside.png", "/etc/passwd", "sub/../../x.png"])
def test_coco_refuses_paths_outside_the_image_root(coco_tree, name) -> None:
    ann = coco_tree / "annotations" / "instances_val.json"
    data = json.loads(ann.read_text())
    data["images"][1]["file_name"] = name
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="outside"):
        build_dataset("coco", coco_tree, split="val")


def test_coco_explicit_paths_and_annotation_file_as_root(coco_tree) -> None:
    ann = coco_tree / "annotations" / "instances_val.json"
    ds = build_dataset("coco", ann, images_dir=coco_tree / "images" / "val")
    assert len(ds) == 3
    ds = build_dataset("coco", coco_tree, ann_file=ann, images_dir=coco_tree / "images" / "val")
    assert ds.image_paths[0].name == "im0.png"
    with pytest.raises(DatasetError):
        build_dataset("coco", coco_tree, split="train")
    with pytest.raises(UsageError):
        build_dataset("pascal", coco_tree)


def test_shapes_tasks_agree(shapes_tree) -> None:
    inst = build_dataset("shapes", shapes_tree, split="val", task="instance")
    sem = build_dataset("shapes", shapes_tree, split="val", task="semantic")
    assert inst.class_names[1:] == sem.class_names[1:] == list(SHAPES_CLASSES)
    assert inst.category_ids == sem.category_ids == [0, 1, 2, 3, 4]
    for k in range(len(inst)):
        _, t = inst[k]
        _, s = sem[k]
        assert t["image_id"] == s["image_id"]
        painted = np.zeros((96, 96), np.int64)
        for m, label in zip(t["masks"].numpy(), t["labels"].tolist(), strict=True):
            painted[m > 0] = label
        np.testing.assert_array_equal(painted, s["mask"].numpy())
        if len(t["boxes"]):
            np.testing.assert_array_equal(masks_boxes(t["masks"].numpy()), t["boxes"].numpy())


def test_collate_keeps_lists(shapes_tree) -> None:
    ds = build_dataset("shapes", shapes_tree, split="train")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 3
    assert [t["image_id"] for t in targets] == [1, 2, 3]


def test_mask_folder_semantic_and_instance_ids(tmp_path) -> None:
    root = tmp_path / "cls"
    for k in range(2):
        _write_rgb(root / "images" / f"a{k}.jpg", seed=k)
    (root / "masks").mkdir()
    m = np.zeros((H, W), np.uint8)
    m[2:10, 3:9] = 1
    m[20:30, 20:40] = 2
    m[0, :] = 255
    Image.fromarray(m).save(root / "masks" / "a0.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks" / "a1.png")  # empty
    (root / "classes.txt").write_text("background\nroad\ncar\n")
    ds = build_dataset("masks", root, task="semantic")
    assert ds.class_names == ["background", "road", "car"]
    _, target = ds[0]
    np.testing.assert_array_equal(target["mask"].numpy(), m.astype(np.int64))
    det = build_dataset("masks", root, task="detect")
    _, target = det[0]
    assert target["boxes"].tolist() == [[3, 2, 9, 10], [20, 20, 40, 30]]
    assert target["labels"].tolist() == [1, 2]
    assert len(det[1][1]["boxes"]) == 0

    ids_root = tmp_path / "ids"
    _write_rgb(ids_root / "images" / "val" / "p.png")
    ids = np.zeros((H, W), np.uint8)
    ids[5:15, 5:15] = 1
    ids[5:15, 20:30] = 2  # same class, separate instances
    (ids_root / "masks" / "val").mkdir(parents=True)
    Image.fromarray(ids).save(ids_root / "masks" / "val" / "p.png")
    (ids_root / "classes.txt").write_text("background\npedestrian\n")
    ds = build_dataset("masks", ids_root, split="val", task="instance")
    assert ds.class_names == ["__background__", "pedestrian"]
    _, target = ds[0]
    assert target["labels"].tolist() == [1, 1]
    np.testing.assert_array_equal(target["masks"][1].numpy(), ids == 2)
    gt = ds.to_coco()
    assert len(gt["annotations"]) == 2 and "segmentation" in gt["annotations"][0]
