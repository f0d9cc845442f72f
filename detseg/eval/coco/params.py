"""What a COCO evaluation measures: ``Params``, like pycocotools' ``COCOeval.params``.

The defaults are pycocotools' for ``bbox``/``segm``: 10 IoU thresholds 0.5:0.05:0.95 (``T``),
101 recall thresholds 0:0.01:1 (``R``), at most 1, 10 and 100 detections per image (``M``),
four area ranges all/small/medium/large in square pixels (``A``), matching within each
category (``K`` categories).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detseg.errors import UsageError

IOU_TYPES = ("bbox", "segm")
# The same linspace calls as pycocotools (np.arange would differ in the last bits).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]],
                       dtype=np.float64)
AREA_LABELS = ("all", "small", "medium", "large")
MAX_DETS = (1, 10, 100)


def _numbers(name: str, values: Any, low: float, high: float, low_open: bool = False
             ) -> tuple[float, ...]:
    """``values`` as a non-empty tuple of finite floats within ``[low, high]``."""
    try:
        out = tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise UsageError(f"Params.{name} must be a list of numbers, got {values!r}") from None
    below = (lambda v: v <= low) if low_open else (lambda v: v < low)
    if not out or any(not math.isfinite(v) or below(v) or v > high for v in out):
        bound = "(" if low_open else "["
        raise UsageError(f"Params.{name} must be numbers in {bound}{low}, {high}], got "
                         f"{list(out) or values!r}")
    return out


def _ids(name: str, values: Sequence[int] | None) -> tuple[int, ...] | None:
    """Sorted unique integer ids (as pycocotools' ``np.unique``), or None for "all"."""
    if values is None:
        return None
    try:
        ids = [int(v) for v in values]
    except (TypeError, ValueError):
        raise UsageError(f"Params.{name} must be a list of integer ids, got {values!r}") from None
    if not ids or any(isinstance(v, bool) or int(v) != v for v in values):
        raise UsageError(f"Params.{name} must be a non-empty list of integer ids (None for all), "
                         f"got {values!r}")
    return tuple(sorted(set(ids)))


@dataclass(frozen=True)
class Params:
    """Evaluation parameters, separate from the algorithm (pycocotools' names in brackets).

    Attributes:
        iou_type: ``"bbox"`` or ``"segm"`` [iouType].
        iou_thrs: ``T`` IoU thresholds in (0, 1] [iouThrs]; a threshold of 1 is read as
            ``1 - 1e-10``, as pycocotools does.
        rec_thrs: ``R`` recall thresholds, ascending in [0, 1] [recThrs].
        max_dets: ``M`` maximum numbers of detections per image, any positive integers
            (sorted ascending, as pycocotools sorts them) [maxDets].
        area_rng: ``A`` inclusive ``(low, high)`` object areas in square pixels [areaRng].
        area_labels: the ``A`` names [areaRngLbl]; the summary reads ``all``, ``small``,
            ``medium`` and ``large`` (-1 for a label that is missing).
        use_cats: False matches detections to ground truth of any category, as pycocotools'
            ``useCats=0`` (then ``K = 1``) [useCats].
        img_ids: the image ids evaluated; None for every image of the ground truth [imgIds].
        cat_ids: the category ids evaluated; None for every category [catIds].
    """

    iou_type: str = "bbox"
    iou_thrs: tuple[float, ...] = tuple(IOU_THRESHOLDS.tolist())
    rec_thrs: tuple[float, ...] = tuple(RECALL_THRESHOLDS.tolist())
    max_dets: tuple[int, ...] = MAX_DETS
    area_rng: tuple[tuple[float, float], ...] = tuple(map(tuple, AREA_RANGES.tolist()))
    area_labels: tuple[str, ...] = AREA_LABELS
    use_cats: bool = True
    img_ids: tuple[int, ...] | None = None
    cat_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.iou_type not in IOU_TYPES:
            raise UsageError(f"iou_type must be one of {IOU_TYPES}, got {self.iou_type!r}")
        rec = _numbers("rec_thrs", self.rec_thrs, 0.0, 1.0)
        if list(rec) != sorted(rec):
            raise UsageError(f"Params.rec_thrs must be ascending, got {list(rec)}")
        try:
            max_dets = sorted(int(m) for m in self.max_dets)
        except (TypeError, ValueError):
            max_dets = []
        if not max_dets or max_dets[0] <= 0 or any(
                isinstance(m, bool) or int(m) != m for m in self.max_dets):
            raise UsageError(f"Params.max_dets must be positive integers, got {self.max_dets!r}")
        area = _numbers("area_rng", self.area_rng, 0.0, math.inf)
        labels = tuple(str(label) for label in self.area_labels)
        if len(area) % 2 or len(area) // 2 != len(labels):
            raise UsageError(f"Params.area_rng must hold one (low, high) pair per area label; "
                             f"got {len(area)} numbers for {len(labels)} labels")
        pairs = tuple(zip(area[0::2], area[1::2], strict=True))
        if any(lo > hi for lo, hi in pairs):
            raise UsageError(f"Params.area_rng has a range whose low end is above its high end: "
                             f"{[list(p) for p in pairs]}")
        set_field = object.__setattr__  # normalising the fields of a frozen dataclass
        set_field(self, "iou_thrs", _numbers("iou_thrs", self.iou_thrs, 0.0, 1.0, low_open=True))
        set_field(self, "rec_thrs", rec)
        set_field(self, "max_dets", tuple(max_dets))
        set_field(self, "area_rng", pairs)
        set_field(self, "area_labels", labels)
        set_field(self, "use_cats", bool(self.use_cats))
        set_field(self, "img_ids", _ids("img_ids", self.img_ids))
        set_field(self, "cat_ids", _ids("cat_ids", self.cat_ids))

    @property
    def iou_array(self) -> np.ndarray:
        """``[T]`` IoU thresholds as matched: 1 becomes ``1 - 1e-10`` (pycocotools)."""
        return np.minimum(np.array(self.iou_thrs), 1 - 1e-10)

    @property
    def area_array(self) -> np.ndarray:
        """``[A, 2]`` area ranges (square pixels)."""
        return np.array(self.area_rng, dtype=np.float64).reshape(-1, 2)
