"""Every registered model family passes the conformance kit (tests/conformance.py) over the
``tiny`` backbone, and builds, trains a step and predicts over one torchvision backbone."""

from __future__ import annotations

import pytest
import torch
from conformance import run_family_checks

from detseg.models import build_model, list_models
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
