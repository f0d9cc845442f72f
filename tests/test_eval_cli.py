"""``detseg eval`` end to end: results files, models on the shapes set, COCO download."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.eval.coco_map import COCOEvaluator

ROOT = Path(__file__).resolve().parents[1]


def _tiny_coco() -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(0)
    images, anns, results = [], [], []
    for img_id in range(1, 5):
        images.append({"id": img_id, "height": 60, "width": 80})
        for j in range(3):
            x, y = rng.uniform(0, 50, 2)
            box = [float(x), float(y), 20.0, 15.0]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": 1 + j % 2,
                         "bbox": box, "area": 300.0, "iscrowd": 0,
                         "segmentation": [[x, y, x + 20, y, x + 20, y + 15, x, y + 15]]})
            results.append({"image_id": img_id, "category_id": 1 + j % 2,
                            "bbox": [box[0] + 1, box[1], 20.0, 15.0],
                            "score": float(rng.random())})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]}
    return gt, results


@pytest.fixture()
def coco_files(tmp_path: Path) -> tuple[Path, Path, dict, list[dict]]:
    gt, results = _tiny_coco()
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path, gt, results


def _run_module(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "detseg", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def test_predictions_path_imports_no_torch_and_writes_outputs(coco_files, tmp_path):
    gt_path, res_path, gt, results = coco_files
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from detseg.cli.main import app\n"
        f"args = ['eval', '--ann', {str(gt_path)!r}, '--predictions', {str(res_path)!r},\n"
        f"        '--out', {str(out)!r}, '--no-plots']\n"
        "try:\n    app(args)\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH False" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    expected = COCOEvaluator(gt).evaluate(results)
    assert metrics["bbox"] == expected.stats
    assert set(metrics) == {"bbox", "per_class"}
    assert metrics["per_class"]["circle"]["bbox"] == expected.per_class["circle"]
    assert (out / "per_class.csv").read_text().splitlines()[0] == "class,bbox_AP"


def test_pycocotools_backend_segm_and_plots(coco_files, tmp_path):
    gt_path, res_path, gt, results = coco_files
    runner = CliRunner()
    outs = {}
    for backend in ("detseg", "pycocotools"):
        out = tmp_path / backend
        res = runner.invoke(app, ["eval", "--ann", str(gt_path), "--predictions", str(res_path),
                                  "--backend", backend, "--iou-type", "segm", "--out", str(out)])
        assert res.exit_code == 0, res.output
        outs[backend] = json.loads((out / "metrics.json").read_text())
        assert (out / "segm_pr_curve_iou50.png").stat().st_size > 1000
        assert (out / "segm_pr_curve_iou50-95.png").is_file()
    assert outs["detseg"]["segm"] == pytest.approx(outs["pycocotools"]["segm"], abs=1e-12)
    assert "AP50" in res.output


def test_bad_results_exit_1_with_the_entry_and_usage_errors_exit_2(coco_files, tmp_path):
    gt_path, _, _, results = coco_files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(results[:2] + [{**results[2], "image_id": 99}]))
    proc = _run_module(["eval", "--ann", str(gt_path), "--predictions", str(bad),
                        "--out", str(tmp_path / "o1")], tmp_path)
    assert proc.returncode == 1
    assert "results[2]: image_id 99 is not an image of the ground truth" in proc.stderr
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--predictions", str(bad)])
    assert res.exit_code == 2 and "--predictions needs --ann" in res.output
    res = runner.invoke(app, ["eval", "--ann", str(gt_path), "--predictions", str(bad),
                              "--model", "unet"])
    assert res.exit_code == 2


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detseg.data.shapes import generate_shapes

    return generate_shapes(tmp_path_factory.mktemp("shapes"), train=0, val=3, size=64,
                           workers=1)


def _checkpoint(tmp_path: Path, family: str, shapes_root: Path, task: str) -> Path:
    import torch

    from detseg.data import build_dataset
    from detseg.models import build_model
    from detseg.weights import save_checkpoint

    ds = build_dataset("shapes", shapes_root, split="val", task=task)
    torch.manual_seed(0)
    model = build_model(family, backbone="tiny", num_classes=len(ds.class_names),
                        input_size=64, class_names=list(ds.class_names),
                        category_ids=list(ds.category_ids))
    return save_checkpoint(tmp_path / f"{family}.pt", model.state_dict(), model.spec)


@pytest.mark.parametrize("family, task", [("mask_rcnn", "instance"), ("unet", "semantic")])
def test_model_on_shapes_writes_metrics(family, task, shapes_root, tmp_path):
    ckpt = _checkpoint(tmp_path, family, shapes_root, task)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["eval", "--dataset", "shapes", "--data-root",
                                   str(shapes_root), "--weights", str(ckpt), "--max-images", "2",
                                   "-b", "2", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    if task == "semantic":
        assert set(metrics) == {"pixel_acc", "mean_acc", "mIoU", "fwIoU", "mDice", "per_class"}
        assert 0 <= metrics["mIoU"] <= 1
        assert (out / "confusion_matrix.png").is_file()
        assert (out / "per_class.csv").read_text().startswith("class,IoU,acc,Dice,pixels")
    else:
        assert set(metrics) == {"bbox", "segm", "per_class"}
        assert set(metrics["bbox"]) >= {"AP", "AP50", "ARl"}
        predictions = json.loads((out / "predictions.json").read_text())
        assert all("segmentation" in p for p in predictions)
        # Re-scoring the written predictions gives the same numbers.
        from detseg.data import build_dataset

        gt = build_dataset("shapes", shapes_root, split="val", task=task).to_coco()
        kept = {p["image_id"] for p in predictions} | {gt["images"][0]["id"],
                                                       gt["images"][1]["id"]}
        gt = {**gt, "images": [im for im in gt["images"] if im["id"] in kept],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in kept]}
        assert COCOEvaluator(gt, "bbox").evaluate(predictions).stats == metrics["bbox"]


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` support (206), recording the ranges asked for."""

    ranges: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):
        asked = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not asked or not path.is_file():
            return super().send_head()
        type(self).ranges.append(asked)
        start = int(asked.split("=")[1].rstrip("-"))
        data = path.read_bytes()
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        return io.BytesIO(data[start:])


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_coco_download_from_a_local_server(tmp_path, monkeypatch):
    from PIL import Image

    served = tmp_path / "server"
    (served / "zips").mkdir(parents=True)
    (served / "annotations").mkdir()
    jpg = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(jpg, format="JPEG")
    (served / "zips" / "val2017.zip").write_bytes(
        _zip_bytes({"val2017/000000000001.jpg": jpg.getvalue()}))
    gt = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 6, "width": 8}],
          "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    (served / "annotations" / "annotations_trainval2017.zip").write_bytes(
        _zip_bytes({"annotations/instances_val2017.json": json.dumps(gt).encode()}))
    handler = functools.partial(_RangeHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("DETSEG_COCO_URL_BASE", f"http://127.0.0.1:{server.server_port}")
        root = tmp_path / "coco"
        # An interrupted earlier transfer: the next run resumes it with a Range request.
        root.mkdir()
        images_zip = (served / "zips" / "val2017.zip").read_bytes()
        (root / "val2017.zip.part").write_bytes(images_zip[: len(images_zip) // 2])
        res = CliRunner().invoke(app, ["eval", "--dataset", "coco", "--data-root", str(root),
                                       "--download"])
        assert _RangeHandler.ranges == [f"bytes={len(images_zip) // 2}-"]
        assert res.exit_code == 0, res.output
        assert (root / "val2017" / "000000000001.jpg").is_file()
        assert json.loads((root / "annotations" / "instances_val2017.json").read_text()) == gt
        assert not list(root.glob("*.zip")) and not list(root.glob(".extract-*"))
        res = CliRunner().invoke(app, ["eval", "--dataset", "coco", "--data-root", str(root),
                                       "--download"])
        assert "already present" in res.output
        # A corrupt archive is refused and removed.
        (served / "zips" / "val2017.zip").write_bytes(b"not a zip at all")
        other = tmp_path / "coco2"
        res = CliRunner().invoke(app, ["eval", "--dataset", "coco", "--data-root", str(other),
                                       "--download"])
        assert res.exit_code != 0
        assert "not a valid zip archive" in str(res.exception)
        assert not (other / "val2017.zip").exists()
    finally:
        server.shutdown()
