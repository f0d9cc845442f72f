"""Association between tracks and detections: IoU matrices, class gating, optimal assignment.

Every function is vectorised over both sets; IoU is computed in row blocks so a frame with
thousands of boxes stays within a bounded amount of memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

#: matrix elements computed at once by ``box_iou`` (bounds its temporaries to ~100 MB)
_BLOCK = 1 << 21


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(N, M)`` float64 of boxes ``a`` ``(N, 4)`` and ``b`` ``(M, 4)`` (xyxy pixels).

    A box with a non-finite coordinate or no area has IoU 0 with everything.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(a), len(b)))
    if not len(a) or not len(b):
        return out
    a_ok = np.asarray(np.isfinite(a).all(axis=1))
    b_ok = np.asarray(np.isfinite(b).all(axis=1))
    a = np.where(a_ok[:, None], a, 0.0)
    b = np.where(b_ok[:, None], b, 0.0)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    step = max(1, _BLOCK // len(b))
    for start in range(0, len(a), step):
        blk = a[start:start + step]
        iw = np.minimum(blk[:, None, 2], b[None, :, 2]) - np.maximum(blk[:, None, 0], b[None, :, 0])
        ih = np.minimum(blk[:, None, 3], b[None, :, 3]) - np.maximum(blk[:, None, 1], b[None, :, 1])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        union = area_a[start:start + step, None] + area_b[None, :] - inter
        np.divide(inter, union, out=out[start:start + step], where=union > 0)
    out[~a_ok] = 0.0
    out[:, ~b_ok] = 0.0
    return out


def match_by_class(track_classes: np.ndarray, det_classes: np.ndarray, class_agnostic: bool,
                   pairs: Callable[[np.ndarray, np.ndarray], list[tuple[int, int]]]
                   ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Associate tracks with detections of their own class only (every class on its own, as
    separate trackers would), or all together when ``class_agnostic``.

    ``pairs(rows, cols)`` solves one block: given track indices ``rows`` and detection indices
    ``cols`` (int arrays), it returns the matched ``(i, j)`` positions within them. Returns
    ``(matches, unmatched_tracks, unmatched_dets)`` in global indices, each sorted.
    """
    t = np.asarray(track_classes, dtype=np.int64)
    d = np.asarray(det_classes, dtype=np.int64)
    if class_agnostic:
        blocks = [(np.arange(len(t)), np.arange(len(d)))]
    else:
        blocks = [(np.flatnonzero(t == c), np.flatnonzero(d == c)) for c in np.intersect1d(t, d)]
    matches: list[tuple[int, int]] = []
    for rows, cols in blocks:
        if len(rows) and len(cols):
            matches += [(int(rows[i]), int(cols[j])) for i, j in pairs(rows, cols)]
    matches.sort()
    return matches, _rest(len(t), [m[0] for m in matches]), _rest(len(d), [m[1] for m in matches])


def min_cost_pairs(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Minimum-cost matching of the rows and columns of ``cost`` ``(R, C)`` where no pair may
    cost more than ``max_cost``.

    Leaving a row and a column unmatched costs ``max_cost`` for the pair, so the matching
    maximises ``sum(max_cost - cost)`` over matched pairs: the cost limit of the
    Jonker-Volgenant solver ByteTrack uses.
    """
    if not cost.size:
        return []
    gain = np.where(cost <= max_cost, max_cost - cost, 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] <= max_cost]


def max_value_pairs(value: np.ndarray, accept: np.ndarray) -> list[tuple[int, int]]:
    """The assignment maximising the total ``value`` ``(R, C)``, keeping the pairs where
    ``accept`` ``(R, C)`` bool holds (SORT's Hungarian step, then its IoU check)."""
    if not value.size:
        return []
    rows, cols = linear_sum_assignment(value, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if accept[r, c]]


def _rest(n: int, used: list[int]) -> list[int]:
    taken = set(used)
    return [i for i in range(n) if i not in taken]
