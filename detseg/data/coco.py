"""COCO instances JSON: boxes, labels, polygon and RLE masks, crowd regions, empty images.

Layouts found from a root folder and a split ``S``: the annotation file
``annotations/instances_S.json`` (or ``instances_S2017.json``, ``instances_S.json`` beside
the root, Roboflow's ``S/_annotations.coco.json``), the images in the first of ``S/``,
``S2017/``, ``images/S/``, ``images/S2017/``, ``images/``, the root, that holds the files
the JSON lists. The annotation file can be given directly: the folder above
``annotations/`` (else the file's folder) is then the root, and ``S`` comes from the file
name (``instances_train2017.json`` -> ``train2017``, also tried as ``train``).

Category ids (often not contiguous) map to training labels 1..K in sorted id order;
``category_ids`` keeps the way back for writing COCO results. Annotations with an unknown
image or category, a box that is not four finite numbers or is empty inside the image, a
non-finite area or an invalid segmentation are skipped into ``warnings`` (and left out of
``to_coco``, the evaluation ground truth).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detseg.data.base import TASKS, ImageRecord, Instance, RecordDataset, safe_join
from detseg.data.formats import DATASET_FORMATS
from detseg.data.masks import segmentation_problem
from detseg.errors import DatasetError

_PROBES = 8  # listed file names tried when looking for the image folder


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read a COCO instances file; ``DatasetError`` naming it when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError as err:
        raise DatasetError(f"{path}: not a COCO instances file (JSON nested too deeply)") \
            from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a COCO instances file (the top level is a JSON "
                           f"{type(data).__name__}, not an object)")
    if not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO instances file (no 'images' list)")
    for key in ("annotations", "categories"):
        data.setdefault(key, [])
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: not a COCO instances file ('{key}' is not a list)")
    for key in ("images", "annotations", "categories"):
        if not all(isinstance(item, dict) for item in data[key]):
            raise DatasetError(f"{path}: not a COCO instances file ('{key}' holds entries "
                               "that are not objects)")
    return data


def split_of_file(ann_file: Path) -> str:
    """The split an annotation file names: ``instances_val2017.json`` -> ``val2017``."""
    return ann_file.stem.removeprefix("instances_") if ann_file.stem.startswith(
        "instances_") else ""


def _root_of_file(ann_file: Path) -> Path:
    return ann_file.parent.parent if ann_file.parent.name == "annotations" else ann_file.parent


def annotation_candidates(root: Path, split: str) -> list[Path]:
    """Where a split's annotation file is looked for under ``root``, in order."""
    return [root / "annotations" / f"instances_{split}.json",
            root / "annotations" / f"instances_{split}2017.json",
            root / f"instances_{split}.json",
            root / split / "_annotations.coco.json"]


def image_dir_candidates(root: Path, split: str) -> list[Path]:
    """Where a split's images are looked for under ``root``, in order."""
    names = [split, split[:-4] if split.endswith("2017") else f"{split}2017"] if split else []
    found = [root / n for n in names] + [root / "images" / n for n in names] \
        + [root / "images", root]
    return list(dict.fromkeys(found))


def _holds(folder: Path, names: list[str]) -> bool:
    for name in names:
        try:
            if safe_join(folder, name).is_file():
                return True
        except DatasetError:
            continue
    return False


def find_annotation_file(root: str | Path, split: str,
                         ann_file: str | Path | None = None) -> tuple[Path, Path, str]:
    """``(annotation file, root, split)`` of a COCO tree, ``root`` and ``split`` being where
    its images are looked for (from the file's place and name when ``root`` is the file)."""
    root = Path(root)
    if ann_file is None and root.is_file():
        return root, _root_of_file(root), split_of_file(root) or split
    if ann_file is not None:
        return Path(ann_file), root, split
    candidates = annotation_candidates(root, split)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DatasetError(f"{root}: no COCO annotation file for split {split!r} "
                           f"(looked for {', '.join(str(c) for c in candidates)})")
    return found, root, split


def find_image_dir(root: Path, split: str, data: dict[str, Any], ann_file: Path) -> Path:
    """The first of ``image_dir_candidates`` holding one of the first files ``data`` lists;
    ``DatasetError`` saying what was looked for when none does."""
    names = [str(img.get("file_name", "")) for img in data["images"][:_PROBES]]
    candidates = image_dir_candidates(root, split)
    if not names:
        return next((c for c in candidates if c.is_dir()), root)
    for folder in candidates:
        if _holds(folder, names):
            return folder
    raise DatasetError(f"{ann_file}: cannot find the images it lists (looked for "
                       f"{names[0]!r} in {', '.join(str(c) for c in candidates)}); "
                       "give images_dir")


def locate_coco(root: str | Path, split: str, ann_file: str | Path | None = None,
                images_dir: str | Path | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """``(annotation file, image folder, parsed JSON)`` of a COCO tree (module docstring)."""
    ann_path, image_root, image_split = find_annotation_file(root, split, ann_file)
    data = load_coco_json(ann_path)
    if images_dir is None:
        return ann_path, find_image_dir(image_root, image_split, data, ann_path), data
    if not Path(images_dir).is_dir():
        raise DatasetError(f"images_dir {images_dir}: no such folder")
    return ann_path, Path(images_dir), data


def _is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite number (or a string of one); bools are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _parse_images(data: dict[str, Any], images_dir: Path, where: str,
                  warnings: list[str]) -> dict[int, ImageRecord]:
    records: dict[int, ImageRecord] = {}
    for img in data["images"]:
        try:
            image_id, name = int(img["id"]), str(img["file_name"])
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"{where}: image entry {str(img)[:80]} lacks a valid id or "
                               "file_name") from err
        if image_id in records:
            warnings.append(f"{where}: image id {image_id} appears again ({name}), skipped")
            continue
        try:
            path = safe_join(images_dir, name)
        except DatasetError as err:
            raise DatasetError(f"{where}: image id {image_id}: {err}") from err
        width, height = (max(int(float(v)), 0) if _is_finite_number(v) else 0
                         for v in (img.get("width"), img.get("height")))
        records[image_id] = ImageRecord(path=path, image_id=image_id, width=width,
                                        height=height, file_name=name)
    return records


def _annotation_problem(ann: dict[str, Any], record: ImageRecord) -> str | None:
    """Why an annotation cannot be used (box, area, segmentation), or ``None``."""
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_finite_number, bbox))):
        return f"bbox {json.dumps(bbox)[:60]} is not 4 finite numbers [x, y, w, h]"
    area = ann.get("area", 0)
    if not (_is_finite_number(area) and float(area) >= 0):
        return f"area {json.dumps(area)[:30]} is not a finite number >= 0"
    segm = ann.get("segmentation")
    if segm:
        problem = segmentation_problem(segm, record.height, record.width)
        if problem:
            return f"segmentation: {problem}"
    return None


def parse_coco(data: dict[str, Any], images_dir: Path, warnings: list[str],
               where: str = "annotations") -> tuple[list[ImageRecord], list[str], list[int],
                                                    list[int]]:
    """COCO dict -> records, class names, category ids (sorted by id) and the indices of
    the annotations kept.

    Refuses file names that leave ``images_dir``; skips (with a warning naming ``where`` and
    the annotation id) what the module docstring lists.
    """
    for cat in data["categories"]:
        if isinstance(cat.get("id"), bool) or not isinstance(cat.get("id"), int):
            raise DatasetError(f"{where}: category entry {str(cat)[:80]} lacks an integer id")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: k + 1 for k, c in enumerate(cats)}
    records = _parse_images(data, images_dir, where, warnings)
    kept = []
    for index, ann in enumerate(data["annotations"]):
        aid = ann.get("id")
        record = records.get(ann.get("image_id"))
        label = label_of.get(ann.get("category_id"))
        if record is None or label is None:
            what = "image" if record is None else "category"
            warnings.append(f"{where}: annotation {aid}: unknown {what}, skipped")
            continue
        problem = _annotation_problem(ann, record)
        if problem:
            warnings.append(f"{where}: annotation {aid}: {problem}, skipped")
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if record.width and record.height:
            x0, y0 = min(max(x, 0.0), record.width), min(max(y, 0.0), record.height)
            x1, y1 = min(max(x + w, 0.0), record.width), min(max(y + h, 0.0), record.height)
        else:
            x0, y0, x1, y1 = x, y, x + w, y + h
        if x1 <= x0 or y1 <= y0:
            warnings.append(f"{where}: annotation {aid}: empty box, skipped")
            continue
        record.instances.append(Instance(
            box=(x0, y0, x1, y1), label=label, iscrowd=int(bool(ann.get("iscrowd", 0))),
            area=float(ann.get("area", w * h)), segmentation=ann.get("segmentation") or None,
            source_id=aid))
        kept.append(index)
    names = [str(c.get("name", c["id"])) for c in cats]
    return list(records.values()), names, [c["id"] for c in cats], kept


class CocoDataset(RecordDataset):
    """A COCO instances file plus its image folder (see ``locate_coco`` for the defaults)."""

    def __init__(self, root: str | Path, split: str = "val", task: str = "detect",
                 transforms: Callable | None = None, ann_file: str | Path | None = None,
                 images_dir: str | Path | None = None) -> None:
        self.ann_file, self.images_dir, self.coco = locate_coco(root, split, ann_file,
                                                                images_dir)
        warnings: list[str] = []
        records, names, cat_ids, self.kept = parse_coco(self.coco, self.images_dir, warnings,
                                                        str(self.ann_file))
        super().__init__(records, names, cat_ids, task=task, transforms=transforms,
                         source=f"{self.ann_file} lists no images")
        self.warnings = warnings
        self.left_out = len(self.coco["annotations"]) - len(self.kept)

    def to_coco(self) -> dict[str, Any]:
        """The source JSON's images, categories and usable annotations (areas and crowd
        flags filled in where missing, so evaluators can rely on them)."""
        anns = []
        for index in self.kept:
            ann = dict(self.coco["annotations"][index])
            if "area" not in ann:
                ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
            ann.setdefault("iscrowd", 0)
            anns.append(ann)
        first: dict[int, dict[str, Any]] = {}
        for img in self.coco["images"]:  # a repeated image id was skipped while parsing
            first.setdefault(int(img["id"]), img)
        return {"images": list(first.values()), "annotations": anns,
                "categories": list(self.coco["categories"])}


def coco_splits(path: Path, options: dict[str, Any]) -> list[str]:
    """Splits of a COCO tree: ``S`` of every ``annotations/instances_S.json`` (and Roboflow
    ``S/_annotations.coco.json``); a single file's split from its name."""
    if path.is_file() or "ann_file" in options:
        return [split_of_file(Path(options.get("ann_file", path)))]
    found = [p.stem.removeprefix("instances_")
             for p in (path / "annotations").glob("instances_*.json")]
    found += [p.parent.name for p in path.glob("*/_annotations.coco.json")]
    return sorted(set(found)) or [""]


def looks_like_coco(path: Path) -> bool:
    """A ``.json`` file, or a folder with ``annotations/*.json`` or Roboflow COCO splits."""
    if path.is_file():
        return path.suffix == ".json"
    return any((path / "annotations").glob("*.json")) or any(
        path.glob("*/_annotations.coco.json"))


@DATASET_FORMATS.register(
    "coco", tasks=TASKS, read_task="instance", options=("ann_file", "images_dir"),
    splits=coco_splits, recognize=looks_like_coco, guess_rank=10,
    summary="COCO instances JSON: annotations/instances_<split>.json + <split>/, "
            "<split>2017/ or images/<split>/ (or the JSON file itself)")
def build_coco(root: str | Path, split: str = "val", task: str = "detect",
               transforms: Callable | None = None, **options: Any) -> CocoDataset:
    """A ``CocoDataset`` (options ``ann_file``, ``images_dir``)."""
    return CocoDataset(root, split, task, transforms, **options)
