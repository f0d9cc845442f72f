"""The CPU speed-ups leave outputs unchanged: threaded RoI pooling is exact, channels-last
weights change nothing beyond float rounding."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from detseg.engine.cpu_speedups import ThreadedRoIAlign, speed_up_for_cpu


def _boxes(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * size * 0.8
    wh = 2 + torch.rand(n, 2, generator=gen) * size * 0.5
    return torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_roi_align_equals_torchvision(threads: int) -> None:
    gen = torch.Generator().manual_seed(0)
    feats = {"s4": torch.randn(2, 8, 16, 16, generator=gen),
             "s8": torch.randn(2, 8, 8, 8, generator=gen)}
    boxes = [_boxes(150, 64, gen), _boxes(97, 64, gen)]
    shapes = [(64, 64), (64, 64)]
    plain = MultiScaleRoIAlign(["s4", "s8"], 7, 2)
    threaded = ThreadedRoIAlign(MultiScaleRoIAlign(["s4", "s8"], 7, 2), threads)
    expected = plain(feats, boxes, shapes)
    assert torch.equal(threaded(feats, boxes, shapes), expected)
    few = [b[:5] for b in boxes]
    assert torch.equal(threaded(feats, few, shapes), plain(feats, few, shapes))


def test_speed_up_swaps_poolers_and_keeps_predictions() -> None:
    from detseg.models import build_model

    torch.manual_seed(0)
    model = build_model("mask_rcnn", backbone="tiny", num_classes=3).eval()
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    with torch.inference_mode():
        features = model.backbone(torch.stack(images))
        proposals = [_boxes(200, 64, torch.Generator().manual_seed(i)) for i in range(2)]
        expected = model.roi_heads.box_roi_pool(features, proposals, [(64, 64)] * 2)
        speed_up_for_cpu(model, threads=2)
        assert isinstance(model.roi_heads.box_roi_pool, ThreadedRoIAlign)
        assert isinstance(model.roi_heads.mask_roi_pool, ThreadedRoIAlign)
        fast = model.backbone(torch.stack(images))
        got = model.roi_heads.box_roi_pool(fast, proposals, [(64, 64)] * 2)
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("family", ["faster_rcnn", "mask_rcnn"])
def test_sped_up_detector_finds_the_same_objects(family: str) -> None:
    """Threaded RPN NMS and per-image RoI heads keep every detection of a batch (boxes equal up
    to the rounding that channels-last convolutions bring)."""
    import copy

    from detseg.engine.cpu_speedups import PerImageRoIHeads, ThreadedProposalFilter
    from detseg.models import build_model

    torch.manual_seed(0)
    model = build_model(family, backbone="tiny", num_classes=3, input_size=96).eval()
    model.roi_heads.score_thresh = 0.0
    fast = speed_up_for_cpu(copy.deepcopy(model), threads=2)
    assert isinstance(fast.rpn, ThreadedProposalFilter)
    assert isinstance(fast.roi_heads, PerImageRoIHeads)
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 96, 96, generator=gen), torch.rand(3, 80, 112, generator=gen),
              torch.rand(3, 96, 96, generator=gen)]
    with torch.inference_mode():
        expected = model(images)
        got = fast(images)
        proposals, _ = model.rpn(*_rpn_inputs(model, images))
        threaded_rpn = ThreadedProposalFilter(model.rpn, threads=2)
        fast_proposals, _ = threaded_rpn(*_rpn_inputs(model, images))
    for want, have in zip(proposals, fast_proposals, strict=True):
        assert torch.equal(want, have)
    for want, have in zip(expected, got, strict=True):
        assert len(want["boxes"]) > 0
        assert torch.equal(want["labels"], have["labels"])
        assert torch.allclose(want["boxes"], have["boxes"], atol=1e-3)
        assert torch.allclose(want["scores"], have["scores"], atol=1e-4)
        if family == "mask_rcnn":
            assert torch.allclose(want["masks"], have["masks"], atol=1e-3)


def _rpn_inputs(model: torch.nn.Module, images: list[torch.Tensor]) -> tuple:
    batch, _ = model.transform(images)
    return batch, model.backbone(batch.tensors)
