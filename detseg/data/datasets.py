"""Open datasets of any registered format: build one split, guess a format, list splits.

The format modules register themselves in ``detseg.data.formats.DATASET_FORMATS``;
``dataset_formats()`` imports them on first use (see that module for why).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detseg.data.formats import DATASET_FORMATS
from detseg.errors import DatasetError, UsageError
from detseg.registry import Registry

FORMAT_MODULES: tuple[str, ...] = (
    "detseg.data.coco",
    "detseg.data.voc",
    "detseg.data.yolo",
    "detseg.data.maskfolder",
    "detseg.data.shapes_tree",
)


def dataset_formats() -> Registry:
    """The dataset-format registry with every format module loaded."""
    for name in FORMAT_MODULES:
        importlib.import_module(name)
    return DATASET_FORMATS


def format_names() -> tuple[str, ...]:
    """Names of the registered dataset formats, sorted."""
    return tuple(dataset_formats().names())


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def build_dataset(kind: str, root: str | Path, split: str = "val", task: str = "detect",
                  transforms: Callable | None = None, **options: Any) -> Any:
    """Open one split of the dataset of format ``kind`` at ``root`` (folder or file).

    ``options`` are the format's keyword options (``detseg dataset formats`` lists them:
    ``ann_file``, ``images_dir``, ``masks_dir``, ``mask_type``, ``mask_suffix``, ``year``);
    ``None`` values are ignored, so callers can pass every option they have. Returns a
    ``RecordDataset`` yielding ``(image, target)`` (see ``detseg.data.base``) whose
    ``warnings`` list what was skipped. Raises ``UsageError`` for an unknown format, task or
    option and ``DatasetError`` when no image is found (the message says where it looked).
    """
    entry = dataset_formats().get(kind)
    if task not in entry.meta["tasks"]:
        raise UsageError(f"dataset format {kind!r} cannot feed task {task!r} (it feeds "
                         f"{', '.join(entry.meta['tasks'])})")
    given = _given(options)
    unknown = sorted(set(given) - set(entry.meta["options"]))
    if unknown:
        takes = ", ".join(entry.meta["options"]) or "none"
        raise UsageError(f"option {', '.join(unknown)} does not apply to dataset format "
                         f"{kind!r} (its options: {takes})")
    dataset = entry.builder(root, split=split, task=task, transforms=transforms, **given)
    if len(dataset) == 0:
        notes = f" ({len(dataset.warnings)} warning(s), the first: {dataset.warnings[0]})" \
            if dataset.warnings else ""
        raise DatasetError(f"0 images found: {dataset.source}{notes}")
    return dataset


def detect_format(path: str | Path) -> str:
    """The format of the dataset root or annotation file at ``path`` (the most specific
    registered layout that matches); ``UsageError`` when none does."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such dataset folder or file")
    entries = sorted(dataset_formats(), key=lambda e: e.meta["guess_rank"])
    for entry in entries:
        if entry.meta["recognize"](path):
            return entry.name
    raise UsageError(f"{path}: not a recognizable {', '.join(e.name for e in entries)} "
                     "dataset; give the format")


def find_splits(kind: str, path: str | Path, **options: Any) -> list[str]:
    """Splits present in the dataset at ``path`` (``[""]`` when it has a single one);
    ``DatasetError`` when it has none."""
    splits = dataset_formats().get(kind).meta["splits"](Path(path), _given(options))
    if not splits:
        raise DatasetError(f"{path}: no splits found in this {kind} dataset")
    return splits


def default_task(kind: str) -> str:
    """The task a format is read with for conversion, statistics and views: the richest
    that keeps every image (its ``read_task``)."""
    return dataset_formats().get(kind).meta["read_task"]


def format_options(kind: str, **options: Any) -> dict[str, Any]:
    """The ``options`` (not ``None``) that format ``kind`` takes; the others dropped."""
    takes = dataset_formats().get(kind).meta["options"]
    return {k: v for k, v in _given(options).items() if k in takes}


def open_split(kind: str, path: str | Path, split: str, task: str | None = None,
               **options: Any) -> Any:
    """Open one split (as listed by ``find_splits``) for conversion, statistics or checks;
    ``task`` defaults to ``default_task(kind)``."""
    return build_dataset(kind, path, split=split, task=task or default_task(kind), **options)
