"""Mask conversions: binary masks <-> COCO polygons and RLE, tight boxes.

Coordinates follow pycocotools: pixel ``(x, y)`` covers the square ``[x, x+1] x [y, y+1]``, so
the polygon of a mask runs along pixel edges and its extent equals the mask's tight box
``[xmin, ymin, xmax + 1, ymax + 1]``. ``mask_to_polygons`` traces those pixel edges, so
rasterizing its output with pycocotools gives back the same pixels.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight ``xyxy`` box (pixel edges) of a binary ``H x W`` mask, or ``None`` if it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def region_box(region: np.ndarray) -> tuple[float, float, float, float]:
    """``mask_box`` of a region found in a mask (a value or component present in it, so the
    binary ``H x W`` ``region`` is never empty)."""
    box = mask_box(region)
    assert box is not None, "a region found in a mask has pixels"
    return box


def masks_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` boxes (pixel edges) of ``N x H x W`` masks; empty masks give zeros."""
    boxes = np.zeros((len(masks), 4), dtype=np.float64)
    for i, m in enumerate(masks):
        box = mask_box(m)
        if box is not None:
            boxes[i] = box
    return boxes


def _pad1(mask: np.ndarray, value: int = 0) -> np.ndarray:
    """``mask`` with a one-pixel border of ``value`` (``np.pad`` is slow on small arrays)."""
    out = np.full((mask.shape[0] + 2, mask.shape[1] + 2), value, dtype=np.uint8)
    out[1:-1, 1:-1] = mask
    return out


def _corner_grid(mask: np.ndarray) -> np.ndarray:
    """``(H+1) x (W+1)`` grid of pixel corners, on where any of the 4 touching pixels is on."""
    h, w = mask.shape
    padded = _pad1(mask)
    return cv2.dilate(padded, np.ones((2, 2), np.uint8), anchor=(0, 0))[: h + 1, : w + 1]


def _trace_part(mask: np.ndarray) -> list[np.ndarray]:
    """Outer boundaries of a binary mask as ``K x 2`` loops of pixel-corner points.

    The outer contour of the corner grid runs along pixel edges, except that it cuts concave
    corners diagonally (undone below). Where the corner grid would close off background (inlets
    one pixel wide, background pixels touching only diagonally), the mask is traced at twice
    the resolution, where every background pixel keeps an "off" corner linked to the outside.
    """
    grid = _corner_grid(mask)
    swallowed = (mask == 0) & (grid[:-1, :-1] > 0) & (grid[1:, :-1] > 0) \
        & (grid[:-1, 1:] > 0) & (grid[1:, 1:] > 0)
    scale = 1
    if swallowed.any() or mask_has_holes(grid):
        scale = 2
        grid = _corner_grid(np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1))
    corners = _pad1(grid)  # findContours ignores the border row and column
    contours, _ = cv2.findContours(corners, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    loops = []
    for contour in contours:
        pts = contour.reshape(-1, 2)
        if len(pts) < 3:
            continue
        nxt = np.roll(pts, -1, axis=0)
        diagonal = (pts[:, 0] != nxt[:, 0]) & (pts[:, 1] != nxt[:, 1])
        if diagonal.any():
            cand_a = np.stack([nxt[:, 0], pts[:, 1]], axis=1)
            cand_b = np.stack([pts[:, 0], nxt[:, 1]], axis=1)
            a_on = corners[cand_a[:, 1], cand_a[:, 0]] > 0
            inserted = np.where(a_on[:, None], cand_a, cand_b)
            out = np.empty((len(pts) + int(diagonal.sum()), 2), dtype=pts.dtype)
            pos = np.arange(len(pts)) + np.concatenate([[0], np.cumsum(diagonal)[:-1]])
            out[pos] = pts
            out[pos[diagonal] + 1] = inserted[diagonal]
            pts = out
        loops.append(_drop_collinear(pts - 1) // scale)
    return loops


def _trace_outer(mask: np.ndarray) -> list[np.ndarray]:
    """Pixel-edge loops of every 4-connected part (parts touching at a corner stay apart,
    since a polygon crossing itself there would not rasterize back to the same pixels)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if n <= 2:
        return _trace_part(mask)
    loops: list[np.ndarray] = []
    for k in range(1, n):
        x, y, w, h = (int(v) for v in stats[k, :4])
        part = (labels[y:y + h, x:x + w] == k).astype(np.uint8)
        loops.extend(loop + np.array([x, y]) for loop in _trace_part(part))
    return loops


def _drop_collinear(pts: np.ndarray) -> np.ndarray:
    """Remove points lying on a straight run (the loop's shape is unchanged)."""
    prev = np.roll(pts, 1, axis=0)
    nxt = np.roll(pts, -1, axis=0)
    d1 = pts - prev
    d2 = nxt - pts
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    keep = cross != 0
    return pts[keep] if keep.sum() >= 3 else pts


def mask_to_polygons(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[list[float]]:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` along the pixel edges of each part.

    Exact for masks without holes (pycocotools rasterizes them back to the same pixels);
    holes are filled, since COCO polygons cannot express them (use ``mask_has_holes`` and RLE).
    ``offset`` ``(x, y)`` is added to every point (for masks cut out of a larger image).
    """
    polys = []
    for loop in _trace_outer(mask):
        pts = loop.astype(np.float64) + np.asarray(offset, dtype=np.float64)
        polys.append(pts.reshape(-1).tolist())
    return polys


def mask_has_holes(mask: np.ndarray) -> bool:
    """True when some background pixel is not 4-connected to the outside of the mask.

    That covers ordinary holes and pockets closed off but for a diagonal pixel contact;
    polygons along pixel edges cannot represent either exactly.
    """
    outside = _pad1(mask == 0, 1)
    total = int(outside.sum())
    flood = np.zeros((outside.shape[0] + 2, outside.shape[1] + 2), np.uint8)
    reached, *_ = cv2.floodFill(outside, flood, (0, 0), 2, flags=4)
    return reached != total


def count_parts(mask: np.ndarray) -> int:
    """Number of 8-connected foreground parts."""
    n, _ = cv2.connectedComponents(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8)
    return n - 1


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a binary ``H x W`` mask, ``counts`` as a JSON-ready string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def segmentation_to_rle(segm: Any, height: int, width: int) -> dict[str, Any]:
    """Any COCO segmentation (polygon list, uncompressed or compressed RLE) -> compressed RLE."""
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        h, w = segm["size"]
        return mask_utils.frPyObjects(segm, h, w)
    if isinstance(segm, dict) and "counts" in segm:
        counts = segm["counts"]
        return {"size": list(segm["size"]),
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation -> binary ``uint8`` ``H x W`` mask."""
    rle = segmentation_to_rle(segm, height, width)
    with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 copy= deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = mask_utils.decode(rle)
    if mask.shape != (height, width):
        raise ValueError(f"segmentation is {mask.shape[1]}x{mask.shape[0]}, "
                         f"image is {width}x{height}")
    return mask


def rle_counts(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE ``counts`` string (pycocotools' LEB128-like
    code: 5 bits a character from ``'0'``, bit 0x20 = more follows, runs after the second
    stored as differences); ``ValueError`` for characters outside the code."""
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value = shift = 0
        more = True
        while more:
            if pos >= len(counts):
                raise ValueError("RLE counts string ends inside a number")
            code = ord(counts[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"RLE counts has a character {counts[pos]!r} outside the code")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            pos += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def segmentation_problem(segm: Any, height: int, width: int) -> str | None:
    """What is wrong with a COCO segmentation of an ``height x width`` image, or ``None``.

    Polygons need finite coordinates, an even count of at least 6; RLE needs a ``size``
    equal to the image's (when known) and run lengths (``counts``, a list or a compressed
    string) that are non-negative and sum to ``h * w``.
    """
    if isinstance(segm, list):
        for poly in segm:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "polygon with too few or an odd number of coordinates"
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in poly):
                return "polygon with a non-finite or non-numeric coordinate"
        return None
    if not isinstance(segm, dict):
        return f"segmentation of type {type(segm).__name__} (expected polygons or RLE)"
    size, counts = segm.get("size"), segm.get("counts")
    if not (isinstance(size, list | tuple) and len(size) == 2
            and all(isinstance(v, int) and v > 0 for v in size)):
        return f"RLE size {size!r} is not [height, width]"
    h, w = size
    if height and width and (h, w) != (height, width):
        return f"RLE is {w}x{h}, image is {width}x{height}"
    if isinstance(counts, str):
        try:
            runs = rle_counts(counts)
        except ValueError as err:
            return str(err)
    elif isinstance(counts, list) and all(isinstance(v, int) for v in counts):
        runs = counts
    else:
        return "RLE counts is neither a string nor a list of integers"
    if any(v < 0 for v in runs):
        return "RLE has a negative run length"
    if sum(runs) != h * w:
        return f"RLE run lengths sum to {sum(runs)}, not {h}x{w} = {h * w}"
    return None


def segmentation_size(segm: Any) -> tuple[int, int] | None:
    """``(height, width)`` stored in an RLE segmentation, ``None`` for polygons."""
    if isinstance(segm, dict) and "size" in segm:
        h, w = segm["size"]
        return int(h), int(w)
    return None


def encode_segmentation(mask: np.ndarray) -> list[list[float]] | dict[str, Any]:
    """Polygons when they represent the mask exactly (no holes), else compressed RLE."""
    if not mask.any() or mask_has_holes(mask):
        return encode_rle(mask)
    return mask_to_polygons(mask)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two binary masks of the same shape (1.0 when both are empty)."""
    a = a.astype(bool)
    b = b.astype(bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
