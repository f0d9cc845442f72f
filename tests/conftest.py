"""Shared fixtures: every test runs seeded and with a private DETSEG_HOME."""

from __future__ import annotations

import random

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed_and_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch = None
    if torch is not None:
        torch.manual_seed(0)
    monkeypatch.setenv("DETSEG_HOME", str(tmp_path_factory.mktemp("detseg_home")))
    yield
