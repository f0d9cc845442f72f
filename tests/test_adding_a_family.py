"""docs/adding-a-family.md stays true: its family, copied into a temporary copy of the package,
registers itself and passes the conformance kit with no other change."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "adding-a-family.md"


def _family_block() -> tuple[str, str]:
    """The guide's Python block whose first line names its file, and that file's path."""
    for block in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S):
        first = block.splitlines()[0]
        if first.startswith("# detseg/"):
            return first[2:].strip(), block
    raise AssertionError("the guide has no python block starting with '# detseg/<file>'")


@pytest.mark.slow
def test_the_guide_family_passes_the_conformance_kit(tmp_path: Path) -> None:
    relative, code = _family_block()
    package = tmp_path / "pkg"
    shutil.copytree(ROOT / "detseg", package / "detseg",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "cli", package / "detseg" / "cli",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = package / relative
    assert not target.exists(), f"{relative} already exists in the package"
    target.write_text(code)
    name = Path(relative).stem
    script = (
        "import sys; from pathlib import Path\n"
        "import detseg\n"
        f"assert Path(detseg.__file__).is_relative_to(Path({str(package)!r})), detseg.__file__\n"
        "from detseg.models import list_models\n"
        f"assert {name!r} in list_models(kind='family'), list_models(kind='family')\n"
        "from conformance import run_family_checks\n"
        f"run_family_checks({name!r}, Path({str(tmp_path / 'work')!r}))\n"
    )
    (tmp_path / "work").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
