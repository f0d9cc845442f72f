"""The ``deeplabv3plus`` family: ASPP at output stride 16 where the backbone dilates its last
stage (32 elsewhere, with halved rates), old specs keep building, and every kind of
torchvision backbone trains a step and predicts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conformance import check_family_over_backbone

from detseg.errors import ModelBuildError, RegistryError
from detseg.models import build_from_spec, build_model, make_spec
from detseg.tasks import task_adapter
from detseg.tasks.semantic import top_k_cross_entropy


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


def test_hard_pixel_mining_averages_the_hardest_fraction_of_the_labelled_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 7)
    target = torch.randint(0, 3, (2, 5, 7))
    target[0, 0] = 255
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    labelled = per_pixel[target != 255]
    assert torch.allclose(top_k_cross_entropy(logits, target, 1.0), labelled.mean())
    hardest = labelled.sort(descending=True).values[:round(0.2 * labelled.numel())]
    assert torch.allclose(top_k_cross_entropy(logits, target, 0.2), hardest.mean())
    nothing = torch.full_like(target, 255)
    assert top_k_cross_entropy(logits, nothing, 0.2).item() == 0


def test_loss_top_k_option_reaches_the_training_loss() -> None:
    images = [torch.rand(3, 64, 80), torch.rand(3, 48, 64)]
    targets = [{"mask": torch.randint(0, 3, im.shape[-2:])} for im in images]
    losses = {}
    for top_k in (1.0, 0.25):
        torch.manual_seed(0)
        model = build_model("deeplabv3plus", backbone="tiny", num_classes=3,
                            loss_top_k=top_k).eval()
        losses[top_k] = task_adapter(model).loss(model, images, targets)
    assert losses[0.25]["loss_ce"] > losses[1.0]["loss_ce"]
    assert torch.equal(losses[0.25]["loss_dice"], losses[1.0]["loss_dice"])
    with pytest.raises(ModelBuildError, match="loss_top_k"):
        build_model("deeplabv3plus", backbone="tiny", num_classes=3, loss_top_k=0)
