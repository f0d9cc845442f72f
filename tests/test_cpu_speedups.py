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
