"""YOLO (Ultralytics) layout: ``images/`` + ``labels/`` text files, names from ``data.yaml``.

A label line is ``class cx cy w h`` (a box) or ``class x1 y1 x2 y2 ...`` (a polygon), all
normalized to [0, 1] by the image width and height; a polygon's box is its extent. An image
without a label file (or with an empty one) has no objects. ``data.yaml`` gives ``names``
(list or ``{index: name}``), the split entries (folder, list of folders, or ``.txt`` list of
images, relative to ``path`` or to the YAML's folder) and, when detseg wrote it,
``coco_category_ids`` (the COCO ids of the classes, so a round trip keeps them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from detseg.data.base import ImageRecord, Instance, RecordDataset
from detseg.data.io import IMAGE_SUFFIXES, image_size
from detseg.errors import DatasetError, ImageReadError


@dataclass
class YoloLine:
    """One parsed label line: class index, box in pixels, polygon in pixels (or ``None``)."""

    cls: int
    box: tuple[float, float, float, float]
    polygon: list[float] | None


def find_yaml(root: Path) -> Path | None:
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return root
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (root / name).is_file():
            return root / name
    return None


def load_data_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DatasetError(f"{path}: cannot read YAML ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping")
    return data


def names_from_yaml(data: dict[str, Any]) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return [f"class{i}" for i in range(int(data.get("nc", 0)))]


def split_images(base: Path, entry: Any) -> list[Path]:
    """Images of a split entry: a folder (recursive), a ``.txt`` list, or a list of those."""
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        path = Path(str(item))
        path = path if path.is_absolute() else base / path
        if path.is_dir():
            images += sorted((p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES),
                             key=lambda p: p.relative_to(path).as_posix())
        elif path.is_file() and path.suffix == ".txt":
            for line in path.read_text().splitlines():
                if line.strip():
                    p = Path(line.strip())
                    images.append(p if p.is_absolute() else (path.parent / p).resolve())
        else:
            raise DatasetError(f"{path}: split folder or list not found")
    return images


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_label_line(line: str, width: int, height: int, num_classes: int) -> YoloLine:
    """One label line -> ``YoloLine``; raises ``ValueError`` saying what is wrong."""
    values = line.split()
    try:
        cls = int(values[0])
        nums = [float(v) for v in values[1:]]
    except (ValueError, IndexError) as err:
        raise ValueError(f"not numbers: {line.strip()!r}") from err
    if not 0 <= cls < num_classes:
        raise ValueError(f"class {cls} outside 0..{num_classes - 1}")
    if len(nums) == 4:
        cx, cy, w, h = nums
        if w <= 0 or h <= 0:
            raise ValueError(f"box of zero or negative size ({w} x {h})")
        box = ((cx - w / 2) * width, (cy - h / 2) * height,
               (cx + w / 2) * width, (cy + h / 2) * height)
        polygon = None
    elif len(nums) >= 6 and len(nums) % 2 == 0:
        xs = [v * width for v in nums[0::2]]
        ys = [v * height for v in nums[1::2]]
        polygon = [c for xy in zip(xs, ys, strict=True) for c in xy]
        box = (min(xs), min(ys), max(xs), max(ys))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError("polygon of zero area")
    else:
        raise ValueError(f"{len(nums)} coordinates (expected 4, or an even number >= 6)")
    if min(nums) < -1e-6 or max(nums) > 1 + 1e-6:
        raise ValueError("coordinates outside 0..1 (outside the image)")
    return YoloLine(cls, box, polygon)


def yolo_split_images(root: str | Path, split: str) -> tuple[list[Path], list[str], list[int]]:
    """``(images, class names, category ids)`` of one split of a YOLO tree."""
    root = Path(root)
    yaml_path = find_yaml(root)
    if yaml_path is not None:
        data = load_data_yaml(yaml_path)
        base = Path(str(data.get("path", ""))) if data.get("path") else yaml_path.parent
        if not base.is_absolute():
            base = yaml_path.parent / base
        if split not in data:
            raise DatasetError(f"{yaml_path}: no {split!r} entry (has: "
                               f"{', '.join(k for k in ('train', 'val', 'test') if k in data)})")
        images = split_images(base, data[split])
        names = names_from_yaml(data)
        cat_ids = [int(c) for c in data.get("coco_category_ids", [])] or \
            list(range(1, len(names) + 1))
        if len(cat_ids) != len(names):
            raise DatasetError(f"{yaml_path}: coco_category_ids and names differ in length")
        return images, names, cat_ids
    folder = root / "images" / split
    if not folder.is_dir():
        raise DatasetError(f"{root}: no data.yaml and no images/{split} folder")
    images = split_images(root, folder)
    classes = root / "classes.txt"
    names = [ln.strip() for ln in classes.read_text().splitlines() if ln.strip()] \
        if classes.is_file() else []
    if not names:
        raise DatasetError(f"{root}: no data.yaml or classes.txt naming the classes")
    return images, names, list(range(1, len(names) + 1))


class YoloDataset(RecordDataset):
    """A YOLO tree (see the module docstring). Bad label lines are skipped into ``warnings``."""

    def __init__(self, root: str | Path, split: str = "val", task: str = "detect",
                 transforms: Callable | None = None) -> None:
        images, names, cat_ids = yolo_split_images(root, split)
        warnings: list[str] = []
        records = []
        for k, path in enumerate(images):
            try:
                width, height = image_size(path)
            except ImageReadError as err:
                warnings.append(f"{err}, image skipped")
                continue
            record = ImageRecord(path=path, image_id=k + 1, width=width, height=height,
                                 file_name=path.name)
            labels = label_path(path)
            lines = labels.read_text().splitlines() if labels.is_file() else []
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    parsed = parse_label_line(line, width, height, len(names))
                except ValueError as err:
                    warnings.append(f"{labels}:{n}: {err}, skipped")
                    continue
                x0, y0, x1, y1 = parsed.box
                area = _polygon_area(parsed.polygon) if parsed.polygon else (x1 - x0) * (y1 - y0)
                record.instances.append(Instance(
                    box=(max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)),
                    label=parsed.cls + 1, area=area,
                    segmentation=[parsed.polygon] if parsed.polygon else None))
            records.append(record)
        super().__init__(records, names, cat_ids, task=task, transforms=transforms)
        self.warnings = warnings
        self.split_root = _common_root(images)
        for record in self.records:
            if self.split_root is not None:
                record.file_name = record.path.relative_to(self.split_root).as_posix()


def _polygon_area(flat: list[float]) -> float:
    """Shoelace area of a flat ``[x1, y1, x2, y2, ...]`` polygon (pixels)."""
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def _common_root(paths: list[Path]) -> Path | None:
    if not paths:
        return None
    parents = [p.parent for p in paths]
    root = parents[0]
    while not all(root == p or root in p.parents for p in parents):
        root = root.parent
    return root
