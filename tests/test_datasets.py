"""Every dataset loader on files written for it: COCO, shapes, mask folders, VOC, YOLO."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from detseg.data import build_dataset
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


def test_dataloader_keeps_images_and_targets_apart(shapes_tree) -> None:
    ds = build_dataset("shapes", shapes_tree, split="train")
    loader = torch.utils.data.DataLoader(ds, batch_size=3,
                                         collate_fn=lambda b: tuple(zip(*b, strict=True)))
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


def _palette_png(path, values: np.ndarray) -> None:
    img = Image.fromarray(values.astype(np.uint8), "P")
    pal = [0, 0, 0] * 256
    pal[3:6] = [128, 0, 0]
    pal[255 * 3: 255 * 3 + 3] = [224, 224, 192]
    img.putpalette(pal)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _voc_xml(objects, filename="a.jpg") -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, d, b in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{W}</width>"
            f"<height>{H}</height><depth>3</depth></size>{objs}</annotation>")


@pytest.fixture()
def voc_tree(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for stem in ("a", "b"):
        _write_rgb(base / "JPEGImages" / f"{stem}.jpg")
    (base / "Annotations").mkdir(parents=True)
    (base / "Annotations" / "a.xml").write_text(_voc_xml(
        [("dog", 0, (3, 4, 12, 20)), ("person", 1, (20, 5, 40, 30))]))
    (base / "Annotations" / "b.xml").write_text(_voc_xml([], "b.jpg"))  # no objects
    for kind in ("Main", "Segmentation"):
        (base / "ImageSets" / kind).mkdir(parents=True)
        (base / "ImageSets" / kind / "val.txt").write_text("a\nb\n")
    cls = np.zeros((H, W), np.uint8)
    obj = np.zeros((H, W), np.uint8)
    cls[3:20, 2:12] = 12  # dog
    obj[3:20, 2:12] = 1
    cls[4:30, 19:40] = 15  # person
    obj[4:30, 19:40] = 2
    cls[2, :] = 255  # void border
    obj[2, :] = 255
    _palette_png(base / "SegmentationClass" / "a.png", cls)
    _palette_png(base / "SegmentationObject" / "a.png", obj)
    _palette_png(base / "SegmentationClass" / "b.png", np.zeros((H, W)))
    _palette_png(base / "SegmentationObject" / "b.png", np.zeros((H, W)))
    return tmp_path / "VOCdevkit"


def test_voc_detect_with_difficult_and_empty_image(voc_tree) -> None:
    ds = build_dataset("voc", voc_tree, split="val", task="detect")
    assert len(ds.class_names) == 21 and ds.class_names[12] == "dog"
    _, target = ds[0]
    assert target["boxes"].tolist() == [[2, 3, 12, 20], [19, 4, 40, 30]]
    assert target["labels"].tolist() == [12, 15]
    assert target["iscrowd"].tolist() == [0, 1]  # difficult -> ignore region
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 4)
    gt = ds.to_coco()
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 1]


def test_voc_semantic_and_instances(voc_tree) -> None:
    sem = build_dataset("voc", voc_tree, split="val", task="semantic")
    _, target = sem[0]
    mask = target["mask"].numpy()
    assert mask[2, 0] == 255 and mask[10, 5] == 12 and mask[10, 30] == 15 and mask[35, 45] == 0
    inst = build_dataset("voc", voc_tree, split="val", task="instance")
    _, target = inst[0]
    assert target["labels"].tolist() == [12, 15]
    assert target["iscrowd"].tolist() == [0, 1]
    assert target["boxes"].tolist() == [[2, 3, 12, 20], [19, 4, 40, 30]]
    masks = target["masks"].numpy()
    assert masks[0].sum() == 17 * 10 and masks[:, 2, :].sum() == 0  # border is in no instance
    assert len(inst[1][1]["labels"]) == 0


@pytest.fixture()
def yolo_tree(tmp_path):
    for stem in ("a", "b", "c"):
        _write_rgb(tmp_path / "images" / "val" / f"{stem}.png")
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val" / "a.txt").write_text(
        "1 0.5 0.5 0.2 0.25\n"  # box: cx cy w h
        "0 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n"  # polygon: a rectangle 5..15 x 4..16
        "7 0.5 0.5 0.1 0.1\n")  # class out of range: skipped with a warning
    (tmp_path / "labels" / "val" / "b.txt").write_text("")  # empty image; c.png has no file
    (tmp_path / "data.yaml").write_text("val: images/val\nnames:\n  0: cat\n  1: dog\n")
    return tmp_path


def test_yolo_boxes_polygons_and_empty_images(yolo_tree) -> None:
    ds = build_dataset("yolo", yolo_tree, split="val", task="instance")
    assert ds.class_names == ["__background__", "cat", "dog"]
    assert len(ds) == 3
    assert len(ds.warnings) == 1 and "class 7" in ds.warnings[0]
    _, target = ds[0]
    np.testing.assert_allclose(target["boxes"].numpy(), [[20, 15, 30, 25], [5, 4, 15, 16]],
                               atol=1e-4)
    assert target["labels"].tolist() == [2, 1]
    np.testing.assert_array_equal(target["masks"][1].numpy(), _rect(5, 4, 15, 16))
    np.testing.assert_array_equal(target["masks"][0].numpy(), _rect(20, 15, 30, 25))
    assert len(ds[1][1]["boxes"]) == 0 and len(ds[2][1]["boxes"]) == 0
    with pytest.raises(DatasetError, match="train"):
        build_dataset("yolo", yolo_tree, split="train")


def test_voc_check_finds_planted_errors(voc_tree) -> None:
    from detseg.data.check import check_dataset

    base = voc_tree / "VOC2012"
    (base / "Annotations" / "b.xml").write_text(_voc_xml(
        [("unicorn", 0, (3, 4, 12, 20)), ("dog", 0, (10, 5, 8, 9)),
         ("cat", 0, (30, 20, 60, 30))], "b.jpg"))
    _palette_png(base / "SegmentationClass" / "a.png", np.zeros((10, 10)))
    codes = {(p.code, p.ids[0]) for p in check_dataset(voc_tree)}
    assert {("unknown-category", "b#1"), ("box-size", "b#2"), ("box-outside", "b#3"),
            ("mask-size", "a")} <= codes
