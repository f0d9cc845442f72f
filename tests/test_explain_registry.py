"""Explain methods come from their registry: the library's dispatch, `detseg explain`'s
--method and --list-methods, and the options each method takes; tool commands follow the
weights policy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from torch import nn
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.errors import UsageError
from detseg.explain import EXPLAIN_METHODS, Explanation, explain, register_method
from detseg.models import build_model

runner = CliRunner()
EVERY_TASK = ("detect", "instance", "semantic")


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Methods a test registers are gone after it (the registry's entries are restored)."""
    monkeypatch.setattr(EXPLAIN_METHODS, "_entries", dict(EXPLAIN_METHODS._entries))


def _register_halved(name: str = "halved") -> None:
    """A semantic-only method taking ``target``: the image at half brightness."""

    @register_method(name, summary="the image at half brightness", tasks=("semantic",),
                     options=("target",))
    def halved(model: nn.Module, image_rgb: np.ndarray, target: str | None = None,
               ) -> Explanation:
        return Explanation(name, {f"{name}_{target or 'all'}": image_rgb // 2})


@pytest.fixture(scope="module")
def odd_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 37 x 23 RGB PNG with a bright block."""
    image = np.full((37, 23, 3), 30, np.uint8)
    image[5:20, 3:14] = (250, 200, 90)
    path = tmp_path_factory.mktemp("odd") / "odd.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def test_registry_lists_the_four_methods_with_their_options() -> None:
    assert EXPLAIN_METHODS.names() == ["activations", "filters", "gradcam", "occlusion"]
    methods = {entry.name: entry.builder for entry in EXPLAIN_METHODS}
    assert methods["activations"].options == ("layer",)
    assert methods["filters"].options == ()
    assert methods["gradcam"].options == ("target", "layer")
    assert methods["occlusion"].options == ("target", "patch", "stride")
    for method in methods.values():
        assert method.tasks == EVERY_TASK and method.summary


def test_list_methods_and_method_choices_come_from_the_registry(
        scratch_registry: None, odd_image: Path, tmp_path: Path) -> None:
    listed = runner.invoke(app, ["explain", "--list-methods"])
    assert listed.exit_code == 0, listed.output
    assert all(name in listed.output for name in EXPLAIN_METHODS.names())
    assert "halved" not in listed.output

    _register_halved()
    listed = runner.invoke(app, ["explain", "--list-methods"])
    assert "halved" in listed.output and "--target" in listed.output

    unet = [str(odd_image), "--model", "unet", "--backbone", "tiny", "--weights", "none"]
    done = runner.invoke(app, ["explain", *unet, "--method", "halved", "--target", "spot",
                               "--out", str(tmp_path / "halved")])
    assert done.exit_code == 0, done.output
    written = cv2.imread(str(tmp_path / "halved" / "halved_spot.png"))
    assert written.shape == (37, 23, 3) and written.max() <= 125

    unknown = runner.invoke(app, ["explain", *unet, "--method", "saliency"])
    assert unknown.exit_code == 2
    assert "activations, filters, gradcam, halved, occlusion" in unknown.output


def test_options_a_method_does_not_take_are_refused_by_the_cli(odd_image: Path) -> None:
    base = ["explain", str(odd_image), "--model", "unet", "--backbone", "tiny", "--weights",
            "none"]
    patch = runner.invoke(app, [*base, "--method", "gradcam", "--patch", "8"])
    assert patch.exit_code == 2
    assert "--patch does not apply to --method gradcam (it takes --target, --layer)" in \
        patch.output
    both = runner.invoke(app, [*base, "--method", "filters", "--target", "1", "--stride", "2"])
    assert both.exit_code == 2 and "--target, --stride do not apply" in both.output
    assert runner.invoke(app, [*base, "--method", "occlusion", "--patch", "0"]).exit_code == 2


def test_a_method_refuses_models_of_tasks_it_does_not_explain(scratch_registry: None) -> None:
    _register_halved()
    image = np.zeros((9, 13, 3), np.uint8)
    segmenter = build_model("unet", backbone="tiny", num_classes=2, input_size=64)
    assert set(explain(segmenter, image, "halved", target="1", patch=3).images) == \
        {"halved_1"}
    detector = build_model("ssd", backbone="tiny", num_classes=2, input_size=64)
    with pytest.raises(UsageError, match="'halved' does not explain detect models"):
        explain(detector, image, "halved")
    with pytest.raises(UsageError, match="unknown explain method 'nope'"):
        explain(segmenter, image, "nope")
    with pytest.raises(UsageError, match="H x W x 3"):
        explain(segmenter, image[..., 0], "filters")


def test_a_family_without_weights_is_refused(odd_image: Path) -> None:
    result = runner.invoke(app, ["explain", str(odd_image), "--model", "unet", "--backbone",
                                 "tiny", "--method", "filters"])
    assert isinstance(result.exception, UsageError)  # main() turns it into exit code 2
    assert "family without trained weights" in str(result.exception)


def test_explain_command_module_does_not_import_torch() -> None:
    code = "import sys, detseg.cli.explain; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
