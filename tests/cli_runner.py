"""Running the real ``detseg`` entry point inside a test, as the console script does."""

from __future__ import annotations

import sys

import pytest

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
