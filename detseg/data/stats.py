"""Dataset statistics: images, empty images, instances per class, sizes by COCO area range."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from detseg.data.base import RecordDataset
from detseg.data.datasets import detect_format, find_splits, format_options, open_split

# COCO's area ranges (pixels): small < 32^2 <= medium < 96^2 <= large
AREA_RANGES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e18))


def area_range(area: float) -> str:
    """COCO size bucket of an object area in pixels."""
    return next(name for name, lo, hi in AREA_RANGES if lo <= area < hi)


def split_stats(ds: RecordDataset) -> dict[str, Any]:
    """Counts for one split (from its annotations; no image is decoded)."""
    per_class: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    per_class_sizes: dict[str, Counter[str]] = {}
    empty = crowd = 0
    widths, heights = [], []
    for record in ds.records:
        widths.append(record.width)
        heights.append(record.height)
        if not record.instances:
            empty += 1
        for inst in record.instances:
            name = ds.class_names[inst.label]
            if inst.iscrowd:
                crowd += 1
                continue
            per_class[name] += 1
            bucket = area_range(inst.area)
            sizes[bucket] += 1
            per_class_sizes.setdefault(name, Counter())[bucket] += 1
    return {
        "images": len(ds.records),
        "empty_images": empty,
        "instances": sum(per_class.values()),
        "crowd": crowd,
        "per_class": {n: per_class.get(n, 0) for n in ds.class_names[1:]},
        "sizes": {name: sizes.get(name, 0) for name, _, _ in AREA_RANGES},
        "per_class_sizes": {n: {b: per_class_sizes.get(n, Counter()).get(b, 0)
                                for b, _, _ in AREA_RANGES} for n in ds.class_names[1:]},
        "image_size": {"min": [min(widths, default=0), min(heights, default=0)],
                       "max": [max(widths, default=0), max(heights, default=0)]},
        "left_out": ds.left_out,
        "warnings": list(ds.warnings),
    }


def dataset_stats(path: str | Path, kind: str | None = None, **options: Any) -> dict[str, Any]:
    """Statistics of every split of the dataset at ``path`` (format guessed unless given).

    ``options`` are the format's (``mask_type=``, ``images_dir=``, ...); a split without
    images raises ``DatasetError`` saying where it looked.
    """
    kind = kind or detect_format(path)
    splits = {}
    for split in find_splits(kind, path, **format_options(kind, **options)):
        splits[split or "all"] = split_stats(open_split(kind, path, split, **options))
    return {"path": str(path), "format": kind, "splits": splits}
