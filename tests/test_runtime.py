"""Exported models (ONNX Runtime, TorchScript) as ``--weights``: the same results as the
checkpoint through detect, segment and eval; benchmark's runtime table; refusals and hostile
files (one line, exit 2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from detseg.data.shapes import generate_shapes
from detseg.export import export_model
from detseg.models.loading import load_model
from detseg.runtime import GraphSession, exported_format, load_exported
from tests.cli_runner import detseg, detseg_text

IMGSZ = 256
#: boxes of the same detection in both runtimes overlap at least this much
MIN_IOU = 0.98
#: share of pixels on which masks must agree
MIN_PIXELS = 0.995


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shapes dataset of three val images (224 px)."""
    return generate_shapes(tmp_path_factory.mktemp("shapes"), train=0, val=3, size=224,
                           workers=1)


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory, shapes: Path) -> Path:
    """A folder of pictures cut and scaled by hand to odd sizes (161 x 200 and 121 x 173 are
    sizes where a traced float32 resize lands a pixel off torchvision's; 120 x 448 is resized
    by its longer side) and one as it is."""
    first = cv2.imread(str(sorted((shapes / "images" / "val").glob("*.jpg"))[0]))
    folder = tmp_path_factory.mktemp("odd")
    cv2.imwrite(str(folder / "crop_161x200.png"), first[30:191, 10:210])
    cv2.imwrite(str(folder / "scaled_121x173.png"), cv2.resize(first, (173, 121)))
    cv2.imwrite(str(folder / "plain.jpg"), first)
    wide = np.concatenate([first[40:160], first[40:160, ::-1]], axis=1)  # longer side capped
    cv2.imwrite(str(folder / "wide_120x448.png"), wide)
    return folder


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory):
    """``export(weights, fmt, dynamic)`` -> the file, exported once per module."""
    out = tmp_path_factory.mktemp("exports")
    made: dict[tuple[str, str, bool], Path] = {}

    def export(weights: str, fmt: str, dynamic: bool = True, name: str | None = None) -> Path:
        key = (weights, fmt, dynamic)
        if key not in made:
            suffix = {"onnx": ".onnx", "torchscript": ".torchscript"}[fmt]
            path = out / (name or f"{weights}-{int(dynamic)}{suffix}")
            export_model(load_model(None, weights), fmt, path, imgsz=IMGSZ, dynamic=dynamic)
            made[key] = path
        return made[key]

    return export


@pytest.fixture(scope="module")
def checkpoint_detections() -> dict[str, list]:
    """predictions.json of the checkpoints over the odd pictures, by weights (run once)."""
    return {}


def _detections(monkeypatch, capsys, weights: str | Path, source: Path, out: Path) -> list:
    code, text = detseg_text(monkeypatch, capsys, "detect", source, "--weights", weights,
                             "--out", out, "--no-save-images", "--quiet", "--device", "cpu")
    assert code == 0, text
    return json.loads((out / "predictions.json").read_text())


def _iou(a: list[float], b: list[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _assert_same_detections(ref: list, got: list) -> int:
    """Every detection pairs with one of the same image and label at IoU >= MIN_IOU (masks:
    equal on MIN_PIXELS of the pixels); returns how many were compared."""
    assert len(ref) == len(got)
    unused = list(got)
    for det in ref:
        same = [g for g in unused if g["file_name"] == det["file_name"]
                and g["category_id"] == det["category_id"]]
        best = max(same, key=lambda g: _iou(g["bbox"], det["bbox"]))
        assert _iou(best["bbox"], det["bbox"]) >= MIN_IOU, (det, best)
        assert best["score"] == pytest.approx(det["score"], abs=2e-3)
        if "segmentation" in det:
            a, b = mask_utils.decode(det["segmentation"]), mask_utils.decode(best["segmentation"])
            assert (a == b).mean() >= MIN_PIXELS
        unused.remove(best)
    return len(ref)


@pytest.mark.parametrize(("weights", "fmt"), [("shapes-ssd", "onnx"),
                                              ("shapes-ssd", "torchscript"),
                                              ("shapes-mask_rcnn", "onnx")])
def test_detect_with_an_export_finds_what_the_checkpoint_finds(
        monkeypatch, capsys, tmp_path, odd, exports, checkpoint_detections, weights: str,
        fmt: str) -> None:
    path = exports(weights, fmt)
    if weights not in checkpoint_detections:
        checkpoint_detections[weights] = _detections(monkeypatch, capsys, weights, odd,
                                                     tmp_path / "ref")
    ref = checkpoint_detections[weights]
    got = _detections(monkeypatch, capsys, path, odd, tmp_path / "got")
    assert _assert_same_detections(ref, got) >= 3
    assert {d["file_name"] for d in ref} >= {"crop_161x200.png", "scaled_121x173.png",
                                             "plain.jpg"}


def test_a_fixed_size_rcnn_graph_maps_boxes_back(monkeypatch, capsys, tmp_path, shapes,
                                                 exports) -> None:
    """A graph exported for 256 x 256 only gets square pictures of another size resized to
    it; its boxes come back in the picture's pixels (same as the checkpoint on a square)."""
    path = exports("shapes-faster_rcnn", "onnx", dynamic=False)
    ref = _detections(monkeypatch, capsys, "shapes-faster_rcnn", shapes / "images" / "val",
                      tmp_path / "ref")
    got = _detections(monkeypatch, capsys, path, shapes / "images" / "val", tmp_path / "got")
    assert _assert_same_detections(ref, got) >= 3


def _segment_masks(monkeypatch, capsys, weights: str | Path, source: Path,
                   out: Path) -> dict[str, np.ndarray]:
    code, text = detseg_text(monkeypatch, capsys, "segment", source, "--weights", weights,
                             "--out", out, "--save-masks", "--no-save-images", "--quiet",
                             "--device", "cpu")
    assert code == 0, text
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            for p in sorted((out / "masks").glob("*.png"))}


@pytest.mark.parametrize(("fmt", "dynamic"), [("onnx", False), ("torchscript", True)])
def test_segment_with_an_export_labels_pixels_as_the_checkpoint(
        monkeypatch, capsys, tmp_path, odd, exports, fmt: str, dynamic: bool) -> None:
    path = exports("shapes-unet", fmt, dynamic,
                   name=f"unet-{fmt}.pt" if fmt == "torchscript" else None)  # found by content
    ref = _segment_masks(monkeypatch, capsys, "shapes-unet", odd, tmp_path / "ref")
    got = _segment_masks(monkeypatch, capsys, path, odd, tmp_path / "got")
    assert list(ref) == list(got) and len(ref) == 4
    for name in ref:
        assert ref[name].shape == got[name].shape
        assert (ref[name] == got[name]).mean() >= MIN_PIXELS, name
        assert len(np.unique(ref[name])) > 1  # the picture has labeled shapes


def _metrics(monkeypatch, capsys, weights: str | Path, root: Path, out: Path) -> dict:
    code, stdout, _ = detseg(monkeypatch, capsys, "eval", "--dataset", "shapes", "--data-root",
                             root, "--weights", weights, "--out", out, "--no-plots", "--json",
                             "--device", "cpu", "--quiet")
    assert code == 0
    return json.loads(stdout)


@pytest.mark.parametrize(("weights", "key"), [("shapes-ssd", "bbox.AP"),
                                             ("shapes-unet", "mIoU")])
def test_eval_of_an_export_scores_as_the_checkpoint(monkeypatch, capsys, tmp_path, shapes,
                                                    exports, weights: str, key: str) -> None:
    path = exports(weights, "onnx", weights != "shapes-unet")
    ref = _numbers(_metrics(monkeypatch, capsys, weights, shapes, tmp_path / "ref"))
    got = _numbers(_metrics(monkeypatch, capsys, path, shapes, tmp_path / "got"))
    assert key in ref and ref[key] > 0.3
    assert list(ref) == list(got)
    for name, value in ref.items():
        assert got[name] == pytest.approx(value, abs=0.005), name


def _numbers(node: object, prefix: str = "") -> dict[str, float]:
    """Every number in a metrics JSON tree, keyed by its dotted path."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items()
                for k, v in _numbers(child, f"{prefix}{key}.").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node)
                for k, v in _numbers(child, f"{prefix}{i}.").items()}
    return {prefix[:-1]: float(node)} if isinstance(node, (int, float)) else {}


def test_benchmark_compares_runtimes_in_one_table(monkeypatch, capsys) -> None:
    code, stdout, _ = detseg(monkeypatch, capsys, "benchmark", "--model", "unet", "--backbone",
                             "tiny", "--imgsz", "64", "--iters", "2", "--warmup", "1",
                             "--device", "cpu", "--threads", "1", "--runtime",
                             "torch,onnxruntime,torchscript", "--json")
    assert code == 0
    rows = json.loads(stdout)
    assert [row["runtime"] for row in rows] == ["torch", "onnxruntime", "torchscript"]
    assert len({row["params"] for row in rows}) == 1 and rows[0]["params"] > 100_000
    assert all(row["latency_ms_p50"] > 0 and row["gflops"] > 0 for row in rows)
    code, text = detseg_text(monkeypatch, capsys, "benchmark", "--model", "unet", "--backbone",
                             "tiny", "--imgsz", "64", "--iters", "1", "--runtime", "tensorrt")
    assert code == 2 and "tensorrt" in text


def test_threads_reach_onnxruntime(exports) -> None:
    path = exports("shapes-unet", "onnx", False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        session = GraphSession(path)
        assert session.threads == 1
        assert session._session.get_session_options().intra_op_num_threads == 1
        assert session._session.get_session_options().inter_op_num_threads == 1
    finally:
        torch.set_num_threads(before)
    assert load_exported(path, threads=2).session.threads == 2


def test_settings_the_graph_holds_are_refused_by_name(monkeypatch, capsys, tmp_path, shapes,
                                                      exports) -> None:
    path = exports("shapes-ssd", "onnx")
    image = sorted((shapes / "images" / "val").glob("*.jpg"))[0]
    for flag, value in (("--iou", "0.7"), ("--imgsz", "288"), ("--conf", "0.001"),
                        ("--max-det", "500")):
        code, text = detseg_text(monkeypatch, capsys, "detect", image, "--weights", path,
                                 flag, value, "--out", tmp_path / flag.strip("-"))
        assert code == 2, (flag, text)
        assert text.count("\n") == 1 and flag in text and path.name in text, text
    for args in (("detect", image, "--weights", path, "--half", "--out", tmp_path / "half"),
                 ("train", "--dataset", "shapes", "--data-root", shapes, "--weights", path),
                 ("export", "--weights", path),
                 ("summary", "--weights", path),
                 ("explain", image, "--weights", path, "--method", "gradcam"),
                 ("benchmark", "--weights", path, "--runtime", "torch")):
        code, text = detseg_text(monkeypatch, capsys, *args)
        assert code == 2, (args, text)
        assert text.count("\n") == 1, text
        assert path.name in text or "--method gradcam" in text, text


def test_occlusion_explains_an_export(monkeypatch, capsys, tmp_path, shapes, exports) -> None:
    path = exports("shapes-ssd", "onnx")
    image = sorted((shapes / "images" / "val").glob("*.jpg"))[0]
    code, text = detseg_text(monkeypatch, capsys, "explain", image, "--weights", path,
                             "--method", "occlusion", "--patch", "64", "--stride", "64",
                             "--out", tmp_path / "x")
    assert code == 0, text
    assert len(list((tmp_path / "x").glob("occlusion_*.png"))) == 1


def _plain_onnx(path: Path, description: dict | None = None) -> Path:
    """An ONNX file detseg did not write: a bare convolution, without metadata or with
    ``description`` as its detseg metadata."""
    torch.onnx.export(torch.nn.Conv2d(3, 2, 3), (torch.rand(1, 3, 16, 16),), str(path),
                      dynamo=False, input_names=["images"])
    if description is not None:
        import onnx

        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "detseg", json.dumps(description)
        onnx.save(proto, str(path))
    return path


def test_hostile_exported_files_get_one_line_and_exit_2(monkeypatch, capsys, tmp_path, shapes,
                                                        exports) -> None:
    good = exports("shapes-ssd", "onnx").read_bytes()
    script = exports("shapes-ssd", "torchscript").read_bytes()
    files = {
        "truncated.onnx": good[: len(good) // 2],
        "noise.onnx": bytes(range(256)) * 40,
        "empty.onnx": b"",
        "truncated.torchscript": script[: len(script) // 3],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    _plain_onnx(tmp_path / "nospec.onnx", {"spec": None, "outputs": ["logits"], "imgsz": 64})
    _plain_onnx(tmp_path / "plain.onnx")
    image = sorted((shapes / "images" / "val").glob("*.jpg"))[0]
    for name in [*files, "nospec.onnx", "plain.onnx"]:
        code, text = detseg_text(monkeypatch, capsys, "detect", image, "--weights",
                                 tmp_path / name, "--out", tmp_path / f"out-{name}")
        assert code == 2, (name, text)
        assert text.count("\n") == 1 and name in text, text
    assert "no detseg metadata" in text
    assert not list(tmp_path.glob("out-*"))  # nothing half-made


def test_onnxruntime_missing_is_one_line(monkeypatch, capsys, tmp_path, shapes,
                                         exports) -> None:
    path = exports("shapes-ssd", "onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    image = sorted((shapes / "images" / "val").glob("*.jpg"))[0]
    code, text = detseg_text(monkeypatch, capsys, "detect", image, "--weights", path,
                             "--out", tmp_path / "out")
    assert code == 2 and text.count("\n") == 1
    assert "onnxruntime" in text and path.name in text


def test_exported_files_are_told_apart_by_content(tmp_path, exports) -> None:
    script = exports("shapes-ssd", "torchscript")
    renamed = tmp_path / "model.pt"
    renamed.write_bytes(script.read_bytes())
    assert exported_format(renamed) == "torchscript"
    onnx_renamed = tmp_path / "model.bin"
    onnx_renamed.write_bytes(exports("shapes-ssd", "onnx").read_bytes())
    assert exported_format(onnx_renamed) == "onnx"
    checkpoint = Path(__file__).resolve().parents[1] / "weights" / "shapes-ssd.pt"
    assert exported_format(checkpoint) is None
    model = load_exported(renamed)
    assert model.spec.family == "ssd" and model.runtime == "torchscript"
