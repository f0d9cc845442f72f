"""The ``yolo`` family: it learns boxes given in the input images' pixels (letterboxed inside,
mapped back out), follows ``--conf``/``--max-det`` and rejects a spec it cannot build."""

from __future__ import annotations

import pytest
import torch
from conformance import check_family_over_backbone
from torchvision.ops import box_iou

from detseg.errors import ModelBuildError
from detseg.models import build_model
from detseg.tasks import InferenceSettings, task_adapter


def _scenes() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two odd, non-square gray images with a yellow box (class 1) and a blue one (class 2)."""
    generator = torch.Generator().manual_seed(3)
    images, targets = [], []
    layouts = [((57, 83), [[5, 7, 40, 30], [44, 25, 78, 52]]),
               ((91, 46), [[3, 50, 30, 86], [12, 4, 43, 37]])]
    colors = [torch.tensor([0.9, 0.9, 0.1]), torch.tensor([0.1, 0.2, 0.9])]
    for (height, width), boxes in layouts:
        image = 0.35 + 0.2 * torch.rand(3, height, width, generator=generator)
        for (x0, y0, x1, y1), color in zip(boxes, colors, strict=True):
            image[:, y0:y1, x0:x1] = color[:, None, None]
        images.append(image)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor([1, 2])})
    return images, targets


def test_yolo_learns_boxes_in_input_pixels() -> None:
    torch.manual_seed(0)
    model = build_model("yolo", backbone="tiny", num_classes=3, input_size=64)
    images, targets = _scenes()
    optimizer = torch.optim.AdamW(model.parameters(), 3e-3)
    model.train()
    for _ in range(60):
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert set(losses) == {"loss_box", "loss_dfl", "loss_cls"}
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    for output, target in zip(outputs, targets, strict=True):
        iou = box_iou(target["boxes"], output["boxes"][:2])
        assert (iou.max(1).values > 0.7).all(), (output, target)
        assert output["labels"][iou.argmax(1)].tolist() == [1, 2]
    adapter = task_adapter(model)
    settings = InferenceSettings(conf=0.0, max_det=1)
    adapter.configure(model, settings)
    with torch.no_grad():
        predictions = adapter.predict(model, images, settings)
    assert [len(p.boxes) for p in predictions] == [1, 1]
    assert [p.size for p in predictions] == [(57, 83), (91, 46)]


def test_yolo_canvas_not_a_multiple_of_32_and_empty_targets() -> None:
    torch.manual_seed(0)
    model = build_model("yolo", backbone="tiny", num_classes=2, input_size=75)
    images = [torch.rand(3, 33, 70), torch.rand(3, 70, 41)]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    model.train()
    losses = model(images, [empty, empty])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    model.score_thresh = 0.0
    with torch.no_grad():
        outputs = model(images)
    for output, image in zip(outputs, images, strict=True):
        assert output["boxes"].shape[0] <= model.detections_per_img
        assert (output["boxes"][:, 2] <= image.shape[-1]).all()
        assert (output["boxes"][:, 3] <= image.shape[-2]).all()
        assert (output["labels"] == 1).all()


def test_yolo_needs_a_foreground_class() -> None:
    with pytest.raises(ModelBuildError, match="num_classes"):
        build_model("yolo", backbone="tiny", num_classes=1, input_size=64)


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"])
def test_yolo_over_torchvision_backbones(backbone: str) -> None:
    check_family_over_backbone("yolo", backbone)
