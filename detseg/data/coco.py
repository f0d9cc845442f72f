"""COCO instances JSON: boxes, labels, polygon and RLE masks, crowd regions, empty images.

Category ids (often not contiguous) map to training labels 1..K in sorted id order;
``category_ids`` keeps the way back for writing COCO results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detseg.data.base import ImageRecord, Instance, RecordDataset, safe_join
from detseg.errors import DatasetError


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read and minimally validate a COCO instances file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO instances file (no 'images' list)")
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    return data


def coco_paths(root: str | Path, split: str, ann_file: str | Path | None = None,
               images_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Find ``(annotation file, image folder)`` of a COCO-style tree.

    ``root`` may be the annotation file itself. Annotation file candidates:
    ``root/annotations/instances_{split}.json`` (also ``{split}2017``). Image folder
    candidates: ``root/images/{split}``, ``root/{split}2017``, ``root/{split}``,
    ``root/images``, ``root``.
    """
    root = Path(root)
    if ann_file is None and root.is_file():
        ann_file, root = root, root.parent.parent if root.parent.name == "annotations" \
            else root.parent
    if ann_file is None:
        candidates = [root / "annotations" / f"instances_{split}.json",
                      root / "annotations" / f"instances_{split}2017.json",
                      root / f"instances_{split}.json"]
        ann_file = next((c for c in candidates if c.is_file()), candidates[0])
    if images_dir is None:
        candidates = [root / "images" / split, root / f"{split}2017", root / split,
                      root / "images", root]
        images_dir = next(c for c in candidates if c.is_dir()) if root.is_dir() else root
    return Path(ann_file), Path(images_dir)


def parse_coco(data: dict[str, Any], images_dir: Path,
               warnings: list[str]) -> tuple[list[ImageRecord], list[str], list[int]]:
    """COCO dict -> records, class names and category ids (sorted by id).

    Refuses file names that leave ``images_dir``; skips (with a warning) annotations of
    unknown images or categories and boxes of zero size.
    """
    cats = sorted(data["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: k + 1 for k, c in enumerate(cats)}
    records: dict[int, ImageRecord] = {}
    for img in data["images"]:
        try:
            image_id, name = int(img["id"]), str(img["file_name"])
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"image entry {img!r} lacks a valid id or file_name") from err
        try:
            path = safe_join(images_dir, name)
        except DatasetError as err:
            raise DatasetError(f"image id {image_id}: {err}") from err
        records[image_id] = ImageRecord(path=path, image_id=image_id,
                                        width=int(img.get("width", 0)),
                                        height=int(img.get("height", 0)), file_name=name)
    for ann in data["annotations"]:
        record = records.get(ann.get("image_id"))
        label = label_of.get(ann.get("category_id"))
        if record is None or label is None:
            what = "image" if record is None else "category"
            warnings.append(f"annotation {ann.get('id')}: unknown {what}, skipped")
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            warnings.append(f"annotation {ann.get('id')}: no valid bbox, skipped")
            continue
        if record.width and record.height:
            x0, y0 = min(max(x, 0.0), record.width), min(max(y, 0.0), record.height)
            x1, y1 = min(max(x + w, 0.0), record.width), min(max(y + h, 0.0), record.height)
        else:
            x0, y0, x1, y1 = x, y, x + w, y + h
        if x1 <= x0 or y1 <= y0:
            warnings.append(f"annotation {ann.get('id')}: empty box, skipped")
            continue
        segm = ann.get("segmentation") or None
        record.instances.append(Instance(
            box=(x0, y0, x1, y1), label=label, iscrowd=int(bool(ann.get("iscrowd", 0))),
            area=float(ann.get("area", w * h)), segmentation=segm, source_id=ann.get("id")))
    return list(records.values()), [str(c["name"]) for c in cats], [int(c["id"]) for c in cats]


class CocoDataset(RecordDataset):
    """A COCO instances file plus its image folder (see ``coco_paths`` for the defaults)."""

    def __init__(self, root: str | Path, split: str = "val", task: str = "detect",
                 transforms: Callable | None = None, ann_file: str | Path | None = None,
                 images_dir: str | Path | None = None) -> None:
        self.ann_file, self.images_dir = coco_paths(root, split, ann_file, images_dir)
        self.coco = load_coco_json(self.ann_file)
        warnings: list[str] = []
        records, names, cat_ids = parse_coco(self.coco, self.images_dir, warnings)
        super().__init__(records, names, cat_ids, task=task, transforms=transforms)
        self.warnings = warnings

    def to_coco(self) -> dict[str, Any]:
        """The source JSON's images, annotations and categories (areas and crowd flags filled
        in where missing, so evaluators can rely on them)."""
        anns = []
        for ann in self.coco["annotations"]:
            ann = dict(ann)
            if "area" not in ann and "bbox" in ann:
                ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
            ann.setdefault("iscrowd", 0)
            anns.append(ann)
        return {"images": list(self.coco["images"]), "annotations": anns,
                "categories": list(self.coco["categories"])}
