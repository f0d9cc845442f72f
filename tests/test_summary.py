"""`detseg summary`: output shapes, parameters, strides and receptive fields are right."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from detseg.backbones import build_backbone
from detseg.cli.main import app
from detseg.summary import ReceptiveField, output_receptive_fields, receptive_fields, summarize


def test_conv_pool_conv_gives_field_8_at_stride_2() -> None:
    # by hand: conv3x3 sees 3 pixels; pool2 adds (2-1)*1 -> 4 and doubles the jump to 2;
    # conv3x3 adds (3-1)*2 -> 8
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1))
    fields = receptive_fields(net)
    assert fields == {"0": ReceptiveField(1, 3), "1": ReceptiveField(2, 4),
                      "2": ReceptiveField(2, 8), "": ReceptiveField(2, 8)}
    result = summarize(net, imgsz=(32, 48), depth=1)
    rows = {row.name: row for row in result.layers}
    assert [row.name for row in result.layers] == ["0", "1", "2"]
    assert rows["0"].output_shape == [1, 8, 32, 48]
    assert rows["1"].output_shape == [1, 8, 16, 24]
    assert rows["2"].output_shape == [1, 16, 16, 24]
    assert (rows["2"].stride, rows["2"].receptive_field) == (2, 8)
    assert rows["0"].params == 3 * 8 * 9 + 8 and rows["2"].params == 8 * 16 * 9 + 16
    assert result.params == result.trainable_params == 224 + 1168
    # FLOPs: 2 per multiply-add of the two convolutions (the pool is not counted)
    expected = 2 * (32 * 48 * 8 * 27 + 16 * 24 * 16 * 72)
    assert result.gflops == pytest.approx(expected / 1e9, abs=1e-4)
    assert result.weight_mb == pytest.approx(1392 * 4 / 2**20, abs=1e-3)


def test_dilation_and_residual_branches() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=2, dilation=2)  # effective kernel 5
            self.skip = nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + self.skip(x)

    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), Block(), nn.AdaptiveAvgPool2d(1))
    fields = receptive_fields(net)
    assert fields["0"] == ReceptiveField(2, 3)
    assert fields["1"] == ReceptiveField(2, 3 + 4 * 2)  # the add keeps the larger branch
    assert fields["2"].extent() == "global"


def test_tiny_backbone_fields_and_shapes() -> None:
    backbone = build_backbone("tiny")
    # stem conv 3; each stage: pool2 (+1 jump), two conv3x3 (+2 jumps each)
    expected = {"s2": (2, 12), "s4": (4, 30), "s8": (8, 66), "s16": (16, 138), "s32": (32, 282)}
    fields = output_receptive_fields(backbone)
    assert {k: (f.stride, f.size) for k, f in fields.items()} == expected

    class WithBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = nn.Conv2d(backbone.channels[-1], 2, 1)

        def forward(self, x: torch.Tensor) -> OrderedDict:
            return self.head(self.backbone(x)["s32"])

    result = summarize(WithBackbone(), imgsz=64, depth=3)
    rows = {row.name: row for row in result.layers}
    assert result.backbone_module == "backbone"
    assert [(s["name"], s["stride"], s["receptive_field"]) for s in result.stages] == [
        (k, *v) for k, v in expected.items()]
    assert [s["output_shape"][-1] for s in result.stages] == [32, 16, 8, 4, 2]
    assert rows["backbone.stages.2"].output_shape == [1, 96, 8, 8]
    assert (rows["backbone.stages.2"].stride, rows["backbone.stages.2"].receptive_field) == (8, 66)
    assert rows["backbone.stem"].receptive_field == 3
    assert rows["head"].stride is None and rows["head"].output_shape == [1, 2, 2, 2]
    assert "backbone.stages.2.1.0" not in rows  # depth 3 folds the conv inside the block
    assert rows["backbone"].params == sum(p.numel() for p in backbone.parameters())


def test_cli_summary_json_and_table() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["summary", "--model", "unet", "--backbone", "tiny",
                                 "--imgsz", "64", "--depth", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["input_shape"] == [1, 3, 64, 64]
    assert data["params"] == data["trainable_params"] > 0
    assert data["gflops"] > 0 and data["weight_mb"] > 0
    assert data["stages"][-1]["receptive_field"] == 282
    assert max(row["depth"] for row in data["layers"]) == 2
    table = runner.invoke(app, ["summary", "--model", "faster_rcnn", "--backbone", "tiny",
                                "--imgsz", "96", "--depth", "2"])
    assert table.exit_code == 0, table.output
    assert "receptive field" in table.output and "GFLOPs" in table.output
