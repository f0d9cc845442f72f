"""The dataset-format registry: one entry per format, registered next to its builder.

Each format module (``coco``, ``voc``, ``yolo``, ``maskfolder``, ``shapes``) decorates its
builder::

    @DATASET_FORMATS.register("coco", tasks=("detect", "instance", "semantic"),
                              read_task="instance", options=("ann_file", "images_dir"),
                              summary="...",
                              splits=coco_splits, recognize=looks_like_coco, guess_rank=10)
    def build_coco(root, split="val", task="detect", transforms=None, **options): ...

Metadata every entry carries:

- ``tasks``: the tasks the format can feed; ``read_task``: the one conversion, statistics
  and views read it with (the richest that keeps every image: ``detect`` for VOC, whose
  instance masks are optional); ``options``: the keyword options its builder
  takes (beyond ``root``, ``split``, ``task``, ``transforms``); ``summary``: one line for
  ``detseg dataset formats`` and help texts.
- ``splits(path, options) -> list[str]``: the splits present (``[""]`` for a single one).
- ``recognize(path) -> bool``: whether ``path`` (a folder or file) looks like this format;
  formats are tried in ``guess_rank`` order (the most specific layout first).

Loading: this module imports nothing heavy and does not import the format modules (they
import it). ``detseg.data.datasets.dataset_formats()`` imports the modules listed in
``detseg.data.datasets.FORMAT_MODULES`` on first use (they pull in torch), so
``import detseg.data`` stays light. Adding a format is one new module plus its name there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detseg.registry import Registry

DATASET_FORMATS: Registry[Callable[..., Any]] = Registry("dataset format")
