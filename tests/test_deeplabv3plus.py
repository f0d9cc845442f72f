"""The ``deeplabv3plus`` family: ASPP at output stride 16 where the backbone dilates its last
stage (32 elsewhere, with halved rates), old specs keep building, and every kind of
torchvision backbone trains a step and predicts; the optional stride-2 refinement stage."""

from __future__ import annotations

import pytest
import torch
from conformance import check_family_over_backbone

from detseg.engine.transfer import load_transfer_weights, resolve_transfer_weights
from detseg.errors import ModelBuildError, RegistryError
from detseg.models import build_from_spec, build_model, make_spec
from detseg.weights import save_checkpoint


def _aspp_input_shape(model: torch.nn.Module, size: tuple[int, int]) -> tuple[int, ...]:
    seen: list[tuple[int, ...]] = []
    handle = model.aspp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    with torch.no_grad():
        logits = model.eval()(torch.rand(1, 3, *size))
    handle.remove()
    assert tuple(logits.shape[-2:]) == size
    return tuple(seen[0])


@pytest.mark.parametrize(("backbone", "stride", "rates"), [
    ("tiny", 16, [6, 12, 18]), ("resnet50", 16, [6, 12, 18]),
    ("mobilenet_v3_large", 16, [6, 12, 18]), ("resnet18", 32, [3, 6, 9]),
    ("efficientnet_b0", 32, [3, 6, 9])])
def test_aspp_runs_at_output_stride_16_where_the_backbone_dilates(
        backbone: str, stride: int, rates: list[int]) -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3plus", backbone=backbone, num_classes=4, input_size=96)
    assert model.spec.options["output_stride"] == stride
    assert model.spec.options["aspp_rates"] == rates
    assert _aspp_input_shape(model, (96, 160))[-2:] == (96 // stride, 160 // stride)


def test_output_stride_is_an_option_and_old_specs_build_at_32() -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3plus", backbone="tiny", num_classes=3, output_stride=32)
    assert _aspp_input_shape(model, (64, 96))[-2:] == (2, 3)
    # a checkpoint written before the option existed has no output_stride: stride 32 as then
    spec = make_spec("deeplabv3plus", "tiny", 3)
    old = spec.__class__(**{**spec.__dict__, "options": {
        k: v for k, v in spec.options.items() if k != "output_stride"} | {
        "aspp_rates": [3, 6, 9]}})
    assert _aspp_input_shape(build_from_spec(old), (64, 96))[-2:] == (2, 3)
    with pytest.raises(RegistryError, match="resnet18.*output_stride=16"):
        build_model("deeplabv3plus", backbone="resnet18", num_classes=3, output_stride=16)


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"])
def test_deeplabv3plus_over_torchvision_backbones(backbone: str) -> None:
    check_family_over_backbone("deeplabv3plus", backbone)


def test_refine_stride_stage_starts_as_the_model_without_it_then_learns(tmp_path) -> None:
    torch.manual_seed(0)
    plain = build_model("deeplabv3plus", backbone="tiny", num_classes=3, input_size=64).eval()
    save_checkpoint(tmp_path / "p.pt", plain.state_dict(), plain.spec)
    refined = build_model("deeplabv3plus", backbone="tiny", num_classes=3, input_size=64,
                          refine_stride=2)
    notes = load_transfer_weights(refined, resolve_transfer_weights(str(tmp_path / "p.pt")))
    assert any("start fresh" in note and "refine" in note for note in notes)
    images = torch.rand(2, 3, 48, 80)  # odd multiples of the strides
    with torch.no_grad():
        assert torch.equal(plain(images), refined.eval()(images))
    # one step on a target with a one-pixel line: the correction is no longer zero
    target = torch.zeros(2, 48, 80, dtype=torch.long)
    target[:, 20, :] = 1
    optimizer = torch.optim.SGD(refined.refine.parameters(), lr=0.5)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(refined.train()(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(plain(images), refined.eval()(images))


def test_refine_stride_needs_a_stride_2_map_and_takes_only_2() -> None:
    with pytest.raises(ModelBuildError, match="strides \\[2\\].*convnext_tiny"):
        build_model("deeplabv3plus", backbone="convnext_tiny", num_classes=3, refine_stride=2)
    with pytest.raises(ModelBuildError, match="refine_stride must be 2"):
        build_model("deeplabv3plus", backbone="tiny", num_classes=3, refine_stride=4)
