"""Image + mask folders: each image has a mask PNG with the same name (plus one suffix).

Folders: ``images/<split>/`` + ``masks/<split>/``, ``images/`` + ``masks/``, Penn-Fudan's
``PNGImages/`` + ``PedMasks/``, or any two folders given as ``images_dir`` / ``masks_dir``.
The mask of ``images/a/b.jpg`` is ``masks/a/b<suffix>.png`` (also ``.gif``, ``.bmp``,
``.tif``); the suffix (``""``, ``_mask``, ``_seg``, ``_label``, ``_gt``, ...) is the one
that matches the most images, unless ``mask_suffix`` forces it. Images without a mask are
skipped with one warning giving their count.

``mask_type`` says what the pixel values are, for every task:

- ``"class"``: class indices (0 = background, 255 = ignore), named by ``classes.txt`` (line
  ``i`` names value ``i``; beside the folders or in the masks folder). For detection tasks
  each 8-connected region of one class becomes an instance. Values ``classes.txt`` does not
  name are ignore (255) in semantic targets and skipped, with a warning, as objects.
- ``"instance"``: instance ids (0 = background, 255 = ignore, ``k`` = object ``k``), all of
  one class (the first foreground name of ``classes.txt``, else ``"object"``). As semantic
  targets they are one class: foreground = 1.

Default: ``"class"`` when ``classes.txt`` names two or more foreground classes, else
``"instance"`` (with a warning when there is no ``classes.txt`` at all).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detseg.data.base import (
    IGNORE_INDEX,
    TASKS,
    ImageRecord,
    Instance,
    RecordDataset,
    read_index_png,
)
from detseg.data.formats import DATASET_FORMATS
from detseg.data.io import IMAGE_SUFFIXES, image_size
from detseg.data.masks import encode_rle, region_box
from detseg.errors import DatasetError, ImageReadError

MASK_TYPES = ("class", "instance")
MASK_FILE_SUFFIXES = (".png", ".gif", ".bmp", ".tif", ".tiff")
FOLDER_PAIRS = (("images", "masks"), ("PNGImages", "PedMasks"))
_SUFFIX_STARTS = "_-. "
_LUT_SIZE = 1 << 16  # mask values are 8 or 16 bit


def read_class_names(path: Path) -> list[str]:
    """Non-empty lines of a ``classes.txt`` (line ``i`` names value ``i``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read class names ({err})") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def mask_folder_paths(root: Path, split: str, images_dir: str | Path | None = None,
                      masks_dir: str | Path | None = None) -> tuple[Path, Path]:
    """``(images folder, masks folder)``: the given ones, else the first pair of
    ``FOLDER_PAIRS`` found with split subfolders, else without."""
    tried = []
    for images, masks in FOLDER_PAIRS:
        for sub in ([split, ""] if split else [""]):
            pair = (Path(images_dir) if images_dir else root / images / sub,
                    Path(masks_dir) if masks_dir else root / masks / sub)
            if pair[0].is_dir() and pair[1].is_dir():
                return pair
            tried.append(f"{pair[0]} + {pair[1]}")
    raise DatasetError(f"no image and mask folders found (looked for "
                       f"{', '.join(dict.fromkeys(tried))})")


@dataclass
class MaskMatch:
    """Images paired with their masks; ``unmatched`` images have none."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)
    suffix: str = ""


def _files(folder: Path, suffixes: tuple[str, ...] | frozenset[str]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes
                  and not p.name.startswith(".") and p.is_file())


def _key(path: Path, folder: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def guess_suffix(image_keys: set[str], mask_keys: set[str]) -> str:
    """The mask-name suffix (``""``, ``"_mask"``, ...) pairing the most images with a mask;
    ``DatasetError`` when two suffixes pair equally many."""
    counts: Counter[str] = Counter()
    for key in mask_keys:
        name_start = key.rfind("/") + 1
        if key in image_keys:
            counts[""] += 1
        for i in range(name_start + 1, len(key)):
            if key[i] in _SUFFIX_STARTS and key[:i] in image_keys:
                counts[key[i:]] += 1
    best = max(counts.values(), default=0)
    winners = sorted(s for s, n in counts.items() if n == best)
    if not winners or "" in winners:
        return ""
    if len(winners) > 1:
        raise DatasetError(f"masks match the images equally well with the suffixes "
                           f"{', '.join(map(repr, winners))}; give mask_suffix")
    return winners[0]


def match_masks(images_dir: Path, masks_dir: Path, mask_suffix: str | None = None) -> MaskMatch:
    """Pair every image under ``images_dir`` with its mask under ``masks_dir``."""
    inner = masks_dir.resolve()
    if inner == images_dir.resolve():
        raise DatasetError(f"{images_dir}: images_dir and masks_dir are the same folder")
    masks = {_key(p, masks_dir): p for p in _files(masks_dir, MASK_FILE_SUFFIXES)}
    images = _files(images_dir, IMAGE_SUFFIXES)
    if images_dir.resolve() in inner.parents:  # masks/ inside images/: not images
        images = [p for p in images if inner not in p.resolve().parents]
    keys = {_key(p, images_dir) for p in images}
    suffix = guess_suffix(keys, set(masks)) if mask_suffix is None else mask_suffix
    match = MaskMatch(suffix=suffix)
    for path in images:
        mask = masks.get(_key(path, images_dir) + suffix)
        if mask is None:
            match.unmatched.append(path)
        else:
            match.pairs.append((path, mask))
    if images and not match.pairs:
        example = _key(images[0], images_dir)
        raise DatasetError(f"no mask in {masks_dir} matches an image of {images_dir} (looked "
                           f"for {example}{suffix}.png and {'/'.join(MASK_FILE_SUFFIXES[1:])}"
                           f"{'' if mask_suffix is not None else ', with any suffix'})")
    return match


def unmatched_warning(match: MaskMatch, images_dir: Path, masks_dir: Path) -> str:
    """One line: how many images have no mask, and which (the first few)."""
    total = len(match.pairs) + len(match.unmatched)
    names = ", ".join(p.name for p in match.unmatched[:3])
    more = ", ..." if len(match.unmatched) > 3 else ""
    return (f"{len(match.unmatched)} of {total} images in {images_dir} have no mask "
            f"NAME{match.suffix}.png in {masks_dir} ({names}{more}), skipped")


def find_class_names(root: Path, masks_dir: Path) -> Path | None:
    """The ``classes.txt`` of a mask folder: beside the folders, in or above the masks."""
    for path in (root / "classes.txt", masks_dir / "classes.txt",
                 masks_dir.parent / "classes.txt"):
        if path.is_file():
            return path
    return None


def resolve_mask_type(mask_type: str | None, names: list[str]) -> str:
    """The mask type to read: the given one, else from ``classes.txt`` (module docstring)."""
    if mask_type is None:
        return "class" if len(names) > 2 else "instance"
    if mask_type not in MASK_TYPES:
        raise DatasetError(f"mask_type must be one of {', '.join(MASK_TYPES)}, "
                           f"got {mask_type!r}")
    return mask_type


def instances_from_mask(values: np.ndarray, mask_type: str,
                        num_classes: int | None = None) -> tuple[list[Instance], list[int]]:
    """Instances of one mask (one per instance id, or one per connected region of a class)
    and the class value of each region left out for being ``num_classes`` or more."""
    instances = []
    unknown = []
    for value in np.unique(values):
        if value == 0 or value == IGNORE_INDEX:
            continue
        if mask_type == "instance":
            m = values == value
            instances.append(Instance(box=region_box(m), label=1, area=float(m.sum()),
                                      mask_value=int(value)))
            continue
        n, labels = cv2.connectedComponents((values == value).astype(np.uint8), connectivity=8)
        if num_classes is not None and value >= num_classes:
            unknown += [int(value)] * (n - 1)
            continue
        for k in range(1, n):
            m = labels == k
            instances.append(Instance(box=region_box(m), label=int(value), area=float(m.sum()),
                                      segmentation=encode_rle(m)))
    return instances, unknown


def semantic_lut(mask_type: str, num_classes: int) -> np.ndarray:
    """Mask value -> semantic class: instance ids become 1 (foreground); class values of
    ``num_classes`` or more become ignore (255), as 255 itself stays."""
    if mask_type == "instance":
        lut = np.ones(_LUT_SIZE, np.int64)
        lut[0] = 0
    else:
        lut = np.full(_LUT_SIZE, IGNORE_INDEX, np.int64)
        lut[:num_classes] = np.arange(num_classes)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


class MaskFolderDataset(RecordDataset):
    """Images with class-index or instance-id masks (see the module docstring).

    Attributes beyond ``RecordDataset``'s: ``images_dir``, ``masks_dir``, ``mask_suffix``
    (the suffix used), ``mask_type`` (the type read).
    """

    def __init__(self, root: str | Path, split: str = "val", task: str = "semantic",
                 transforms: Callable | None = None, mask_type: str | None = None,
                 mask_suffix: str | None = None, images_dir: str | Path | None = None,
                 masks_dir: str | Path | None = None) -> None:
        root = Path(root)
        self.images_dir, self.masks_dir = mask_folder_paths(root, split, images_dir, masks_dir)
        classes_file = find_class_names(root, self.masks_dir)
        names = read_class_names(classes_file) if classes_file else []
        self.mask_type = resolve_mask_type(mask_type, names)
        warnings = []
        if classes_file is None and mask_type is None:
            warnings.append(f"{root}: no classes.txt; mask values read as instance ids of one "
                            "class (give mask_type='class' for class indices)")
        match = match_masks(self.images_dir, self.masks_dir, mask_suffix)
        self.mask_suffix = match.suffix
        if match.unmatched:
            warnings.append(unmatched_warning(match, self.images_dir, self.masks_dir))
        records = []
        unknown: Counter[int] = Counter()  # class value -> regions skipped
        unknown_images = 0
        for k, (path, mask_path) in enumerate(match.pairs):
            try:
                record, values = self._record(path, mask_path, k + 1, task, len(names) or None)
            except (ImageReadError, DatasetError) as err:
                warnings.append(f"{err}, image skipped")
                continue
            records.append(record)
            unknown.update(values)
            unknown_images += bool(values)
        if unknown:
            warnings.append(f"{self.masks_dir}: class values {', '.join(map(str, sorted(unknown)))}"
                            f" are not in {classes_file} ({len(names)} classes): "
                            f"{unknown.total()} regions in {unknown_images} image(s) skipped")
        fg = self._foreground_names(names, records, task)
        super().__init__(records, fg, list(range(1, len(fg) + 1)), task=task,
                         transforms=transforms,
                         semantic_lut=semantic_lut(self.mask_type, len(fg) + 1),
                         source=f"{self.images_dir} holds no image with a readable mask")
        self.warnings = warnings
        self.left_out = unknown.total()

    def _record(self, path: Path, mask_path: Path, image_id: int, task: str,
                num_classes: int | None) -> tuple[ImageRecord, list[int]]:
        """One image's record and the unknown class values of its mask."""
        width, height = image_size(path)
        record = ImageRecord(path=path, image_id=image_id, width=width, height=height,
                             file_name=path.relative_to(self.images_dir).as_posix())
        if task == "semantic":
            record.semantic_png = mask_path
            return record, []
        values = read_index_png(mask_path)
        if values.shape != (height, width):
            raise DatasetError(f"{mask_path}: mask is {values.shape[1]}x{values.shape[0]}, "
                               f"image is {width}x{height}")
        record.instances, unknown = instances_from_mask(values, self.mask_type, num_classes)
        if self.mask_type == "instance":
            record.instance_png = mask_path
        return record, unknown

    def _foreground_names(self, names: list[str], records: list[ImageRecord],
                          task: str) -> list[str]:
        if self.mask_type == "instance":
            return names[1:2] or ["object"]
        if names:
            return names[1:] or ["object"]
        if task == "semantic":  # no classes.txt: the largest value found names the count
            pngs = [r.semantic_png for r in records if r.semantic_png is not None]
            top = max((int(v) for png in pngs for v in np.unique(read_index_png(png))
                       if v != IGNORE_INDEX), default=0)
        else:
            top = max((i.label for r in records for i in r.instances), default=0)
        return [f"class{i}" for i in range(1, max(top, 1) + 1)]


def mask_splits(path: Path, options: dict[str, Any]) -> list[str]:
    """Splits of a mask folder: subfolders present in both folders of a pair, else one."""
    if "images_dir" in options or "masks_dir" in options:
        return [""]
    for images, masks in FOLDER_PAIRS:
        if (path / images).is_dir() and (path / masks).is_dir():
            subs = sorted(p.name for p in (path / images).iterdir()
                          if p.is_dir() and (path / masks / p.name).is_dir())
            return subs or [""]
    return [""]


def looks_like_mask_folder(path: Path) -> bool:
    """A folder holding one of the ``FOLDER_PAIRS``."""
    return path.is_dir() and any((path / i).is_dir() and (path / m).is_dir()
                                 for i, m in FOLDER_PAIRS)


@DATASET_FORMATS.register(
    "masks", tasks=TASKS, read_task="instance",
    options=("images_dir", "masks_dir", "mask_type", "mask_suffix"), splits=mask_splits,
    recognize=looks_like_mask_folder, guess_rank=40,
    summary="image + mask folders: images/<split>/ + masks/<split>/ (NAME[_suffix].png, class "
            "indices + classes.txt, or instance ids)")
def build_masks(root: str | Path, split: str = "val", task: str = "semantic",
                transforms: Callable | None = None, **options: Any) -> MaskFolderDataset:
    """A ``MaskFolderDataset`` (options ``images_dir``, ``masks_dir``, ``mask_type``,
    ``mask_suffix``)."""
    return MaskFolderDataset(root, split, task, transforms, **options)
