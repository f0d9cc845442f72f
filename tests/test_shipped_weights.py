"""Every checkpoint shipped in weights/ works on shapes images it never saw.

The list comes from the manifest, so a new shipped file is covered by adding its entry. Each
model is scored through the public evaluation entry point on a fresh, seeded set (a seed no
recipe trains on) and must stay well above chance; weights/README.md gives the real figures
measured on 200 images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detseg.data.datasets import build_dataset
from detseg.data.shapes import generate_shapes
from detseg.eval.runner import evaluate_model
from detseg.models import build_model
from detseg.weights import load_manifest, shipped_dir

SHIPPED = sorted(name for name, entry in load_manifest().items()
                 if (shipped_dir() / entry.file_name).is_file())
#: floors well below each model's measured figure (weights/README.md), above a broken file's
FLOORS = {"detect": ("bbox_AP50", 0.7), "instance": ("segm_AP50", 0.7),
          "semantic": ("mIoU", 0.75)}


@pytest.fixture(scope="module")
def fresh_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("fresh"), train=0, val=12, size=256,
                           seed=97, workers=1)


def test_the_manifest_ships_files() -> None:
    assert {"shapes-faster_rcnn", "shapes-unet"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_find_fresh_shapes(name: str, fresh_shapes: Path) -> None:
    torch.manual_seed(0)
    model = build_model(weights=name).eval()
    dataset = build_dataset("shapes", fresh_shapes, "val", task=model.spec.task)
    result = evaluate_model(model, dataset, batch_size=4, plots=False)
    key, floor = FLOORS[model.spec.task]
    assert result[key] >= floor, f"{name}: {key} {result[key]:.3f} < {floor}"
