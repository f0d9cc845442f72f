"""COCO ground truth as arrays, and the part of it a ``Params`` selects.

A bad image, category or annotation entry is skipped with a warning naming it (an annotation
on a skipped image goes with it); a file whose entries of one kind are all bad is an error.
Duplicate image or category ids are reported; the last entry wins, as in pycocotools.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from operator import itemgetter, methodcaller
from typing import Any

import numpy as np

from detseg.errors import EvalInputError, UsageError
from detseg.eval.coco.json_input import (
    all_rejected,
    box_array,
    box_problem,
    finite_number,
    id_problem,
    integer_id,
    short,
)
from detseg.eval.coco.params import Params
from detseg.eval.coco.rle import (
    compressed_counts_check,
    counts_problem,
    is_compressed,
    rles_for_image,
    segmentation_problem,
    size_problem,
)
from detseg.eval.iou import rle_area

ANY_CATEGORY = "all"  # the one category name of category-agnostic evaluation (use_cats=False)


@dataclass
class GroundTruth:
    """Ground-truth annotations as arrays, sorted by (image, category), file order within.

    ``I`` images, ``K`` categories, ``G`` annotations; box ``xywh`` in pixels, areas in
    square pixels.
    """

    img_ids: np.ndarray      # [I] sorted image ids
    heights: np.ndarray      # [I]
    widths: np.ndarray       # [I]
    cat_ids: np.ndarray      # [K] sorted category ids
    cat_names: list[str]     # [K]
    key: np.ndarray          # [G] image_index * K + category_index (sorted)
    img: np.ndarray          # [G] image index
    cat: np.ndarray          # [G] category index
    ann_id: np.ndarray       # [G] annotation id
    crowd: np.ndarray        # [G] bool
    area: np.ndarray         # [G] float64 'area' field (computed where missing)
    box: np.ndarray          # [G, 4] xywh (bbox evaluation)
    rles: list[dict] | None  # [G] compressed RLEs (segm evaluation)
    mask_area: np.ndarray | None  # [G] pixels of each mask (segm evaluation)
    ann_index: np.ndarray    # [G] position in the file's annotations list
    image_entries: list[int] = field(default_factory=list)     # usable images[] positions
    category_entries: list[int] = field(default_factory=list)  # usable categories[] positions
    warnings: list[str] = field(default_factory=list)


@dataclass
class Selection:
    """What a ``Params`` keeps of a ground truth: ``image_kept [I]`` bool and
    ``category_map [K]`` (each category's index in the evaluated ``K'`` ones, -1 left out)."""

    image_kept: np.ndarray
    category_map: np.ndarray
    use_cats: bool


def _positive_int(value: Any) -> int | None:
    number = integer_id(value)
    return number if number is not None and number > 0 else None


def _read_images(entries: list, iou_type: str, source: str, warnings: list[str]
                 ) -> tuple[dict[int, tuple[int, int]], list[int]]:
    """``{image id: (height, width)}`` and the usable entries' positions."""
    images: dict[int, tuple[int, int]] = {}
    first_at: dict[int, int] = {}
    kept: list[int] = []
    problems: list[str] = []
    for i, im in enumerate(entries):
        where = f"images[{i}]"
        img_id = integer_id(im.get("id")) if isinstance(im, dict) else None
        height = _positive_int(im.get("height")) if isinstance(im, dict) else None
        width = _positive_int(im.get("width")) if isinstance(im, dict) else None
        if not isinstance(im, dict) or "id" not in im:
            problems.append(f"{where} = {short(im)}: missing key 'id'")
        elif (problem := id_problem("id", im["id"])) is not None:
            problems.append(f"{where}: {problem}")
        elif iou_type == "segm" and (height is None or width is None):
            problems.append(f"{where} = {short(im)}: segm evaluation needs a positive integer "
                            f"height and width")
        elif img_id is not None:
            if img_id in first_at:
                warnings.append(f"{source}: {where}: image id {img_id} is listed again (first at "
                                f"images[{first_at[img_id]}]); the last entry is used, as "
                                f"pycocotools does")
            first_at.setdefault(img_id, i)
            images[img_id] = (height or 0, width or 0)
            kept.append(i)
            continue
        warnings.append(f"{source}: {problems[-1]}; skipped")
    if problems and not images:
        raise all_rejected(source, "image", problems[0], len(entries))
    return images, kept


def _read_categories(entries: list, source: str, warnings: list[str]
                     ) -> tuple[dict[int, str], list[int]]:
    """``{category id: name}`` and the usable entries' positions."""
    cats: dict[int, str] = {}
    first_at: dict[int, int] = {}
    kept: list[int] = []
    problems: list[str] = []
    for i, cat in enumerate(entries):
        where = f"categories[{i}]"
        cat_id = integer_id(cat.get("id")) if isinstance(cat, dict) else None
        if not isinstance(cat, dict) or "id" not in cat:
            problems.append(f"{where} = {short(cat)}: missing key 'id'")
        elif (problem := id_problem("id", cat["id"])) is not None:
            problems.append(f"{where}: {problem}")
        elif cat_id is not None:
            if cat_id in first_at:
                warnings.append(f"{source}: {where}: category id {cat_id} is listed again (first "
                                f"at categories[{first_at[cat_id]}]); the last entry is used, "
                                f"as pycocotools does")
            first_at.setdefault(cat_id, i)
            cats[cat_id] = str(cat.get("name", cat_id))
            kept.append(i)
            continue
        warnings.append(f"{source}: {problems[-1]}; skipped")
    if problems and not cats:
        raise all_rejected(source, "category", problems[0], len(entries))
    return cats, kept


def _annotation_problem(where: str, ann: Any, geometry: str, images: dict, cats: dict
                        ) -> str | None:
    """Why one annotation is unusable (its geometry apart), or None."""
    if not isinstance(ann, dict):
        return f"{where} = {short(ann)}: not an object"
    for key in ("id", "image_id", "category_id", geometry):
        if key not in ann:
            return f"{where} = {short(ann)}: missing key '{key}'"
    for key in ("id", "image_id", "category_id"):
        problem = id_problem(key, ann[key])
        if problem:
            return f"{where}: {problem}"
    ids = [integer_id(ann[key]) for key in ("id", "image_id", "category_id")]
    if ids[1] not in images:
        return f"{where}: image_id {ids[1]} is not listed in the ground truth's images"
    if ids[2] not in cats:
        return f"{where}: category_id {ids[2]} is not listed in the ground truth's categories"
    if "area" in ann and not finite_number(ann["area"]):
        return f"{where}: area {short(ann['area'])} is not a finite number"
    if ann.get("iscrowd", 0) not in (0, 1):
        return f"{where}: iscrowd {short(ann['iscrowd'])} is not 0 or 1"
    return None


def _all_usable(anns: list, geometry: str, img_ids: np.ndarray, cat_ids: np.ndarray) -> bool:
    """True when ``_annotation_problem`` finds nothing in any entry, checked over whole
    columns (plain ints for ids, known images and categories, finite areas, iscrowd 0 or 1);
    False sends the entries through the one-by-one check, which names the bad ones."""
    if not set(map(type, anns)) <= {dict}:
        return False
    try:
        columns = [list(map(itemgetter(key), anns)) for key in ("id", "image_id", "category_id")]
        list(map(itemgetter(geometry), anns))
    except KeyError:
        return False
    if not all(set(map(type, column)) <= {int} for column in columns):
        return False
    for column, known in zip(columns[1:], (img_ids, cat_ids), strict=True):
        try:
            values = np.array(column, dtype=np.int64)
        except OverflowError:
            return False
        if not np.isin(values, known).all():
            return False
    areas = list(map(methodcaller("get", "area", 0.0), anns))
    if not set(map(type, areas)) <= {int, float} or not np.isfinite(areas).all():
        return False
    return set(map(methodcaller("get", "iscrowd", 0), anns)) <= {0, 1}


def _mask_problems(segs: list, heights: np.ndarray, widths: np.ndarray
                   ) -> tuple[list[str | None], list[Any], np.ndarray]:
    """Check and convert masks: a problem or None, the compressed RLE and its area, each."""
    problems: list[str | None] = [None] * len(segs)
    rles: list[Any] = [None] * len(segs)
    area = np.zeros(len(segs))
    packed = [j for j, seg in enumerate(segs) if is_compressed(seg)]
    for j in packed:
        problems[j] = size_problem(segs[j], int(heights[j]), int(widths[j]))
    packed = [j for j in packed if problems[j] is None]
    ok, packed_area = compressed_counts_check([segs[j]["counts"] for j in packed],
                                              heights[packed] * widths[packed])
    for j, good, pixels in zip(packed, ok, packed_area, strict=True):
        if good:
            rles[j], area[j] = segs[j], pixels
        else:
            problems[j] = counts_problem(segs[j]["counts"], int(heights[j]), int(widths[j]))
    others = [j for j, seg in enumerate(segs) if rles[j] is None and problems[j] is None]
    for j in others:
        problems[j] = segmentation_problem(segs[j], int(heights[j]), int(widths[j]))
    return problems, rles, area


def _convert_masks(segs: list, rles: list, img: np.ndarray, heights: np.ndarray,
                   widths: np.ndarray, problems: list[str | None]) -> None:
    """Fill ``rles`` for the polygons and uncompressed RLEs, one batch per image."""
    todo = np.array([j for j in range(len(segs)) if rles[j] is None and problems[j] is None],
                    dtype=np.int64)
    by_image = todo[np.argsort(img[todo], kind="stable")]
    bounds = np.flatnonzero(np.diff(img[by_image])) + 1
    for chunk in np.split(by_image, bounds) if len(todo) else []:
        h, w = int(heights[chunk[0]]), int(widths[chunk[0]])
        converted: list[dict | None]
        try:
            converted = list(rles_for_image([segs[j] for j in chunk], h, w))
        except Exception:  # pycocotools raises bare Exceptions on bad geometry: find the culprit
            converted = []
            for j in chunk:
                try:
                    converted.append(rles_for_image([segs[j]], h, w)[0])
                except Exception as err:
                    converted.append(None)
                    problems[j] = f"bad segmentation {short(segs[j])}: {err}"
        for j, rle in zip(chunk, converted, strict=True):
            rles[j] = rle


def parse_ground_truth(data: Any, iou_type: str, source: str) -> GroundTruth:
    """Arrays of a COCO ground-truth dict; bad entries are skipped with a warning."""
    if not isinstance(data, dict):
        raise EvalInputError(f"{source}: ground truth must be a JSON object with images, "
                             f"annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise EvalInputError(f"{source}: ground truth has no '{key}' list")
    warnings: list[str] = []
    images, image_entries = _read_images(data["images"], iou_type, source, warnings)
    cats, category_entries = _read_categories(data["categories"], source, warnings)
    img_ids = np.array(sorted(images), dtype=np.int64)
    cat_ids = np.array(sorted(cats), dtype=np.int64)
    heights = np.array([images[int(i)][0] for i in img_ids], dtype=np.int64)
    widths = np.array([images[int(i)][1] for i in img_ids], dtype=np.int64)
    anns = data["annotations"]
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    problems: dict[int, str] = {}
    rows: list[int] = []
    if _all_usable(anns, geometry, img_ids, cat_ids):
        rows = list(range(len(anns)))
    else:
        for i, ann in enumerate(anns):
            problem = _annotation_problem(f"annotations[{i}]", ann, geometry, images, cats)
            if problem:
                problems[i] = problem
            else:
                rows.append(i)
    kept = [anns[i] for i in rows]
    img = np.searchsorted(img_ids, np.array([integer_id(a["image_id"]) for a in kept],
                                            dtype=np.int64))
    cat = np.searchsorted(cat_ids, np.array([integer_id(a["category_id"]) for a in kept],
                                            dtype=np.int64))
    rles: list[Any] | None = None
    mask_area = np.zeros(len(kept))
    if iou_type == "segm":
        segs = [a["segmentation"] for a in kept]
        shape_problems, rles, mask_area = _mask_problems(segs, heights[img], widths[img])
        _convert_masks(segs, rles, img, heights[img], widths[img], shape_problems)
        converted = [j for j, seg in enumerate(segs)
                     if shape_problems[j] is None and not is_compressed(seg)]
        mask_area[converted] = rle_area([rles[j] for j in converted])
        box = np.zeros((len(kept), 4))
    else:
        box, fine = box_array([a["bbox"] for a in kept])
        shape_problems = [None if ok else box_problem(a["bbox"]) for a, ok in zip(kept, fine,
                                                                                  strict=True)]
    for j, problem in enumerate(shape_problems):
        if problem:
            problems[rows[j]] = f"annotations[{rows[j]}]: {problem}"
    good = [j for j, problem in enumerate(shape_problems) if problem is None]
    if len(good) < len(kept):
        rows, kept, img, cat, box = ([rows[j] for j in good], [kept[j] for j in good], img[good],
                                     cat[good], box[good])
        mask_area = mask_area[good]
        if rles is not None:
            rles = [rles[j] for j in good]
    warnings += [f"{source}: {problems[i]}; skipped" for i in sorted(problems)]
    if anns and not rows:
        raise all_rejected(source, "annotation", problems[min(problems)], len(anns))
    area = np.array([float(a.get("area", np.nan)) for a in kept], dtype=np.float64)
    ann_id = np.array([integer_id(a["id"]) for a in kept], dtype=np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in kept], dtype=bool)
    no_area = np.isnan(area)
    area[no_area] = (box[no_area, 2] * box[no_area, 3] if iou_type == "bbox"
                     else mask_area[no_area])
    sort_key = img * len(cat_ids) + cat
    order = np.argsort(sort_key, kind="stable")
    mask_area = mask_area[order]
    if rles is not None:
        rles = [rles[j] for j in order.tolist()]
    return GroundTruth(img_ids, heights, widths, cat_ids, [cats[int(c)] for c in cat_ids],
                       sort_key[order], img[order], cat[order], ann_id[order], crowd[order],
                       area[order], box[order], rles, mask_area if rles is not None else None,
                       np.asarray(rows, dtype=np.int64)[order], image_entries,
                       category_entries, warnings)


def _positions(ids: np.ndarray, wanted: tuple[int, ...] | None, name: str, what: str
               ) -> np.ndarray:
    """Indices of ``wanted`` ids in the sorted ``ids`` (all when None); unknown ids are an error."""
    if wanted is None:
        return np.arange(len(ids))
    pos = np.searchsorted(ids, wanted)
    found = (pos < len(ids)) & (ids[np.minimum(pos, max(len(ids) - 1, 0))] == wanted) \
        if len(ids) else np.zeros(len(wanted), dtype=bool)
    if not found.all():
        missing = [int(v) for v, ok in zip(wanted, found, strict=True) if not ok]
        raise UsageError(f"Params.{name}: {short(missing)} are not {what} of the ground truth")
    return pos


def select(gt: GroundTruth, params: Params) -> tuple[GroundTruth, Selection]:
    """The ground truth ``params`` evaluates: its images and categories, with categories
    renumbered ``0..K'-1`` (one category, ``ANY_CATEGORY``, when ``use_cats`` is False)."""
    img_pos = _positions(gt.img_ids, params.img_ids, "img_ids", "images")
    cat_pos = _positions(gt.cat_ids, params.cat_ids, "cat_ids", "categories")
    image_kept = np.zeros(len(gt.img_ids), dtype=bool)
    image_kept[img_pos] = True
    category_map = np.full(len(gt.cat_ids), -1, dtype=np.int64)
    category_map[cat_pos] = np.arange(len(cat_pos)) if params.use_cats else 0
    rows = np.flatnonzero(image_kept[gt.img] & (category_map[gt.cat] >= 0))
    cat = category_map[gt.cat[rows]]
    if params.use_cats:
        cat_ids, cat_names = gt.cat_ids[cat_pos], [gt.cat_names[k] for k in cat_pos]
    else:
        cat_ids, cat_names = np.array([-1], dtype=np.int64), [ANY_CATEGORY]
    view = replace(gt, cat_ids=cat_ids, cat_names=cat_names, key=gt.img[rows] * len(cat_ids) + cat,
                   img=gt.img[rows], cat=cat, ann_id=gt.ann_id[rows], crowd=gt.crowd[rows],
                   area=gt.area[rows], box=gt.box[rows],
                   rles=None if gt.rles is None else [gt.rles[j] for j in rows.tolist()],
                   mask_area=None if gt.mask_area is None else gt.mask_area[rows],
                   ann_index=gt.ann_index[rows])
    return view, Selection(image_kept, category_map, params.use_cats)
