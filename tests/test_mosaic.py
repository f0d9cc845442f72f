"""Mosaic augmentation: four hand-made odd-sized images in one sample whose boxes and masks
still cover their objects' pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conformance import write_mask_folder, write_yolo

from detseg.data import build_dataset
from detseg.data.mosaic import GREY, MosaicDataset
from detseg.errors import UsageError

YELLOW = np.array([230, 220, 40])
BLUE = np.array([20, 40, 200])


def _colour_fraction(image: np.ndarray, box: np.ndarray, colour: np.ndarray) -> float:
    x0, y0, x1, y1 = np.round(box).astype(int)
    patch = image[y0:y1, x0:x1].reshape(-1, 3).astype(int)
    return float((np.abs(patch - colour).sum(axis=1) < 90).mean()) if len(patch) else 0.0


@pytest.mark.parametrize("task", ["detect", "instance"])
def test_mosaic_boxes_and_masks_follow_their_objects(task: str, tmp_path) -> None:
    root = write_yolo(tmp_path / "yolo")
    data = build_dataset("yolo", root, split="train", task=task)
    mosaic = MosaicDataset(data, size=96)
    torch.manual_seed(0)
    boxes_seen = 0
    for index in range(len(mosaic)):
        image, target = mosaic[index]
        assert tuple(image.shape) == (3, 96, 96) and image.dtype == torch.uint8
        picture = image.permute(1, 2, 0).numpy()
        boxes = target["boxes"].numpy()
        labels = target["labels"].numpy()
        assert len(boxes) == len(labels) == len(target["area"])
        assert (boxes >= 0).all() and (boxes <= 96).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 2).all()
        for box, label in zip(boxes, labels, strict=True):
            colour = YELLOW if data.class_names[label] == "box" else BLUE
            # the rectangle fills its box; the disc covers pi/4 of its box
            assert _colour_fraction(picture, box, colour) > (0.6 if label == 1 else 0.45)
        if task == "instance":
            masks = target["masks"].numpy().astype(bool)
            assert masks.shape == (len(boxes), 96, 96)
            for mask, box in zip(masks, boxes, strict=True):
                ys, xs = np.nonzero(mask)
                assert len(ys) > 0
                assert abs(xs.min() - box[0]) <= 2 and abs(xs.max() + 1 - box[2]) <= 2
        boxes_seen += len(boxes)
    assert boxes_seen > len(mosaic)  # several images' objects per sample


def test_mosaic_off_gives_the_plain_samples_and_grey_fills_the_rest(tmp_path) -> None:
    root = write_yolo(tmp_path / "yolo")
    data = build_dataset("yolo", root, split="train", task="detect")
    plain = [data[i] for i in range(len(data))]
    mosaic = MosaicDataset(data, size=64, p=0.0)
    for (image, target), (ref_image, ref_target) in zip(
            (mosaic[i] for i in range(len(mosaic))), plain, strict=True):
        assert torch.equal(image, ref_image)
        assert torch.equal(target["boxes"], ref_target["boxes"])
    mosaic = MosaicDataset(data, size=64, scale=(0.5, 0.5))  # the whole canvas, zoomed out
    torch.manual_seed(1)
    image, _ = mosaic[0]
    assert (image == GREY).all(dim=0).float().mean() > 0.2
    assert mosaic.class_names == data.class_names  # attributes pass through


def test_mosaic_refuses_semantic_data_and_bad_values(tmp_path) -> None:
    root = write_yolo(tmp_path / "yolo")
    data = build_dataset("yolo", root, split="train", task="detect")
    with pytest.raises(UsageError, match="probability"):
        MosaicDataset(data, size=64, p=1.5)
    with pytest.raises(UsageError, match="size"):
        MosaicDataset(data, size=4)
    masks = build_dataset("masks", write_mask_folder(tmp_path / "masks"), split="train",
                          task="semantic")
    with pytest.raises(UsageError, match="not semantic"):
        MosaicDataset(masks, size=64)
