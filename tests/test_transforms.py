"""Augmentation keeps boxes and masks on the pixels; semantic masks pad with ignore."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detseg.data import build_dataset
from detseg.data.masks import masks_boxes
from detseg.data.shapes import generate_shapes
from detseg.data.transforms import build_transforms, normalize
from detseg.errors import UsageError


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = generate_shapes(tmp_path_factory.mktemp("shapes"), train=40, val=0, size=64, seed=9,
                           workers=1)
    ds = build_dataset("shapes", root, split="train", task="instance")
    return [ds[k] for k in range(len(ds))]


@pytest.fixture(scope="module")
def semantic_samples(tmp_path_factory):
    root = generate_shapes(tmp_path_factory.mktemp("shapes_sem"), train=10, val=0, size=96,
                           seed=3, workers=1)
    ds = build_dataset("shapes", root, split="train", task="semantic")
    return [ds[k] for k in range(len(ds))]


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
def test_boxes_and_masks_stay_aligned(samples, preset) -> None:
    """200 random draws: each transformed mask's tight box equals its transformed box within
    1 px. Where the box touches the border the shape may have been cut, and the cut mask's
    box can only be smaller (box clipping is exact, the cut shape's extent is not)."""
    torch.manual_seed(1)
    tf = build_transforms(preset, train=True, task="instance")
    checked = unclipped = 0
    for draw in range(200):
        image, target = tf(*samples[draw % len(samples)])
        assert image.dtype == torch.float32 and 0.0 <= float(image.min()) <= float(image.max()) <= 1
        boxes = target["boxes"].numpy()
        masks = target["masks"].numpy()
        n = len(boxes)
        assert len(masks) == len(target["labels"]) == len(target["iscrowd"]) == n
        assert len(target["area"]) == n
        assert masks.shape[1:] == image.shape[1:]
        assert tuple(target["boxes"].canvas_size) == tuple(image.shape[1:])
        height, width = image.shape[1:]
        for box, mask_box in zip(boxes, masks_boxes(masks), strict=True):
            checked += 1
            assert box[2] - box[0] >= 1 and box[3] - box[1] >= 1
            touches = box[0] < 1 or box[1] < 1 or box[2] > width - 1 or box[3] > height - 1
            if touches:
                assert (mask_box[:2] >= box[:2] - 1).all() and (mask_box[2:] <= box[2:] + 1).all()
            else:
                unclipped += 1
                assert np.abs(mask_box - box).max() <= 1.0, (preset, draw, box, mask_box)
    assert checked > 300 and unclipped > 150


def test_presets_change_geometry(samples) -> None:
    torch.manual_seed(0)
    sizes = {tuple(build_transforms("strong", True, "detect")(*samples[k % 5])[0].shape)
             for k in range(30)}
    assert len(sizes) > 3
    image, target = build_transforms("none", False, "detect")(*samples[0])
    assert tuple(image.shape) == (3, 64, 64)
    np.testing.assert_allclose(image.numpy() * 255, samples[0][0].numpy(), atol=1e-3)


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_semantic_pipeline_pads_with_ignore(semantic_samples, preset) -> None:
    torch.manual_seed(2)
    tf = build_transforms(preset, train=True, task="semantic", imgsz=128)
    saw_ignore = False
    for k in range(30):
        image, target = tf(*semantic_samples[k % len(semantic_samples)])
        mask = target["mask"]
        assert image.shape == (3, 128, 128) and mask.shape == (128, 128)
        assert mask.dtype == torch.int64
        values = set(mask.unique().tolist())
        assert values <= {0, 1, 2, 3, 4, 255}
        saw_ignore |= 255 in values
    assert saw_ignore, "padding never showed up as ignore (255)"


def test_semantic_training_keeps_the_evaluation_scale() -> None:
    """A 64 px square in a 128 px image is 32 px at imgsz 64 in evaluation; augmented training
    samples jitter that (0.75-1.33x) instead of showing it at full resolution, unless ``crop``
    asks for full-resolution windows."""
    from torchvision import tv_tensors

    image = torch.zeros(3, 128, 128, dtype=torch.uint8)
    mask = torch.zeros(128, 128, dtype=torch.int64)
    image[:, 32:96, 32:96] = 200
    mask[32:96, 32:96] = 1
    sample = (tv_tensors.Image(image), {"mask": tv_tensors.Mask(mask)})
    torch.manual_seed(0)
    _, evaluated = build_transforms("none", False, "semantic", imgsz=64)(*sample)
    assert int((evaluated["mask"] == 1).sum()) == 32 * 32
    light = build_transforms("light", True, "semantic", imgsz=64)
    areas = [int((light(*sample)[1]["mask"] == 1).sum()) for _ in range(20)]
    assert all(0.7**2 * 1024 <= a <= 1.4**2 * 1024 for a in areas), areas
    cropped = build_transforms("none", True, "semantic", imgsz=64, crop=64)
    assert max(int((cropped(*sample)[1]["mask"] == 1).sum()) for _ in range(20)) > 1.5 * 1024


def test_semantic_eval_resize_and_flip_alignment(semantic_samples) -> None:
    image, target = build_transforms("none", False, "semantic", imgsz=48)(*semantic_samples[0])
    assert image.shape == (3, 48, 48) and target["mask"].shape == (48, 48)
    src = semantic_samples[0][1]["mask"].numpy()
    np.testing.assert_array_equal(target["mask"].numpy(), src[1::2, 1::2])


def test_normalize_and_bad_preset() -> None:
    images = torch.full((2, 3, 4, 4), 0.5)
    out = normalize(images, (0.5, 0.25, 0.0), (0.5, 0.25, 0.5))
    assert torch.allclose(out[:, 0], torch.zeros(1)) and torch.allclose(out[:, 1], torch.ones(1))
    assert torch.allclose(out[:, 2], torch.ones(1))
    with pytest.raises(UsageError):
        build_transforms("medium", True, "detect")
