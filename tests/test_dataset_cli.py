"""``detseg dataset`` end to end: shapes, convert round trips, stats, check, view; drawing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.data.masks import decode_segmentation, encode_rle, mask_iou
from detseg.viz.draw import draw_detections, draw_semantic, palette

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "shapes"
    result = runner.invoke(app, ["dataset", "shapes", "--out", str(out), "--train", "12",
                                 "--val", "6", "--size", "96", "--seed", "3", "--workers", "1"])
    assert result.exit_code == 0, result.output
    return out


def _by_file(coco: dict) -> dict[str, list]:
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    out: dict[str, list] = {name: [] for name in names.values()}
    for ann in coco["annotations"]:
        out[names[ann["image_id"]]].append(ann)
    return out


def test_shapes_command_refuses_a_used_folder(shapes) -> None:
    assert (shapes / "annotations" / "instances_val.json").is_file()
    result = runner.invoke(app, ["dataset", "shapes", "--out", str(shapes), "--train", "1"])
    assert result.exit_code == 2


def test_round_trip_shapes_coco_yolo_coco(shapes, tmp_path) -> None:
    steps = [("coco", shapes, "coco", tmp_path / "c1"), ("coco", tmp_path / "c1", "yolo",
             tmp_path / "y"), ("yolo", tmp_path / "y", "coco", tmp_path / "c2")]
    for src_fmt, src, dst_fmt, dst in steps:
        result = runner.invoke(app, ["dataset", "convert", "--from", src_fmt, "--to", dst_fmt,
                                     str(src), str(dst)])
        assert result.exit_code == 0, result.output
    assert "label_format: polygon" in (tmp_path / "y" / "data.yaml").read_text()
    for split in ("train", "val"):
        first = json.loads((shapes / "annotations" / f"instances_{split}.json").read_text())
        last = json.loads((tmp_path / "c2" / "annotations" / f"instances_{split}.json")
                          .read_text())
        assert [c["name"] for c in last["categories"]] == [c["name"] for c in first["categories"]]
        a, b = _by_file(first), _by_file(last)
        assert a.keys() == b.keys()
        for name in a:
            assert len(a[name]) == len(b[name])
            for x, y in zip(a[name], b[name], strict=True):
                assert x["category_id"] == y["category_id"]
                assert np.abs(np.subtract(x["bbox"], y["bbox"])).max() <= 1e-3
                mx = decode_segmentation(x["segmentation"], 96, 96)
                my = decode_segmentation(y["segmentation"], 96, 96)
                assert mask_iou(mx, my) >= 0.99


def test_masks_survive_rle_and_polygon_round_trips() -> None:
    rng = np.random.default_rng(0)
    import cv2

    for k in range(40):
        mask = np.zeros((60, 70), np.uint8)
        pts = rng.integers(0, 70, (int(rng.integers(3, 7)), 2)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
        if k % 3 == 0:
            cv2.circle(mask, (35, 30), 6, 0, -1)  # a hole: only RLE keeps it
        if not mask.any():
            continue
        assert mask_iou(decode_segmentation(encode_rle(mask), 60, 70), mask) == 1.0
        from detseg.data.masks import encode_segmentation, mask_has_holes

        segm = encode_segmentation(mask)
        assert isinstance(segm, dict) == mask_has_holes(mask)
        assert mask_iou(decode_segmentation(segm, 60, 70), mask) >= 0.99


def test_stats_json(shapes) -> None:
    result = runner.invoke(app, ["dataset", "stats", str(shapes), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    coco = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    val = stats["splits"]["val"]
    assert stats["format"] == "shapes" and val["images"] == 6
    assert val["instances"] == len(coco["annotations"]) == sum(val["sizes"].values())
    assert val["empty_images"] == 6 - len({a["image_id"] for a in coco["annotations"]})
    table = runner.invoke(app, ["dataset", "stats", str(shapes)])
    assert table.exit_code == 0 and "medium" in table.output


def test_check_finds_every_planted_coco_error(shapes, tmp_path) -> None:
    root = tmp_path / "bad"
    shutil.copytree(shapes, root)
    ann_file = root / "annotations" / "instances_val.json"
    coco = json.loads(ann_file.read_text())
    anns = coco["annotations"]
    anns[0]["bbox"] = [80.0, 10.0, 30.0, 10.0]  # leaves the 96 px image
    anns[1]["bbox"] = [10.0, 10.0, 0.0, 5.0]  # zero width
    anns[2]["category_id"] = 99
    anns[3]["id"] = anns[4]["id"]  # duplicate annotation id
    anns[5]["segmentation"] = encode_rle(np.ones((50, 60), np.uint8))  # mask size differs
    images = coco["images"]
    first = images[0]
    next_id = max(img["id"] for img in images) + 1
    (root / "images" / "val" / "text.jpg").write_text("not a jpeg")
    images += [dict(first),  # duplicate image id
               {**first, "id": next_id, "width": 100},  # says 100 px, the file is 96
               {**first, "id": next_id + 1, "file_name": "gone.jpg"},
               {**first, "id": next_id + 2, "file_name": "text.jpg"}]
    ann_file.write_text(json.dumps(coco))
    result = runner.invoke(app, ["dataset", "check", str(ann_file), "--images",
                                 str(root / "images" / "val"), "--json"])
    assert result.exit_code == 1
    problems = json.loads(result.output)
    found = {(p["code"], str(p["ids"][0])) for p in problems}
    expected = {("box-outside", str(anns[0]["id"])), ("box-size", str(anns[1]["id"])),
                ("unknown-category", str(anns[2]["id"])), ("duplicate-id", str(anns[4]["id"])),
                ("mask-size", str(anns[5]["id"])), ("duplicate-id", str(first["id"])),
                ("image-size", str(next_id)), ("missing-image", str(next_id + 1)),
                ("unreadable-image", str(next_id + 2))}
    assert expected <= found, expected - found
    clean = runner.invoke(app, ["dataset", "check", str(shapes)])
    assert clean.exit_code == 0 and "no problems" in clean.output


def test_check_yolo_and_mask_folder_errors(shapes, tmp_path) -> None:
    yolo = tmp_path / "y"
    runner.invoke(app, ["dataset", "convert", "--from", "coco", "--to", "yolo", "--labels", "box",
                        str(shapes), str(yolo), "--split", "val"])
    labels = yolo / "labels" / "val"
    (labels / "000000.txt").write_text("9 0.5 0.5 0.1 0.1\n0 0.5 0.5 0 0.2\n"
                                       "0 1.5 0.5 0.1 0.1\n0 0.5 abc\n")
    (labels / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    result = runner.invoke(app, ["dataset", "check", str(yolo), "--json"])
    assert result.exit_code == 1
    codes = {(p["code"], p["ids"][0]) for p in json.loads(result.output)}
    assert {("unknown-category", "000000.txt:1"), ("box-size", "000000.txt:2"),
            ("box-outside", "000000.txt:3"), ("bad-line", "000000.txt:4"),
            ("missing-image", "ghost.txt")} <= codes

    masks = tmp_path / "m"
    shutil.copytree(shapes, masks, ignore=shutil.ignore_patterns("annotations", "labels",
                                                                 "data.yaml"))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "masks" / "val" / "000001.png")
    Image.fromarray(np.full((96, 96), 7, np.uint8)).save(masks / "masks" / "val" / "000002.png")
    (masks / "masks" / "val" / "000003.png").unlink()
    result = runner.invoke(app, ["dataset", "check", str(masks), "--json"])
    assert result.exit_code == 1
    codes = {(p["code"], p["split"], p["ids"][0]) for p in json.loads(result.output)}
    assert {("mask-size", "val", "000001"), ("unknown-category", "val", "000002"),
            ("missing-mask", "val", "000003")} <= codes


def test_view_draws_ground_truth(shapes, tmp_path) -> None:
    out = tmp_path / "view"
    result = runner.invoke(app, ["dataset", "view", str(shapes), "--out", str(out), "-n", "3",
                                 "--augment", "strong", "--split", "val"])
    assert result.exit_code == 0, result.output
    drawn = sorted(out.glob("*.jpg"))
    assert len(drawn) == 3
    sem = runner.invoke(app, ["dataset", "view", str(shapes), "--out", str(tmp_path / "v2"),
                              "-n", "2", "--task", "semantic"])
    assert sem.exit_code == 0 and len(list((tmp_path / "v2").glob("*.jpg"))) == 2


@pytest.mark.parametrize("command", ["shapes", "convert", "stats", "check", "view"])
def test_help_has_examples(command) -> None:
    result = runner.invoke(app, ["dataset", command, "--help"])
    assert result.exit_code == 0 and "Examples" in result.output


def test_palette_and_drawing() -> None:
    colors = palette(40)
    assert colors.shape == (40, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 40
    np.testing.assert_array_equal(palette(5), colors[:5])
    image = np.full((120, 160, 3), 90, np.uint8)
    mask = np.zeros((1, 120, 160), np.uint8)
    mask[0, 40:80, 50:100] = 1
    out = draw_detections(image, [[50, 40, 100, 80]], [1], ["__background__", "circle"],
                          scores=[0.9], masks=mask)
    assert out.shape == image.shape and (image == 90).all(), "input was modified"
    assert (out[60, 75] != 90).any(), "mask not overlaid"
    assert (out[110, 150] == 90).all()
    assert tuple(out[79, 75]) != tuple(out[60, 75]), "no box edge"
    label_area = out[20:40, 50:100]
    assert (label_area != 90).any(), "no label drawn above the box"
    big = draw_detections(np.zeros((2000, 3000, 3), np.uint8), [[100, 300, 900, 800]], [1],
                          ["bg", "cat"], scores=[0.5])
    assert (big[300:800, 100:106] > 0).any() and (big[500, 99:110] > 0).sum() >= 4
    semantic = np.zeros((120, 160), np.int64)
    semantic[10:50, 100:150] = 2
    semantic[60:70, 0:10] = 255
    drawn = draw_semantic(image, semantic, ["background", "a", "b"], legend=True)
    assert (drawn[30, 125] != 90).any()
    assert (drawn[65, 5] == 90).all() and (drawn[100, 80] == 90).all()
    assert (drawn[:12, :40] != 90).any(), "no legend"
