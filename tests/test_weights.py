"""Checkpoints (round trip, fp16 storage, atomic writes, unsafe and corrupt files), resolving
``--weights`` offline (files, manifest names, torchvision enums via torch's hub cache), and the
``detseg weights`` import / verify / list commands."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.errors import UnsafeCheckpointError, WeightsError
from detseg.spec import ModelSpec
from detseg.weights import (
    cache_dir,
    detseg_home,
    import_weights,
    list_weights,
    load_checkpoint,
    load_torchvision_weights,
    resolve_weights,
    save_checkpoint,
    shipped_dir,
    verify_weights,
)

SPEC = ModelSpec(family="unet", backbone="tiny", num_classes=3, task="semantic",
                 class_names=["background", "circle", "square"], input_size=64)
RESNET18_FILE = "resnet18-f37072fd.pth"  # ResNet18_Weights.IMAGENET1K_V1


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))


@pytest.fixture(autouse=True)
def _private_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real torch hub cache or the repository's weights folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("DETSEG_WEIGHTS_DIR", str(tmp_path / "shipped"))
    (tmp_path / "shipped").mkdir()


def _write_manifest(tmp_path: Path, entries: dict) -> None:
    (tmp_path / "shipped" / "manifest.json").write_text(json.dumps(entries))


def test_locations_follow_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DETSEG_HOME", str(tmp_path / "home"))
    assert detseg_home() == tmp_path / "home"
    assert cache_dir() == tmp_path / "home" / "weights"
    assert shipped_dir() == tmp_path / "shipped"
    monkeypatch.delenv("DETSEG_WEIGHTS_DIR")
    repo_weights = shipped_dir()
    assert repo_weights.name == "weights" and (repo_weights / "manifest.json").is_file()


def test_checkpoint_round_trip_keeps_spec_tensors_and_extra(tmp_path: Path) -> None:
    net = _net()
    net(torch.rand(2, 3, 8, 8))  # move the BatchNorm running statistics
    optim = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.rand(1, 3, 8, 8)).sum().backward()
    optim.step()
    path = save_checkpoint(tmp_path / "run" / "best.pt", net.state_dict(), SPEC, epoch=3,
                           metrics={"mIoU": np.float64(0.5), "per_class": [np.float32(0.25)]},
                           optimizer=optim.state_dict())
    ckpt = load_checkpoint(path)
    assert ckpt.spec == SPEC
    assert ckpt.extra["epoch"] == 3
    assert ckpt.extra["metrics"] == {"mIoU": 0.5, "per_class": [0.25]}
    assert type(ckpt.extra["metrics"]["mIoU"]) is float
    assert ckpt.extra["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert ckpt.state_dict.keys() == net.state_dict().keys()
    for key, tensor in net.state_dict().items():
        assert torch.equal(ckpt.state_dict[key], tensor), key
    fresh = _net()
    fresh.load_state_dict(ckpt.state_dict)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(fresh.eval()(x), net.eval()(x))


def test_fp16_storage_halves_the_file_and_restores_float32(tmp_path: Path) -> None:
    state = _net().state_dict()
    state["big"] = torch.tensor([1e6, -3.0])  # would overflow float16: stored as float32
    state["embed"] = torch.randn(128, 128)  # large enough for the size to show
    full = save_checkpoint(tmp_path / "full.pt", state, SPEC)
    half = save_checkpoint(tmp_path / "half.pt", state, SPEC, half=True)
    raw = torch.load(half, weights_only=True)
    assert raw["model"]["0.weight"].dtype == torch.float16
    assert half.stat().st_size < 0.75 * full.stat().st_size
    loaded = load_checkpoint(half).state_dict
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype, key
        torch.testing.assert_close(loaded[key], tensor, atol=1e-3, rtol=1e-3)
    assert torch.equal(loaded["big"], state["big"])
    assert torch.equal(loaded["1.num_batches_tracked"], state["1.num_batches_tracked"])


def test_safetensors_checkpoint_round_trip(tmp_path: Path) -> None:
    state = _net().state_dict()
    path = save_checkpoint(tmp_path / "model.safetensors", state, SPEC, half=True, epoch=7)
    ckpt = load_checkpoint(path)
    assert ckpt.spec == SPEC and ckpt.extra == {"epoch": 7}
    for key, tensor in state.items():
        assert ckpt.state_dict[key].dtype == tensor.dtype
        torch.testing.assert_close(ckpt.state_dict[key], tensor, atol=1e-3, rtol=1e-3)


def test_atomic_write_leaves_no_temp_files_and_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    path = save_checkpoint(out / "best.pt", _net().state_dict(), SPEC, epoch=1)
    save_checkpoint(path, _net().state_dict(), SPEC, epoch=2)
    assert sorted(p.name for p in out.iterdir()) == ["best.pt"]

    real_save = torch.save

    def crash(obj, f):  # write half a file, then die
        real_save(obj, f)
        with open(f, "r+b") as fh:
            fh.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _net().state_dict(), SPEC, epoch=3)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in out.iterdir()) == ["best.pt"]
    assert load_checkpoint(path).extra["epoch"] == 2


def test_checkpoint_extra_must_load_safely(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"extra\['out'\] is a PosixPath|is a .*Path"):
        save_checkpoint(tmp_path / "run" / "x.pt", _net().state_dict(), SPEC, out=tmp_path)
    with pytest.raises(WeightsError, match=r"extra\['mask'\] is a ndarray"):
        save_checkpoint(tmp_path / "run" / "x.pt", _net().state_dict(), SPEC, mask=np.zeros(2))
    with pytest.raises(WeightsError, match="reserved"):
        save_checkpoint(tmp_path / "run" / "x.pt", _net().state_dict(), SPEC, model=1)
    assert not (tmp_path / "run").exists()


class _Marker:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch_file = tmp_path / "evil.pt"
    torch.save({"model": _Marker(marker)}, torch_file)
    raw_file = tmp_path / "evil.pth"
    raw_file.write_bytes(pickle.dumps({"w": _Marker(marker)}, protocol=4))
    for path in (torch_file, raw_file):
        with pytest.raises(UnsafeCheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "open" in str(info.value)
        with pytest.raises(UnsafeCheckpointError):
            resolve_weights(str(path))
        assert not marker.exists()
    torch.load(torch_file, weights_only=False)  # the file really is malicious
    assert marker.exists()


def test_corrupt_truncated_and_plain_files_are_explained(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.pt", _net().state_dict(), SPEC)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    html = tmp_path / "html.pth"
    html.write_bytes(b"<html>404 not found</html>")
    empty = tmp_path / "empty.pt"
    empty.touch()
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    for path, reason in ((truncated, "corrupt or truncated"), (html, "corrupt"),
                         (empty, "empty"), (bad_st, "corrupt"),
                         (tmp_path / "absent.pt", "no such file")):
        with pytest.raises(WeightsError, match=reason) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
        assert not isinstance(info.value, UnsafeCheckpointError)
    plain = tmp_path / "plain.pth"
    torch.save(_net().state_dict(), plain)
    with pytest.raises(WeightsError, match="plain state dict"):
        load_checkpoint(plain)


def test_resolve_local_files_and_manifest_names(tmp_path: Path) -> None:
    net = _net()
    plain = tmp_path / "plain.pth"
    torch.save(net.state_dict(), plain)
    loaded = resolve_weights(str(plain))
    assert loaded.spec is None and loaded.source == str(plain)
    assert torch.equal(loaded.state_dict["0.weight"], net.state_dict()["0.weight"])
    train_ckpt = tmp_path / "train.pth"  # torchvision reference scripts nest it under "model"
    torch.save({"model": net.state_dict(), "epoch": 4}, train_ckpt)
    assert resolve_weights(str(train_ckpt)).state_dict.keys() == net.state_dict().keys()

    ckpt = save_checkpoint(tmp_path / "shipped" / "shapes-unet.pt", net.state_dict(), SPEC)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    _write_manifest(tmp_path, {
        "shapes-unet": {"file": "shapes-unet.pt", "sha256": sha, "task": "semantic"},
        "plain-unet": {"file": "plain.pth", "spec": SPEC.to_dict()},
    })
    assert resolve_weights("shapes-unet").spec == SPEC
    import_weights(plain, name="plain-unet")
    named = resolve_weights("plain-unet")
    assert named.spec == SPEC and named.source.startswith("plain-unet")


def test_resolve_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="DEFAULT: this model has no pretrained weights"):
        resolve_weights("DEFAULT")
    with pytest.raises(WeightsError, match="detseg weights list"):
        resolve_weights("no_such_weights")
    with pytest.raises(WeightsError, match="no such file"):
        resolve_weights(str(tmp_path / "missing.pt"))
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        resolve_weights("ResNet18_Weights.COCO_V9")
    with pytest.raises(WeightsError, match="no weight enum"):
        resolve_weights("Nope_Weights.V1")


def _fake_hub_file(tmp_path: Path, file_name: str) -> dict[str, torch.Tensor]:
    state = {"fc.weight": torch.randn(4, 2)}
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    torch.save(state, hub / file_name)
    return state


def test_torchvision_enums_use_torch_hub_cache(tmp_path: Path) -> None:
    import torchvision

    state = _fake_hub_file(tmp_path, RESNET18_FILE)
    loaded = resolve_weights("ResNet18_Weights.IMAGENET1K_V1")
    assert torch.equal(loaded.state_dict["fc.weight"], state["fc.weight"])
    assert loaded.spec is None and loaded.source.startswith("ResNet18_Weights.IMAGENET1K_V1")
    assert len(loaded.meta["categories"]) == 1000
    member = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert torch.equal(load_torchvision_weights(member)["fc.weight"], state["fc.weight"])


def test_default_uses_the_preset_weight_enum(tmp_path: Path) -> None:
    state = _fake_hub_file(tmp_path, "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth")
    loaded = resolve_weights("DEFAULT", default_enum="FasterRCNN_ResNet50_FPN_V2_Weights")
    assert torch.equal(loaded.state_dict["fc.weight"], state["fc.weight"])
    assert loaded.meta["categories"][1] == "person"


def test_import_verifies_known_hashes(tmp_path: Path) -> None:
    fake = tmp_path / "download.pth"
    torch.save({"w": torch.zeros(2)}, fake)
    with pytest.raises(WeightsError, match="is not ResNet18_Weights.IMAGENET1K_V1"):
        import_weights(fake, name="ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(WeightsError, match=r"is not ResNet18_Weights.DEFAULT \(ResNet18_Weig"):
        import_weights(fake, name="ResNet18_Weights")  # a bare enum: its DEFAULT member
    imported = CliRunner().invoke(app, ["weights", "import", str(fake), "--name", "resnet18"])
    assert isinstance(imported.exception, WeightsError)  # a backbone: its enum's hash
    assert "ResNet18_Weights.DEFAULT" in str(imported.exception)
    assert not cache_dir().exists() or not list(cache_dir().iterdir())
    sha = hashlib.sha256(fake.read_bytes()).hexdigest()
    renamed = tmp_path / f"mine-{sha[:8]}.pth"
    renamed.write_bytes(fake.read_bytes())
    out = import_weights(renamed)
    assert out == cache_dir() / renamed.name and out.read_bytes() == fake.read_bytes()
    assert resolve_weights(str(out)).state_dict["w"].shape == (2,)
    torch.save([1, 2], tmp_path / "notes.pt")
    with pytest.raises(WeightsError, match="holds no state dict"):
        import_weights(tmp_path / "notes.pt")


def test_verify_and_list(tmp_path: Path) -> None:
    data = b"weights"
    sha = hashlib.sha256(data).hexdigest()
    cache_dir().mkdir(parents=True)
    good = cache_dir() / f"a-{sha[:8]}.pt"
    good.write_bytes(data)
    (cache_dir() / "unknown.pt").write_bytes(data)
    (tmp_path / "shipped" / "s.pt").write_bytes(data)
    _write_manifest(tmp_path, {
        "s": {"file": "s.pt", "sha256": sha, "family": "unet", "task": "semantic"},
        "lost": {"file": "lost.pt", "sha256": sha},
    })
    status = {r.path.name: r.status for r in verify_weights()}
    assert status == {f"a-{sha[:8]}.pt": "ok", "unknown.pt": "unverified", "s.pt": "ok",
                      "lost.pt": "missing"}
    runner = CliRunner()
    assert runner.invoke(app, ["weights", "verify"]).exit_code == 1
    _write_manifest(tmp_path, {"s": {"file": "s.pt", "sha256": sha}})
    assert runner.invoke(app, ["weights", "verify"]).exit_code == 0
    good.write_bytes(b"tampered")
    result = runner.invoke(app, ["weights", "verify", "--json"])
    assert result.exit_code == 1
    rows = {Path(r["path"]).name: r["status"] for r in json.loads(result.stdout)}
    assert rows[good.name] == "mismatch"

    _fake_hub_file(tmp_path, RESNET18_FILE)
    from detseg.cli.weights import pretrained_models

    infos = {i.name: i for i in list_weights(pretrained_models())}
    assert infos["s"].kind == "manifest" and infos["s"].path == tmp_path / "shipped" / "s.pt"
    assert infos["ResNet18_Weights.IMAGENET1K_V1"].path is not None
    assert infos["ResNet18_Weights.IMAGENET1K_V1"].default
    assert infos["ResNet50_Weights.IMAGENET1K_V1"].path is None
    listed = runner.invoke(app, ["weights", "list", "--json", "--cached"])
    assert listed.exit_code == 0
    assert {r["name"] for r in json.loads(listed.stdout)} == {
        "s", "ResNet18_Weights.IMAGENET1K_V1"}


def test_cli_import_and_help(tmp_path: Path) -> None:
    src = tmp_path / "file.pt"
    torch.save({"w": torch.ones(1)}, src)
    runner = CliRunner()
    result = runner.invoke(app, ["weights", "import", str(src), "--name", "renamed.pt"])
    assert result.exit_code == 0, result.output
    assert (cache_dir() / "renamed.pt").read_bytes() == src.read_bytes()
    for command in ("list", "download", "import", "verify"):
        help_text = runner.invoke(app, ["weights", command, "--help"]).output
        assert "Examples" in help_text and "detseg weights" in help_text
    assert os.listdir(cache_dir()) == ["renamed.pt"]


def test_checkpoint_rebuilds_an_identical_model_from_the_file_alone(tmp_path: Path) -> None:
    from detseg.models import build_model

    cases = [
        ("unet", {"class_names": ["background", "circle", "square"]},
         lambda m: m(torch.rand(2, 3, 64, 64))),
        ("faster_rcnn", {"class_names": ["__background__", "circle", "square"],
                         "input_size": 64},
         lambda m: m([torch.rand(3, 64, 80)])),
    ]
    for name, options, run in cases:
        model = build_model(name, backbone="tiny", **options)
        if name == "unet":  # non-default BatchNorm statistics must survive too
            model.train()(torch.rand(2, 3, 64, 64))
        path = save_checkpoint(tmp_path / f"{name}.pt", model.state_dict(), model.spec, epoch=1)
        rebuilt = build_model(weights=str(path))
        assert rebuilt.spec == model.spec
        model.eval()
        rebuilt.eval()
        torch.manual_seed(1)
        with torch.no_grad():
            expected = run(model)
            torch.manual_seed(1)
            got = run(rebuilt)
        if name == "unet":
            assert torch.equal(got, expected)
            half = save_checkpoint(tmp_path / "half.pt", model.state_dict(), model.spec,
                                   half=True)
            x = torch.rand(2, 3, 64, 64)
            with torch.no_grad():
                from_half = build_model(weights=str(half)).eval()(x)
                reference = model(x)
            assert from_half.dtype == torch.float32
            torch.testing.assert_close(from_half, reference, atol=0.05, rtol=0.01)
        else:
            assert len(expected[0]["boxes"]) > 0
            for want, have in zip(expected, got, strict=True):
                for key in ("boxes", "labels", "scores"):
                    assert torch.equal(have[key], want[key]), key


def test_default_weights_build_the_preset_offline(tmp_path: Path) -> None:
    from detseg.models import build_model

    donor = build_model("lraspp_mobilenet_v3_large").eval()
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(donor.state_dict(), hub / "lraspp_mobilenet_v3_large-d234d4ea.pth")
    model = build_model("lraspp_mobilenet_v3_large", weights="DEFAULT").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], donor(x)["out"])
