"""Draw tracked objects: each identity its own colour, ``#id class`` labels, and a trail of its
last centres. ``Trails`` remembers those centres frame after frame (bounded memory)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import cv2
import numpy as np

from detseg.viz.draw import draw_label, label_sizes, palette

_ID_COLORS = 64  # identities cycle through this many colours


def id_color(track_id: int) -> tuple[int, int, int]:
    """The RGB colour of an identity (the same on every frame and every run)."""
    colors = palette(_ID_COLORS)
    c = colors[(int(track_id) - 1) % _ID_COLORS]
    return int(c[0]), int(c[1]), int(c[2])


class Trails:
    """The last ``length`` centres (pixels) of each identity; an identity not seen for
    ``length`` frames is forgotten, so memory does not grow with the video."""

    def __init__(self, length: int = 30) -> None:
        self.length = length
        self._points: dict[int, deque[tuple[float, float]]] = {}
        self._last: dict[int, int] = {}
        self._frame = 0

    def update(self, ids: np.ndarray, boxes_xyxy: np.ndarray) -> None:
        """Add this frame's centres (``ids`` ``(M,)``, ``boxes_xyxy`` ``(M, 4)`` pixels)."""
        self._frame += 1
        for track_id, box in zip(ids.tolist(), boxes_xyxy, strict=True):
            points = self._points.setdefault(track_id, deque(maxlen=self.length))
            points.append(((float(box[0]) + float(box[2])) / 2,
                           (float(box[1]) + float(box[3])) / 2))
            self._last[track_id] = self._frame
        for track_id in [t for t, seen in self._last.items() if self._frame - seen >= self.length]:
            del self._points[track_id], self._last[track_id]

    def points(self, track_id: int) -> list[tuple[float, float]]:
        """The remembered centres of ``track_id``, oldest first."""
        return list(self._points.get(track_id, ()))


def draw_tracks(image_rgb: np.ndarray, ids: np.ndarray, boxes_xyxy: np.ndarray,
                classes: np.ndarray, names: Sequence[str], trails: Trails | None = None,
                line_width: int | None = None) -> np.ndarray:
    """Boxes (xyxy pixels) in each identity's colour with a ``#id name`` label, and the trails
    of the identities present. ``names[class]`` names a class. Returns a new H x W x 3 uint8 RGB
    array."""
    img = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    height, width = img.shape[:2]
    lw, font_scale, text_thick = label_sizes(height, width, line_width)
    for track_id in ids.tolist():
        points = trails.points(track_id) if trails is not None else []
        if len(points) > 1:
            path = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(img, [path], False, id_color(track_id), max(lw - 1, 1), cv2.LINE_AA)
    for track_id, box, cls in zip(ids.tolist(), boxes_xyxy, classes.tolist(), strict=True):
        color = id_color(track_id)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        cv2.rectangle(img, (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0)), color, lw, cv2.LINE_AA)
        name = names[cls] if 0 <= cls < len(names) else str(cls)
        draw_label(img, f"#{track_id} {name}", x0, y0, np.array(color), font_scale, text_thick)
    return img
