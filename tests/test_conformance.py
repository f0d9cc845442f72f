"""Every registered model family passes the conformance kit (tests/conformance.py) over the
``tiny`` backbone, and builds, trains a step and predicts over one torchvision backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conformance import WRITERS, check_family_over_backbone, run_family_checks

from detseg.engine.trainer import TrainConfig, Trainer
from detseg.models import list_models, make_spec, model_info
from detseg.tasks import task_adapter

FAMILIES = list_models(kind="family")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_passes_every_command(family: str, tmp_path) -> None:
    torch.manual_seed(0)
    run_family_checks(family, tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_over_a_torchvision_backbone(family: str) -> None:
    check_family_over_backbone(family, "resnet18")


def _first_family(task: str) -> str:
    return next(f for f in FAMILIES if model_info(f)["task"] == task)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("task", ["detect", "instance", "semantic"])
def test_every_task_trains_and_scores_in_every_format(task: str, fmt: str, tmp_path) -> None:
    """One epoch and its validation, for a family of each task, on hand-made trees of every
    format (odd, mixed, non-square sizes)."""
    root = WRITERS[fmt](tmp_path / fmt)
    config = TrainConfig(model=_first_family(task), backbone="tiny", dataset=fmt,
                         data_root=str(root), epochs=1, imgsz=96, batch_size=4)
    result = Trainer(config, tmp_path / "run", handle_sigint=False).fit()
    assert result.status == "completed" and result.last_path.is_file()
    row = result.history[-1]
    assert np.isfinite(row["train/loss"]), row
    key = task_adapter(make_spec(config.model, "tiny", num_classes=2)).fitness_key
    assert f"metrics/{key}" in row, row
