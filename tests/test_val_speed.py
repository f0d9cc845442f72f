"""Evaluation and validation speed work, kept honest: training validation with and without
``--val-loss`` (same metrics and weights, loss columns only with it, resume either way),
validation batched by batch key without changing the metrics, and the light import path of
``detseg eval --predictions`` (no torch, no matplotlib with ``--no-plots``) with orjson parsing
that still reads what the standard library reads."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detseg.engine.distributed import dist_info_from_env
from detseg.engine.train_config import TrainConfig
from detseg.engine.validation import Validation
from detseg.eval.coco_map import COCOEvaluator
from detseg.weights import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from cli_runner import detseg  # noqa: E402
from conformance import write_yolo  # noqa: E402

SIZE = 64


@pytest.fixture
def one_thread():
    """One torch thread (tiny models; a second one mostly waits on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detseg.data.shapes import generate_shapes

    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, train=4, val=3, size=SIZE, seed=3, workers=1)
    return root


def _train(monkeypatch, capsys, root: Path, out: Path, *extra: str) -> list[dict[str, str]]:
    code, stdout, stderr = detseg(
        monkeypatch, capsys, "train", "--model", "ssd", "--backbone", "tiny", "--dataset",
        "shapes", "--data-root", root, "--epochs", "1", "--batch-size", "2", "--imgsz",
        SIZE, "--augment", "none", "--device", "cpu", "--threads", "1", "--out", out, *extra)
    assert code == 0, stdout + stderr
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_val_loss_is_optional_and_changes_nothing_else(monkeypatch, capsys, shapes_root,
                                                       tmp_path, one_thread) -> None:
    off = _train(monkeypatch, capsys, shapes_root, tmp_path / "off")
    on = _train(monkeypatch, capsys, shapes_root, tmp_path / "on", "--val-loss")
    assert not any(k.startswith("val/") for k in off[0]), off[0]
    assert float(on[0]["val/loss"]) > 0 and "val/classification" in on[0], on[0]
    metrics = [k for k in off[0] if k.startswith("metrics/")]
    assert "metrics/bbox_AP50" in metrics
    assert [off[0][k] for k in metrics] == [on[0][k] for k in metrics]
    a = load_checkpoint(tmp_path / "off" / "last.pt")
    b = load_checkpoint(tmp_path / "on" / "last.pt")
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.extra["train_args"]["val_loss"] is False
    assert b.extra["train_args"]["val_loss"] is True

    # Resume the run without losses with them: the columns appear from that epoch on.
    code, stdout, stderr = detseg(monkeypatch, capsys, "train", "--resume",
                                  tmp_path / "off" / "last.pt", "--epochs", "2", "--val-loss")
    assert code == 0, stdout + stderr
    with open(tmp_path / "off" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["val/loss"] == "" for r in rows] == [True, False], rows
    assert all(r["metrics/bbox_AP50"] != "" for r in rows)
    assert (tmp_path / "off" / "results.png").is_file()
    assert load_checkpoint(tmp_path / "off" / "last.pt").extra["train_args"]["val_loss"] is True


def test_runs_saved_before_the_flag_resume_without_losses(shapes_root) -> None:
    args = TrainConfig(model="ssd", dataset="shapes", data_root=str(shapes_root)).to_dict()
    del args["val_loss"]
    state = {"optimizer": {}, "train_args": args, "epoch": 1}
    config = TrainConfig.for_resume(state, "last.pt", None, {})
    assert config.val_loss is False
    assert TrainConfig.for_resume(state, "last.pt", None, {"val_loss": True}).val_loss is True


def test_without_metrics_the_losses_still_pick_best(shapes_root, tmp_path, one_thread
                                                  ) -> None:
    from detseg.engine.trainer import Trainer

    config = TrainConfig(model="ssd", backbone="tiny", dataset="shapes",
                         data_root=str(shapes_root), epochs=1, batch_size=2, imgsz=SIZE,
                         augment="none", eval_interval=0, plots=False, device="cpu",
                         threads=1)
    result = Trainer(config, tmp_path / "run", handle_sigint=False).fit()
    assert "val/loss" in result.history[0] and result.fitness_key == "-val/loss"
    assert result.best_path is not None and result.best_path.is_file()


def test_validation_batching_does_not_change_the_metrics(tmp_path, one_thread) -> None:
    """Hand-made images of five odd sizes: batches group equal batch keys only."""
    from detseg.data import build_dataset
    from detseg.models import build_model
    from detseg.tasks import task_adapter

    root = write_yolo(tmp_path / "yolo")
    data = build_dataset("yolo", root, split="train", task="detect")
    torch.manual_seed(0)
    model = build_model("faster_rcnn", backbone="tiny", class_names=["__background__", "box",
                                                                     "disc"], input_size=96)
    for p in model.parameters():  # away from the initialisation's symmetric outputs
        p.data.add_(torch.randn_like(p) * 0.01)
    model.eval()
    adapter = task_adapter(model)
    rows = [Validation(adapter, data, None, b, torch.device("cpu"), dist_info_from_env(),
                       losses=False).metric_row(model) for b in (1, 5)]
    assert rows[0] == rows[1], rows
    assert "metrics/bbox_AP50" in rows[0]


def _tiny_coco(tmp_path: Path) -> tuple[Path, Path]:
    gt = {"images": [{"id": 1, "height": 33, "width": 47}, {"id": 2, "height": 50, "width": 21}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 5, "bbox": [3, 4, 10, 9], "area": 90,
               "iscrowd": 0},
              {"id": 2, "image_id": 2, "category_id": 5, "bbox": [1, 2, 15, 30], "area": 450,
               "iscrowd": 0}],
          "categories": [{"id": 5, "name": "thing"}]}
    res = [{"image_id": 1, "category_id": 5, "bbox": [3, 4, 10, 9], "score": 0.9},
           {"image_id": 2, "category_id": 5, "bbox": [2, 2, 14, 30], "score": 0.8},
           {"image_id": 2, "category_id": 5, "bbox": [5, 30, 9, 9], "score": 0.3}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    return tmp_path / "gt.json", tmp_path / "res.json"


def _imported(tmp_path: Path, *flags: str) -> set[str]:
    """Top-level packages a real ``detseg eval --predictions`` process imports."""
    gt, res = _tiny_coco(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "detseg", "eval", "--ann", str(gt),
         "--predictions", str(res), "--out", str(tmp_path / f"out{len(flags)}"), "-q", *flags],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "detseg" in names and "numpy" in names
    return names


def test_eval_predictions_imports_neither_torch_nor_matplotlib(tmp_path) -> None:
    names = _imported(tmp_path, "--no-plots")
    assert not names & {"torch", "torchvision", "matplotlib", "cv2", "PIL"}, sorted(names)
    assert (tmp_path / "out1" / "metrics.json").is_file()
    assert "matplotlib" in _imported(tmp_path)  # the check can fail: plots do import it


@pytest.mark.parametrize("text, problem", [
    ('[{"image_id": 1, "category_id": 5, "bbox": [3, 4, 10, 9], "score": NaN}]',
     r"results\[0\]: score nan is not a finite number; skipped"),
    ('[{"image_id": 1, "category_id": 5, "bbox": [3, 4, Infinity, 9], "score": 1}]',
     r"results\[0\]: bbox \[3, 4, inf, 9\] has a negative or non-finite size; skipped"),
    ('[{"image_id": 123456789012345678901234567890, "category_id": 5, "bbox": [1, 1, 2, 2],'
     ' "score": 1}]',
     r"results\[0\]: image_id 12345678901234567\d+ is out of the 64-bit integer range; "
     "skipped"),
])
def test_what_orjson_refuses_is_read_as_the_standard_library_reads_it(tmp_path, text,
                                                                      problem) -> None:
    gt, _ = _tiny_coco(tmp_path)
    res = tmp_path / "odd.json"
    good = '{"image_id": 2, "category_id": 5, "bbox": [2, 2, 14, 30], "score": 0.8}'
    res.write_text(text[:-1] + ", " + good + "]")
    metrics = COCOEvaluator(gt).evaluate(res)
    assert len(metrics.warnings) == 1
    assert re.fullmatch(re.escape(f"{res}: ") + problem, metrics.warnings[0]), metrics.warnings
    assert metrics.stats["AP50"] == pytest.approx(51 / 101)


def test_utf16_bom_and_malformed_files(tmp_path, monkeypatch, capsys) -> None:
    gt, res = _tiny_coco(tmp_path)
    wide = tmp_path / "wide.json"
    wide.write_bytes(res.read_text().encode("utf-16"))
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + res.read_bytes())
    plain = COCOEvaluator(gt).evaluate(res).stats
    assert COCOEvaluator(gt).evaluate(wide).stats == plain
    assert COCOEvaluator(gt).evaluate(bom).stats == plain
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1,\n "score": }]')
    code, out, err = detseg(monkeypatch, capsys, "eval", "--ann", gt, "--predictions", broken,
                            "--no-plots", "--out", tmp_path / "o")
    assert code == 1
    assert f"{broken}: malformed JSON in results file: Expecting value: line 2 column 11" in err


def test_ids_beyond_64_bits_in_the_ground_truth_are_skipped_by_name(tmp_path, monkeypatch,
                                                                    capsys) -> None:
    gt_path, res = _tiny_coco(tmp_path)
    gt = json.loads(gt_path.read_text())
    gt["images"].append({"id": 2 ** 70, "height": 9, "width": 9})
    gt["annotations"].append({"id": 3, "image_id": 2 ** 70, "category_id": 5,
                              "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0})
    gt["categories"].append({"id": -2 ** 64, "name": "huge"})
    gt_path.write_text(json.dumps(gt))
    code, out, err = detseg(monkeypatch, capsys, "eval", "--ann", gt_path, "--predictions", res,
                            "--no-plots", "--json", "--out", tmp_path / "o")
    assert code == 1, err
    assert re.search(r"images\[2\]: id \d+ is out of the 64-bit integer range; skipped", err)
    assert re.search(r"categories\[1\]: id -\d+ is out of the 64-bit integer range; skipped",
                     err)
    assert "annotations[2]: image_id" in err
    assert json.loads(out)["bbox"]["AP50"] == pytest.approx(1.0)
