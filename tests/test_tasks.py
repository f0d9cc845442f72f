"""The task contract: results that do not depend on the batch size, semantic metrics at the
original resolution, aux heads trained, the caller's module left alone."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detseg.data import build_dataset
from detseg.engine.predictor import Predictor
from detseg.eval.runner import evaluate_model
from detseg.models import build_model, make_spec
from detseg.tasks import InferenceSettings, task_adapter

sys.path.insert(0, str(Path(__file__).parent))
from conformance import write_mask_folder, write_yolo  # noqa: E402


@pytest.fixture(scope="module")
def yolo_root(tmp_path_factory) -> Path:
    return write_yolo(tmp_path_factory.mktemp("tasks") / "yolo")


@pytest.fixture(scope="module")
def masks_root(tmp_path_factory) -> Path:
    return write_mask_folder(tmp_path_factory.mktemp("tasks") / "masks")


def _trained_like(name: str, classes: list[str]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, backbone="tiny", class_names=classes, input_size=96)
    for p in model.parameters():  # BatchNorm statistics away from identity
        p.data.add_(torch.randn_like(p) * 0.01)
    return model.eval()


@pytest.mark.parametrize("name", ["faster_rcnn", "unet"])
def test_metrics_do_not_depend_on_the_batch_size(name, yolo_root, masks_root) -> None:
    semantic = name == "unet"
    data = build_dataset("masks" if semantic else "yolo",
                         masks_root if semantic else yolo_root, split="train",
                         task="semantic" if semantic else "detect")
    classes = (["background"] if semantic else ["__background__"]) + ["box", "disc"]
    model = _trained_like(name, classes)
    key = "mIoU" if semantic else "bbox_AP50"
    results = [evaluate_model(model, data, batch_size=b)[key] for b in (1, 2, 5)]
    assert results[0] == results[1] == results[2], results


def test_semantic_predictions_and_metrics_are_at_the_original_size(masks_root) -> None:
    data = build_dataset("masks", masks_root, split="train", task="semantic")
    model = _trained_like("unet", ["background", "box", "disc"])
    predictor = Predictor(model)
    for image_path in sorted((masks_root / "images" / "train").iterdir()):
        result = next(iter(predictor.predict(image_path)))
        assert result.semantic.shape == result.image.shape[:2]
    out = evaluate_model(model, data)
    total = sum(row["pixels"] for row in out["metrics"]["per_class"].values())
    from conformance import SIZES
    assert total == sum(h * w for h, w in SIZES)


def test_predictor_leaves_the_callers_module_alone() -> None:
    model = build_model("faster_rcnn", backbone="tiny", num_classes=3).train()
    before = copy.deepcopy(model.state_dict())
    thresh = model.roi_heads.score_thresh
    Predictor(model, conf=0.7, max_det=3, imgsz=64)
    assert model.training and model.roi_heads.score_thresh == thresh
    assert model.transform.min_size != (64,)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_aux_heads_are_trained() -> None:
    torch.manual_seed(0)
    model = build_model("fcn_resnet50", weights="none", num_classes=3).train()
    adapter = task_adapter(model)
    images = [torch.rand(3, 64, 80), torch.rand(3, 48, 64)]
    targets = [{"mask": torch.randint(0, 3, im.shape[-2:])} for im in images]
    losses = adapter.loss(model, images, targets)
    assert "loss_aux" in losses
    sum(losses.values()).backward()
    grads = [p.grad for p in model.aux_classifier.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_imgsz_reaches_a_preset_resize() -> None:
    model = build_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights="none")
    task_adapter(model).configure(model, InferenceSettings(imgsz=160))
    assert model.transform.min_size == (160,)
    spec = make_spec("faster_rcnn", "tiny", num_classes=2)
    assert task_adapter(spec).fitness_key == "bbox_AP"
    with pytest.raises(Exception, match="imgsz"):
        InferenceSettings(imgsz=100000)
    assert np.isfinite(model.transform.max_size)


@pytest.mark.parametrize("weights", ["shapes-mask_rcnn", "shapes-unet"])
def test_a_huge_picture_is_shrunk_before_the_model_and_mapped_back(weights) -> None:
    from PIL import Image


    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (64, 96, 3), np.uint8)
    small[16:48, 24:56] = (250, 40, 40)
    big = np.asarray(Image.fromarray(small).resize((96 * 20, 64 * 20), Image.NEAREST))
    predictor = Predictor(weights=weights, imgsz=128, conf=0.0)
    result = predictor.predict_arrays([big])[0]
    assert result.image.shape == big.shape
    if result.semantic is not None:
        assert result.semantic.shape == big.shape[:2]
    else:
        assert result.masks is not None and result.masks.shape[1:] == big.shape[:2]
        assert (result.boxes[:, 2] <= big.shape[1]).all()
        assert (result.boxes[:, 3] <= big.shape[0]).all()
