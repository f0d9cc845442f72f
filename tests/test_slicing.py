"""Sliced inference: the tile grid, exact shifts, the merge across tiles (nms and gnmm: one
detection per object), semantic blending, the CLI end to end with shipped weights on a large
picture made of 25 shapes images, and hostile slice options."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from cli_runner import detseg, detseg_text

from detseg.engine.predictor import Predictor
from detseg.engine.slice_merge import (
    SLICE_MERGES,
    Detections,
    MaskPiece,
    box_ios,
    box_iou,
    merge_detections,
    shift_prediction,
)
from detseg.engine.slicing import (
    ScoreBlend,
    SlicedPicture,
    SliceOptions,
    blend_window,
    slice_grid,
)
from detseg.errors import UsageError
from detseg.prediction import Prediction

TILE = 256


# ---------------------------------------------------------------------- the picture


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A 1280 x 1280 picture made of 25 shapes images (256 px, 5 x 5): the shapes lying whole
    inside their image are pasted, each at its image's place, onto one smooth background (so
    tile borders do not fall on the seams between the images' own backgrounds). Returns the
    RGB array, its file, ground-truth boxes (K x 4 xyxy) with their category ids (K), and the
    class-index map (255 where no shape was pasted)."""
    from detseg.data.shapes import generate_shapes

    root = generate_shapes(tmp_path_factory.mktemp("shapes"), train=0, val=25, seed=7,
                           workers=1)
    coco = json.loads((root / "annotations" / "instances_val.json").read_text())
    rng = np.random.default_rng(0)
    canvas = cv2.resize(rng.uniform(40, 215, (3, 3, 3)).astype(np.float32), (1280, 1280))
    canvas = np.clip(canvas + rng.normal(0, 4, canvas.shape), 0, 255).astype(np.uint8)
    classes = np.zeros((1280, 1280), np.uint8)
    boxes, cats = [], []
    for image in coco["images"]:
        row, col = divmod(image["id"] - 1, 5)
        rgb = cv2.cvtColor(cv2.imread(str(root / "images" / "val" / image["file_name"])),
                           cv2.COLOR_BGR2RGB)
        place = np.s_[row * TILE:(row + 1) * TILE, col * TILE:(col + 1) * TILE]
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = ann["bbox"]
            if x <= 0.5 or y <= 0.5 or x + w >= TILE - 0.5 or y + h >= TILE - 0.5:
                continue  # cut by its image's border: not a whole shape
            mask = np.zeros((TILE, TILE), np.uint8)
            cv2.fillPoly(mask, [np.round(np.reshape(p, (-1, 2))).astype(np.int32)
                                for p in ann["segmentation"]], 1)
            mask = mask.astype(bool)
            canvas[place][mask] = rgb[mask]
            classes[place][mask] = ann["category_id"]
            boxes.append([x + col * TILE, y + row * TILE, x + w + col * TILE,
                          y + h + row * TILE])
            cats.append(ann["category_id"])
    path = root / "picture.png"
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return canvas, path, np.array(boxes, np.float32), np.array(cats), classes


def recall(gt_boxes, gt_cats, boxes, cats) -> float:
    """Share of ground-truth objects matched one-to-one by a detection of their class at IoU
    >= 0.5 (greedy, best IoU first)."""
    iou = box_iou(gt_boxes, boxes) * (gt_cats[:, None] == cats[None, :])
    found, used = 0, set()
    for g in np.argsort(-iou.max(1, initial=0)):
        free = [j for j in np.argsort(-iou[g]) if iou[g, j] >= 0.5 and j not in used]
        if free:
            found += 1
            used.add(free[0])
    return found / len(gt_boxes)


def duplicates(boxes, cats) -> int:
    """Pairs of kept boxes of one class with IoU > 0.5 or one (90 %) inside the other."""
    same = (cats[:, None] == cats[None, :]) & ((box_iou(boxes, boxes) > 0.5)
                                               | (box_ios(boxes, boxes) > 0.9))
    return int(np.triu(same, 1).sum())


def coco_boxes(run_dir) -> tuple[np.ndarray, np.ndarray]:
    entries = json.loads((run_dir / "predictions.json").read_text())
    boxes = np.array([e["bbox"] for e in entries], np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes, np.array([e["category_id"] for e in entries])


# ---------------------------------------------------------------------- the grid


@pytest.mark.parametrize(("height", "width"), [(637, 1000), (1000, 637), (256, 513),
                                               (1280, 1280)])
def test_grid_covers_the_picture_with_overlap_and_tiles_flush_with_the_edges(height,
                                                                             width) -> None:
    tiles = slice_grid(height, width, TILE, 0.2)
    covered = np.zeros((height, width), int)
    for x0, y0, x1, y1 in tiles:
        assert (x1 - x0, y1 - y0) == (min(TILE, width), min(TILE, height))
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    xs, ys = sorted(set(tiles[:, 0])), sorted(set(tiles[:, 1]))
    assert xs[0] == 0 and ys[0] == 0
    assert max(tiles[:, 2]) == width and max(tiles[:, 3]) == height
    for starts in (xs, ys):
        steps = np.diff(starts)
        # every step is 256 - int(0.2 * 256) = 205, but the last one (flush with the edge)
        assert (steps[:-1] == 205).all() and (len(steps) == 0 or 0 < steps[-1] <= 205)
    assert len(tiles) == len(xs) * len(ys)


def test_grid_of_1000_x_637() -> None:
    tiles = slice_grid(637, 1000, TILE, 0.2)
    assert sorted(set(tiles[:, 0].tolist())) == [0, 205, 410, 615, 744]
    assert sorted(set(tiles[:, 1].tolist())) == [0, 205, 381]
    assert slice_grid(637, 1000, TILE, 0.0)[:, 0].tolist()[:4] == [0, 256, 512, 744]


def test_a_picture_smaller_than_a_tile_is_one_tile_and_runs_whole() -> None:
    assert slice_grid(100, 80, TILE).tolist() == [[0, 0, 80, 100]]
    options = SliceOptions(TILE)
    assert not options.applies(256, 200) and options.applies(257, 10)
    image = np.random.default_rng(3).integers(0, 255, (150, 201, 3), dtype=np.uint8)
    sliced = Predictor(weights="shapes-ssd", device="cpu", conf=0.05,
                       slicing=options).predict_arrays([image])[0]
    whole = Predictor(weights="shapes-ssd", device="cpu", conf=0.05).predict_arrays([image])[0]
    assert np.array_equal(sliced.boxes, whole.boxes) and np.array_equal(sliced.labels,
                                                                       whole.labels)


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"size": 0}, "slice size"), ({"size": 10**5}, "slice size"),
    ({"size": 64, "overlap": 1.0}, "slice overlap"),
    ({"size": 64, "overlap": -0.1}, "slice overlap"),
    ({"size": 64, "merge": "wbf"}, "slice merge"), ({"size": 64, "match": "giou"}, "match"),
    ({"size": 64, "threshold": 0.0}, "threshold")])
def test_options_refuse_values_out_of_range(kwargs, named) -> None:
    with pytest.raises(UsageError, match=named):
        SliceOptions(**kwargs)


# ---------------------------------------------------------------------- shifts


def test_shift_moves_boxes_by_the_offset_and_pastes_masks_there() -> None:
    mask = np.zeros((40, 30), bool)
    mask[5:9, 10:13] = True
    tile = Prediction(size=(40, 30), boxes=np.array([[10, 5, 13, 9]], np.float32),
                      labels=np.array([2]), scores=np.array([0.7], np.float32),
                      masks=mask[None])
    moved = shift_prediction(tile, x0=205, y0=17)
    assert moved.boxes.tolist() == [[215, 22, 218, 26]]
    full = moved.to_prediction((101, 263))
    assert full.masks is not None and full.masks.shape == (1, 101, 263)
    ys, xs = np.nonzero(full.masks[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (22, 25, 215, 217)
    assert full.masks[0].sum() == 12


def test_sliced_detections_are_tile_detections_shifted_exactly(picture) -> None:
    """Each kept detection of a sliced run (nms) is one of its tile's own detections (the tile
    run alone through the same model), moved by the tile's offset, score unchanged."""
    image = np.ascontiguousarray(picture[0][900:1237, :400])  # 337 x 400: 4 tiles, 6 shapes
    options = SliceOptions(TILE, 0.2)
    sliced = Predictor(weights="shapes-ssd", device="cpu", conf=0.05,
                       slicing=options).predict_arrays([image])[0]
    whole = Predictor(weights="shapes-ssd", device="cpu", conf=0.05)
    tiles = slice_grid(*image.shape[:2], TILE, 0.2)
    found = [(r.boxes + np.array([x0, y0, x0, y0], np.float32), r.scores, r.labels)
             for r, (x0, y0, _, _) in zip(
                 whole.predict_arrays([np.ascontiguousarray(image[y0:y1, x0:x1])
                                       for x0, y0, x1, y1 in tiles]), tiles, strict=True)]
    assert len(tiles) == 4 and len(sliced) >= 4
    for box, score, label in zip(sliced.boxes, sliced.scores, sliced.labels, strict=True):
        assert any(np.any(np.all(np.abs(b - box) < 1e-3, axis=1) & (s == score) & (lab == label))
                   for b, s, lab in found), box


# ---------------------------------------------------------------------- the merge


def detections(boxes, scores, labels, cut=None) -> Detections:
    n = len(scores)
    return Detections(np.array(boxes, np.float32), np.array(scores, np.float32),
                      np.array(labels, np.int64),
                      cut=np.zeros(n, bool) if cut is None else np.array(cut))


def test_a_box_cut_by_a_tile_border_joins_the_whole_box_of_the_neighbour() -> None:
    # one object 100..160 x 10..50: tile A (ends at x=130) saw its left part, better scored;
    # tile B saw it whole; another object of another class overlaps it
    found = detections([[100, 10, 130, 50], [100.5, 10, 160, 50], [120, 20, 150, 40]],
                       [0.9, 0.8, 0.6], [1, 1, 2], cut=[True, False, False])
    nms = merge_detections(found, "nms")
    assert nms.boxes.tolist() == [[100.5, 10, 160, 50], [120, 20, 150, 40]]
    assert nms.scores.tolist() == pytest.approx([0.8, 0.6])
    gnmm = merge_detections(found, "gnmm")
    assert gnmm.boxes.tolist() == [[100, 10, 160, 50], [120, 20, 150, 40]]
    assert gnmm.scores.tolist() == pytest.approx([0.9, 0.6])
    # matched by IoU instead, the cut part (IoU 0.49) stays apart: a duplicate
    assert len(merge_detections(found, "nms", match="iou")) == 3


def test_merge_keeps_separate_objects_and_unions_masks() -> None:
    left, right = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    left[2:10, 2:10], right[2:10, 6:14] = True, True
    found = Detections(np.array([[2, 2, 10, 10], [6, 2, 14, 10], [40, 40, 50, 50]],
                                np.float32), np.array([0.5, 0.7, 0.9], np.float32),
                       np.array([1, 1, 1]), [MaskPiece.of(left), MaskPiece.of(right),
                                             MaskPiece.of(np.ones((10, 10), bool), 40, 40)],
                       np.zeros(3, bool))
    for name in SLICE_MERGES.names():
        merged = merge_detections(found, name, match="iou", threshold=0.3).to_prediction(
            (60, 60))
        assert merged.scores.tolist() == pytest.approx([0.9, 0.7])
        assert merged.masks is not None and merged.masks[0].sum() == 100
        expected = (left | right) if name == "gnmm" else right
        assert np.array_equal(merged.masks[1][:20, :20], expected)
        assert merged.masks[1][20:].sum() == 0


def test_max_det_conf_and_classes_apply_after_the_merge() -> None:
    """One object at x 210..300 of a 300 x 500 picture: the first tile (x 0..256) sees its
    left part with score 0.95, the second (x 205..461) sees it whole with 0.6; a circle (0.7)
    and a star (0.3) elsewhere."""
    picture = SlicedPicture(300, 500, SliceOptions(TILE, 0.2))
    assert picture.tiles[:2, 0].tolist() == [0, 205] and len(picture.tiles) == 6

    def tile(boxes, scores, labels) -> Prediction:
        return Prediction(size=(256, 256), boxes=np.array(boxes, np.float32),
                          scores=np.array(scores, np.float32), labels=np.array(labels))

    picture.add_detections(0, tile([[210, 40, 256, 90], [20, 20, 40, 40]], [0.95, 0.7], [1, 1]))
    picture.add_detections(1, tile([[5, 40, 95, 90], [100, 150, 120, 170]], [0.6, 0.3], [1, 4]))
    merged = picture.detections()
    assert merged.boxes.tolist() == [[20, 20, 40, 40], [210, 40, 300, 90], [305, 150, 325, 170]]
    assert merged.scores.tolist() == pytest.approx([0.7, 0.6, 0.3])
    assert picture.detections(max_det=1).boxes.tolist() == [[20, 20, 40, 40]]
    # the merged object scores 0.6 (its whole box), though its cut part scored 0.95
    assert picture.detections(conf=0.65).boxes.tolist() == [[20, 20, 40, 40]]
    assert picture.detections(classes=(4,)).labels.tolist() == [4]


# ---------------------------------------------------------------------- semantic


def blend(blender: ScoreBlend, tiles, scores) -> torch.Tensor:
    """Every tile's part of ``scores`` (C x H x W) through ``blender``, rows put together."""
    bands = [band for x0, y0, x1, y1 in tiles.tolist()
             for band in blender.add((x0, y0, x1, y1), scores[:, y0:y1, x0:x1])]
    bands += blender.finish()
    assert [first for first, _ in bands] == sorted({first for first, _ in bands})
    return torch.cat([rows for _, rows in bands], 1)


def test_blending_reproduces_scores_that_agree_and_fades_across_the_overlap() -> None:
    height, width = 300, 500
    tiles = slice_grid(height, width, 128, 0.25)
    scores = torch.randn(3, height, width)
    assert torch.allclose(blend(ScoreBlend(height, width, 32, 128), tiles, scores), scores,
                          atol=1e-5)
    # with a whole-picture pass at a quarter of the size, resized as F.interpolate does
    whole = torch.randn(3, 75, 125)
    big = torch.nn.functional.interpolate(whole[None], size=(height, width), mode="bilinear",
                                          align_corners=False)[0]
    assert torch.allclose(blend(ScoreBlend(height, width, 32, 128, whole), tiles, big), big,
                          atol=1e-5)
    window = blend_window(128, 100, 32)
    assert window.min() > 0 and window[64, 50] == 1 and window[0, 50] < window[16, 50] < 1
    # two tiles disagreeing: each wins on its own side of the overlap's middle
    two = ScoreBlend(64, 200, 40, 64)
    two.add((0, 0, 120, 64), torch.tensor([1.0, 0.0])[:, None, None].expand(2, 64, 120))
    two.add((80, 0, 200, 64), torch.tensor([0.0, 1.0])[:, None, None].expand(2, 64, 120))
    labels = two.finish()[0][1].argmax(0)[32]
    assert (labels[:99] == 0).all() and (labels[101:] == 1).all()
    # tiles out of row order are refused, not blended wrongly
    late = ScoreBlend(300, 100, 8, 128)
    with pytest.raises(UsageError, match="covered by no tile"):
        late.add((0, 172, 100, 300), torch.zeros(2, 128, 100))
    late = ScoreBlend(300, 100, 8, 128)
    late.add((0, 0, 100, 128), torch.zeros(2, 128, 100))
    late.add((0, 120, 100, 248), torch.zeros(2, 128, 100))
    with pytest.raises(UsageError, match="finished"):
        late.add((0, 0, 100, 128), torch.zeros(2, 128, 100))


def test_segment_sliced_on_an_odd_sized_picture(monkeypatch, capsys, picture, tmp_path) -> None:
    image, _, _, _, classes = picture
    crop = np.ascontiguousarray(image[:301, :390])  # 2 x 2 tiles
    path = tmp_path / "odd.png"
    cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    code, out, err = detseg(monkeypatch, capsys, "segment", path, "--weights", "shapes-unet",
                            "--slice", TILE, "--save-masks", "--out", tmp_path / "run")
    assert code == 0, err
    assert "sliced: 256 px tiles, overlap 0.3, class scores blended" in out
    mask = cv2.imread(str(tmp_path / "run" / "masks" / "odd.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (301, 390)
    truth = classes[:301, :390]
    shapes = truth > 0
    assert (mask[shapes] == truth[shapes]).mean() > 0.9  # the shapes' pixels
    assert (mask[~shapes] == 0).mean() > 0.98


# ---------------------------------------------------------------------- the CLI


def test_detect_slice_finds_small_objects_whole_image_inference_misses(monkeypatch, capsys,
                                                                       picture,
                                                                       tmp_path) -> None:
    _, path, gt_boxes, gt_cats, _ = picture
    runs = {}
    for name, extra in (("whole", []), ("sliced", ["--slice", TILE])):
        code, out, err = detseg(monkeypatch, capsys, "detect", path, "--weights",
                                "shapes-faster_rcnn", "--save-txt", "--out", tmp_path / name,
                                "-b", "4", *extra)
        assert code == 0, err
        runs[name] = coco_boxes(tmp_path / name)
    assert "sliced: 256 px tiles, overlap 0.3, nms" in out
    # the whole picture, shrunk to the model's 256 px, loses the small shapes; tiles find them
    whole, sliced = (recall(gt_boxes, gt_cats, *runs[name]) for name in ("whole", "sliced"))
    assert whole <= 0.65 and sliced >= 0.85 and sliced - whole >= 0.3, (whole, sliced)
    assert duplicates(*runs["sliced"]) == 0
    lines = (tmp_path / "sliced" / "labels" / "picture.txt").read_text().splitlines()
    assert len(lines) == len(runs["sliced"][0])
    assert (tmp_path / "sliced" / "picture.jpg").is_file() or (tmp_path / "sliced" /
                                                                "picture.png").is_file()


@pytest.mark.parametrize(("extra", "named"), [
    (["--slice", "0"], "slice size"),
    (["--slice", "256", "--slice-overlap", "1"], "slice overlap"),
    (["--slice", "256", "--slice-overlap", "-0.5"], "slice overlap"),
    (["--slice", "256", "--slice-merge", "wbf"], "slice merge"),
    (["--slice-full"], "--slice SIZE"),
    (["--slice-overlap", "0.5"], "--slice SIZE"),
])
def test_hostile_slice_options_one_line_exit_2(monkeypatch, capsys, tmp_path, extra,
                                               named) -> None:
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), np.full((41, 57, 3), 120, np.uint8))
    code, text = detseg_text(monkeypatch, capsys, "detect", path, "--weights", "shapes-ssd",
                             "--out", tmp_path / "run", *extra)
    assert code == 2 and named in text, text
    assert len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "run").exists()


def test_slice_overlap_help_states_the_library_default(monkeypatch, capsys) -> None:
    from detseg.engine.slicing import DEFAULT_OVERLAP

    code, out = detseg_text(monkeypatch, capsys, "detect", "--help")
    assert code == 0 and f"(default {DEFAULT_OVERLAP})" in " ".join(out.split())
