"""Dataset checks: every problem found, with the ids (or file and line) it concerns.

Problem codes: ``empty`` (no image found), ``duplicate-id``, ``bad-entry`` (an image entry
without id or file name), ``unknown-image``, ``unknown-category``, ``bad-box``,
``non-finite`` (NaN or infinity in a box, area or label line), ``box-size`` (zero or
negative width/height), ``box-outside``, ``zero-size`` (an image entry of width or height
0), ``missing-image``, ``unreadable-image``, ``image-size`` (annotation says another size),
``mask-size``, ``bad-segmentation`` (polygons, or RLE whose runs do not sum to h*w),
``unsafe-path``, ``bad-line`` (YOLO), ``bad-xml`` (VOC), ``missing-mask``.

Each format's checker registers in ``FORMAT_CHECKS`` under the format's name.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detseg.data.base import IGNORE_INDEX, read_index_png, safe_join
from detseg.data.coco import find_annotation_file, find_image_dir, load_coco_json
from detseg.data.datasets import detect_format, find_splits, format_options
from detseg.data.io import IMAGE_SUFFIXES, read_image
from detseg.data.maskfolder import (
    find_class_names,
    mask_folder_paths,
    match_masks,
    read_class_names,
    resolve_mask_type,
)
from detseg.data.masks import segmentation_problem, segmentation_size
from detseg.data.voc import VOC_CLASSES, parse_voc_xml, voc_base
from detseg.data.yolo import label_path, parse_label_line, read_label_lines, yolo_split
from detseg.errors import DatasetError, ImageReadError
from detseg.registry import Registry

BOX_TOLERANCE = 0.5  # pixels a box may stick out of its image before it counts as outside
FORMAT_CHECKS: Registry[Callable[..., list[Problem]]] = Registry("dataset check")


@dataclass
class Problem:
    """One problem: a code, a one-line message, and the ids or places it concerns."""

    code: str
    message: str
    ids: list[Any] = field(default_factory=list)
    split: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "split": self.split, "ids": self.ids, "message": self.message}


@dataclass
class CheckOptions:
    """Where the format would look elsewhere: image and mask folders, mask naming and type."""

    images: Path | None = None
    masks: Path | None = None
    mask_type: str | None = None
    mask_suffix: str | None = None


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
    counts = Counter(item.get("id") for item in items if isinstance(item.get("id"), int))
    return [Problem("duplicate-id", f"{what} id {i} appears {n} times", [i])
            for i, n in counts.items() if n > 1]


def _as_number(value: Any) -> float | None:
    """``value`` as a float if it is a number (``nan``/``inf`` included), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _size(img: dict[str, Any]) -> tuple[int, int]:
    width, height = _as_number(img.get("width")), _as_number(img.get("height"))
    if width is None or height is None or not math.isfinite(width + height):
        return 0, 0
    return int(width), int(height)


def _annotation_problems(ann: dict[str, Any], size: tuple[int, int]) -> list[Problem]:
    aid = ann.get("id")
    bbox = ann.get("bbox")
    parsed = [_as_number(v) for v in bbox] if isinstance(bbox, list) else []
    values = [v for v in parsed if v is not None]
    if len(parsed) != 4 or len(values) != 4:
        return [Problem("bad-box", f"annotation {aid}: bbox {json.dumps(bbox)[:60]} is not "
                        "[x, y, w, h]", [aid])]
    problems = []
    x, y, w, h = values
    if not all(math.isfinite(v) for v in values):
        problems.append(Problem("non-finite", f"annotation {aid}: bbox {json.dumps(bbox)} has "
                                "a non-finite number", [aid]))
    elif w <= 0 or h <= 0:
        problems.append(Problem("box-size", f"annotation {aid}: box of zero or negative "
                                f"size ({w:g} x {h:g})", [aid]))
    width, height = size
    if width and height and (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE
                             or x + w > width + BOX_TOLERANCE
                             or y + h > height + BOX_TOLERANCE):
        problems.append(Problem("box-outside", f"annotation {aid}: box [{x:g}, {y:g}, "
                                f"{w:g}, {h:g}] leaves the {width}x{height} image", [aid]))
    if "area" in ann and not (_as_number(ann["area"]) is not None
                              and math.isfinite(ann["area"]) and ann["area"] >= 0):
        problems.append(Problem("non-finite", f"annotation {aid}: area "
                                f"{json.dumps(ann['area'])} is not a finite number >= 0", [aid]))
    segm = ann.get("segmentation")
    rle_size = segmentation_size(segm) if isinstance(segm, dict) else None
    if rle_size and width and height and rle_size != (height, width):
        problems.append(Problem("mask-size", f"annotation {aid}: mask is {rle_size[1]}x"
                                f"{rle_size[0]}, image is {width}x{height}", [aid]))
    elif segm:
        problem = segmentation_problem(segm, 0, 0)
        if problem:
            problems.append(Problem("bad-segmentation", f"annotation {aid}: {problem}", [aid]))
    return problems


def check_coco(ann_file: Path, images_dir: Path | None, data: dict[str, Any]) -> list[Problem]:
    """Check a parsed COCO instances file and (when its folder is known) its images."""
    images, anns, cats = data["images"], data["annotations"], data["categories"]
    if not images:
        return [Problem("empty", f"{ann_file} lists no images")]
    problems = _duplicates(images, "image") + _duplicates(anns, "annotation") \
        + _duplicates(cats, "category")
    sizes = {img.get("id"): _size(img) for img in images}
    cat_ids = {c.get("id") for c in cats}
    paths = {}
    for img in images:
        iid = img.get("id")
        if not isinstance(iid, int) or not img.get("file_name"):
            problems.append(Problem("bad-entry", f"image entry {json.dumps(img)[:80]} lacks an "
                                    "integer id or a file_name", [iid]))
            continue
        if not all(sizes[iid]):
            problems.append(Problem("zero-size", f"image {iid}: width {img.get('width')!r}, "
                                    f"height {img.get('height')!r} (must be > 0)", [iid]))
        if images_dir is None:
            continue
        try:
            paths[iid] = safe_join(images_dir, str(img["file_name"]))
        except DatasetError as err:
            problems.append(Problem("unsafe-path", f"image {iid}: {err}", [iid]))
    for ann in anns:
        aid, iid = ann.get("id"), ann.get("image_id")
        if iid not in sizes:
            problems.append(Problem("unknown-image", f"annotation {aid}: image id {iid} "
                                    "is not in images", [aid]))
        if ann.get("category_id") not in cat_ids:
            problems.append(Problem("unknown-category", f"annotation {aid}: category id "
                                    f"{ann.get('category_id')} is not in categories", [aid]))
        problems += _annotation_problems(ann, sizes.get(iid, (0, 0)))
    return problems + _image_problems(paths, sizes, "image")


def _coco_file_problems(path: Path, split: str, images: Path | None) -> list[Problem]:
    ann_file, root, image_split = find_annotation_file(path, split)
    data = load_coco_json(ann_file)
    if images is not None:
        return check_coco(ann_file, images, data)
    try:
        images_dir = find_image_dir(root, image_split, data, ann_file)
    except DatasetError as err:
        return [Problem("missing-image", str(err))] + check_coco(ann_file, None, data)
    return check_coco(ann_file, images_dir, data)


@FORMAT_CHECKS.register("coco")
def _check_coco_split(path: Path, split: str, options: CheckOptions) -> list[Problem]:
    return _coco_file_problems(path, split, options.images)


@FORMAT_CHECKS.register("shapes")
def _check_shapes_split(path: Path, split: str, options: CheckOptions) -> list[Problem]:
    return _coco_file_problems(path, split, options.images) + check_masks(
        path, split, CheckOptions(images=options.images, mask_type="class"))


_YOLO_CODES = (("class", "unknown-category"), ("non-finite", "non-finite"),
               ("coordinates outside", "box-outside"), ("box of zero", "box-size"),
               ("polygon of zero", "box-size"))  # parse_label_line's message starts


@FORMAT_CHECKS.register("yolo")
def check_yolo(root: Path, split: str, options: CheckOptions) -> list[Problem]:
    """Check one YOLO split: label lines, classes, coordinates, images, orphan labels."""
    found = yolo_split(root, split)
    images = found.images
    if options.images is not None:
        images = sorted(p for p in options.images.rglob("*") if p.suffix.lower() in
                        IMAGE_SUFFIXES)
    if not images:
        return [Problem("empty", found.source)]
    label_of = found.classes.label_of()
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
        unreadable: list[str] = []
        for n, line in enumerate(read_label_lines(lab, unreadable), start=1):
            if not line.strip():
                continue
            try:
                parse_label_line(line, size[0], size[1], label_of)
            except ValueError as err:
                text = str(err)
                code = next((c for start, c in _YOLO_CODES if text.startswith(start)),
                            "bad-line")
                problems.append(Problem(code, f"{lab}:{n}: {text}", [f"{lab.name}:{n}"]))
        problems += [Problem("bad-line", line, [lab.name]) for line in unreadable]
    for folder in {label_path(p).parent for p in images}:
        for lab in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
            if lab not in labels_seen:
                problems.append(Problem("missing-image", f"{lab}: label file without an image",
                                        [lab.name]))
    return problems


def _voc_object_problems(stem: str, info: dict[str, Any], known: set[str]) -> list[Problem]:
    problems = []
    width, height = info["width"], info["height"]
    for k, obj in enumerate(info["objects"], start=1):
        where = f"{stem}#{k}"
        if obj["name"] not in known:
            problems.append(Problem("unknown-category", f"{where}: unknown class "
                                    f"{obj['name']!r}", [where]))
        x0, y0, x1, y1 = obj["box"]
        if x1 <= x0 or y1 <= y0:
            problems.append(Problem("box-size", f"{where}: box of zero or negative size",
                                    [where]))
        if width and height and (x0 < 0 or y0 < 0 or x1 > width or y1 > height):
            problems.append(Problem("box-outside", f"{where}: box leaves the {width}x"
                                    f"{height} image", [where]))
    return problems


@FORMAT_CHECKS.register("voc")
def check_voc(root: Path, split: str, options: CheckOptions) -> list[Problem]:
    """Check one VOC split: XML files, class names, boxes, images, segmentation PNG sizes."""
    base = voc_base(root)
    listing = base / "ImageSets" / "Main" / f"{split}.txt"
    ids = [ln.split()[0] for ln in listing.read_text().splitlines() if ln.strip()] \
        if listing.is_file() else sorted(p.stem for p in (base / "Annotations").glob("*.xml"))
    if not ids:
        return [Problem("empty", f"{listing if listing.is_file() else base / 'Annotations'} "
                        "lists no images")]
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
        problems += _voc_object_problems(stem, info, known)
        for folder in ("SegmentationClass", "SegmentationObject"):
            png = base / folder / f"{stem}.png"
            if png.is_file() and all(sizes[stem]):
                shape = read_index_png(png).shape
                if (shape[1], shape[0]) != tuple(sizes[stem]):
                    problems.append(Problem("mask-size", f"{stem}: {folder} mask is {shape[1]}x"
                                            f"{shape[0]}, image is {sizes[stem][0]}x"
                                            f"{sizes[stem][1]}", [stem]))
    return problems + _image_problems(paths, sizes, "image")


@FORMAT_CHECKS.register("masks")
def check_masks(root: Path, split: str, options: CheckOptions) -> list[Problem]:
    """Check an image + mask folder: missing masks, sizes, class values not in classes.txt
    (class masks only: instance ids have no names)."""
    images_dir, masks_dir = mask_folder_paths(root, split, options.images, options.masks)
    names_file = find_class_names(root, masks_dir)
    names = read_class_names(names_file) if names_file else []
    mask_type = resolve_mask_type(options.mask_type, names)
    try:
        match = match_masks(images_dir, masks_dir, options.mask_suffix)
    except DatasetError as err:
        return [Problem("missing-mask", str(err))]
    if not match.pairs and not match.unmatched:
        return [Problem("empty", f"{images_dir} holds no images")]
    problems = [Problem("missing-mask", f"{path.name}: no mask {path.stem}{match.suffix}.png "
                        f"in {masks_dir}", [path.relative_to(images_dir).with_suffix("")
                                            .as_posix()]) for path in match.unmatched]
    decoded = _read_images([image for image, _ in match.pairs])
    for path, mask_path in match.pairs:
        rel = path.relative_to(images_dir).with_suffix("").as_posix()
        size = decoded[path]
        if isinstance(size, str):
            problems.append(Problem("unreadable-image", f"{path}: {size}", [rel]))
            continue
        try:
            mask = read_index_png(mask_path)
        except DatasetError as err:
            problems.append(Problem("unreadable-image", str(err), [rel]))
            continue
        if (mask.shape[1], mask.shape[0]) != size:
            problems.append(Problem("mask-size", f"{mask_path.name}: mask is {mask.shape[1]}x"
                                    f"{mask.shape[0]}, image is {size[0]}x{size[1]}", [rel]))
        if mask_type == "class" and names:
            bad = sorted(int(v) for v in np.unique(mask)
                         if v >= len(names) and v != IGNORE_INDEX)
            if bad:
                problems.append(Problem("unknown-category", f"{mask_path.name}: values {bad} "
                                        f"are not in classes.txt ({len(names)} classes)", [rel]))
    return problems


def check_dataset(path: str | Path, kind: str | None = None, images: str | Path | None = None,
                  masks: str | Path | None = None, mask_type: str | None = None,
                  mask_suffix: str | None = None) -> list[Problem]:
    """Every problem of the dataset (root folder or annotation file) at ``path``.

    ``images`` (and ``masks`` for mask folders) override the folders where the format
    would look elsewhere; ``mask_type``/``mask_suffix`` are those of mask folders.
    """
    path = Path(path)
    kind = kind or detect_format(path)
    checker: Callable[..., list[Problem]] = FORMAT_CHECKS.get(kind).builder
    options = CheckOptions(Path(images) if images is not None else None,
                           Path(masks) if masks is not None else None, mask_type, mask_suffix)
    folders = format_options(kind, images_dir=options.images, masks_dir=options.masks)
    problems: list[Problem] = []
    for split in find_splits(kind, path, **folders):
        found = checker(path, split, options)
        for problem in found:
            problem.split = split
        problems += found
    return problems
