"""The command line starts, prints its version and help, and maps errors to exit codes."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import detseg
from detseg.cli.main import app
from detseg.errors import RegistryError
from detseg.registry import Registry
from detseg.runs import new_run_dir

runner = CliRunner()


def test_version_flag() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"detseg {detseg.__version__}"


def test_python_dash_m_matches_script() -> None:
    out = subprocess.run([sys.executable, "-m", "detseg", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"detseg {detseg.__version__}"


def test_library_import_does_not_pull_typer() -> None:
    code = "import sys, detseg, detseg.registry, detseg.spec; print('typer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registry_lists_by_glob_and_suggests_names() -> None:
    reg = Registry("backbone")
    reg.add("resnet18", lambda: "r18", depth=18)
    reg.add("resnet50", lambda: "r50", depth=50)
    reg.add("vgg16", lambda: "v16")
    assert reg.names("resnet*") == ["resnet18", "resnet50"]
    assert reg.get("resnet50").meta == {"depth": 50}
    try:
        reg.get("resnet5")
    except RegistryError as err:
        assert "did you mean" in str(err) and "resnet50" in str(err)
    else:
        raise AssertionError("unknown name was accepted")


def test_run_dirs_increment_and_never_reuse(tmp_path) -> None:
    first = new_run_dir("detect", root=tmp_path)
    second = new_run_dir("detect", root=tmp_path)
    assert (first.name, second.name) == ("exp", "exp2")


def test_quiet_does_not_carry_over_to_the_next_command(tmp_path) -> None:
    """Commands run in one process (tests, a program embedding the app): an earlier --quiet
    does not silence a later command."""
    import json

    gt = {"images": [{"id": 1, "width": 31, "height": 17, "file_name": "a.jpg"}],
          "categories": [{"id": 3, "name": "box"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 8],
                           "area": 80, "iscrowd": 0}]}
    results = [{"image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 8], "score": 0.9}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    quiet = runner.invoke(app, ["eval", "--ann", str(tmp_path / "gt.json"), "--predictions",
                                str(tmp_path / "res.json"), "--no-plots", "-q",
                                "--out", str(tmp_path / "run")])
    assert quiet.exit_code == 0 and "AP" not in quiet.output
    loud = runner.invoke(app, ["models", "unet"])
    assert loud.exit_code == 0 and "unet" in loud.output
