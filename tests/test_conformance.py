"""Every registered model family passes the conformance kit (tests/conformance.py) over the
``tiny`` backbone, and builds, trains a step and predicts over one torchvision backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conformance import WRITERS, run_family_checks

from detseg.engine.trainer import TrainConfig, Trainer
from detseg.models import build_model, list_models, make_spec, model_info
from detseg.tasks import InferenceSettings, task_adapter

FAMILIES = list_models(kind="family")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_passes_every_command(family: str, tmp_path) -> None:
    torch.manual_seed(0)
    run_family_checks(family, tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_over_a_torchvision_backbone(family: str) -> None:
    torch.manual_seed(0)
    model = build_model(family, backbone="resnet18", num_classes=3, input_size=96)
    adapter = task_adapter(model)
    images = [torch.rand(3, 61, 90), torch.rand(3, 80, 52)]
    if adapter.name == "semantic":
        targets = [{"mask": torch.randint(0, 3, im.shape[-2:])} for im in images]
    else:
        targets = []
        for im in images:
            h, w = im.shape[-2:]
            target = {"boxes": torch.tensor([[4.0, 6.0, w / 2, h / 2]]),
                      "labels": torch.tensor([1])}
            if adapter.name == "instance":
                mask = torch.zeros(1, h, w, dtype=torch.uint8)
                mask[0, 6 : h // 2, 4 : w // 2] = 1
                target["masks"] = mask
            targets.append(target)
    model.train()
    losses = adapter.loss(model, images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total) and total.requires_grad
    total.backward()
    model.eval()
    settings = InferenceSettings(conf=0.0, max_det=5)
    adapter.configure(model, settings)
    with torch.inference_mode():
        predictions = adapter.predict(model, images, settings)
    for prediction, image in zip(predictions, images, strict=True):
        assert prediction.size == tuple(image.shape[-2:])
        if adapter.name == "semantic":
            assert prediction.semantic.shape == prediction.size
        else:
            assert len(prediction.boxes) <= 5


def _first_family(task: str) -> str:
    return next(f for f in FAMILIES if model_info(f)["task"] == task)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("task", ["detect", "instance", "semantic"])
def test_every_task_trains_and_scores_in_every_format(task: str, fmt: str, tmp_path) -> None:
    """One epoch and its validation, for a family of each task, on hand-made trees of every
    format (odd, mixed, non-square sizes)."""
    root = WRITERS[fmt](tmp_path / fmt)
    config = TrainConfig(model=_first_family(task), backbone="tiny", dataset=fmt,
                         data_root=str(root), epochs=1, imgsz=96, batch_size=4)
    result = Trainer(config, tmp_path / "run", handle_sigint=False).fit()
    assert result.status == "completed" and result.last_path.is_file()
    row = result.history[-1]
    assert np.isfinite(row["train/loss"]), row
    key = task_adapter(make_spec(config.model, "tiny", num_classes=2)).fitness_key
    assert f"metrics/{key}" in row, row
