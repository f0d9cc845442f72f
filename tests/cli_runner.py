"""Running the real ``detseg`` entry point inside a test, as the console script does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from detseg.cli.main import main


def detseg(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           *args: object) -> tuple[int, str, str]:
    """Run ``detseg ARGS`` through ``detseg.cli.main.main``: ``(exit code, stdout, stderr)``.

    Asserts that nothing printed a traceback.
    """
    monkeypatch.setattr(sys, "argv", ["detseg", *(str(a) for a in args)])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err, out.out + out.err
    return int(info.value.code or 0), out.out, out.err


def detseg_text(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                *args: object) -> tuple[int, str]:
    """``detseg`` with stdout and stderr together: ``(exit code, text)``."""
    code, out, err = detseg(monkeypatch, capsys, *args)
    return code, out + err


def random_checkpoint(path: Path, family: str, input_size: int = 64) -> str:
    """A seeded, randomly initialised ``family`` over ``tiny`` with classes ``a`` and ``b``,
    saved as a detseg checkpoint at ``path`` (for tests of plumbing, not of accuracy)."""
    from detseg.models import build_from_spec, make_spec
    from detseg.weights import save_checkpoint

    torch.manual_seed(0)
    spec = make_spec(family, "tiny", class_names=["__background__", "a", "b"],
                     input_size=input_size)
    save_checkpoint(path, build_from_spec(spec).state_dict(), spec)
    return str(path)


def frame_count(path: Path | str) -> int:
    """Frames a video file really holds (grabbed one by one, not the header's count)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.grab():
        count += 1
    cap.release()
    return count
