"""The checkpoints users already have (torchvision references, Lightning, DDP, plain state
dicts, safetensors) load with ``weights_only`` plus harmless globals; code-running files are
refused; loads are strict unless a class count is asked for, and every mismatch is named."""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from detseg.errors import UnsafeCheckpointError, WeightsError
from detseg.models import build_model, load_matching_state_dict
from detseg.weights import read_weights_file, resolve_weights, save_checkpoint

HEAD = ["roi_heads.box_predictor.bbox_pred.bias", "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.box_predictor.cls_score.bias", "roi_heads.box_predictor.cls_score.weight"]


@pytest.fixture(scope="module")
def donor() -> nn.Module:
    """A tiny 3-class Faster R-CNN whose float tensors no fresh build could reproduce."""
    torch.manual_seed(7)
    model = build_model("faster_rcnn", backbone="tiny", num_classes=3, input_size=96)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.375)
    return model


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _training_extras(model: nn.Module) -> dict[str, Any]:
    """What torchvision's references/detection/train.py saves beside the model."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[16, 22])
    args = argparse.Namespace(data_path="/data/coco", model="fasterrcnn_resnet50_fpn", lr=0.02,
                              epochs=26, weights=None, amp=False, output_dir="out")
    return {"optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
            "args": args, "epoch": 25}


def _write_torch(obj: Any, suffix: str = ".pth") -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / f"ckpt{suffix}"
        torch.save(obj, path)
        return path
    return write


def _write_safetensors(state: dict[str, Tensor]) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / "plain.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    return write


def _layouts(model: nn.Module) -> dict[str, tuple[Callable[[Path], Path], str, str | None]]:
    """name -> (writer, expected layout, expected stripped prefix)."""
    state = _state(model)
    extras = _training_extras(model)
    ema = {"n_averaged": torch.tensor(9), **{f"module.{k}": torch.zeros_like(v)
                                              for k, v in state.items()}}
    lightning = {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "optimizer_states": [extras["optimizer"]], "lr_schedulers": [extras["lr_scheduler"]],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.02, "best_map": np.float64(0.41), "steps": np.int64(9),
                             "root": Path("/data/coco")},
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.41)}},
    }
    return {
        "bare state dict": (_write_torch(state), "state dict", None),
        "torchvision references": (_write_torch({"model": state, **extras}),
                                   "training checkpoint ('model')", None),
        "references with model_ema": (_write_torch({"model": state, "model_ema": ema, **extras}),
                                      "training checkpoint ('model')", None),
        "plain model key": (_write_torch({"model": state}), "training checkpoint ('model')",
                            None),
        "DDP-saved model": (_write_torch({"model": {f"module.{k}": v for k, v in state.items()},
                                          **extras}),
                            "training checkpoint ('model')", "module."),
        "Lightning": (_write_torch(lightning, ".ckpt"),
                      "Lightning-style checkpoint ('state_dict')", "model."),
        "model_state_dict": (_write_torch({"model_state_dict": state,
                                           "optimizer_state_dict": extras["optimizer"]}),
                             "training checkpoint ('model_state_dict')", None),
        "safetensors": (_write_safetensors(state), "safetensors state dict", None),
        "DDP safetensors": (_write_safetensors({f"module.{k}": v for k, v in state.items()}),
                            "safetensors state dict", "module."),
    }


def test_every_layout_loads_the_same_tensors(donor: nn.Module, tmp_path: Path) -> None:
    expected = donor.state_dict()
    before = set(torch.serialization.get_safe_globals())
    for name, (write, layout, prefix) in _layouts(donor).items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        path = write(folder)
        loaded = read_weights_file(path)
        assert loaded.spec is None and loaded.meta["layout"] == layout, name
        assert loaded.meta.get("stripped_prefix") == prefix, name
        model = build_model("faster_rcnn", backbone="tiny", num_classes=3, input_size=96,
                            weights=str(path))
        assert model.reinitialized == [], name
        got = model.state_dict()
        assert got.keys() == expected.keys(), name
        for key, tensor in expected.items():
            assert torch.equal(got[key], tensor), (name, key)
    after = set(torch.serialization.get_safe_globals())  # the allow-list was scoped to loads
    assert after == before and argparse.Namespace not in after


class _Payload:
    """Unpickling this calls ``func(*args)``; each one would leave ``marker`` behind."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    """What the refusal names -> a payload."""
    return {
        "open": _Payload(open, str(marker), "w"),
        "exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "system": _Payload(os.system, f"touch '{marker}'"),
        "getattr": _Payload(Path.touch, marker),  # pickled as getattr(PosixPath, "touch")
    }


def test_code_running_checkpoints_are_refused_and_run_nothing(donor: nn.Module,
                                                              tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = _state(donor)
    for culprit, payload in _payloads(marker).items():
        files = {
            "references args": {"model": state, "args": argparse.Namespace(lr=payload)},
            "Lightning hyper_parameters": {"state_dict": state,
                                           "hyper_parameters": {"x": payload}},
            "a tensor's place": {"model": {**state, "evil": payload}},
        }
        for where, obj in files.items():
            path = tmp_path / f"{where.replace(' ', '_')}.pth"
            torch.save(obj, path)
            with pytest.raises(UnsafeCheckpointError) as info:
                build_model("faster_rcnn", backbone="tiny", num_classes=3, weights=str(path))
            message = str(info.value)
            assert str(path) in message and "refusing to load" in message, (culprit, where)
            assert re.search(rf"would import and call ([\w.]+\.)?{culprit};", message), \
                (where, message)
            assert not marker.exists(), (culprit, where)
    raw = tmp_path / "raw.pth"  # a bare pickle, not a torch zip file
    raw.write_bytes(pickle.dumps({"model": _payloads(marker)["system"]}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        resolve_weights(str(raw))
    assert not marker.exists()


def test_setup_errors_are_weights_errors(donor: nn.Module, tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"model": _state(donor), **_training_extras(donor)}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    notes = tmp_path / "notes.pth"
    torch.save({"epoch": 3, "args": argparse.Namespace(lr=0.1)}, notes)
    cases = {
        str(tmp_path / "missing.pt"): "no such file",
        "ResNet18_Weights.NOPE": "has no weights 'NOPE'",
        "shapes-nothing-like-this": "unknown weights",
        str(truncated): "corrupt or truncated",
        str(notes): r"holds no state dict of tensors \(found \['epoch', 'args'\]\)",
    }
    for weights, reason in cases.items():
        with pytest.raises(WeightsError, match=reason):
            build_model("faster_rcnn", backbone="tiny", num_classes=3, weights=weights)


def test_a_head_of_another_shape_is_refused_unless_classes_are_asked(donor: nn.Module,
                                                                     tmp_path: Path) -> None:
    path = _write_safetensors(_state(donor))(tmp_path)  # a 3-class head, no spec
    with pytest.raises(WeightsError) as info:  # the family's default is COCO's 91 classes
        build_model("faster_rcnn", backbone="tiny", input_size=96, weights=str(path))
    message = str(info.value)
    assert str(path) in message and "4 tensors have another shape" in message
    assert "roi_heads.box_predictor.bbox_pred.bias (file 12, model 364)" in message
    assert "and 1 more" in message and "num_classes" in message

    moved = build_model("faster_rcnn", backbone="tiny", num_classes=5, input_size=96,
                        weights=str(path))
    assert moved.reinitialized == HEAD
    assert moved.state_dict()[HEAD[3]].shape[0] == 5
    key = "backbone.body.stages.0.1.0.weight"
    assert torch.equal(moved.state_dict()[key], donor.state_dict()[key])
    named = build_model("faster_rcnn", backbone="tiny", input_size=96, weights=str(path),
                        class_names=["__background__", "a", "b", "c"])
    assert named.reinitialized == HEAD and named.spec.num_classes == 4


def test_a_detseg_checkpoint_moved_to_new_classes_says_what_it_reset(donor: nn.Module,
                                                                      tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "best.pt", donor.state_dict(), donor.spec, epoch=2)
    same = build_model(weights=str(path))
    assert same.reinitialized == [] and same.spec == donor.spec
    moved = build_model(weights=str(path), num_classes=2)
    assert moved.reinitialized == HEAD and moved.spec.num_classes == 2


def test_unrelated_keys_name_the_file_and_the_keys(donor: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({f"encoder.layer{i}.weight": torch.ones(2) for i in range(5)}, path)
    with pytest.raises(WeightsError) as info:
        build_model("faster_rcnn", backbone="tiny", num_classes=3, weights=str(path))
    message = str(info.value)
    total = len(donor.state_dict())
    assert str(path) in message and "does not fit the faster_rcnn over tiny" in message
    assert f"{total} of the model's tensors are not in it" in message
    assert "5 of its tensors are not in the model (encoder.layer0.weight" in message
    assert "and 2 more" in message and "'encoder.'" in message
    lightning = tmp_path / "net.ckpt"  # a LightningModule attribute other than `model`
    torch.save({"state_dict": {f"net.{k}": v for k, v in _state(donor).items()}}, lightning)
    with pytest.raises(WeightsError, match="every key of the file starts with 'net.'"):
        build_model("faster_rcnn", backbone="tiny", num_classes=3, weights=str(lightning))
    fresh = build_model("faster_rcnn", backbone="tiny", num_classes=3)
    partial = {k: v for k, v in _state(donor).items() if not k.startswith("rpn.")}
    with pytest.raises(WeightsError, match=r"state dict does not fit .* \(rpn\."):
        load_matching_state_dict(fresh, partial)
