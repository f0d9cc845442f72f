"""COCO results (a JSON list of detections) as arrays; bad entries skipped with a warning.

Each result needs ``image_id``, ``category_id``, a finite ``score`` and its geometry. As in
``COCO.loadRes``, the first result decides: with a non-empty ``bbox`` every result needs a
finite ``[x, y, w, h]`` (``w, h >= 0``; a missing mask is the box's polygon) and its area is
``w * h``; otherwise every result needs a ``segmentation`` (compressed RLE, uncompressed RLE
or polygons) and its area is the mask's. An RLE must be of its image's size and its counts
must add up to ``h * w``. Results of categories the ground truth does not have are ignored
with a warning (pycocotools ignores them silently); results of unknown images are skipped. A
file with entries but none usable is an error.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from detseg.errors import EvalInputError
from detseg.eval.coco.ground_truth import GroundTruth, Selection
from detseg.eval.coco.json_input import (
    all_rejected,
    box_array,
    box_problem,
    finite_number,
    id_problem,
    integer_id,
    short,
)
from detseg.eval.coco.rle import (
    compressed_counts_check,
    counts_problem,
    is_compressed,
    segmentation_problem,
    segmentation_to_rle,
    size_problem,
)
from detseg.eval.iou import rle_area


@dataclass
class Detections:
    """Usable results as arrays (``N`` rows, file order)."""

    img: np.ndarray     # [N] image index in the ground truth's sorted image ids
    cat: np.ndarray     # [N] category index (in the ground truth, or in a Selection's)
    score: np.ndarray   # [N] float64
    area: np.ndarray    # [N] float64 square pixels, as COCO.loadRes computes it
    box: np.ndarray | None          # [N, 4] xywh (bbox evaluation, or box results)
    rles: list[dict] | None         # [N] compressed RLEs (segm evaluation, or mask results)
    mask_area: np.ndarray | None    # [N] pixels of each mask (with rles)
    index: np.ndarray   # [N] position of each row in the results list
    from_boxes: bool = True         # loadRes' branch: areas from boxes (else from masks)
    warnings: list[str] = field(default_factory=list)


def _int_column(values: list) -> np.ndarray | None:
    """Integer ids as int64, or None when some value is not an integer number."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 1:
        return None
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if (arr.dtype.kind == "f" and np.isfinite(arr).all() and np.all(np.floor(arr) == arr)
            and np.all(np.abs(arr) < 2.0 ** 63)):
        return arr.astype(np.int64)
    return None


def _float_column(values: list) -> np.ndarray | None:
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        return None
    return arr.astype(np.float64) if arr.ndim == 1 and arr.dtype.kind in "iuf" else None


def _entry_problem(i: int, entry: Any) -> str | None:
    """Why entry ``i`` lacks usable ids or score, or None."""
    if not isinstance(entry, dict):
        return f"results[{i}] = {short(entry)}: not an object"
    for key in ("image_id", "category_id", "score"):
        if key not in entry:
            return f"results[{i}] = {short(entry)}: missing key '{key}'"
    for key in ("image_id", "category_id"):
        problem = id_problem(key, entry[key])
        if problem:
            return f"results[{i}]: {problem}"
    if not finite_number(entry["score"]):
        return f"results[{i}]: score {short(entry['score'])} is not a finite number"
    return None


def _id_columns(entries: list, index: np.ndarray, problems: dict[int, str]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (positions) with usable ids and score, and their image ids, category ids, scores."""
    try:
        img = _int_column([r["image_id"] for r in entries])
        cat = _int_column([r["category_id"] for r in entries])
        score = _float_column([r["score"] for r in entries])
    except (KeyError, TypeError):
        img = None
    if img is None or cat is None or score is None:  # find the bad entries one by one
        for i in index.tolist():
            problem = _entry_problem(i, entries[i])
            if problem:
                problems[int(i)] = problem
        index = np.array([i for i in index.tolist() if i not in problems], dtype=np.int64)
        sub = [entries[i] for i in index.tolist()]
        img = np.array([integer_id(r["image_id"]) for r in sub], dtype=np.int64)
        cat = np.array([integer_id(r["category_id"]) for r in sub], dtype=np.int64)
        score = np.array([r["score"] for r in sub], dtype=np.float64)
    bad = ~np.isfinite(score)
    for i in index[bad].tolist():
        problems[int(i)] = f"results[{i}]: score {entries[i]['score']!r} is not a finite number"
    return index[~bad], img[~bad], cat[~bad], score[~bad]


def _boxes(entries: list, index: np.ndarray, problems: dict[int, str], required: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    """Which rows have a usable ``bbox`` (or none, where not ``required``), and ``[N, 4]``."""
    if required:
        rows = np.arange(len(index))
    else:
        rows = np.flatnonzero([("bbox" in entries[i]) for i in index.tolist()])
    box = np.zeros((len(index), 4))
    fine = np.ones(len(index), dtype=bool)
    box[rows], fine[rows] = box_array([entries[i].get("bbox") for i in index[rows].tolist()])
    for j in np.flatnonzero(~fine):
        entry = entries[index[j]]
        problems[int(index[j])] = (f"results[{index[j]}]: {box_problem(entry['bbox'])}"
                                   if "bbox" in entry else
                                   f"results[{index[j]}] = {short(entry)}: missing key 'bbox' "
                                   f"(the first result has one, so every result needs one)")
    return fine, box


def _packed(segs: list, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Which ``segs`` are compressed RLEs of their image's size (checked further at once)."""
    n = len(segs)
    try:  # fast path: every result carries a compressed RLE
        if not set(map(type, map(itemgetter("counts"), segs))) <= {str, bytes}:
            raise TypeError
        listed = list(map(itemgetter("size"), segs))
        if n and set(map(len, listed)) != {2}:
            raise ValueError
        sizes = np.fromiter(chain.from_iterable(listed), dtype=np.int64, count=2 * n)
        return (sizes[0::2] == heights) & (sizes[1::2] == widths)
    except (KeyError, TypeError, ValueError):
        return np.fromiter((is_compressed(seg) and size_problem(seg, int(h), int(w)) is None
                            for seg, h, w in zip(segs, heights, widths, strict=True)),
                           dtype=bool, count=n)


def _masks(entries: list, index: np.ndarray, gt: GroundTruth, img: np.ndarray,
           box: np.ndarray | None, problems: dict[int, str]
           ) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Rows with a usable mask, their compressed RLEs and mask areas."""
    heights, widths = gt.heights[img], gt.widths[img]
    segs: list[Any] = [entries[i].get("segmentation") for i in index.tolist()]
    packed_mask = _packed(segs, heights, widths)
    packed = np.flatnonzero(packed_mask)
    counts = (list(map(itemgetter("counts"), segs)) if len(packed) == len(segs)
              else [segs[j]["counts"] for j in packed.tolist()])
    ok, packed_area = compressed_counts_check(counts, heights[packed] * widths[packed])
    usable = np.zeros(len(segs), dtype=bool)
    usable[packed[ok]] = True
    area = np.zeros(len(segs))
    area[packed] = packed_area
    rles = list(segs)
    for j in packed[~ok]:
        problems[int(index[j])] = (f"results[{index[j]}]: "
                                   f"{counts_problem(segs[j]['counts'], heights[j], widths[j])}")
    for j in np.flatnonzero(~packed_mask):
        seg, i = segs[j], int(index[j])
        h, w = int(heights[j]), int(widths[j])
        if seg is None and box is not None:  # loadRes: the box as a polygon
            x, y, bw, bh = box[j]
            seg = [[x, y, x, y + bh, x + bw, y + bh, x + bw, y]]
        if seg is None:
            problems[i] = f"results[{i}] = {short(entries[i])}: missing key 'segmentation'"
            continue
        problem = (size_problem(seg, h, w) if is_compressed(seg) else
                   segmentation_problem(seg, h, w))
        if problem is None:
            try:
                rles[j] = segmentation_to_rle(seg, h, w)
                usable[j] = True
            except Exception as err:  # pycocotools raises bare Exceptions on bad geometry
                problem = f"bad segmentation {short(seg)}: {err}"
        if problem is not None:
            problems[i] = f"results[{i}]: {problem}"
    converted = np.flatnonzero(usable & ~packed_mask)
    area[converted] = rle_area([rles[j] for j in converted.tolist()])
    good = np.flatnonzero(usable)
    if len(good) < len(segs):
        rles = [rles[j] for j in good.tolist()]
    return good, rles, area[good]


def _unknown(index: np.ndarray, found: np.ndarray, ids: np.ndarray, key: str, what: str,
             action: str) -> dict[int, str]:
    """One note per unknown id, keyed by its first result: how many results have it."""
    rows_of: dict[int, list[int]] = defaultdict(list)
    for i, value in zip(index[~found], ids[~found], strict=True):
        rows_of[int(value)].append(int(i))
    notes = {}
    for value, rows in rows_of.items():
        more = f" ({len(rows)} results)" if len(rows) > 1 else ""
        notes[rows[0]] = (f"results[{rows[0]}]: {key} {value} is not {what} of the ground "
                          f"truth; {action}{more}")
    return notes


def _positions(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``values`` in ``sorted_ids`` and a mask of the values found there."""
    if len(sorted_ids) == 0:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return pos, sorted_ids[pos] == values


def parse_results(data: Any, gt: GroundTruth, iou_type: str, source: str) -> Detections:
    """The usable results of ``data`` as arrays; ``warnings`` name each skipped entry."""
    if not isinstance(data, list):
        raise EvalInputError(f"{source}: results must be a JSON list of detections, "
                             f"got {type(data).__name__}")
    problems: dict[int, str] = {}
    index, img_id, cat_id, score = _id_columns(data, np.arange(len(data)), problems)
    img, img_found = _positions(gt.img_ids, img_id)
    cat, cat_found = _positions(gt.cat_ids, cat_id)
    notes = _unknown(index, img_found, img_id, "image_id", "an image", "skipped")
    notes.update(_unknown(index[img_found], cat_found[img_found], cat_id[img_found],
                          "category_id", "a category", "ignored, as pycocotools does"))
    keep = img_found & cat_found
    index, img, cat, score = index[keep], img[keep], cat[keep], score[keep]
    # COCO.loadRes branches on the first result: boxes (area = w*h) or masks (mask area).
    first = next((entry for entry in data if isinstance(entry, dict)), {})
    box_branch = bool(first.get("bbox"))
    box = rles = mask_area = None
    if box_branch or iou_type == "bbox":
        fine, box = _boxes(data, index, problems, required=box_branch)
        index, img, cat, score, box = index[fine], img[fine], cat[fine], score[fine], box[fine]
    if iou_type == "segm" or not box_branch:
        rows, rles, mask_area = _masks(data, index, gt, img, box, problems)
        index, img, cat, score = index[rows], img[rows], cat[rows], score[rows]
        box = None if box is None else box[rows]
    notes.update({i: f"{problem}; skipped" for i, problem in problems.items()})
    if data and not len(index):
        first_problem = notes[min(notes)].removesuffix("; skipped")
        raise all_rejected(source, "result", first_problem, len(data))
    warnings = [f"{source}: {notes[i]}" for i in sorted(notes)]
    if box_branch:
        assert box is not None  # every kept result of the box branch has a box
        area = box[:, 2] * box[:, 3]
    else:
        area = mask_area
        if iou_type == "bbox":  # loadRes keeps a result's own box, else the mask's box
            own = np.array([bool(data[i].get("bbox")) for i in index.tolist()], dtype=bool)
            box = np.asarray(np.where(own[:, None], box, mask_utils.toBbox(rles).reshape(-1, 4)))
    return Detections(img, cat, score, area, box, rles, mask_area, index, box_branch, warnings)


def restrict(dets: Detections, selection: Selection) -> Detections:
    """The detections a ``Selection`` evaluates, categories renumbered as it says.

    Category-agnostic evaluation (pycocotools' ``useCats=0``) gathers an image's results
    category by category, so rows are put in (category, file) order there.
    """
    keep = selection.image_kept[dets.img] & (selection.category_map[dets.cat] >= 0)
    if selection.use_cats and keep.all():
        return replace(dets, cat=selection.category_map[dets.cat])
    rows = np.flatnonzero(keep)
    if not selection.use_cats:
        rows = rows[np.argsort(dets.cat[rows], kind="stable")]
    return replace(dets, img=dets.img[rows], cat=selection.category_map[dets.cat[rows]],
                   score=dets.score[rows], area=dets.area[rows],
                   box=None if dets.box is None else dets.box[rows],
                   rles=None if dets.rles is None else [dets.rles[j] for j in rows.tolist()],
                   mask_area=None if dets.mask_area is None else dets.mask_area[rows],
                   index=dets.index[rows])
