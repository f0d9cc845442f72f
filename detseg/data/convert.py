"""Conversion between dataset formats (any registered format to COCO or YOLO).

``convert(src_kind, src, dst_kind, dst)`` reads every split it finds in ``src`` and writes a
new tree under ``dst`` (images are copied, never moved; ``dst`` must not hold files):

- ``coco``: ``dst/images/{split}/...`` + ``dst/annotations/instances_{split}.json``. Masks
  become polygons where those are exact (no holes), RLE otherwise; crowd regions stay RLE.
- ``yolo``: ``dst/images/{split}/...`` + ``dst/labels/{split}/*.txt`` + ``dst/data.yaml``
  with the keys other YOLO tools read (``path``, ``train``, ``val``, ``names`` as
  ``{0: name, ...}``) and ``coco_category_ids`` so converting back restores the ids. Crowd
  regions (and VOC "difficult" objects) have no YOLO form and are left out (counted in the
  report). With
  ``labels="polygon"`` every object is a polygon line (objects without a mask use their box
  corners; masks in several parts are joined by zero-width bridges), with ``"box"`` a box line.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detseg.data.base import RecordDataset, safe_join
from detseg.data.datasets import dataset_formats, find_splits, open_split
from detseg.data.masks import decode_segmentation, encode_segmentation, mask_to_polygons
from detseg.errors import DatasetError, UsageError

TARGET_KINDS = ("coco", "yolo")
LABEL_MODES = ("auto", "box", "polygon")


@dataclass
class ConvertReport:
    """What a conversion wrote, per split: images, objects written, objects left out."""

    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _copy_image(src: Path, dst_root: Path, name: str) -> None:
    dst = safe_join(dst_root, name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _coco_segmentation(segm: Any, height: int, width: int, crowd: int) -> Any:
    """Polygons where exact, else RLE (crowd regions keep RLE)."""
    if isinstance(segm, list) or crowd:
        return segm
    return encode_segmentation(decode_segmentation(segm, height, width))


def write_coco_split(ds: RecordDataset, dst: Path, split: str) -> dict[str, int]:
    """Write one split as COCO under ``dst``; return counts."""
    gt = ds.to_coco()
    paths = {r.image_id: r for r in ds.records}
    images_root = dst / "images" / split
    for img in gt["images"]:
        record = paths[img["id"]]
        _copy_image(record.path, images_root, img["file_name"])
    for ann in gt["annotations"]:
        if "segmentation" in ann:
            record = paths[ann["image_id"]]
            ann["segmentation"] = _coco_segmentation(ann["segmentation"], record.height,
                                                     record.width, ann.get("iscrowd", 0))
    ann_dir = dst / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / f"instances_{split}.json").write_text(json.dumps(gt))
    return {"images": len(gt["images"]), "objects": len(gt["annotations"]),
            "left_out": ds.left_out}


def _bridge(polys: list[np.ndarray]) -> np.ndarray:
    """Join polygons into one by zero-width bridges between their closest points."""
    merged = polys[0]
    for part in polys[1:]:
        d = ((merged[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        loop = np.concatenate([part[j:], part[:j + 1]])
        merged = np.concatenate([merged[:i + 1], loop, merged[i:]])
    return merged


def _polygon_of(segm: Any, box: list[float], height: int, width: int) -> np.ndarray:
    """One ``K x 2`` pixel polygon for an object (its box corners when it has no mask)."""
    if segm is not None:
        if isinstance(segm, list):
            polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm if len(p) >= 6]
        else:
            mask = decode_segmentation(segm, height, width)
            polys = [np.asarray(p).reshape(-1, 2) for p in mask_to_polygons(mask)]
        if polys:
            return _bridge(polys)
    x, y, w, h = box
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)


def write_yolo_split(ds: RecordDataset, dst: Path, split: str, labels: str) -> dict[str, int]:
    """Write one split as YOLO images + label files under ``dst``; return counts."""
    gt = ds.to_coco()
    records = {r.image_id: r for r in ds.records}
    label_of = {cid: k for k, cid in enumerate(ds.category_ids[1:])}
    by_image: dict[int, list] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    written, left_out = 0, ds.left_out
    for img in gt["images"]:
        record = records[img["id"]]
        width, height = record.width, record.height
        if not width or not height:
            raise DatasetError(f"{record.path}: image size unknown; YOLO needs it")
        _copy_image(record.path, dst / "images" / split, img["file_name"])
        lines = []
        for ann in by_image.get(img["id"], []):
            if ann.get("iscrowd", 0):
                left_out += 1
                continue
            cls = label_of[ann["category_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
            if labels == "polygon":
                poly = _polygon_of(ann.get("segmentation"), [x, y, w, h], height, width)
                poly = np.clip(poly / np.array([width, height]), 0.0, 1.0)
                coords = " ".join(f"{v:.8f}" for v in poly.reshape(-1))
            else:
                x0, y0 = max(x, 0.0), max(y, 0.0)
                x1, y1 = min(x + w, width), min(y + h, height)
                coords = " ".join(f"{v:.8f}" for v in (
                    (x0 + x1) / 2 / width, (y0 + y1) / 2 / height,
                    (x1 - x0) / width, (y1 - y0) / height))
            lines.append(f"{cls} {coords}\n")
            written += 1
        label_file = (dst / "labels" / split / img["file_name"]).with_suffix(".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("".join(lines))
    return {"images": len(gt["images"]), "objects": written, "left_out": left_out}


def _yaml_quote(name: str) -> str:
    return json.dumps(name)  # a JSON string is a valid YAML scalar


def _yolo_keys(splits: list[str]) -> dict[str, str]:
    """YAML key -> split folder: ``train``/``val``/``test`` for the splits named so (also
    ``train2017``, ...), other splits under their own name; ``train`` and ``val`` always
    present (the first split, and ``train`` for a missing ``val``), as YOLO tools need them."""
    keys: dict[str, str] = {}
    for split in splits:
        key = next((k for k in ("train", "val", "test") if split.startswith(k)), split)
        keys[key if key not in keys else split] = split
    keys.setdefault("train", splits[0])
    keys.setdefault("val", keys["train"])
    return keys


def yolo_yaml(dst: Path, splits: list[str], names: list[str], category_ids: list[int],
              labels: str) -> str:
    """The ``data.yaml`` text of a converted YOLO tree at ``dst``."""
    lines = ["# written by detseg dataset convert; split folders are relative to path",
             f"path: {_yaml_quote(str(dst.resolve()))}"]
    lines += [f"{key}: images/{split}" for key, split in _yolo_keys(splits).items()]
    lines.append(f"nc: {len(names)}")
    lines.append("names:")
    lines += [f"  {k}: {_yaml_quote(n)}" for k, n in enumerate(names)]
    lines.append(f"coco_category_ids: {list(category_ids)}")
    lines.append(f"label_format: {labels}")
    return "\n".join(lines) + "\n"


def convert(src_kind: str, src: str | Path, dst_kind: str, dst: str | Path,
            splits: list[str] | None = None, labels: str = "auto",
            task: str | None = None, **options: Any) -> ConvertReport:
    """Convert ``src`` (of ``src_kind``) into a new ``dst_kind`` tree at ``dst``.

    ``splits`` defaults to every split found; ``labels`` (YOLO only) is ``auto`` (polygons
    when every object has a mask), ``box`` or ``polygon``. ``task`` overrides what is read
    (e.g. ``instance`` to take VOC objects from ``SegmentationObject``); ``options`` are the
    source format's (``mask_type=``, ``images_dir=``, ...). Each split's ``left_out`` counts
    the objects skipped while reading (bad lines, invalid annotations) and those the target
    cannot hold (crowd regions in YOLO).
    """
    dataset_formats().get(src_kind)
    if dst_kind not in TARGET_KINDS:
        raise UsageError(f"--to must be one of {', '.join(TARGET_KINDS)}, got {dst_kind!r}")
    if labels not in LABEL_MODES:
        raise UsageError(f"labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}")
    src, dst = Path(src), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise UsageError(f"{dst}: destination exists and is not an empty folder")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise UsageError(f"{dst}: destination must be outside the source dataset")
    found = find_splits(src_kind, src, **options)
    wanted = splits or found
    missing = [s for s in wanted if s not in found]
    if missing:
        raise UsageError(f"{src}: no split {', '.join(missing)} (found: {', '.join(found)})")
    datasets = {s or "all": open_split(src_kind, src, s, task, **options) for s in wanted}
    report = ConvertReport()
    for s, ds in datasets.items():
        report.warnings += [f"{s}: {w}" for w in ds.warnings]
    dst.mkdir(parents=True, exist_ok=True)
    if dst_kind == "coco":
        for s, ds in datasets.items():
            report.splits[s] = write_coco_split(ds, dst, s)
        return report
    if labels == "auto":
        labels = "polygon" if all(
            "segmentation" in a for ds in datasets.values()
            for a in ds.to_coco()["annotations"] if not a.get("iscrowd", 0)) else "box"
    first = next(iter(datasets.values()))
    for s, ds in datasets.items():
        if ds.class_names != first.class_names:
            raise DatasetError(f"{src}: splits name their classes differently")
        report.splits[s] = write_yolo_split(ds, dst, s, labels)
    (dst / "data.yaml").write_text(yolo_yaml(dst, list(datasets), first.class_names[1:],
                                             first.category_ids[1:], labels))
    return report
