"""YOLO-style recipe options of ``detseg train``: an EMA of the weights (what validation scores
and ``best.pt`` holds, resumed exactly) and mosaic samples switched off for the last epochs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_runner import detseg
from torch import nn

from detseg.engine.ema import ModelEMA
from detseg.engine.trainer import TrainCallback, TrainConfig, Trainer
from detseg.errors import UsageError
from detseg.weights import load_checkpoint

SIZE = 64


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detseg.data.shapes import generate_shapes

    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, train=4, val=2, size=SIZE, seed=5, workers=1)
    return root


def _config(root: Path, **kw) -> TrainConfig:
    base = dict(model="yolo", backbone="tiny", dataset="shapes", data_root=str(root), epochs=2,
                batch_size=2, imgsz=SIZE, augment="none", lr=0.01, warmup_epochs=0.0,
                eval_max_images=2, plots=False, ema=True, ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


def test_ema_ramps_up_and_averages_every_float_entry() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.5, tau=1.0)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    first = ema.current_decay()
    assert first == pytest.approx(0.5 * (1 - torch.exp(torch.tensor(-1.0)).item()))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    expected = first * start["0.weight"] + (1 - first) * model[0].weight
    assert torch.allclose(ema.module[0].weight, expected)
    assert int(ema.module[1].num_batches_tracked) == 7
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, decay=1.0)


class _StopAfterFirstStep(TrainCallback):
    def __init__(self) -> None:
        self.trainer: Trainer | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_batch_end(self, epoch, batch, num_batches, losses, lr) -> None:
        if (epoch, batch) == (0, 0) and self.trainer is not None:
            self.trainer.request_stop()


def test_best_holds_the_ema_weights_and_resume_is_exact(shapes_root: Path,
                                                         tmp_path: Path) -> None:
    full = Trainer(_config(shapes_root, epochs=1), tmp_path / "full", handle_sigint=False)
    result = full.fit()
    assert result.status == "completed" and full.ema is not None and result.best_path
    best = load_checkpoint(result.best_path)  # the one epoch's: the final EMA weights exactly
    assert all(torch.equal(best.state_dict[k], v.cpu())
               for k, v in full.ema.module.state_dict().items())
    trained = full.model.state_dict()
    assert any(not torch.equal(best.state_dict[k], trained[k].cpu()) for k in trained
               if trained[k].dtype.is_floating_point)
    stopper = _StopAfterFirstStep()
    cut = Trainer(_config(shapes_root, epochs=1), tmp_path / "cut", callbacks=[stopper],
                  handle_sigint=False)
    assert cut.fit().status == "interrupted"
    resumed = Trainer.resume(tmp_path / "cut" / "last.pt", handle_sigint=False)
    assert resumed.fit().status == "completed"
    assert resumed.ema is not None
    for key, value in full.ema.module.state_dict().items():
        assert torch.equal(value, resumed.ema.module.state_dict()[key]), key


def test_the_last_epochs_ema_weights_can_be_shipped(shapes_root: Path, tmp_path: Path) -> None:
    """``ship_weights(last.pt, ..., ema=True)`` writes the averaged weights (the final epoch's,
    whichever epoch ``best.pt`` is); a checkpoint without them is refused by name."""
    from detseg.engine.checkpointing import export_weights, ship_weights
    from detseg.errors import WeightsError

    run = Trainer(_config(shapes_root, epochs=1), tmp_path / "run", handle_sigint=False)
    assert run.fit().status == "completed" and run.ema is not None
    last = tmp_path / "run" / "last.pt"
    exact = load_checkpoint(export_weights(last, tmp_path / "ema.pt", half=False, ema=True))
    averaged = run.ema.module.state_dict()
    assert all(torch.equal(exact.state_dict[k], v.cpu()) for k, v in averaged.items())
    raw = load_checkpoint(export_weights(last, tmp_path / "raw.pt", half=False))
    assert any(not torch.equal(raw.state_dict[k], v.cpu()) for k, v in averaged.items()
               if v.dtype.is_floating_point)
    entry = ship_weights(last, "shapes-test", weights_dir=tmp_path / "shipped", ema=True)
    shipped = load_checkpoint(tmp_path / "shipped" / entry["file"])
    assert all(torch.allclose(shipped.state_dict[k], v.cpu(), atol=1e-3, rtol=1e-3)
               for k, v in averaged.items() if v.dtype.is_floating_point)
    with pytest.raises(WeightsError, match="ema.pt: no EMA weights"):
        export_weights(tmp_path / "ema.pt", tmp_path / "again.pt", ema=True)


def test_mosaic_is_on_until_the_last_epochs(shapes_root: Path, tmp_path: Path) -> None:
    seen: list[bool] = []

    class _Watch(TrainCallback):
        def on_fit_start(self, trainer: Trainer) -> None:
            self.trainer = trainer

        def on_epoch_start(self, epoch, num_batches, start_batch) -> None:
            seen.append(self.trainer.train_set.enabled)

    trainer = Trainer(_config(shapes_root, epochs=3, mosaic=1.0, close_mosaic=1, ema=False,
                              eval_interval=0), tmp_path, callbacks=[_Watch()],
                      handle_sigint=False)
    assert trainer.fit().status == "completed"
    assert seen == [True, True, False]
    with pytest.raises(UsageError, match="mosaic"):
        _config(shapes_root, mosaic=2.0)


def test_cli_flags_reach_the_run(shapes_root: Path, tmp_path: Path, monkeypatch,
                                 capsys) -> None:
    out = tmp_path / "run"
    code, _, err = detseg(monkeypatch, capsys, *[
            "train", "--model", "yolo", "--backbone", "tiny", "--dataset", "shapes",
            "--data-root", str(shapes_root), "--epochs", "1", "--batch-size", "2", "--imgsz",
            str(SIZE), "--ema", "--mosaic", "0.5", "--close-mosaic", "0",
            "--eval-max-images", "2", "--out", str(out)])
    assert code == 0, err
    args = load_checkpoint(out / "last.pt").extra["train_args"]
    assert (args["ema"], args["mosaic"], args["close_mosaic"]) == (True, 0.5, 0)
    code, _, err = detseg(monkeypatch, capsys, *[
        "train", "--model", "unet", "--backbone", "tiny", "--dataset", "shapes", "--data-root",
        str(shapes_root), "--epochs", "1", "--mosaic", "1", "--out", str(tmp_path / "semantic")])
    assert code == 2 and "mosaic augments detection and instance data" in err
