"""COCO detection metrics (``bbox`` and ``segm``) that reproduce pycocotools' ``COCOeval``.

The numbers are the ones ``COCOeval.evaluate(); accumulate(); summarize()`` gives (the 12
summary values, the ``precision [T,R,K,A,M]``, ``recall [T,K,A,M]`` and ``scores`` arrays), but
computed with numpy over whole arrays instead of Python loops over (image, category) pairs:

1. detections are sorted once and grouped by (image, category) with offsets; the top
   ``max_dets[-1]`` per group are kept (score ties keep file order, like pycocotools'
   stable mergesort);
2. IoUs of every (detection, ground truth) pair of a group are computed in batched blocks and
   only pairs with IoU >= 0.5 (the lowest threshold) are kept (segm: pairs whose mask areas
   rule out 0.5 are skipped, the rest go to pycocotools' C mask IoU, one call per image);
3. the greedy matching runs for all 10 IoU thresholds x 4 area ranges x all groups at once,
   stepping through the detections' rank within their group;
4. precision/recall are accumulated per (area range, max dets) over all categories at once,
   from the true positives only (precision rises only there): counts of counted detections
   before each true positive come from one cumulative sum, and the 101-point interpolation is
   read off with segmented maxima.

pycocotools behaviour kept on purpose (documented so nobody "fixes" it):
- a ground truth is ignored iff ``iscrowd`` (an ``ignore`` key is overwritten by pycocotools,
  so it has no effect) or its ``area`` field is outside the area range;
- result areas follow ``COCO.loadRes``: when the first result has a non-empty ``bbox``, every
  result's area is ``w * h`` of its box (even for ``segm``), otherwise the RLE mask area;
  results' ``iscrowd`` is always 0;
- a match to a ground truth whose ``id`` is 0 counts as unmatched in the accumulation
  (pycocotools stores matches by annotation id);
- ``AP`` (the first summary number) is read at 100 detections whatever ``max_dets`` says.
Beyond pycocotools: an empty results list gives zeros instead of an exception, and a ground
truth without ``area`` gets the box area (``bbox``) or mask area (``segm``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from detseg.errors import EvalInputError, UsageError
from detseg.eval.iou import paired_box_iou, rle_area

IOU_TYPES = ("bbox", "segm")
# The same linspace calls as pycocotools (np.arange would differ in the last bits).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]],
                       dtype=np.float64)
AREA_LABELS = ("all", "small", "medium", "large")
STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
             "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_PAIR_BLOCK = 1 << 21  # (detection, ground truth) pairs whose IoU is computed at once


@dataclass
class COCOMetrics:
    """Result of one COCO evaluation.

    Attributes:
        iou_type: ``"bbox"`` or ``"segm"``.
        stats: the 12 summary numbers keyed by ``STAT_KEYS`` (-1 where undefined).
        per_class: category name -> AP@[.5:.95] (all areas, most detections); -1 without GT.
        precision: ``[T, R, K, A, M]`` interpolated precision (-1 where no GT), as pycocotools.
        recall: ``[T, K, A, M]`` final recall (-1 where no GT).
        scores: ``[T, R, K, A, M]`` detection score at each recall threshold.
        category_ids, category_names: the ``K`` categories in array order (sorted ids).
        max_dets: the ``M`` maximum numbers of detections per image.
    """

    iou_type: str
    stats: dict[str, float]
    per_class: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    category_ids: list[int]
    category_names: list[str]
    max_dets: tuple[int, ...]
    iou_thresholds: np.ndarray = field(default_factory=lambda: IOU_THRESHOLDS.copy())
    recall_thresholds: np.ndarray = field(default_factory=lambda: RECALL_THRESHOLDS.copy())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``{"iou_type", "stats", "per_class"}`` (no large arrays)."""
        return {"iou_type": self.iou_type, "stats": dict(self.stats),
                "per_class": dict(self.per_class)}


def load_json(source: Any, what: str) -> Any:
    """``source`` itself, or the parsed JSON file it names; errors name the file."""
    if not isinstance(source, (str, Path)):
        return source
    path = Path(source)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvalInputError(f"{path}: {what} file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EvalInputError(f"{path}: malformed JSON in {what} file: {err}") from None


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def segmentation_to_rle(seg: Any, height: int, width: int) -> dict:
    """One annotation's segmentation as a compressed RLE, exactly as ``COCO.annToRLE`` does.

    Polygons (a list of ``[x1, y1, x2, y2, ...]`` parts) are rasterized at ``height x width``
    and merged; an uncompressed RLE (``counts`` a list) is compressed; an RLE is returned as is.
    """
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if isinstance(seg["counts"], list):
            return mask_utils.frPyObjects(seg, height, width)
        return seg
    raise ValueError("segmentation must be a polygon list or an RLE dict with size and counts")


def _rles_for_image(segs: list, height: int, width: int) -> list[dict]:
    """``segmentation_to_rle`` for many annotations of one image, batching plain polygons."""
    out: list[Any] = [None] * len(segs)
    parts: list[list] = []
    owners: list[tuple[int, int, int]] = []
    for j, seg in enumerate(segs):
        # Batched frPyObjects dispatches on the first part only; keep the per-annotation call
        # for anything but lists of polygons whose first part has more than 4 numbers.
        if isinstance(seg, list) and seg and isinstance(seg[0], list) and len(seg[0]) > 4:
            owners.append((j, len(parts), len(seg)))
            parts.extend(seg)
        else:
            out[j] = segmentation_to_rle(seg, height, width)
    if parts:
        rles = mask_utils.frPyObjects(parts, height, width)
        for j, start, count in owners:  # merging a single part returns it unchanged
            out[j] = rles[start] if count == 1 else mask_utils.merge(rles[start:start + count])
    return out


@dataclass
class _GroundTruth:
    """Ground-truth annotations as arrays, sorted by (image, category), file order within."""

    img_ids: np.ndarray      # [I] sorted image ids
    heights: np.ndarray      # [I]
    widths: np.ndarray       # [I]
    cat_ids: np.ndarray      # [K] sorted category ids
    cat_names: list[str]
    key: np.ndarray          # [G] image_index * K + category_index (sorted)
    img: np.ndarray          # [G] image index
    cat: np.ndarray          # [G] category index
    ann_id: np.ndarray       # [G] annotation id
    crowd: np.ndarray        # [G] bool
    area: np.ndarray         # [G] float64 'area' field
    box: np.ndarray          # [G, 4] xywh (bbox evaluation)
    rles: list[dict] | None  # [G] compressed RLEs (segm evaluation)
    mask_area: np.ndarray | None  # [G] pixels of each mask (segm evaluation)


def _index_of(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``values`` in ``sorted_ids`` and a mask of the values found there."""
    pos = np.searchsorted(sorted_ids, values)
    pos_c = np.minimum(pos, max(len(sorted_ids) - 1, 0))
    found = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == values) if len(sorted_ids) else (
        np.zeros(len(values), dtype=bool))
    return pos_c, found


def _int_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise EvalInputError(f"{where}: id {_short(value)} is not an integer")
    return int(value)


def _parse_ground_truth(data: Any, iou_type: str, source: str) -> _GroundTruth:
    if not isinstance(data, dict):
        raise EvalInputError(f"{source}: ground truth must be a JSON object with images, "
                             f"annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise EvalInputError(f"{source}: ground truth has no '{key}' list")
    images: dict[int, tuple[int, int]] = {}
    for i, im in enumerate(data["images"]):
        where = f"{source}: images[{i}]"
        if not isinstance(im, dict) or "id" not in im:
            raise EvalInputError(f"{where} = {_short(im)}: missing key 'id'")
        hw = (int(im.get("height", 0) or 0), int(im.get("width", 0) or 0))
        if iou_type == "segm" and (hw[0] <= 0 or hw[1] <= 0):
            raise EvalInputError(f"{where} = {_short(im)}: segm evaluation needs height and width")
        images[_int_id(im["id"], where)] = hw
    cats: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        where = f"{source}: categories[{i}]"
        if not isinstance(cat, dict) or "id" not in cat:
            raise EvalInputError(f"{where} = {_short(cat)}: missing key 'id'")
        cid = _int_id(cat["id"], where)
        cats[cid] = str(cat.get("name", cid))
    img_ids = np.array(sorted(images), dtype=np.int64)
    cat_ids = np.array(sorted(cats), dtype=np.int64)
    anns = data["annotations"]
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    g = len(anns)
    img = np.empty(g, dtype=np.int64)
    cat = np.empty(g, dtype=np.int64)
    ann_id = np.empty(g, dtype=np.int64)
    crowd = np.empty(g, dtype=bool)
    area = np.full(g, np.nan)
    box = np.zeros((g, 4))
    segs: list[Any] = []
    for i, ann in enumerate(anns):
        where = f"{source}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise EvalInputError(f"{where} = {_short(ann)}: not an object")
        for key in ("id", "image_id", "category_id", geometry):
            if key not in ann:
                raise EvalInputError(f"{where} = {_short(ann)}: missing key '{key}'")
        img[i] = _int_id(ann["image_id"], where)
        cat[i] = _int_id(ann["category_id"], where)
        ann_id[i] = _int_id(ann["id"], where)
        crowd[i] = bool(ann.get("iscrowd", 0))
        if "area" in ann:
            area[i] = float(ann["area"])
        if iou_type == "bbox":
            bb = ann["bbox"]
            if not isinstance(bb, (list, tuple)) or len(bb) != 4:
                raise EvalInputError(f"{where}: bbox {_short(bb)} is not [x, y, w, h]")
            box[i] = bb
        else:
            segs.append(ann["segmentation"])
    img_pos, img_ok = _index_of(img_ids, img)
    cat_pos, cat_ok = _index_of(cat_ids, cat)
    for ok, name, values in ((img_ok, "image_id", img), (cat_ok, "category_id", cat)):
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise EvalInputError(f"{source}: annotations[{i}]: {name} {values[i]} is not listed "
                                 f"in the ground truth's {name.split('_')[0]}s")
    if iou_type == "bbox" and (not np.isfinite(box).all() or (box[:, 2:] < 0).any()):
        i = int(np.flatnonzero(~np.isfinite(box).all(1) | (box[:, 2:] < 0).any(1))[0])
        raise EvalInputError(f"{source}: annotations[{i}]: bbox {box[i].tolist()} has a "
                             f"negative or non-finite size")
    k = len(cat_ids)
    key = img_pos * k + cat_pos
    order = np.argsort(key, kind="stable")
    heights = np.array([images[int(i)][0] for i in img_ids], dtype=np.int64)
    widths = np.array([images[int(i)][1] for i in img_ids], dtype=np.int64)
    rles = mask_area = None
    if iou_type == "segm":
        rles = [None] * g
        by_image = np.argsort(img_pos, kind="stable")
        bounds = np.flatnonzero(np.diff(img_pos[by_image])) + 1
        for chunk in np.split(by_image, bounds) if g else []:
            p = img_pos[chunk[0]]
            try:
                converted = _rles_for_image([segs[j] for j in chunk], heights[p], widths[p])
            except Exception as err:  # pycocotools raises bare Exceptions on bad geometry
                bad = next(j for j in chunk if not _valid_segmentation(segs[j], heights[p],
                                                                        widths[p]))
                raise EvalInputError(f"{source}: annotations[{bad}]: bad segmentation "
                                     f"{_short(segs[bad])}: {err}") from None
            for j, rle in zip(chunk, converted, strict=True):
                rles[j] = rle
        _check_rle_sizes(rles, heights[img_pos], widths[img_pos], f"{source}: annotations")
        mask_area = rle_area(rles)
        missing = np.isnan(area)
        area[missing] = mask_area[missing]
        rles = [rles[j] for j in order]
        mask_area = mask_area[order]
    else:
        missing = np.isnan(area)
        area[missing] = box[missing, 2] * box[missing, 3]
    names = [cats[int(c)] for c in cat_ids]
    return _GroundTruth(img_ids, heights, widths, cat_ids, names, key[order], img_pos[order],
                        cat_pos[order], ann_id[order], crowd[order], area[order], box[order],
                        rles, mask_area)


def _valid_segmentation(seg: Any, height: int, width: int) -> bool:
    try:
        segmentation_to_rle(seg, height, width)
    except Exception:
        return False
    return True


def _check_rle_sizes(rles: list[dict], heights: np.ndarray, widths: np.ndarray,
                     where: str) -> None:
    listed = list(map(itemgetter("size"), rles))
    if rles and set(map(len, listed)) != {2}:
        raise ValueError("an RLE size is not [height, width]")
    sizes = np.fromiter(chain.from_iterable(listed), dtype=np.int64,
                        count=2 * len(rles)).reshape(-1, 2)
    bad = (sizes[:, 0] != heights) | (sizes[:, 1] != widths)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EvalInputError(f"{where}[{i}]: mask size {sizes[i].tolist()} differs from the image "
                             f"size {[int(heights[i]), int(widths[i])]}")


@dataclass
class _Detections:
    """Results as arrays (one row per result, file order)."""

    img: np.ndarray     # [N] image index
    cat: np.ndarray     # [N] category index
    score: np.ndarray   # [N] float64
    area: np.ndarray    # [N] float64, as COCO.loadRes computes it
    box: np.ndarray | None          # [N, 4] xywh (bbox evaluation)
    rles: list[dict] | None         # [N] (segm evaluation)
    mask_area: np.ndarray | None    # [N] pixels of each mask (segm evaluation)


def _entry_problem(i: int, entry: Any, required: Sequence[str]) -> str | None:
    if not isinstance(entry, dict):
        return f"results[{i}] = {_short(entry)}: not an object"
    for key in required:
        if key not in entry:
            return f"results[{i}] = {_short(entry)}: missing key '{key}'"
    for key in ("image_id", "category_id"):
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            return f"results[{i}]: {key} {_short(value)} is not an integer"
    score = entry["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not np.isfinite(score):
        return f"results[{i}]: score {_short(score)} is not a finite number"
    if "bbox" in required:
        bb = entry["bbox"]
        if (not isinstance(bb, (list, tuple)) or len(bb) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bb)):
            return f"results[{i}]: bbox {_short(bb)} is not [x, y, w, h]"
        if not all(np.isfinite(v) for v in bb) or bb[2] < 0 or bb[3] < 0:
            return f"results[{i}]: bbox {_short(bb)} has a negative or non-finite size"
    return None


def _first_problem(res: list, required: Sequence[str]) -> str:
    for i, entry in enumerate(res):
        problem = _entry_problem(i, entry, required)
        if problem:
            return problem
    return "results: malformed entries"


def _int_column(values: list, name: str, res: list, required: Sequence[str]) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "iu" and arr.ndim == 1:
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f" and arr.ndim == 1 and np.all(np.floor(arr) == arr):
        return arr.astype(np.int64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    raise EvalInputError(_first_problem(res, required))


def _parse_results(res: Any, gt: _GroundTruth, iou_type: str, source: str) -> _Detections:
    if not isinstance(res, list):
        raise EvalInputError(f"{source}: results must be a JSON list of detections, "
                             f"got {type(res).__name__}")
    n = len(res)
    if n == 0:
        return _Detections(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
                           np.zeros(0), np.zeros((0, 4)), [], np.zeros(0))
    first = res[0]
    # COCO.loadRes branches on the first result: boxes (area = w*h) or masks (area = RLE area).
    box_branch = isinstance(first, dict) and bool(first.get("bbox"))
    if not box_branch and not (isinstance(first, dict) and "segmentation" in first):
        raise EvalInputError(f"{source}: results[0] = {_short(first)}: has neither 'bbox' nor "
                             f"'segmentation'")
    required = ["image_id", "category_id", "score"]
    if box_branch or iou_type == "bbox":
        required.append("bbox" if box_branch else "segmentation")
    if iou_type == "segm" and not box_branch:
        required.append("segmentation")
    try:
        img_raw = [r["image_id"] for r in res]
        cat_raw = [r["category_id"] for r in res]
        score = np.array([r["score"] for r in res], dtype=np.float64)
        boxes = [r["bbox"] for r in res] if box_branch else None
    except (KeyError, TypeError, ValueError):
        raise EvalInputError(_first_problem(res, required)) from None
    img = _int_column(img_raw, "image_id", res, required)
    cat = _int_column(cat_raw, "category_id", res, required)
    if not np.isfinite(score).all():
        raise EvalInputError(_first_problem(res, required))
    img_pos, img_ok = _index_of(gt.img_ids, img)
    if not img_ok.all():
        i = int(np.flatnonzero(~img_ok)[0])
        raise EvalInputError(f"{source}: results[{i}]: image_id {img[i]} is not an image of the "
                             f"ground truth")
    cat_pos, cat_ok = _index_of(gt.cat_ids, cat)
    if not cat_ok.all():
        i = int(np.flatnonzero(~cat_ok)[0])
        raise EvalInputError(f"{source}: results[{i}]: category_id {cat[i]} is not a category of "
                             f"the ground truth")
    box = None
    if boxes is not None:
        try:
            lens = np.fromiter(map(len, boxes), dtype=np.int64, count=n)
            if (lens != 4).any():
                raise ValueError
            box = np.fromiter(chain.from_iterable(boxes), dtype=np.float64,
                              count=4 * n).reshape(n, 4)
        except (TypeError, ValueError):
            raise EvalInputError(_first_problem(res, required)) from None
        if not np.isfinite(box).all() or (box[:, 2:] < 0).any():
            i = int(np.flatnonzero(~np.isfinite(box).all(1) | (box[:, 2:] < 0).any(1))[0])
            raise EvalInputError(f"{source}: results[{i}]: bbox {box[i].tolist()} has a "
                                 f"negative or non-finite size")
    rles = mask_area = None
    if iou_type == "segm" or not box_branch:
        rles = _result_rles(res, gt, img_pos, box, source)
        mask_area = rle_area(rles)
    if box_branch:
        area = box[:, 2] * box[:, 3]
    else:
        area = mask_area
        if iou_type == "bbox":  # loadRes keeps a result's own box, else the mask's box
            box = mask_utils.toBbox(rles).reshape(-1, 4)
            for i, r in enumerate(res):
                if "bbox" in r:
                    box[i] = r["bbox"]
    if iou_type == "bbox":
        return _Detections(img_pos, cat_pos, score, area, box, None, None)
    return _Detections(img_pos, cat_pos, score, area, None, rles, mask_area)


def _result_rles(res: list, gt: _GroundTruth, img_pos: np.ndarray, box: np.ndarray | None,
                 source: str) -> list[dict]:
    """Results' masks as compressed RLEs; a result without one gets its box polygon (loadRes)."""
    heights, widths = gt.heights[img_pos], gt.widths[img_pos]
    rles: list[Any] = [r.get("segmentation") for r in res]
    try:  # fast path: every result carries a compressed RLE
        counts_types = set(map(type, map(itemgetter("counts"), rles)))
        compressed = counts_types <= {str, bytes}
    except (KeyError, TypeError):
        compressed = False
    for i, seg in enumerate(rles if not compressed else ()):
        if type(seg) is dict and type(seg.get("counts")) in (str, bytes) and "size" in seg:
            continue
        if seg is None:
            if box is None:
                raise EvalInputError(f"{source}: results[{i}] = {_short(res[i])}: missing key "
                                     f"'segmentation'")
            x, y, w, h = box[i]
            seg = [[x, y, x, y + h, x + w, y + h, x + w, y]]
        try:
            rles[i] = segmentation_to_rle(seg, int(heights[i]), int(widths[i]))
        except Exception as err:  # pycocotools raises bare Exceptions on bad geometry
            raise EvalInputError(f"{source}: results[{i}]: bad segmentation {_short(seg)}: "
                                 f"{err}") from None
    try:
        _check_rle_sizes(rles, heights, widths, f"{source}: results")
    except (KeyError, TypeError, ValueError):
        bad = next(i for i, r in enumerate(rles) if not _size_ok(r))
        raise EvalInputError(f"{source}: results[{bad}]: bad RLE size {_short(rles[bad])}"
                             ) from None
    return rles


def _size_ok(rle: Any) -> bool:
    size = rle.get("size") if isinstance(rle, dict) else None
    return isinstance(size, (list, tuple)) and len(size) == 2


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each element's run of equal keys."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return np.repeat(starts, np.diff(np.append(starts, n)))


def _pair_blocks(counts: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Split detections into consecutive ranges holding at most ~``limit`` pairs each."""
    n = len(counts)
    cum = np.cumsum(counts)
    bounds, start = [], 0
    while start < n:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + limit, side="right"))
        stop = max(stop, start + 1)
        bounds.append((start, stop))
        start = stop
    return bounds


def _expand_pairs(lo: np.ndarray, counts: np.ndarray, start: int, stop: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(detection, ground truth) index pairs for detections ``start:stop``."""
    c = counts[start:stop]
    total = int(c.sum())
    det = np.repeat(np.arange(start, stop), c)
    first = np.cumsum(c) - c
    gt = np.repeat(lo[start:stop] - first, c) + np.arange(total)
    return det, gt


class COCOEvaluator:
    """COCO mAP for ``bbox`` or ``segm`` with pycocotools' exact numbers.

    Args:
        gt: COCO ground-truth dict or the path of its JSON file (not modified).
        iou_type: ``"bbox"`` or ``"segm"``.

    Example:
        >>> metrics = COCOEvaluator("instances_val2017.json").evaluate("results.json")
        >>> metrics.stats["AP"], metrics.per_class["person"]
    """

    def __init__(self, gt: dict | str | Path, iou_type: str = "bbox") -> None:
        if iou_type not in IOU_TYPES:
            raise UsageError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        self.iou_type = iou_type
        source = str(gt) if isinstance(gt, (str, Path)) else "ground truth"
        self.gt = _parse_ground_truth(load_json(gt, "ground-truth"), iou_type, source)

    @property
    def category_names(self) -> list[str]:
        return list(self.gt.cat_names)

    def evaluate(self, results: list[dict] | str | Path,
                 max_dets: Sequence[int] = (1, 10, 100)) -> COCOMetrics:
        """Evaluate COCO-format results (a list of dicts or the path of a JSON list).

        Each result needs ``image_id``, ``category_id``, ``score`` and ``bbox`` ``[x, y, w, h]``
        (bbox) or ``segmentation`` (segm: RLE, or polygons rasterized at the image size).
        Raises ``EvalInputError`` naming the first offending entry.
        """
        md = tuple(sorted(int(m) for m in max_dets))
        if len(md) != 3 or md[0] <= 0:
            raise UsageError(f"max_dets must be three positive numbers, got {tuple(max_dets)}")
        source = str(results) if isinstance(results, (str, Path)) else "results"
        dets = _parse_results(load_json(results, "results"), self.gt, self.iou_type, source)
        precision, recall, scores = self._accumulate(dets, md)
        stats = summarize(precision, recall, md)
        per_class = {}
        for k, name in enumerate(self.gt.cat_names):
            s = precision[:, :, k, 0, -1]
            per_class[name] = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
        return COCOMetrics(self.iou_type, stats, per_class, precision, recall, scores,
                           self.gt.cat_ids.tolist(), list(self.gt.cat_names), md)

    # -- matching ---------------------------------------------------------------------------

    def _candidate_pairs(self, d_key: np.ndarray, dets: _Detections, order: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs (detection, ground truth, IoU) of the same group with IoU >= 0.5."""
        gt = self.gt
        lo = np.searchsorted(gt.key, d_key, side="left")
        counts = np.searchsorted(gt.key, d_key, side="right") - lo
        thr = IOU_THRESHOLDS[0]
        out_d, out_g, out_iou = [], [], []
        if self.iou_type == "bbox":
            d_box = dets.box[order]
            for start, stop in _pair_blocks(counts, _PAIR_BLOCK):
                pd, pg = _expand_pairs(lo, counts, start, stop)
                iou = paired_box_iou(d_box[pd], gt.box[pg], gt.crowd[pg])
                keep = iou >= thr
                out_d.append(pd[keep])
                out_g.append(pg[keep])
                out_iou.append(iou[keep])
        else:
            rles = [dets.rles[i] for i in order]
            d_area = dets.mask_area[order]
            for start, stop in _pair_blocks(counts, _PAIR_BLOCK):
                pd, pg = _expand_pairs(lo, counts, start, stop)
                pd, pg = _mask_area_filter(pd, pg, d_area, gt)
                iou = _mask_pair_iou(pd, pg, rles, gt)
                keep = iou >= thr
                out_d.append(pd[keep])
                out_g.append(pg[keep])
                out_iou.append(iou[keep])
        if not out_d:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(out_d), np.concatenate(out_g), np.concatenate(out_iou)

    def _match(self, d_key: np.ndarray, out_area: np.ndarray, dets: _Detections,
               order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy matching of all groups, thresholds and area ranges at once.

        ``out_area [A, N]`` flags kept detections outside each area range. Returns the indices
        ``[C]`` of the detections that have a pair with IoU >= 0.5 (the only ones that can
        match) and their ``tp [A, T, C]`` and ``counted [A, T, C]`` (not ignored) flags; every
        other detection is a false positive unless ``out_area`` ignores it.
        """
        gt = self.gt
        a_n, t_n = len(AREA_RANGES), len(IOU_THRESHOLDS)
        lo_a, hi_a = AREA_RANGES[:, 0:1], AREA_RANGES[:, 1:2]
        gt_ig = gt.crowd[None, :] | (gt.area[None, :] < lo_a) | (gt.area[None, :] > hi_a)
        pd, pg, piou = self._candidate_pairs(d_key, dets, order)
        if len(pd) == 0:
            return np.zeros(0, np.int64), np.zeros((a_n, t_n, 0), bool), np.zeros((a_n, t_n, 0),
                                                                                  bool)
        # Candidate detections (those with a pair) and their step = rank among the group's
        # candidates; the greedy order only matters within a group.
        new = np.empty(len(pd), dtype=bool)
        new[0] = True
        np.not_equal(pd[1:], pd[:-1], out=new[1:])
        cand = pd[new]                                  # sorted detection indices
        blk = np.cumsum(new) - 1                        # pair -> candidate index
        step = np.arange(len(cand)) - _group_starts(d_key[cand])
        by_step = np.argsort(step, kind="stable")       # candidate order processed step by step
        slot = np.empty(len(cand), dtype=np.int64)
        slot[by_step] = np.arange(len(cand))
        pslot = slot[blk]
        # Within a detection: best IoU first, later ground truth first on ties (pycocotools
        # keeps the last of equal IoUs); non-ignored ground truth before ignored ones.
        base = np.lexsort((-pg, -piou, pslot))
        pslot_sorted = pslot[base]
        slot_start = np.searchsorted(pslot_sorted, np.arange(len(cand) + 1))
        step_sorted = step[by_step]
        n_steps = int(step_sorted[-1]) + 1
        step_start = np.searchsorted(step_sorted, np.arange(n_steps + 1))
        g_a = np.empty((a_n, len(pd)), dtype=np.int64)
        iou_a = np.empty((a_n, len(pd)))
        for a in range(a_n):
            perm = base[np.argsort(pslot_sorted * 2 + gt_ig[a, pg[base]], kind="stable")]
            g_a[a] = pg[perm]
            iou_a[a] = piou[perm]
        taken = np.zeros((a_n, t_n, len(gt.key)), dtype=bool)
        match = np.full((a_n, t_n, len(cand)), -1, dtype=np.int64)
        ai = np.arange(a_n)[:, None, None]
        ti = np.arange(t_n)[None, :, None]
        thr = IOU_THRESHOLDS[None, :, None]
        for s in range(n_steps):
            b0, b1 = step_start[s], step_start[s + 1]
            p0, p1 = slot_start[b0], slot_start[b1]
            g = g_a[:, p0:p1]
            width = p1 - p0
            free = ~taken[ai, ti, g[:, None, :]] | gt.crowd[g][:, None, :]
            valid = (iou_a[:, None, p0:p1] >= thr) & free
            pos = np.where(valid, np.arange(width), width)
            first = np.minimum.reduceat(pos, slot_start[b0:b1] - p0, axis=2)     # [A, T, nb]
            hit = first < width
            chosen = np.take_along_axis(g[:, None, :].repeat(t_n, 1),
                                        np.minimum(first, width - 1), axis=2)
            chosen = np.where(hit, chosen, -1)
            aa, tt, bb = np.nonzero(hit)
            taken[aa, tt, chosen[aa, tt, bb]] = True
            match[:, :, b0:b1] = chosen
        # Back to detection order (slot j holds candidate by_step[j]).
        match = match[:, :, slot]
        hit = match >= 0
        m = np.maximum(match, 0)
        m_ig = gt_ig[ai, m] & hit
        counted = hit & (gt.ann_id[m] != 0)  # pycocotools stores matches by id: id 0 is "none"
        ignored = m_ig | (~counted & out_area[:, None, cand])
        return cand, counted & ~ignored, ~ignored

    # -- accumulation -----------------------------------------------------------------------

    def _accumulate(self, dets: _Detections, max_dets: tuple[int, ...]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gt = self.gt
        k_n = len(gt.cat_ids)
        t_n, r_n, a_n, m_n = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), 3
        precision = -np.ones((t_n, r_n, k_n, a_n, m_n))
        recall = -np.ones((t_n, k_n, a_n, m_n))
        scores = -np.ones((t_n, r_n, k_n, a_n, m_n))
        if k_n == 0:
            return precision, recall, scores
        # Group detections by (image, category), highest score first, file order on ties.
        d_key_all = dets.img * k_n + dets.cat
        order = np.argsort(-dets.score, kind="stable")
        order = order[np.argsort(d_key_all[order], kind="stable")]
        rank = np.arange(len(order)) - _group_starts(d_key_all[order])
        keep = rank < max_dets[-1]
        order, rank = order[keep], rank[keep]
        d_key, d_cat, d_score = d_key_all[order], dets.cat[order], dets.score[order]
        lo_a, hi_a = AREA_RANGES[:, 0:1], AREA_RANGES[:, 1:2]
        d_area = dets.area[order]
        out_area = (d_area[None, :] < lo_a) | (d_area[None, :] > hi_a)           # [A, N]
        cand, tp, counted = self._match(d_key, out_area, dets, order)
        # Accumulation order: category, then score (descending), then image, then file order.
        acc = np.argsort(-d_score, kind="stable")
        acc = acc[np.argsort(d_cat[acc], kind="stable")]
        acc_pos = np.empty(len(acc), dtype=np.int64)
        acc_pos[acc] = np.arange(len(acc))
        gt_ok = ~(gt.crowd[None, :] | (gt.area[None, :] < lo_a) | (gt.area[None, :] > hi_a))
        npig = np.stack([np.bincount(gt.cat[gt_ok[a]], minlength=k_n) for a in range(a_n)])
        for m, md in enumerate(max_dets):
            in_m = rank[acc] < md
            sel = acc[in_m]
            sel_pos = np.cumsum(in_m) - 1                  # position among the selected
            lens = np.bincount(d_cat[sel], minlength=k_n)
            starts = np.cumsum(lens) - lens
            c_in = rank[cand] < md
            c_pos = sel_pos[acc_pos[cand[c_in]]]
            c_order = np.argsort(c_pos)
            c_pos = c_pos[c_order]
            c_idx = np.flatnonzero(c_in)[c_order]
            c_cat = d_cat[cand[c_idx]]
            c_score = d_score[cand[c_idx]]
            first_score = np.zeros(k_n)
            first_score[lens > 0] = d_score[sel[starts[lens > 0]]]
            for a in range(a_n):
                kept = ~out_area[a, sel]
                q, ss, rc = _precision_recall(
                    tp[a][:, c_idx], counted[a][:, c_idx], kept[c_pos], c_pos, c_cat, c_score,
                    np.cumsum(kept), lens, starts, first_score, npig[a])
                has_gt = npig[a] > 0
                precision[:, :, has_gt, a, m] = q.transpose(0, 2, 1)[:, :, has_gt]
                scores[:, :, has_gt, a, m] = ss.transpose(0, 2, 1)[:, :, has_gt]
                recall[:, has_gt, a, m] = rc[:, has_gt]
        return precision, recall, scores


def _mask_area_filter(pd: np.ndarray, pg: np.ndarray, d_area: np.ndarray, gt: _GroundTruth
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Drop pairs whose mask IoU is certainly below 0.5.

    The intersection is at most the smaller mask and the union at least the larger one, so
    ``2 * smaller < larger`` proves IoU < 0.5 in exact integer arithmetic (for a crowd the
    IoU is ``|d & g| / |d|``, at most ``|g| / |d|``); empty masks have IoU 0.
    """
    da, ga = d_area[pd], gt.mask_area[pg]
    small, large = np.minimum(da, ga), np.where(gt.crowd[pg], da, np.maximum(da, ga))
    keep = (small > 0) & (2 * small >= large)
    return pd[keep], pg[keep]


def _mask_pair_iou(pd: np.ndarray, pg: np.ndarray, rles: list[dict], gt: _GroundTruth
                   ) -> np.ndarray:
    """Exact mask IoU of each pair: one pycocotools call per image.

    Pairs come sorted by detection (hence by image); an image's ground truth is one
    contiguous range, passed whole.
    """
    iou = np.zeros(len(pd))
    if len(pd) == 0:
        return iou
    img = gt.img[pg]
    cuts = np.flatnonzero(np.diff(img)) + 1
    new_det = np.empty(len(pd), dtype=bool)
    new_det[0] = True
    np.not_equal(pd[1:], pd[:-1], out=new_det[1:])
    det_rank = np.cumsum(new_det) - 1
    g_first = np.searchsorted(gt.img, gt.img[pg[np.r_[0, cuts]]], side="left")
    g_last = np.searchsorted(gt.img, gt.img[pg[np.r_[0, cuts]]], side="right")
    crowd = gt.crowd.astype(np.uint8)
    for s0, s1, g0, g1 in zip(np.r_[0, cuts], np.r_[cuts, len(pd)], g_first, g_last,
                              strict=True):
        dets = pd[s0:s1][new_det[s0:s1]]
        mat = mask_utils.iou([rles[i] for i in dets], gt.rles[g0:g1], crowd[g0:g1].tolist())
        iou[s0:s1] = np.asarray(mat).reshape(len(dets), g1 - g0)[
            det_rank[s0:s1] - det_rank[s0], pg[s0:s1] - g0]
    return iou


def _precision_recall(tp: np.ndarray, counted: np.ndarray, kept: np.ndarray, pos: np.ndarray,
                      cat: np.ndarray, score: np.ndarray, kept_cum: np.ndarray, lens: np.ndarray,
                      starts: np.ndarray, first_score: np.ndarray, npig: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolated precision and scores ``[T, K, R]`` and recall ``[T, K]`` of one setting.

    The detections of the setting are sorted by category (segments of ``lens`` starting at
    ``starts``), score descending within. Only the candidates (``C`` detections that have an
    IoU >= 0.5 pair, at sorted positions ``pos`` with categories ``cat`` and scores ``score``)
    can be true positives: ``tp``/``counted [T, C]`` are their flags, ``kept [C]`` their
    default not-ignored flag that ``kept_cum [N]`` (cumulative over all detections) counts.

    pycocotools' precision ``tp_c / (fp_c + tp_c + eps)`` only rises at true positives, so the
    interpolated precision at a recall threshold is the maximum over the true positives from
    the one where that recall is reached; ``fp_c`` there is the number of counted detections
    so far minus ``tp_c``. Values for categories without ground truth are meaningless (the
    caller keeps -1 there).
    """
    t_n = tp.shape[0]
    k_n, r_n = len(lens), len(RECALL_THRESHOLDS)
    # Counted (not ignored) detections up to each candidate inclusive, within its category:
    # the default flags of everything plus the candidates' corrections at each threshold.
    kept_cum = np.append(0, kept_cum)              # kept_cum[i]: kept among the first i
    before = kept_cum[starts]
    base = kept_cum[pos + 1] - before[cat]
    corr = counted.astype(np.int64) - kept[None, :]
    corr_cum = np.cumsum(corr, axis=1)
    c_lens = np.bincount(cat, minlength=k_n)
    c_starts = np.cumsum(c_lens) - c_lens
    if len(pos):
        corr_cum -= np.repeat(np.concatenate([np.zeros((t_n, 1), np.int64), corr_cum], 1)
                              [:, c_starts], c_lens, axis=1)
    n_counted = base[None, :] + corr_cum
    # True positives in (t, category, position) order, with their rank j within the category.
    tt, cc = np.nonzero(tp)
    tp_cat = cat[cc]
    seg = tt * k_n + tp_cat
    ntp = np.bincount(seg, minlength=t_n * k_n)
    seg_start = np.cumsum(ntp) - ntp
    j = np.arange(len(seg)) - seg_start[seg] + 1
    tp_f = j.astype(np.float64)
    fp_f = (n_counted[tt, cc] - j).astype(np.float64)
    pr = tp_f / (fp_f + tp_f + np.spacing(1))
    ntp = ntp.reshape(t_n, k_n)
    npig_f = np.maximum(npig, 1).astype(np.float64)
    rc = ntp / npig_f                               # final recall; 0 without detections
    # Smallest true-positive count v whose recall v / npig reaches each threshold, exactly as
    # the float division compares (checked on the neighbours of v ~ thr * npig). The first
    # threshold (0) is reached at the category's first detection.
    cand = np.floor(RECALL_THRESHOLDS[None, :] * npig_f[:, None])[:, :, None] - 1 + np.arange(4)
    cand = np.maximum(cand, 1)
    ok = cand / npig_f[:, None, None] >= RECALL_THRESHOLDS[None, :, None]
    need = np.take_along_axis(cand, ok.argmax(axis=2)[:, :, None], axis=2)[:, :, 0]
    need = need.astype(np.int64)                                                  # [K, R]
    reached = need[None] <= ntp[:, :, None]                                       # [T, K, R]
    local = np.minimum(need[None] - 1, ntp[:, :, None])
    seg_base = seg_start.reshape(t_n, k_n)[:, :, None]
    # Maximum of pr from the v-th true positive to the category's last: block maxima between
    # consecutive query positions, then a suffix maximum over the blocks.
    bounds = np.concatenate([seg_base + local, seg_base + ntp[:, :, None]], axis=2)
    pr_ext = np.append(pr, 0.0)
    blocks = np.maximum.reduceat(pr_ext, bounds.ravel()).reshape(t_n, k_n, r_n + 1)[:, :, :r_n]
    blocks[~reached] = 0.0
    q = np.maximum.accumulate(blocks[:, :, ::-1], axis=2)[:, :, ::-1]
    tp_score = np.append(score[cc], 0.0)
    ss = np.where(reached, tp_score[np.minimum(seg_base + local, len(cc))], 0.0)
    ss[:, :, 0] = first_score[None, :]
    return q, ss, rc


def summarize(precision: np.ndarray, recall: np.ndarray, max_dets: Sequence[int]
              ) -> dict[str, float]:
    """The 12 COCO summary numbers from ``precision``/``recall`` (pycocotools' rules)."""

    def one(ap: bool, iou_thr: float | None = None, area: str = "all", md: int = 100) -> float:
        aind = [i for i, label in enumerate(AREA_LABELS) if label == area]
        mind = [i for i, m in enumerate(max_dets) if m == md]
        s = precision if ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    m0, m1, m2 = max_dets[0], max_dets[1], max_dets[2]
    values = [
        one(True), one(True, 0.5, md=m2), one(True, 0.75, md=m2),
        one(True, area="small", md=m2), one(True, area="medium", md=m2),
        one(True, area="large", md=m2),
        one(False, md=m0), one(False, md=m1), one(False, md=m2),
        one(False, area="small", md=m2), one(False, area="medium", md=m2),
        one(False, area="large", md=m2),
    ]
    return dict(zip(STAT_KEYS, values, strict=True))


def evaluate_with_pycocotools(gt: dict | str | Path, results: list[dict] | str | Path,
                              iou_type: str = "bbox",
                              max_dets: Sequence[int] = (1, 10, 100)) -> COCOMetrics:
    """The same evaluation by pycocotools' own ``COCOeval`` (the trusted reference; slow).

    Inputs are checked by detseg's parser first, so bad entries get the same clear errors; an
    empty results list (which ``COCO.loadRes`` cannot load) is scored by ``COCOEvaluator``.
    """
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    evaluator = COCOEvaluator(gt, iou_type)
    data = load_json(results, "results")
    source = str(results) if isinstance(results, (str, Path)) else "results"
    _parse_results(data, evaluator.gt, iou_type, source)
    if not data:
        return evaluator.evaluate(data, max_dets)
    md = tuple(sorted(int(m) for m in max_dets))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(load_json(gt, "ground-truth"))
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(data)), iou_type)
        ev.params.maxDets = list(md)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]
    per_class = {}
    for k, name in enumerate(evaluator.gt.cat_names):
        s = precision[:, :, k, 0, -1]
        per_class[name] = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
    stats = {key: float(v) for key, v in zip(STAT_KEYS, ev.stats, strict=True)}
    return COCOMetrics(iou_type, stats, per_class, precision, ev.eval["recall"],
                       ev.eval["scores"], evaluator.gt.cat_ids.tolist(),
                       list(evaluator.gt.cat_names), md)


def metrics_json(evals: dict[str, COCOMetrics]) -> dict[str, Any]:
    """The ``metrics.json`` structure: ``{"bbox": {AP, ..., ARl}, "segm": {...},
    "per_class": {name: {"bbox": AP, "segm": AP}}}`` (the IoU types present)."""
    metrics: dict[str, Any] = {iou_type: dict(m.stats) for iou_type, m in evals.items()}
    names = next(iter(evals.values())).category_names if evals else []
    metrics["per_class"] = {name: {iou_type: m.per_class[name] for iou_type, m in evals.items()}
                            for name in names}
    return metrics
