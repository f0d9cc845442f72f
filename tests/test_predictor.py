"""Predictor: model from a checkpoint alone, results in input pixels, filters, COCO export,
semantic letterboxing, bounded read-ahead over files and bad-file reporting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from detseg.data.shapes import SHAPES_CLASSES
from detseg.engine.device import select_device
from detseg.engine.predictor import Predictor
from detseg.errors import ImageReadError, UsageError
from detseg.models import build_from_spec, make_spec
from detseg.weights import save_checkpoint

DET_NAMES = ["__background__", *SHAPES_CLASSES]
CATEGORY_IDS = [0, 11, 12, 13, 14]


def _checkpoint(path, family: str, names: list[str], **fields) -> str:
    torch.manual_seed(0)
    spec = make_spec(family, "tiny", class_names=names, input_size=64, **fields)
    save_checkpoint(path, build_from_spec(spec).state_dict(), spec)
    return str(path)


@pytest.fixture(scope="module")
def det_ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "det.pt"
    return _checkpoint(path, "faster_rcnn", DET_NAMES, category_ids=CATEGORY_IDS)


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "seg.pt"
    return _checkpoint(path, "unet", ["background", *SHAPES_CLASSES])


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((40, 72), (64, 48))]


def test_checkpoint_alone_builds_the_model_and_boxes_are_in_input_pixels(det_ckpt) -> None:
    predictor = Predictor(weights=det_ckpt, device="cpu", conf=0.0, max_det=20, batch_size=2)
    assert predictor.spec.family == "faster_rcnn" and predictor.names == DET_NAMES
    images = _images()
    results = predictor.predict_arrays(images)
    assert len(results) == 2
    for image, result in zip(images, results, strict=True):
        h, w = image.shape[:2]
        assert result.image is image and result.shape == (h, w)
        assert 0 < len(result) <= 20
        assert result.boxes.dtype == np.float32 and result.labels.dtype == np.int64
        assert (result.boxes[:, [0, 2]] <= w).all() and (result.boxes[:, [1, 3]] <= h).all()
        assert (result.boxes[:, :2] >= 0).all()
        assert (result.boxes[:, 2:] >= result.boxes[:, :2]).all()
        assert (np.diff(result.scores) <= 0).all(), "scores sorted, best first"
        assert set(result.labels.tolist()) <= {1, 2, 3, 4}
        assert result.speed.inference > 0 and result.speed.total >= result.speed.inference


def test_conf_classes_and_max_det_filter(det_ckpt) -> None:
    image = _images()[:1]
    everything = Predictor(weights=det_ckpt, device="cpu", conf=0.0).predict_arrays(image)[0]
    threshold = float(np.median(everything.scores))
    strict = Predictor(weights=det_ckpt, device="cpu", conf=threshold).predict_arrays(image)[0]
    assert 0 < len(strict) < len(everything) and (strict.scores >= threshold).all()
    picked = Predictor(weights=det_ckpt, device="cpu", conf=0.0, classes=["CIRCLE", "3"],
                       max_det=4).predict_arrays(image)[0]
    assert 0 < len(picked) <= 4 and set(picked.labels.tolist()) <= {1, 3}
    with pytest.raises(UsageError, match="unknown class 'hexagon'.*circle"):
        Predictor(weights=det_ckpt, device="cpu", classes=["hexagon"])


def test_to_coco_uses_dataset_category_ids_and_loads_in_pycocotools(det_ckpt) -> None:
    predictor = Predictor(weights=det_ckpt, device="cpu", conf=0.0, max_det=5)
    images = _images()
    results = predictor.predict_arrays(images)
    entries = [e for i, r in enumerate(results, 1) for e in r.to_coco(i, file_name=f"{i}.png")]
    first = results[0]
    x1, y1, x2, y2 = first.boxes[0]
    assert entries[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
    assert entries[0]["category_id"] == CATEGORY_IDS[first.labels[0]]
    assert entries[0]["file_name"] == "1.png"
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": im.shape[0],
                    "width": im.shape[1]} for i, im in enumerate(images, 1)],
        "annotations": [],
        "categories": [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS[1:], SHAPES_CLASSES,
                                                             strict=True)],
    }
    gt.createIndex()
    loaded = gt.loadRes(entries)
    assert len(loaded.getAnnIds()) == len(entries) == sum(len(r) for r in results)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_instance_masks_are_boolean_at_input_size_and_encode_as_rle() -> None:
    torch.manual_seed(0)
    model = build_from_spec(make_spec("mask_rcnn", "tiny", class_names=DET_NAMES, input_size=64))
    result = Predictor(model, device="cpu", conf=0.0, max_det=3).predict_arrays(_images()[:1])[0]
    assert result.task == "instance" and len(result) == 3
    assert result.masks.dtype == bool and result.masks.shape == (3, 40, 72)
    entry = result.to_coco(7)[0]
    assert (mask_utils.decode(entry["segmentation"]).astype(bool) == result.masks[0]).all()


def test_semantic_maps_come_back_at_each_input_size(seg_ckpt) -> None:
    images = _images()
    batched = Predictor(weights=seg_ckpt, device="cpu", batch_size=2).predict_arrays(images)
    for image, result in zip(images, batched, strict=True):
        assert result.semantic.shape == image.shape[:2] and result.semantic.dtype == np.int64
        assert result.semantic.min() >= 0 and result.semantic.max() < 5
        assert len(result) == 0 and result.to_dict()["pixels"]
    single = Predictor(weights=seg_ckpt, device="cpu", batch_size=1)
    pair = Predictor(weights=seg_ckpt, device="cpu", batch_size=2)
    one = single.predict_arrays(images[:1])[0].semantic
    assert (pair.predict_arrays([images[0], images[0]])[1].semantic == one).all()
    unsure = Predictor(weights=seg_ckpt, device="cpu", conf=0.99).predict_arrays(images[:1])[0]
    assert (unsure.semantic == 255).mean() > 0.5, "low-confidence pixels are left unlabeled"


def test_predict_reads_ahead_a_bounded_window_and_reports_bad_files(seg_ckpt, tmp_path,
                                                                    monkeypatch) -> None:
    import cv2

    import detseg.data.io as io

    for i in range(7):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((32, 40, 3), 30 * i, np.uint8))
    (tmp_path / "02.png").write_bytes(b"not a png")
    reads: list[str] = []
    real_read = io.read_image

    def counting_read(path):
        reads.append(str(path))
        return real_read(path)

    monkeypatch.setattr(io, "read_image", counting_read)
    predictor = Predictor(weights=seg_ckpt, device="cpu", batch_size=1, workers=1)
    errors: list[ImageReadError] = []
    stream = predictor.predict([tmp_path, tmp_path / "missing.jpg"], on_error=errors.append)
    first = next(stream)
    assert first.path.name == "00.png"
    assert len(reads) <= 4, "decoding runs a bounded window (2 x batch + workers) ahead"
    rest = list(stream)
    assert [r.path.name for r in [first, *rest]] == [f"{i:02d}.png" for i in range(7) if i != 2]
    assert sorted(e.path.name for e in errors) == ["02.png", "missing.jpg"]
    assert "not a recognized image format" in str(next(e for e in errors
                                                        if e.path.name == "02.png"))
    with pytest.raises(ImageReadError, match="02.png"):
        list(predictor.predict(tmp_path / "02.png"))


def test_plot_returns_an_annotated_copy(det_ckpt) -> None:
    image = _images()[0]
    result = Predictor(weights=det_ckpt, device="cpu", conf=0.0,
                       max_det=3).predict_arrays([image])[0]
    before = image.copy()
    drawn = result.plot(line_width=1)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == before).all() and (drawn != image).any()


def test_bad_options_are_usage_errors(det_ckpt) -> None:
    with pytest.raises(UsageError, match="cuda"):
        select_device("cuda:0" if not torch.cuda.is_available() else "cuda:99")
    with pytest.raises(UsageError, match="device"):
        select_device("toaster")
    with pytest.raises(UsageError, match="model name or weights"):
        Predictor()
    with pytest.raises(UsageError, match="batch_size"):
        Predictor(weights=det_ckpt, batch_size=0)
