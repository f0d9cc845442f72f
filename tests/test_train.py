"""Training: schedules and parameter groups, a short run per family, exact resume, bad data.

Every run uses the ``tiny`` backbone on a handful of 64x64 shapes images, so the whole file
stays within a few tens of seconds on two cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from detseg.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from detseg.engine.trainer import TrainCallback, TrainConfig, Trainer
from detseg.errors import DatasetError, NonFiniteLossError, UsageError

SIZE = 64


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detseg.data.shapes import generate_shapes

    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, train=4, val=2, size=SIZE, seed=3, workers=1)
    return root



def _config(root: Path, model: str, **kw) -> TrainConfig:
    base = dict(model=model, backbone="tiny", dataset="shapes", data_root=str(root), epochs=2,
                batch_size=2, imgsz=SIZE, augment="none", lr=0.01, warmup_epochs=0.0,
                eval_max_images=2, eval_interval=0, plots=False)
    base.update(kw)
    return TrainConfig(**base)


def _state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_param_groups_skip_decay_on_norms_and_biases() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    groups = {g["name"]: g for g in param_groups(model, 0.05, backbone_prefix="0",
                                                 backbone_lr_scale=0.1)}
    assert {id(p) for p in groups["backbone_decay"]["params"]} == {id(model[0].weight)}
    assert {id(p) for p in groups["backbone_no_decay"]["params"]} == {id(model[0].bias)}
    no_decay = {id(p) for p in groups["head_no_decay"]["params"]}
    assert no_decay == {id(model[1].weight), id(model[1].bias), id(model[2].bias)}
    assert groups["head_no_decay"]["weight_decay"] == 0.0
    assert groups["head_decay"]["weight_decay"] == 0.05
    opt = build_optimizer("sgd", list(groups.values()), lr=0.1)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["backbone_decay"] == pytest.approx(0.01) and lrs["head_decay"] == pytest.approx(0.1)


def test_warmup_then_cosine_schedule() -> None:
    f = lr_factor("cosine", total_iters=100, warmup_iters=10, warmup_ratio=0.0, min_lr_ratio=0.0)
    assert f(0) == 0.0 and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0, abs=1e-9)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))
    step = lr_factor("step", 100, 0, milestones=(0.5,), gamma=0.1)
    assert step(49) == 1.0 and step(50) == pytest.approx(0.1)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, "cosine", 10, 2, warmup_ratio=0.0, min_lr_ratio=0.0)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:3] == pytest.approx([0.0, 0.5, 1.0])


@pytest.mark.parametrize("family", ["faster_rcnn", "mask_rcnn", "ssd", "ssdlite", "unet",
                                    "segnet"])
def test_training_lowers_the_loss(family: str, shapes_root: Path, tmp_path: Path) -> None:
    lr = 0.05 if family in ("unet", "segnet") else 0.01
    epochs = 2 if family in ("unet", "segnet") else 3  # detector losses are noisier
    trainer = Trainer(_config(shapes_root, family, epochs=epochs, lr=lr), tmp_path,
                      handle_sigint=False)
    result = trainer.fit()
    losses = [row["train/loss"] for row in result.history]
    assert result.status == "completed" and len(losses) == epochs
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file()
    assert (tmp_path / "results.csv").read_text().count("\n") == epochs + 1


class _StopAt(TrainCallback):
    def __init__(self, trainer_ref: list, epoch: int, batch: int) -> None:
        self.ref, self.epoch, self.batch = trainer_ref, epoch, batch

    def on_batch_end(self, epoch, batch, num_batches, losses, lr) -> None:
        if (epoch, batch) == (self.epoch, self.batch):
            self.ref[0].request_stop()


def test_interrupted_then_resumed_run_matches_uninterrupted(shapes_root: Path,
                                                            tmp_path: Path) -> None:
    cfg = dict(epochs=2, augment="light", lr=0.05, warmup_epochs=0.5)
    full = Trainer(_config(shapes_root, "unet", **cfg), tmp_path / "full", handle_sigint=False)
    full.fit()
    ref: list = []
    cut = Trainer(_config(shapes_root, "unet", **cfg), tmp_path / "cut",
                  callbacks=[_StopAt(ref, 0, 0)], handle_sigint=False)
    ref.append(cut)
    assert cut.fit().status == "interrupted"
    resumed = Trainer.resume(tmp_path / "cut" / "last.pt", handle_sigint=False)
    assert (resumed.start_epoch, resumed.start_batch) == (0, 1)
    assert resumed.fit().status == "completed"
    assert _state_equal(full.model.state_dict(), resumed.model.state_dict())
    extended = Trainer.resume(tmp_path / "cut" / "last.pt", epochs=3, handle_sigint=False)
    result = extended.fit()
    assert result.epochs_done == 3 and [r["epoch"] for r in result.history] == [1, 2, 3]


def test_nan_loss_stops_with_a_clear_message_and_keeps_last_checkpoint(
        shapes_root: Path, tmp_path: Path) -> None:
    trainer = Trainer(_config(shapes_root, "unet", epochs=3), tmp_path, handle_sigint=False)
    forward = trainer._forward_losses
    calls = {"n": 0}

    def poisoned(batch):
        calls["n"] += 1
        losses = forward(batch)
        if calls["n"] > 3:  # after the first epoch (2 batches, 1 validation batch) was saved
            losses["loss_ce"] = losses["loss_ce"] * float("nan")
        return losses

    trainer._forward_losses = poisoned
    with pytest.raises(NonFiniteLossError, match="not finite.*last good checkpoint"):
        trainer.fit()
    from detseg.weights import load_checkpoint

    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept.extra["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept.state_dict.values()
               if v.is_floating_point())


def test_bad_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    from detseg.data.shapes import generate_shapes

    root = generate_shapes(tmp_path / "data", train=4, val=1, size=SIZE, seed=4, workers=1)
    messages: list[str] = []

    class Notes(TrainCallback):
        def on_message(self, text: str) -> None:
            messages.append(text)

    trainer = Trainer(_config(root, "segnet", epochs=1, max_bad_fraction=0.5), tmp_path / "run",
                      callbacks=[Notes()], handle_sigint=False)
    strict = Trainer(_config(root, "segnet", epochs=1, max_bad_fraction=0.0), tmp_path / "run2",
                     handle_sigint=False)
    broken = trainer.train_set.image_paths[1]
    Path(broken).write_bytes(b"not an image")
    result = trainer.fit()
    assert result.bad_samples == 1 and result.status == "completed"
    assert any(str(broken) in m for m in messages)
    with pytest.raises(DatasetError, match="failed to load"):
        strict.fit()


def test_freeze_and_transfer_from_a_checkpoint_with_other_classes(
        shapes_root: Path, tmp_path: Path) -> None:
    from detseg.models import build_model
    from detseg.weights import save_checkpoint

    donor = build_model("unet", backbone="tiny", num_classes=7)
    save_checkpoint(tmp_path / "donor.pt", donor.state_dict(), donor.spec)
    messages: list[str] = []

    class Notes(TrainCallback):
        def on_message(self, text: str) -> None:
            messages.append(text)

    trainer = Trainer(_config(shapes_root, "unet", epochs=1, freeze=2,
                              weights=str(tmp_path / "donor.pt")),
                      tmp_path / "run", callbacks=[Notes()], handle_sigint=False)
    assert any("class-count head tensors" in m and "start fresh" in m for m in messages), messages
    stage0 = trainer.model.get_submodule("backbone.stages.0")
    before = {k: v.clone() for k, v in stage0.state_dict().items()}
    trainer.fit()
    assert _state_equal(before, stage0.state_dict())
    assert trainer.spec.num_classes == len(trainer.train_set.class_names)


def test_weights_of_another_family_start_the_backbone(shapes_root: Path, tmp_path: Path) -> None:
    from detseg.models import build_model
    from detseg.weights import save_checkpoint

    torch.manual_seed(1)
    donor = build_model("unet", backbone="tiny", num_classes=5)
    save_checkpoint(tmp_path / "unet.pt", donor.state_dict(), donor.spec)
    messages: list[str] = []

    class Notes(TrainCallback):
        def on_message(self, text: str) -> None:
            messages.append(text)

    trainer = Trainer(_config(shapes_root, "faster_rcnn", weights=str(tmp_path / "unet.pt")),
                      tmp_path / "run", callbacks=[Notes()], handle_sigint=False)
    body = trainer.model.get_submodule("backbone.body").state_dict()
    assert _state_equal(body, donor.backbone.state_dict())
    assert any("backbone of" in m and "unet" in m for m in messages), messages

    other = build_model("unet", backbone="resnet18", num_classes=5)
    save_checkpoint(tmp_path / "r18.pt", other.state_dict(), other.spec)
    with pytest.raises(UsageError, match="resnet18"):
        Trainer(_config(shapes_root, "faster_rcnn", weights=str(tmp_path / "r18.pt")),
                tmp_path / "run2", handle_sigint=False)


def test_a_checkpoint_of_the_same_family_keeps_its_options(shapes_root: Path,
                                                          tmp_path: Path) -> None:
    """``--model F --weights ckpt-of-F`` fine-tunes the model the checkpoint holds: options it
    was built with (ASPP rates, proposal counts) carry over unless ``--model-option`` says
    otherwise, and those that follow the input size are computed for the new ``--imgsz``."""
    from detseg.models import build_model, make_spec
    from detseg.weights import save_checkpoint

    donor = build_model("deeplabv3plus", backbone="tiny", num_classes=5, input_size=SIZE,
                        aspp_rates=[2, 4, 6])
    save_checkpoint(tmp_path / "deeplab.pt", donor.state_dict(), donor.spec)
    kept = Trainer(_config(shapes_root, "deeplabv3plus", weights=str(tmp_path / "deeplab.pt")),
                   tmp_path / "run", handle_sigint=False)
    assert kept.spec.options["aspp_rates"] == [2, 4, 6]
    told = Trainer(_config(shapes_root, "deeplabv3plus", weights=str(tmp_path / "deeplab.pt"),
                           model_options={"aspp_rates": [1, 2, 3]}),
                   tmp_path / "run2", handle_sigint=False)
    assert told.spec.options["aspp_rates"] == [1, 2, 3]

    rcnn = build_model("faster_rcnn", backbone="tiny", num_classes=5, input_size=SIZE,
                       rpn_post_nms_top_n_test=50)
    save_checkpoint(tmp_path / "rcnn.pt", rcnn.state_dict(), rcnn.spec)
    bigger = Trainer(_config(shapes_root, "faster_rcnn", weights=str(tmp_path / "rcnn.pt"),
                             imgsz=96), tmp_path / "run3", handle_sigint=False)
    fresh = make_spec("faster_rcnn", "tiny", 5, input_size=96).options
    assert bigger.spec.options == {**fresh, "rpn_post_nms_top_n_test": 50}
    assert fresh["min_size"] == 96 and fresh["anchor_sizes"] != rcnn.spec.options["anchor_sizes"]
    # another family's checkpoint passes no options on
    unet = build_model("unet", backbone="tiny", num_classes=5)
    save_checkpoint(tmp_path / "unet.pt", unet.state_dict(), unet.spec)
    plain = Trainer(_config(shapes_root, "deeplabv3plus", weights=str(tmp_path / "unet.pt")),
                    tmp_path / "run4", handle_sigint=False)
    assert plain.spec.options == make_spec("deeplabv3plus", "tiny", 5, input_size=SIZE).options


def test_model_options_apply_to_a_checkpoint_given_alone(shapes_root: Path,
                                                          tmp_path: Path) -> None:
    """``--weights ckpt --model-option K=V`` without ``--model`` rebuilds the checkpoint's
    model with the option set (it used to be dropped without a word), keeping the options
    and the weights the checkpoint has; a file without a detseg spec is refused."""
    from detseg.models import build_model
    from detseg.weights import save_checkpoint

    torch.manual_seed(0)
    donor = build_model("deeplabv3plus", backbone="tiny", num_classes=5, input_size=SIZE,
                        aspp_rates=[2, 4, 6])
    save_checkpoint(tmp_path / "deeplab.pt", donor.state_dict(), donor.spec)
    run = Trainer(_config(shapes_root, None, weights=str(tmp_path / "deeplab.pt"),
                          model_options={"loss_top_k": 0.5}), tmp_path / "run",
                  handle_sigint=False)
    assert run.spec.family == "deeplabv3plus"
    assert run.spec.options["loss_top_k"] == 0.5 and run.spec.options["aspp_rates"] == [2, 4, 6]
    assert _state_equal(run.model.state_dict(), donor.state_dict())
    torch.save(donor.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(UsageError, match="bare.pt: not a detseg checkpoint; name the model"):
        Trainer(_config(shapes_root, None, weights=str(tmp_path / "bare.pt"),
                        model_options={"loss_top_k": 0.5}), tmp_path / "run2",
                handle_sigint=False)


def test_cli_train_writes_checkpoints_csv_and_curves(shapes_root: Path, tmp_path: Path) -> None:
    from detseg.cli.main import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--model", "unet", "--backbone", "tiny", "--dataset", "shapes",
        "--data-root", str(shapes_root), "--epochs", "1", "--batch-size", "3",
        "--imgsz", str(SIZE), "--augment", "none", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    for name in ("last.pt", "best.pt", "results.csv", "results.png"):
        assert (out / name).is_file(), name
    assert "completed after 1 epochs" in result.output
