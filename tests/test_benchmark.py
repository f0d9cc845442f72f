"""`detseg benchmark`: every JSON key is there with sane values; FLOPs are counted right."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.models import build_model, list_models
from detseg.profile import benchmark, count_flops, count_params, example_inputs

KEYS = {"model", "backbone", "imgsz", "batch_size", "device", "params", "gflops",
        "latency_ms_p50", "latency_ms_p90", "throughput", "peak_mem_mb"}
runner = CliRunner()


def test_flops_of_a_convolution_by_hand() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    flops = count_flops(conv, torch.rand(2, 3, 16, 20))
    assert flops == 2 * (2 * 16 * 20) * 8 * (3 * 3 * 3)  # 2 FLOPs per multiply-add


def test_benchmark_result_is_consistent() -> None:
    model = build_model("unet", backbone="tiny", num_classes=3)
    result = benchmark(model, imgsz=64, batch_size=2, device="cpu", iters=4, warmup=1)
    data = result.to_dict()
    assert set(data) == KEYS
    assert (data["model"], data["backbone"], data["imgsz"], data["batch_size"]) == (
        "unet", "tiny", 64, 2)
    assert data["device"] == "cpu"
    assert data["params"] == count_params(model)[0] > 100_000
    flops = count_flops(model, example_inputs(model, 64, batch_size=2))
    assert data["gflops"] == pytest.approx(flops / 1e9, abs=1e-4) and data["gflops"] > 0
    assert 0 < data["latency_ms_p50"] <= data["latency_ms_p90"]
    # throughput is measured over all passes; it must agree with the latencies' range
    assert 2000 / data["latency_ms_p90"] * 0.5 <= data["throughput"]
    assert data["throughput"] <= 2000 / min(data["latency_ms_p50"], data["latency_ms_p90"]) * 2
    assert data["peak_mem_mb"] > 10  # process RSS on CPU


def test_cli_json_has_exactly_the_keys() -> None:
    result = runner.invoke(app, ["benchmark", "--model", "ssdlite", "--backbone", "tiny",
                                 "--imgsz", "64", "--iters", "2", "--warmup", "1",
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == KEYS
    assert data["model"] == "ssdlite" and data["params"] > 0 and data["gflops"] > 0


def test_cli_all_sweeps_every_family_in_one_table() -> None:
    result = runner.invoke(app, ["benchmark", "--all", "--imgsz", "64", "--iters", "1",
                                 "--warmup", "0", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["model"] for row in rows] == list_models(kind="family")
    assert {"faster_rcnn", "mask_rcnn", "ssd", "ssdlite", "unet", "segnet"} <= set(
        row["model"] for row in rows)
    assert all(set(row) == KEYS and row["backbone"] == "tiny" for row in rows)
    assert all(row["gflops"] > 0 and row["latency_ms_p50"] > 0 for row in rows)


def test_cli_rejects_missing_model() -> None:
    result = runner.invoke(app, ["benchmark", "--iters", "1"])
    assert result.exit_code == 2
    assert "--model" in result.output
