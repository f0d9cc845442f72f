"""YOLO (Ultralytics) layout: ``images/`` + ``labels/`` text files, names from a YAML file.

A label line is ``class cx cy w h`` (a box) or ``class x1 y1 x2 y2 ...`` (a polygon), all
normalized to [0, 1] by the image width and height; a polygon's box is its extent. An image
without a label file (or with an empty one) has no objects. Lines that do not parse, hold a
non-finite number, name an unknown class or leave the image are skipped into ``warnings``
with ``file:line`` (and counted in ``left_out``).

The YAML file (``data.yaml``, ``data.yml``, ``dataset.yaml``, the only ``*.yaml`` of the
folder, or any file given directly) gives:

- ``names``: a list (line class ``i`` is ``names[i]``) or a mapping ``{id: name}``. Ids
  ``0..K-1`` read like a list; any other ids (``{1: person, 3: car, 90: toothbrush}``) are
  what the label lines carry and are kept as the category ids (never remapped by position).
- ``coco_category_ids`` (written by detseg): the COCO ids of the classes, in ``names`` order.
- the splits: ``train``, ``val``, ``test`` or any other key whose value is a folder, a
  ``.txt`` list of images or a list of those, relative to ``path`` (itself relative to the
  YAML's folder; when it does not exist, the YAML's folder is used, as for a moved dataset).

Without a YAML file, ``images/<split>/`` + ``labels/<split>/`` + ``classes.txt`` are read.
YAML is read without aliases and with bounded size and types, so a hostile file cannot
blow up memory ("billion laughs").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from detseg.data.base import TASKS, ImageRecord, Instance, RecordDataset
from detseg.data.formats import DATASET_FORMATS
from detseg.data.io import IMAGE_SUFFIXES, image_size
from detseg.errors import DatasetError, ImageReadError

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
MAX_YAML_BYTES = 2 << 20
MAX_CLASSES = 100_000
# keys of a data YAML that are not splits
_META_KEYS = frozenset({"path", "names", "nc", "download", "coco_category_ids", "label_format",
                        "kpt_shape", "flip_idx", "channels", "yaml_file", "roboflow"})


@dataclass
class YoloLine:
    """One parsed label line: training label (1..K), box in pixels, polygon in pixels (or
    ``None``)."""

    label: int
    box: tuple[float, float, float, float]
    polygon: list[float] | None


@dataclass
class YoloClasses:
    """The classes of a YOLO dataset: ``names[k]`` has line id ``line_ids[k]`` and COCO
    category id ``category_ids[k]``."""

    names: list[str]
    line_ids: list[int]
    category_ids: list[int]

    def label_of(self) -> dict[int, int]:
        """Line class id -> training label 1..K."""
        return {line_id: k + 1 for k, line_id in enumerate(self.line_ids)}


class _NoAliasLoader(yaml.SafeLoader):
    """``SafeLoader`` refusing aliases (``*name``): a few lines of aliases can expand to
    gigabytes, and dataset files have no need for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted in dataset files", mark)
        return super().compose_node(parent, index)


def find_yaml(root: Path) -> Path | None:
    """The dataset YAML of ``root`` (a YAML file itself, or a folder holding one)."""
    if root.is_file():
        return root if root.suffix in (".yaml", ".yml") else None
    for name in YAML_NAMES:
        if (root / name).is_file():
            return root / name
    found = sorted(p for p in root.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    if len(found) > 1:
        raise DatasetError(f"{root}: several YAML files ({', '.join(p.name for p in found)}); "
                           "give the dataset's one directly")
    return found[0] if found else None


def load_data_yaml(path: Path) -> dict[str, Any]:
    """A dataset YAML as a mapping; ``DatasetError`` naming it when it is too big, uses
    aliases, does not parse or is not a mapping."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise DatasetError(f"{path}: {size} bytes; a dataset YAML is at most "
                               f"{MAX_YAML_BYTES} bytes")
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader) or {}
    except RecursionError as err:
        raise DatasetError(f"{path}: YAML nested too deeply") from err
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DatasetError(f"{path}: cannot read YAML ({err})".replace("\n", " ")) from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping at the top level, got a "
                           f"{type(data).__name__}")
    return data


def _name(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DatasetError(f"{where}: a class name must be text, got a {type(value).__name__}")
    return str(value)


def _int_id(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DatasetError(f"{where}: class id {value!r} is not an integer >= 0")
    return value


def yaml_classes(data: dict[str, Any], path: Path) -> YoloClasses:
    """The classes a dataset YAML declares (see the module docstring)."""
    names = data.get("names")
    where = f"{path}: names"
    if isinstance(names, list | dict) and len(names) > MAX_CLASSES:
        raise DatasetError(f"{where}: {len(names)} classes; at most {MAX_CLASSES}")
    if isinstance(names, dict):
        pairs = sorted((_int_id(k, where), _name(v, where)) for k, v in names.items())
        line_ids = [k for k, _ in pairs]
        labels = [n for _, n in pairs]
    elif isinstance(names, list):
        labels = [_name(v, where) for v in names]
        line_ids = list(range(len(labels)))
    elif names is None:
        count = data.get("nc", 0)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_CLASSES:
            raise DatasetError(f"{path}: nc {count!r} is not a class count")
        labels = [f"class{i}" for i in range(count)]
        line_ids = list(range(count))
    else:
        raise DatasetError(f"{where}: expected a list or a mapping, got a "
                           f"{type(names).__name__}")
    positional = line_ids == list(range(len(line_ids)))
    given = data.get("coco_category_ids")
    if given is not None:
        if not isinstance(given, list) or len(given) != len(labels):
            raise DatasetError(f"{path}: coco_category_ids and names differ in length")
        cat_ids = [_int_id(v, f"{path}: coco_category_ids") for v in given]
    else:
        cat_ids = [k + 1 for k in line_ids] if positional else list(line_ids)
    return YoloClasses(labels, line_ids, cat_ids)


def _entries(value: Any) -> list[str] | None:
    """A split value's entries (a string or a list of strings), else ``None``."""
    items = value if isinstance(value, list) else [value]
    return [str(v) for v in items] if items and all(isinstance(v, str) for v in items) \
        else None


def _all_resolve(base: Path, value: Any) -> bool:
    """Whether ``value`` is a split value (``_entries``) whose every entry exists (``_resolve``)."""
    entries = _entries(value)
    return entries is not None and all(_resolve(base, e) for e in entries)


def _resolve(base: Path, entry: str) -> Path | None:
    """A split entry as an existing path: relative to ``base`` (Roboflow's ``../x`` also
    tried inside ``base``), or ``None``."""
    path = Path(entry)
    tries = [path] if path.is_absolute() else [base / path]
    if not path.is_absolute() and entry.startswith("../"):
        tries.append(base / entry[3:])
    return next((p for p in tries if p.exists()), None)


def split_images(base: Path, entry: Any, where: str) -> list[Path]:
    """Images of a split entry: a folder (recursive), a ``.txt`` list, or a list of those."""
    entries = _entries(entry)
    if entries is None:
        raise DatasetError(f"{where}: expected a folder, a .txt list or a list of those")
    images: list[Path] = []
    for item in entries:
        path = _resolve(base, item)
        if path is not None and path.is_dir():
            images += sorted((p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                              and not p.name.startswith(".")),
                             key=lambda p: p.relative_to(path).as_posix())
        elif path is not None and path.suffix == ".txt":
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    p = Path(line.strip())
                    images.append(p if p.is_absolute() else (path.parent / p).resolve())
        else:
            raise DatasetError(f"{where}: {base / item} is not a folder or .txt list of images")
    return images


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_label_line(line: str, width: int, height: int, label_of: dict[int, int]) -> YoloLine:
    """One label line -> ``YoloLine``; raises ``ValueError`` saying what is wrong.

    ``label_of`` maps the line class ids the YAML declares to training labels 1..K.
    """
    values = line.split()
    try:
        cls = int(values[0])
        nums = [float(v) for v in values[1:]]
    except (ValueError, IndexError) as err:
        raise ValueError(f"not numbers: {line.strip()[:80]!r}") from err
    if not all(math.isfinite(v) for v in nums):
        raise ValueError(f"non-finite number (NaN or inf): {line.strip()[:80]!r}")
    if cls not in label_of:
        raise ValueError(f"class {cls} is not in names")
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
    return YoloLine(label_of[cls], box, polygon)


@dataclass
class YoloSplit:
    """One split of a YOLO tree: its images, classes, what was looked at, and notes."""

    images: list[Path]
    classes: YoloClasses
    source: str
    notes: list[str]


def _yaml_base(data: dict[str, Any], yaml_path: Path, notes: list[str]) -> Path:
    given = data.get("path")
    if not given:
        return yaml_path.parent
    base = Path(str(given))
    base = base if base.is_absolute() else yaml_path.parent / base
    if not base.is_dir():
        notes.append(f"{yaml_path}: path {given} not found; read relative to the YAML's folder")
        return yaml_path.parent
    return base


def yaml_splits(data: dict[str, Any], base: Path) -> list[str]:
    """Split keys of a dataset YAML: ``train``, ``val``, ``test``, then any other key whose
    entries exist under ``base``; a key repeating an earlier one's value is left out."""
    keys = [k for k in ("train", "val", "test") if data.get(k)]
    keys += sorted(str(k) for k in data if k not in _META_KEYS and k not in keys
                   and _all_resolve(base, data[k]))
    out: list[str] = []
    for key in keys:
        if all(data[key] != data[k] for k in out):
            out.append(key)
    return out


def yolo_split(root: str | Path, split: str) -> YoloSplit:
    """Images and classes of one split of the YOLO tree (or YAML file) ``root``."""
    root = Path(root)
    yaml_path = find_yaml(root)
    notes: list[str] = []
    if yaml_path is not None:
        data = load_data_yaml(yaml_path)
        base = _yaml_base(data, yaml_path, notes)
        if not data.get(split):
            raise DatasetError(f"{yaml_path}: no {split!r} entry (splits: "
                               f"{', '.join(yaml_splits(data, base)) or 'none'})")
        images = split_images(base, data[split], f"{yaml_path}: {split}")
        return YoloSplit(images, yaml_classes(data, yaml_path),
                         f"{yaml_path}: split {split!r} ({data[split]}) holds no images", notes)
    folder = root / "images" / split if split else root / "images"
    if not folder.is_dir():
        raise DatasetError(f"{root}: no data.yaml and no {folder.relative_to(root)} folder")
    classes = root / "classes.txt"
    names = [ln.strip() for ln in classes.read_text(encoding="utf-8").splitlines()
             if ln.strip()] if classes.is_file() else []
    if not names:
        raise DatasetError(f"{root}: no data.yaml or classes.txt naming the classes")
    images = split_images(root, str(folder), str(root))
    return YoloSplit(images, YoloClasses(names, list(range(len(names))),
                                         list(range(1, len(names) + 1))),
                     f"{folder} holds no images", notes)


def read_label_lines(labels: Path, warnings: list[str]) -> list[str]:
    """The lines of a label file (none when it is missing or unreadable, with a warning)."""
    if not labels.is_file():
        return []
    try:
        return labels.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        warnings.append(f"{labels}: cannot read labels ({err}), image kept without objects")
        return []


class YoloDataset(RecordDataset):
    """A YOLO tree (see the module docstring). Bad label lines are skipped into ``warnings``."""

    def __init__(self, root: str | Path, split: str = "val", task: str = "detect",
                 transforms: Callable | None = None) -> None:
        found = yolo_split(root, split)
        label_of = found.classes.label_of()
        warnings = list(found.notes)
        records = []
        left_out = 0
        for k, path in enumerate(found.images):
            try:
                width, height = image_size(path)
            except ImageReadError as err:
                warnings.append(f"{err}, image skipped")
                continue
            record = ImageRecord(path=path, image_id=k + 1, width=width, height=height,
                                 file_name=path.name)
            labels = label_path(path)
            for n, line in enumerate(read_label_lines(labels, warnings), start=1):
                if not line.strip():
                    continue
                try:
                    parsed = parse_label_line(line, width, height, label_of)
                except ValueError as err:
                    warnings.append(f"{labels}:{n}: {err}, skipped")
                    left_out += 1
                    continue
                x0, y0, x1, y1 = parsed.box
                area = _polygon_area(parsed.polygon) if parsed.polygon else (x1 - x0) * (y1 - y0)
                record.instances.append(Instance(
                    box=(max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)),
                    label=parsed.label, area=area,
                    segmentation=[parsed.polygon] if parsed.polygon else None))
            records.append(record)
        super().__init__(records, found.classes.names, found.classes.category_ids, task=task,
                         transforms=transforms, source=found.source)
        self.warnings = warnings
        self.left_out = left_out
        self.split_root = _common_root([r.path for r in records])
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


def yolo_splits(path: Path, options: dict[str, Any]) -> list[str]:
    """Splits of a YOLO tree: the YAML's split keys, else the folders under ``images/``."""
    yaml_path = find_yaml(path)
    if yaml_path is not None:
        data = load_data_yaml(yaml_path)
        return yaml_splits(data, _yaml_base(data, yaml_path, []))
    folder = path / "images"
    subs = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return subs or [""]


def looks_like_yolo(path: Path) -> bool:
    """A YAML file, or a folder with a dataset YAML or ``images/`` + ``labels/``."""
    if path.is_file():
        return path.suffix in (".yaml", ".yml")
    return any((path / n).is_file() for n in YAML_NAMES) or (
        (path / "images").is_dir() and (path / "labels").is_dir())


@DATASET_FORMATS.register(
    "yolo", tasks=TASKS, read_task="instance", options=(), splits=yolo_splits,
    recognize=looks_like_yolo, guess_rank=30,
    summary="YOLO: images/<split>/ + labels/<split>/*.txt + data.yaml (or any YAML file given "
            "directly)")
def build_yolo(root: str | Path, split: str = "val", task: str = "detect",
               transforms: Callable | None = None) -> YoloDataset:
    """A ``YoloDataset``."""
    return YoloDataset(root, split, task, transforms)
