"""Dataset checks: every problem found, with the ids (or file and line) it concerns.

Problem codes: ``duplicate-id``, ``unknown-image``, ``unknown-category``, ``bad-box``,
``box-size`` (zero or negative width/height), ``box-outside``, ``missing-image``,
``unreadable-image``, ``image-size`` (annotation says another size), ``mask-size``,
``bad-segmentation``, ``unsafe-path``, ``bad-line`` (YOLO), ``bad-xml`` (VOC), ``missing-mask``.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detseg.data.base import read_index_png, safe_join
from detseg.data.convert import detect_format, find_splits
from detseg.data.io import IMAGE_SUFFIXES, read_image
from detseg.data.masks import segmentation_size
from detseg.errors import DatasetError, ImageReadError, UsageError

BOX_TOLERANCE = 0.5  # pixels a box may stick out of its image before it counts as outside


@dataclass
class Problem:
    """One problem: a code, a one-line message, and the ids or places it concerns."""

    code: str
    message: str
    ids: list[Any] = field(default_factory=list)
    split: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "split": self.split, "ids": self.ids, "message": self.message}


def _read_images(paths: list[Path]) -> dict[Path, tuple[int, int] | str]:
    """Decode images in threads: ``(width, height)`` or the reason they fail."""
    def one(path: Path) -> tuple[int, int] | str:
        try:
            rgb = read_image(path)
        except ImageReadError as err:
            return err.reason
        return rgb.shape[1], rgb.shape[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(paths, pool.map(one, paths), strict=True))


def _image_problems(paths: dict[Any, Path], expected: dict[Any, tuple[int, int]],
                    kind: str) -> list[Problem]:
    """Missing, unreadable and wrongly sized images (keys: image ids or names)."""
    problems = []
    present = {k: p for k, p in paths.items() if p.is_file()}
    for key, path in paths.items():
        if key not in present:
            problems.append(Problem("missing-image", f"{kind} {key}: {path} not found", [key]))
    decoded = _read_images(list(present.values()))
    for key, path in present.items():
        got = decoded[path]
        if isinstance(got, str):
            problems.append(Problem("unreadable-image", f"{kind} {key}: {path}: {got}", [key]))
        elif key in expected and all(expected[key]) and tuple(expected[key]) != got:
            problems.append(Problem(
                "image-size", f"{kind} {key}: annotation says {expected[key][0]}x"
                f"{expected[key][1]}, {path.name} is {got[0]}x{got[1]}", [key]))
    return problems


def _duplicates(items: list[dict], what: str) -> list[Problem]:
    counts = Counter(item.get("id") for item in items)
    return [Problem("duplicate-id", f"{what} id {i} appears {n} times", [i])
            for i, n in counts.items() if n > 1]


def check_coco(ann_file: Path, images_dir: Path) -> list[Problem]:
    """Check a COCO instances file and its images."""
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{ann_file}: not a readable JSON file ({err})") from err
    images = data.get("images", [])
    anns = data.get("annotations", [])
    cats = data.get("categories", [])
    problems = _duplicates(images, "image") + _duplicates(anns, "annotation") \
        + _duplicates(cats, "category")
    sizes = {img.get("id"): (img.get("width", 0), img.get("height", 0)) for img in images}
    cat_ids = {c.get("id") for c in cats}
    paths = {}
    for img in images:
        try:
            paths[img.get("id")] = safe_join(images_dir, str(img.get("file_name", "")))
        except DatasetError as err:
            problems.append(Problem("unsafe-path", f"image {img.get('id')}: {err}",
                                    [img.get("id")]))
    for ann in anns:
        aid, iid = ann.get("id"), ann.get("image_id")
        if iid not in sizes:
            problems.append(Problem("unknown-image", f"annotation {aid}: image id {iid} "
                                    "is not in images", [aid]))
        if ann.get("category_id") not in cat_ids:
            problems.append(Problem("unknown-category", f"annotation {aid}: category id "
                                    f"{ann.get('category_id')} is not in categories", [aid]))
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            problems.append(Problem("bad-box", f"annotation {aid}: bbox {bbox!r} is not "
                                    "[x, y, w, h]", [aid]))
            continue
        if w <= 0 or h <= 0:
            problems.append(Problem("box-size", f"annotation {aid}: box of zero or negative "
                                    f"size ({w:g} x {h:g})", [aid]))
        width, height = sizes.get(iid, (0, 0))
        if width and height and (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE
                                 or x + w > width + BOX_TOLERANCE
                                 or y + h > height + BOX_TOLERANCE):
            problems.append(Problem("box-outside", f"annotation {aid}: box [{x:g}, {y:g}, "
                                    f"{w:g}, {h:g}] leaves the {width}x{height} image", [aid]))
        segm = ann.get("segmentation")
        if isinstance(segm, list) and any(len(p) < 6 or len(p) % 2 for p in segm):
            problems.append(Problem("bad-segmentation", f"annotation {aid}: polygon with too "
                                    "few or an odd number of coordinates", [aid]))
        rle_size = segmentation_size(segm)
        if rle_size and width and height and rle_size != (height, width):
            problems.append(Problem("mask-size", f"annotation {aid}: mask is {rle_size[1]}x"
                                    f"{rle_size[0]}, image is {width}x{height}", [aid]))
    return problems + _image_problems(paths, sizes, "image")


def check_yolo(root: Path, split: str, images_override: Path | None) -> list[Problem]:
    """Check one YOLO split: label lines, classes, coordinates, images, orphan labels."""
    from detseg.data.yolo import label_path, parse_label_line, yolo_split_images

    images, names, _ = yolo_split_images(root, split)
    if images_override is not None:
        images = sorted(p for p in images_override.rglob("*") if p.suffix.lower() in
                        IMAGE_SUFFIXES)
    problems = [Problem("duplicate-id", f"image {p} listed {n} times", [str(p)])
                for p, n in Counter(images).items() if n > 1]
    decoded = _read_images(sorted(set(p for p in images if p.is_file())))
    labels_seen = set()
    for path in dict.fromkeys(images):
        if not path.is_file():
            problems.append(Problem("missing-image", f"{path} not found", [str(path)]))
            continue
        size = decoded[path]
        if isinstance(size, str):
            problems.append(Problem("unreadable-image", f"{path}: {size}", [str(path)]))
            continue
        lab = label_path(path)
        labels_seen.add(lab)
        if not lab.is_file():
            continue
        for n, line in enumerate(lab.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parse_label_line(line, size[0], size[1], len(names))
            except ValueError as err:
                text = str(err)
                code = "unknown-category" if text.startswith("class") else \
                    "box-outside" if "outside 0..1" in text else \
                    "box-size" if "zero" in text else "bad-line"
                problems.append(Problem(code, f"{lab}:{n}: {text}", [f"{lab.name}:{n}"]))
    label_dirs = {label_path(p).parent for p in images}
    for folder in label_dirs:
        for lab in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
            if lab not in labels_seen:
                problems.append(Problem("missing-image", f"{lab}: label file without an image",
                                        [lab.name]))
    return problems


def check_voc(root: Path, split: str) -> list[Problem]:
    """Check one VOC split: XML files, class names, boxes, images, segmentation PNG sizes."""
    from detseg.data.voc import VOC_CLASSES, parse_voc_xml, voc_base

    base = voc_base(root)
    listing = base / "ImageSets" / "Main" / f"{split}.txt"
    ids = [ln.split()[0] for ln in listing.read_text().splitlines() if ln.strip()] \
        if listing.is_file() else sorted(p.stem for p in (base / "Annotations").glob("*.xml"))
    problems = [Problem("duplicate-id", f"image id {i} listed {n} times in {listing.name}", [i])
                for i, n in Counter(ids).items() if n > 1]
    known = set(VOC_CLASSES)
    for name in ("classes.txt", "labels.txt"):
        if (base / name).is_file():
            known = {ln.strip() for ln in (base / name).read_text().splitlines() if ln.strip()}
    paths, sizes = {}, {}
    for stem in dict.fromkeys(ids):
        xml = base / "Annotations" / f"{stem}.xml"
        if not xml.is_file():
            problems.append(Problem("bad-xml", f"{stem}: {xml.name} not found", [stem]))
            continue
        try:
            info = parse_voc_xml(xml)
        except DatasetError as err:
            problems.append(Problem("bad-xml", str(err), [stem]))
            continue
        paths[stem] = base / "JPEGImages" / (info["filename"] or f"{stem}.jpg")
        sizes[stem] = (info["width"], info["height"])
        for k, obj in enumerate(info["objects"], start=1):
            where = f"{stem}#{k}"
            if obj["name"] not in known:
                problems.append(Problem("unknown-category", f"{where}: unknown class "
                                        f"{obj['name']!r}", [where]))
            x0, y0, x1, y1 = obj["box"]
            if x1 <= x0 or y1 <= y0:
                problems.append(Problem("box-size", f"{where}: box of zero or negative size",
                                        [where]))
            width, height = sizes[stem]
            if width and height and (x0 < 0 or y0 < 0 or x1 > width or y1 > height):
                problems.append(Problem("box-outside", f"{where}: box leaves the {width}x"
                                        f"{height} image", [where]))
        for folder in ("SegmentationClass", "SegmentationObject"):
            png = base / folder / f"{stem}.png"
            if png.is_file() and all(sizes[stem]):
                shape = read_index_png(png).shape
                if (shape[1], shape[0]) != tuple(sizes[stem]):
                    problems.append(Problem("mask-size", f"{stem}: {folder} mask is {shape[1]}x"
                                            f"{shape[0]}, image is {sizes[stem][0]}x"
                                            f"{sizes[stem][1]}", [stem]))
    return problems + _image_problems(paths, sizes, "image")


def check_masks(root: Path, split: str, images_override: Path | None) -> list[Problem]:
    """Check an image + mask folder: missing masks, sizes, unknown class values."""
    from detseg.data.maskfolder import mask_folder_paths, read_class_names

    images_dir, masks_dir = mask_folder_paths(root, split or "val")
    images_dir = images_override or images_dir
    names_file = root / "classes.txt"
    names = read_class_names(names_file) if names_file.is_file() else []
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    decoded = _read_images(images)
    problems = []
    for path in images:
        rel = path.relative_to(images_dir).with_suffix(".png")
        size = decoded[path]
        if isinstance(size, str):
            problems.append(Problem("unreadable-image", f"{path}: {size}", [rel.stem]))
            continue
        mask_path = masks_dir / rel
        if not mask_path.is_file():
            problems.append(Problem("missing-mask", f"{path.name}: no mask {mask_path}",
                                    [rel.stem]))
            continue
        try:
            mask = read_index_png(mask_path)
        except DatasetError as err:
            problems.append(Problem("unreadable-image", str(err), [rel.stem]))
            continue
        if (mask.shape[1], mask.shape[0]) != size:
            problems.append(Problem("mask-size", f"{rel}: mask is {mask.shape[1]}x"
                                    f"{mask.shape[0]}, image is {size[0]}x{size[1]}",
                                    [rel.stem]))
        if names:
            bad = sorted(int(v) for v in np.unique(mask) if v >= len(names) and v != 255)
            if bad:
                problems.append(Problem("unknown-category", f"{rel}: values {bad} are not in "
                                        f"classes.txt ({len(names)} classes)", [rel.stem]))
    return problems


def check_dataset(path: str | Path, kind: str | None = None,
                  images: str | Path | None = None) -> list[Problem]:
    """Every problem of the dataset (root folder or annotation file) at ``path``.

    ``images`` overrides the image folder where the format would look elsewhere.
    """
    path = Path(path)
    images_dir = Path(images) if images is not None else None
    kind = kind or detect_format(path)
    problems: list[Problem] = []
    if kind == "coco" and path.is_file():
        from detseg.data.coco import coco_paths

        ann, img_dir = coco_paths(path, "", None, images_dir)
        return check_coco(ann, img_dir)
    for split in find_splits(kind, path):
        if kind in ("coco", "shapes"):
            from detseg.data.coco import coco_paths

            ann, img_dir = coco_paths(path, split, None, images_dir)
            found = check_coco(ann, img_dir)
            if kind == "shapes":
                found += check_masks(path, split, images_dir)
        elif kind == "yolo":
            found = check_yolo(path, split, images_dir)
        elif kind == "voc":
            found = check_voc(path, split)
        elif kind == "masks":
            found = check_masks(path, split, images_dir)
        else:
            raise UsageError(f"cannot check datasets of format {kind!r}")
        for problem in found:
            problem.split = split
        problems += found
    return problems
