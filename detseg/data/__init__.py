"""Datasets (COCO, VOC, YOLO, mask folders, synthetic shapes), transforms and I/O.

``build_dataset(kind, root, split, task, transforms, **options)`` is the one entry point
(``detseg.data.datasets``). Formats live in a registry (``detseg.data.formats``) whose
modules are imported on first use, so ``import detseg.data`` stays light; ``DATASET_KINDS``
(the registered names) is computed from it when first asked for.
"""

from __future__ import annotations

from typing import Any

from detseg.data.datasets import build_dataset, dataset_formats, format_names


def __getattr__(name: str) -> Any:
    if name == "DATASET_KINDS":
        return format_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DATASET_KINDS", "build_dataset", "dataset_formats", "format_names"]
