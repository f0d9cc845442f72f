"""Intersection over union of boxes and masks, with pycocotools' crowd semantics.

Boxes are ``xyxy`` (corners) or ``xywh`` (COCO: top-left corner, width, height) float pixels.
For a crowd ground-truth region the union is replaced by the detection's own area, so a
detection matches any part of the crowd (``iou = |d & g| / |d|``), exactly as
``pycocotools.mask.iou`` computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

BOX_FORMATS = ("xyxy", "xywh")


def _as_xywh(boxes: Any, fmt: str) -> np.ndarray:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"box format must be one of {BOX_FORMATS}, got {fmt!r}")
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if fmt == "xyxy":
        arr = np.concatenate([arr[:, :2], arr[:, 2:] - arr[:, :2]], axis=1)
    return arr


def paired_box_iou(dt: np.ndarray, gt: np.ndarray, iscrowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of ``dt[i]`` with ``gt[i]`` for every row ``i`` (both ``[P, 4]`` xywh float64).

    The arithmetic is the one of pycocotools' C ``bbIou`` in the same order, so the values are
    bit-identical to ``pycocotools.mask.iou`` (which matters at the exact IoU thresholds).
    ``iscrowd[i]`` true divides by the detection's area instead of the union.
    """
    dx, dy, dw, dh = dt[:, 0], dt[:, 1], dt[:, 2], dt[:, 3]
    gx, gy, gw, gh = gt[:, 0], gt[:, 1], gt[:, 2], gt[:, 3]
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    d_area = dw * dh
    union = d_area + gw * gh - inter
    if iscrowd is not None:
        union = np.where(iscrowd, d_area, union)
    overlap = (w > 0) & (h > 0)
    out = np.zeros(len(dt), dtype=np.float64)
    np.divide(inter, union, out=out, where=overlap)
    return out


def box_iou(dt: Any, gt: Any, fmt: str = "xyxy", iscrowd: Sequence[bool] | None = None
            ) -> np.ndarray:
    """IoU matrix ``[N, M]`` between ``N`` boxes ``dt`` and ``M`` boxes ``gt``.

    Args:
        dt, gt: array-likes of shape ``[N, 4]`` and ``[M, 4]`` in format ``fmt``.
        fmt: ``"xyxy"`` or ``"xywh"``.
        iscrowd: optional ``M`` flags; a crowd ``gt`` uses the ``dt`` area as denominator.
    """
    d = _as_xywh(dt, fmt)
    g = _as_xywh(gt, fmt)
    n, m = len(d), len(g)
    crowd = None
    if iscrowd is not None:
        crowd = np.asarray(iscrowd, dtype=bool).reshape(-1)
        if len(crowd) != m:
            raise ValueError(f"iscrowd has {len(crowd)} flags for {m} ground-truth boxes")
        crowd = np.tile(crowd, n)
    return paired_box_iou(np.repeat(d, m, axis=0), np.tile(g, (n, 1)), crowd).reshape(n, m)


def rle_area(rles: Sequence[dict]) -> np.ndarray:
    """Pixel counts ``[N]`` (float64) of compressed RLEs.

    ``pycocotools.mask.area`` overflows on lists of 256 or more RLEs under numpy 2, so it is
    called on chunks of 255.
    """
    rles = list(rles)
    if not rles:
        return np.zeros(0)
    return np.concatenate([np.asarray(mask_utils.area(rles[i:i + 255]), dtype=np.float64)
                           for i in range(0, len(rles), 255)])


def _as_rles(masks: Any) -> list[dict]:
    if isinstance(masks, np.ndarray):
        if masks.ndim != 3:
            raise ValueError(f"binary masks must be N x H x W, got shape {masks.shape}")
        return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return list(masks)


def mask_iou(dt: Any, gt: Any, iscrowd: Sequence[bool] | None = None) -> np.ndarray:
    """IoU matrix ``[N, M]`` between masks, computed by pycocotools on run-length encodings.

    Args:
        dt, gt: lists of COCO RLE dicts (``{"size": [h, w], "counts": ...}``) or binary mask
            arrays ``N x H x W``.
        iscrowd: optional ``M`` flags; a crowd ``gt`` uses the ``dt`` area as denominator.

    Masks of different sizes get IoU ``-1`` (pycocotools' convention).
    """
    d, g = _as_rles(dt), _as_rles(gt)
    crowd = [0] * len(g) if iscrowd is None else [int(bool(c)) for c in iscrowd]
    if len(crowd) != len(g):
        raise ValueError(f"iscrowd has {len(crowd)} flags for {len(g)} ground-truth masks")
    if not d or not g:
        return np.zeros((len(d), len(g)), dtype=np.float64)
    return np.asarray(mask_utils.iou(d, g, crowd), dtype=np.float64).reshape(len(d), len(g))
