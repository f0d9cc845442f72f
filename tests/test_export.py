"""`detseg export`: every family exports to ONNX and TorchScript and matches PyTorch.

Tolerances (float32, CPU): logits, scores and mask probabilities within 1e-4, boxes within
1e-3 pixels, labels exactly. Models are the tiny-backbone families built for 64 px inputs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.errors import ExportError, UsageError
from detseg.export import (
    ExportedModel,
    check_export,
    export_model,
    read_export_metadata,
)
from detseg.models import build_model, list_models
from detseg.spec import ModelSpec

FAMILIES = tuple(list_models(kind="family"))
TOLERANCE = {"boxes": 1e-3, "labels": 0.0, "scores": 1e-4, "masks": 1e-4, "logits": 1e-4}
IMGSZ = 64
CLASS_NAMES = ["background", "circle", "square"]


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {family: build_model(family, backbone="tiny", class_names=CLASS_NAMES,
                                input_size=IMGSZ).eval()
            for family in FAMILIES}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_matches_pytorch(family: str, fmt: str, models: dict, tmp_path) -> None:
    model = models[family]
    result = export_model(model, fmt, tmp_path / f"{family}.{fmt}", imgsz=IMGSZ, dynamic=True)
    assert result.path.is_file() and result.path.stat().st_size > 100_000

    meta = read_export_metadata(result.path)
    assert ModelSpec.from_dict(meta["spec"]) == model.spec
    assert meta["spec"]["class_names"] == CLASS_NAMES and meta["imgsz"] == IMGSZ
    assert meta["outputs"] == result.output_names

    check = check_export(result, model, IMGSZ)
    for name, diff in check.per_output.items():
        assert diff <= TOLERANCE[name], (family, fmt, name, diff, check.notes)
    assert not check.notes
    if family == "segnet":
        # unpooling sizes are constants in a trace: batch free, size fixed, and said so
        assert not result.dynamic_size and result.dynamic_batch
        assert "fixes the image size" in result.notes[0]
        assert check.input_shapes == [[1, 3, IMGSZ, IMGSZ], [2, 3, IMGSZ, IMGSZ]]
    else:
        assert result.dynamic_size, result.notes
        assert check.input_shapes[1][2:] == [IMGSZ + 32, IMGSZ + 64]  # non-square, larger


def test_exported_detector_returns_boxes_in_input_pixels(models: dict, tmp_path) -> None:
    result = export_model(models["ssd"], "onnx", tmp_path / "ssd.onnx", imgsz=IMGSZ,
                          dynamic=True)
    images = torch.rand(1, 3, 80, 120).numpy()
    boxes, labels, scores = ExportedModel(result.path)(images)
    assert boxes.shape[1] == 4 and len(boxes) == len(labels) == len(scores) > 0
    assert boxes[:, [0, 2]].max() <= 120 and boxes[:, [1, 3]].max() <= 80
    assert set(labels.tolist()) <= {1, 2}


def test_unexportable_combinations_say_why(models: dict, tmp_path) -> None:
    with pytest.raises(UsageError, match="format"):
        export_model(models["unet"], "tflite", tmp_path / "x.tflite")
    with pytest.raises(UsageError, match="opset"):
        export_model(models["unet"], "onnx", tmp_path / "x.onnx", opset=11)
    with pytest.raises(ExportError, match="needs a CUDA device"):
        export_model(models["unet"], "onnx", tmp_path / "x.onnx", half=True)
    with pytest.raises(ExportError, match="does not run in fp16 on cpu .*nms"):
        export_model(models["ssd"], "torchscript", tmp_path / "x.ts", imgsz=IMGSZ, half=True)
    assert next(models["ssd"].parameters()).dtype == torch.float32  # the caller's model stays

    class NoOnnxOp(nn.Module):
        """A semantic 'model' whose op has no ONNX form."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft2(self.conv(x)).abs()

    with pytest.raises(ExportError, match="cannot export to ONNX: .*fft"):
        export_model(NoOnnxOp(), "onnx", tmp_path / "fft.onnx", imgsz=32)


def test_cli_export_check(tmp_path) -> None:
    out = tmp_path / "unet.torchscript"
    result = CliRunner().invoke(app, ["export", "--model", "unet", "--backbone", "tiny",
                                      "--num-classes", "3", "--imgsz", "64", "--format",
                                      "torchscript", "--out", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "max abs diff" in result.output and "randomly initialised" in result.output
    assert read_export_metadata(out)["spec"]["family"] == "unet"
