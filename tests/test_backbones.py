"""The backbone registry: table entries match the networks, tiny, pretrained loading, CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from detseg.backbones import backbone_info, build_backbone, list_backbones
from detseg.backbones.timm_nets import timm_available
from detseg.backbones.torchvision_nets import (
    TORCHVISION_NETS,
    TorchvisionBackbone,
    torchvision_model,
)
from detseg.cli.main import app
from detseg.errors import RegistryError

runner = CliRunner()
REQUIRED = ["tiny", "resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2",
            "mobilenet_v3_small", "mobilenet_v3_large", "vgg11_bn", "vgg16", "vgg16_bn",
            "efficientnet_b0", "efficientnet_b3", "convnext_tiny", "regnet_y_800mf"]


def test_registry_has_every_required_backbone() -> None:
    assert set(REQUIRED) <= set(list_backbones())
    assert list_backbones("mobilenet_v3_*") == ["mobilenet_v3_large", "mobilenet_v3_small"]


@pytest.mark.parametrize("name", sorted(TORCHVISION_NETS))
def test_table_matches_the_network(name: str) -> None:
    """Channels, strides and keys of the table hold for the real graph (on the meta device)."""
    backbone = TorchvisionBackbone(torchvision_model(name, on_meta=True), TORCHVISION_NETS[name])
    device = next(backbone.parameters()).device
    features = backbone.eval()(torch.zeros(1, 3, 64, 64, device=device))
    assert list(features) == [f"s{s}" for s in backbone.strides]
    assert [f.shape[1] for f in features.values()] == backbone.channels
    assert [64 // f.shape[-1] for f in features.values()] == backbone.strides
    assert backbone.strides == ([4, 8, 16, 32] if name == "convnext_tiny" else [2, 4, 8, 16, 32])
    info = backbone_info(name)
    assert (info["channels"], info["strides"], info["pretrained"]) == (
        backbone.channels, backbone.strides, True)
    assert info["params"] == round(sum(p.numel() for p in backbone.parameters()) / 1e6, 2)


def test_tiny_backbone() -> None:
    tiny = build_backbone("tiny")
    params = sum(p.numel() for p in tiny.parameters())
    assert 0.8e6 < params < 1.3e6
    assert backbone_info("tiny") == {"name": "tiny", "params": round(params / 1e6, 2),
                                     "channels": [32, 64, 96, 128, 192],
                                     "strides": [2, 4, 8, 16, 32], "output_strides": [16, 32],
                                     "pretrained": False}
    out = tiny(torch.rand(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "s2": (2, 32, 32, 48), "s4": (2, 64, 16, 24), "s8": (2, 96, 8, 12),
        "s16": (2, 128, 4, 6), "s32": (2, 192, 2, 3)}
    assert all(isinstance(m, torch.nn.MaxPool2d) for m in (s[0] for s in tiny.stages))
    with pytest.raises(RegistryError, match="no pretrained"):
        build_backbone("tiny", pretrained=True)


def test_state_dict_keys_are_torchvision_keys_and_copies_are_independent() -> None:
    backbone = build_backbone("resnet18")
    classifier = torchvision.models.resnet18().state_dict()
    assert set(classifier) - set(backbone.state_dict()) == {"fc.weight", "fc.bias"}
    twin = copy.deepcopy(backbone).eval()
    backbone.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(twin(x)["s32"], backbone(x)["s32"])
        # the copy runs its own modules, not the original's
        twin.get_submodule("layer4.1.conv2").weight.zero_()
        assert not torch.equal(twin(x)["s32"], backbone(x)["s32"])


def test_pretrained_loads_imagenet_weights_through_weights_layer(monkeypatch) -> None:
    import detseg.weights

    reference = torchvision.models.mobilenet_v3_small().state_dict()
    asked = []

    def fake_load(enum_member):
        asked.append(enum_member)
        return reference

    monkeypatch.setattr(detseg.weights, "load_torchvision_weights", fake_load)
    backbone = build_backbone("mobilenet_v3_small", pretrained=True)
    assert asked == [torchvision.models.MobileNet_V3_Small_Weights.DEFAULT]
    key = "features.3.block.0.0.weight"
    assert torch.equal(backbone.state_dict()[key], reference[key])


def test_unknown_and_timm_names() -> None:
    with pytest.raises(RegistryError, match="did you mean resnet50"):
        build_backbone("resnet5")
    if not timm_available():
        with pytest.raises(RegistryError, match="pip install"):
            build_backbone("timm/resnet18")


def test_cli_backbones_table_and_json() -> None:
    result = runner.invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == sorted(REQUIRED)
    assert all(set(r) == {"name", "params", "channels", "strides", "output_strides",
                          "pretrained"} for r in rows)
    dilating = {r["name"] for r in rows if r["output_strides"] == [16, 32]}
    assert dilating == {"tiny", "resnet50", "resnet101", "mobilenet_v3_small",
                        "mobilenet_v3_large"}
    vgg = next(r for r in rows if r["name"] == "vgg16_bn")
    assert vgg["channels"] == [128, 256, 512, 512, 512] and 14 < vgg["params"] < 15
    table = runner.invoke(app, ["backbones", "res*"])
    assert table.exit_code == 0 and "resnet101" in table.output and "tiny" not in table.output
    assert runner.invoke(app, ["backbones", "nothing*"]).exit_code == 1
    assert "Examples" in runner.invoke(app, ["backbones", "--help"]).output


@pytest.mark.parametrize("name", ["tiny", "resnet50", "mobilenet_v3_large", "mobilenet_v3_small"])
def test_output_stride_16_dilates_the_last_stage(name: str) -> None:
    """At output stride 16 the deepest map comes from the last stage, dilated, at stride 16;
    the parameters (and so any checkpoint) are the same as at stride 32."""
    torch.manual_seed(0)
    plain = build_backbone(name).eval()
    dilated = build_backbone(name, output_stride=16).eval()
    dilated.load_state_dict(plain.state_dict())  # strict: the same tensors
    x = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        deep32, deep16 = plain(x), dilated(x)
    assert dilated.strides == [2, 4, 8, 16] and list(deep16) == ["s2", "s4", "s8", "s16"]
    assert dilated.channels == [plain.channels[0], plain.channels[1], plain.channels[2],
                                plain.channels[-1]]
    assert tuple(deep16["s16"].shape) == (1, plain.channels[-1], 6, 10)
    assert tuple(deep32["s32"].shape) == (1, plain.channels[-1], 3, 5)
    # the shallow maps do not change
    assert torch.allclose(deep16["s8"], deep32["s8"])


def test_output_stride_refused_where_the_backbone_cannot_dilate() -> None:
    for name in ("resnet18", "vgg16", "convnext_tiny"):
        with pytest.raises(RegistryError, match=f"{name}.*output_stride=16.*supports 32"):
            build_backbone(name, output_stride=16)
    with pytest.raises(RegistryError, match="output_stride=8"):
        build_backbone("resnet50", output_stride=8)
