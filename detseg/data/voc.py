"""Pascal VOC: ``Annotations/*.xml`` boxes (with ``difficult``), ``SegmentationClass``
palette PNGs (255 = ignore), ``SegmentationObject`` instances and ``ImageSets`` split lists.

Boxes: VOC stores 1-based inclusive pixel indices; they become pixel-edge ``xyxy`` boxes
``(xmin - 1, ymin - 1, xmax, ymax)``. ``difficult`` objects are kept with ``iscrowd = 1``, the
COCO way to say "ignore when scoring" (``drop_crowd`` removes them for training).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from detseg.data.base import TASKS, ImageRecord, Instance, RecordDataset, read_index_png
from detseg.data.formats import DATASET_FORMATS
from detseg.data.io import image_size
from detseg.data.masks import region_box
from detseg.errors import DatasetError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def voc_base(root: str | Path, year: str | None = None) -> Path:
    """The folder holding ``Annotations``/``JPEGImages`` (accepts VOCdevkit or its parent)."""
    root = Path(root)
    candidates = [root]
    for parent in (root, root / "VOCdevkit"):
        if year:
            candidates.append(parent / f"VOC{year}")
        if parent.is_dir():
            candidates += sorted(p for p in parent.glob("VOC2*") if p.is_dir())
    for cand in candidates:
        if (cand / "JPEGImages").is_dir() and (
                (cand / "Annotations").is_dir() or (cand / "SegmentationClass").is_dir()):
            return cand
    raise DatasetError(f"{root}: no Pascal VOC tree (JPEGImages/ with Annotations/ or "
                       "SegmentationClass/) found here or in VOCdevkit/VOC*")


def read_split(base: Path, kind: str, split: str, fallback: Path, suffix: str) -> list[str]:
    """Image ids of ``ImageSets/{kind}/{split}.txt``, or every ``fallback/*suffix`` stem."""
    listing = base / "ImageSets" / kind / f"{split}.txt"
    if listing.is_file():
        return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not fallback.is_dir():
        raise DatasetError(f"{listing}: split list not found")
    return sorted(p.stem for p in fallback.glob(f"*{suffix}"))


def parse_voc_xml(path: Path) -> dict:
    """``{"filename", "width", "height", "objects": [{"name", "difficult", "box"}]}``."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DatasetError(f"{path}: cannot parse VOC XML ({err})") from err
    size = root.find("size")

    def num(node, tag, default=0.0):
        child = node.find(tag) if node is not None else None
        text = child.text if child is not None else None
        try:
            value = float(text) if text else default
        except ValueError as err:
            raise DatasetError(f"{path}: <{tag}> is not a number") from err
        if not math.isfinite(value):
            raise DatasetError(f"{path}: <{tag}> is not a finite number ({text})")
        return value

    objects = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{path}: object without <bndbox>")
        name = (obj.findtext("name") or "").strip()
        box = (num(bb, "xmin") - 1, num(bb, "ymin") - 1, num(bb, "xmax"), num(bb, "ymax"))
        objects.append({"name": name, "difficult": int(num(obj, "difficult")), "box": box})
    return {"filename": (root.findtext("filename") or "").strip(),
            "width": int(num(size, "width")), "height": int(num(size, "height")),
            "objects": objects}


def _class_names(base: Path, xml_names: set[str]) -> list[str]:
    for name in ("classes.txt", "labels.txt"):
        path = base / name
        if path.is_file():
            names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            return [n for n in names if n not in ("background", "__background__")]
    if xml_names <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(xml_names)


class VocDataset(RecordDataset):
    """A Pascal VOC tree. ``detect`` reads ``ImageSets/Main/{split}.txt`` and the XML files;
    ``semantic`` and ``instance`` read ``ImageSets/Segmentation/{split}.txt`` and the PNGs."""

    def __init__(self, root: str | Path, split: str = "val", task: str = "detect",
                 transforms: Callable | None = None, year: str | None = None) -> None:
        base = voc_base(root, year)
        self.base = base
        warnings: list[str] = []
        ann_dir = base / "Annotations"
        if task == "detect":
            ids = read_split(base, "Main", split, ann_dir, ".xml")
        else:
            ids = read_split(base, "Segmentation", split, base / "SegmentationClass", ".png")
        parsed = {}
        for stem in ids:
            xml = ann_dir / f"{stem}.xml"
            if xml.is_file():
                try:
                    parsed[stem] = parse_voc_xml(xml)
                except DatasetError as err:
                    warnings.append(f"{err}, image skipped")
            elif task == "detect":
                warnings.append(f"{xml}: annotation missing, image skipped")
        names = _class_names(base, {o["name"] for p in parsed.values() for o in p["objects"]})
        label_of = {n: k + 1 for k, n in enumerate(names)}
        records = []
        for k, stem in enumerate(ids):
            info = parsed.get(stem)
            if info is None and task == "detect":
                continue
            path = base / "JPEGImages" / ((info or {}).get("filename") or f"{stem}.jpg")
            if not path.is_file():
                path = base / "JPEGImages" / f"{stem}.jpg"
            width, height = (info["width"], info["height"]) if info and info["width"] else \
                image_size(path) if path.is_file() else (0, 0)
            record = ImageRecord(path=path, image_id=k + 1, width=width, height=height,
                                 file_name=path.name)
            objects = (info or {}).get("objects", [])
            if task == "detect":
                for obj in objects:
                    label = label_of.get(obj["name"])
                    if label is None:
                        warnings.append(f"{stem}: unknown class {obj['name']!r}, skipped")
                        continue
                    x0, y0, x1, y1 = obj["box"]
                    record.instances.append(Instance(
                        box=obj["box"], label=label, iscrowd=1 if obj["difficult"] else 0,
                        area=max(x1 - x0, 0) * max(y1 - y0, 0)))
            elif task == "semantic":
                record.semantic_png = base / "SegmentationClass" / f"{stem}.png"
            else:
                record.instance_png = base / "SegmentationObject" / f"{stem}.png"
                record.instances = self._instances(base, stem, record.instance_png, objects)
            records.append(record)
        super().__init__(records, names, list(range(1, len(names) + 1)), task=task,
                         transforms=transforms,
                         source=f"{base}: split {split!r} lists no images with annotations")
        self.warnings = warnings

    @staticmethod
    def _instances(base: Path, stem: str, object_png: Path, objects: list) -> list[Instance]:
        """Instances of ``SegmentationObject`` (value k = k-th XML object), each labelled by
        the majority class under it in ``SegmentationClass``; the 255 border is not part of
        any instance."""
        ids = read_index_png(object_png)
        classes = read_index_png(base / "SegmentationClass" / f"{stem}.png")
        out = []
        for value in np.unique(ids):
            if value in (0, 255):
                continue
            m = ids == value
            under = classes[m]
            under = under[(under > 0) & (under < 255)]
            if under.size == 0:
                continue
            label = int(np.bincount(under).argmax())
            difficult = objects[value - 1]["difficult"] if value - 1 < len(objects) else 0
            out.append(Instance(box=region_box(m), label=label, iscrowd=int(difficult),
                                area=float(m.sum()), mask_value=int(value)))
        return out


def voc_splits(path: Path, options: dict[str, Any]) -> list[str]:
    """Splits of a VOC tree: train, val, test where ``ImageSets/Main`` lists them (else
    every list there; ``all`` without lists)."""
    base = voc_base(path, options.get("year"))
    lists = {p.stem for p in (base / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem}
    return [s for s in ("train", "val", "test") if s in lists] or sorted(lists) or ["all"]


def looks_like_voc(path: Path) -> bool:
    """A VOC tree (``JPEGImages/`` with ``Annotations/`` or ``SegmentationClass/``), a
    ``VOCdevkit`` or a folder holding ``VOC2*`` trees."""
    if not path.is_dir():
        return False
    has = {p.name for p in path.iterdir()}
    return {"Annotations", "JPEGImages"} <= has or {"SegmentationClass", "JPEGImages"} <= has \
        or "VOCdevkit" in has or any(n.startswith("VOC2") for n in has)


@DATASET_FORMATS.register(
    "voc", tasks=TASKS, read_task="detect", options=("year",), splits=voc_splits,
    recognize=looks_like_voc, guess_rank=20,
    summary="Pascal VOC: JPEGImages/ + Annotations/*.xml (+ SegmentationClass/, "
            "SegmentationObject/), ImageSets/ split lists; VOCdevkit or its parent")
def build_voc(root: str | Path, split: str = "val", task: str = "detect",
              transforms: Callable | None = None, **options: Any) -> VocDataset:
    """A ``VocDataset`` (option ``year``)."""
    return VocDataset(root, split, task, transforms, **options)
