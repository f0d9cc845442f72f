"""``--weights`` parsed once into a ``WeightsRef``; DEFAULT from the caller's enum; the manifest
read and written; and the weights package standing apart from the model registries."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detseg.errors import WeightsError
from detseg.models import build_model
from detseg.weights import (
    ManifestEntry,
    WeightsRef,
    load_manifest,
    parse_weights,
    resolve_weights,
    save_manifest,
)

WEIGHTS_PACKAGE = Path(__file__).resolve().parents[1] / "detseg" / "weights"
FRCNN_V2_FILE = "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"


@pytest.fixture(autouse=True)
def _private_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real caches or the repository's weights folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("DETSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DETSEG_WEIGHTS_DIR", str(tmp_path / "shipped"))
    (tmp_path / "shipped").mkdir()


def _hub_file(tmp_path: Path, file_name: str) -> dict[str, torch.Tensor]:
    state = {"w": torch.arange(7.0)}
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    torch.save(state, hub / file_name)
    return state


def test_each_kind_is_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    existing = tmp_path / "best"  # no suffix: found because it exists
    existing.write_bytes(b"x")
    (tmp_path / "shipped" / "manifest.json").write_text(json.dumps({"mine": {"file": "m.pt"}}))
    digest = "AB" * 32
    cases = {
        "none": WeightsRef("none", "none"),
        " None ": WeightsRef("none", "None"),
        "DEFAULT": WeightsRef("default", "DEFAULT"),
        "default": WeightsRef("default", "default"),
        str(existing): WeightsRef("file", str(existing), path=existing),
        "runs/x/best.pt": WeightsRef("file", "runs/x/best.pt", path=Path("runs/x/best.pt")),
        "model.safetensors": WeightsRef("file", "model.safetensors",
                                        path=Path("model.safetensors")),
        "mine": WeightsRef("manifest", "mine", manifest_name="mine"),
        "ResNet18_Weights.IMAGENET1K_V1": WeightsRef(
            "enum", "ResNet18_Weights.IMAGENET1K_V1",
            enum_name="ResNet18_Weights.IMAGENET1K_V1"),
        "ResNet18_Weights": WeightsRef("enum", "ResNet18_Weights",
                                       enum_name="ResNet18_Weights.DEFAULT"),
        "https://example.org/a/net.pt": WeightsRef(
            "url", "https://example.org/a/net.pt", url="https://example.org/a/net.pt"),
        f"http://h:8/net.pt#sha256={digest}": WeightsRef(
            "url", f"http://h:8/net.pt#sha256={digest}", url="http://h:8/net.pt",
            sha256=digest.lower()),
    }
    for text, expected in cases.items():
        ref = parse_weights(text)
        assert ref == expected, text
        assert parse_weights(ref) is ref  # parsed once: a WeightsRef passes through
    assert parse_weights(Path("w.pth")).kind == "file"


def test_bad_values_are_weights_errors_naming_the_value(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    cases = {
        "": "empty",
        str(tmp_path / "folder"): "a folder",
        "ftp://example.org/net.pt": "only http",
        "https://example.org/net.pt#sha256=xyz": "invalid sha256",
        "ResNet18_Weights.COCO_V9": "IMAGENET1K_V1",
        "Nope_Weights.V1": "no weight enum 'Nope_Weights'",
        "Nope_Weights": "no weight enum 'Nope_Weights'",
        "no_such_weights": "detseg weights list",
    }
    for text, reason in cases.items():
        with pytest.raises(WeightsError, match=reason):
            parse_weights(text)


def test_missing_file_is_reported_when_resolved(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "best.pt"
    assert parse_weights(str(missing)).kind == "file"
    with pytest.raises(WeightsError, match=f"{missing}: no such file"):
        resolve_weights(str(missing))
    with pytest.raises(WeightsError, match="no such file"):
        build_model("faster_rcnn", backbone="tiny", weights=str(missing))


def test_default_is_the_enum_the_caller_passes(tmp_path: Path) -> None:
    state = _hub_file(tmp_path, FRCNN_V2_FILE)
    enum_class = "FasterRCNN_ResNet50_FPN_V2_Weights"
    for enum in (enum_class, f"{enum_class}.COCO_V1"):
        loaded = resolve_weights("DEFAULT", default_enum=enum)
        assert torch.equal(loaded.state_dict["w"], state["w"])
        assert loaded.meta["enum"] == "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1"
        assert loaded.meta["categories"][1] == "person"
    ref = parse_weights("DEFAULT")
    assert resolve_weights(ref, default_enum="FasterRCNN_ResNet50_FPN_V2_Weights").spec is None
    with pytest.raises(WeightsError, match="DEFAULT: this model has no pretrained weights"):
        resolve_weights("DEFAULT")
    with pytest.raises(WeightsError, match="DEFAULT: this model has no pretrained weights"):
        build_model("faster_rcnn", backbone="tiny", weights="DEFAULT")  # a family: no enum
    with pytest.raises(WeightsError, match="no weights to load"):
        resolve_weights("none")


def test_manifest_write_then_read_round_trips(tmp_path: Path) -> None:
    entries = [
        ManifestEntry(name="b-model", file="b.pt", sha256="0123abcd", task="detect",
                      family="faster_rcnn", backbone="tiny", description="odd [brackets]",
                      extra={"command": "detseg train ..."}),
        ManifestEntry(name="a-remote", url="https://example.org/x-0123abcd.pth",
                      spec={"family": "unet", "backbone": "tiny", "num_classes": 3,
                            "task": "semantic"}),
    ]
    path = save_manifest(entries)
    assert path == tmp_path / "shipped" / "manifest.json"
    assert list(json.loads(path.read_text())) == ["b-model", "a-remote"]
    assert list(load_manifest().values()) == entries
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(WeightsError, match="two manifest entries are named 'b-model'"):
        save_manifest([entries[0], entries[0]], tmp_path / "other.json")
    with pytest.raises(WeightsError, match="'lost' needs a 'file' or a 'url'"):
        save_manifest([ManifestEntry(name="lost")], tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


def test_shipped_manifest_survives_a_rewrite(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "weights" / "manifest.json"
    copy = save_manifest(load_manifest(shipped).values(), tmp_path / "copy.json")
    assert json.loads(copy.read_text()) == json.loads(shipped.read_text())


def test_weights_package_does_not_import_the_model_registries() -> None:
    code = ("import sys, detseg.weights; "
            "bad = [m for m in sys.modules "
            "       if m.startswith(('detseg.models', 'detseg.backbones'))]; "
            "assert not bad, bad")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    registries = ("detseg.models", "detseg.backbones")
    for module in sorted(WEIGHTS_PACKAGE.glob("*.py")):  # lazy imports and import strings too
        text = module.read_text()
        assert len(text.splitlines()) <= 500, module.name
        for node in ast.walk(ast.parse(text)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]
            elif isinstance(node, ast.Name):
                assert node.id not in ("importlib", "__import__"), module.name
            assert not [n for n in names if n.startswith(registries)], (module.name, names)
