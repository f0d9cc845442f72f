"""Pictures of the report: images found by id, boxes and mask outlines drawn on them, crops,
and JPEG ``data:`` URIs of bounded size (long side <= ``FULL_SIDE``, quality ``JPEG_QUALITY``).

Arrays are ``H x W x 3`` uint8 RGB; boxes are COCO ``xywh`` absolute pixels of the original
image (``box_xywh``) and are mapped through a ``View`` (the crop / scale a picture shows).
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

GALLERY_SIZE = 24   # crops or images per gallery
CROP_SIDE = 192     # long side of a crop, pixels
FULL_SIDE = 640     # long side of a full picture, pixels
JPEG_QUALITY = 80

TRUTH = (22, 163, 74)   # RGB colours, the page's legend uses the same
PRED = (220, 38, 38)
OTHER = (37, 99, 235)
MISS = (245, 158, 11)


class PictureSource:
    """Reads the images of a run by image id (``paths``: id -> file).

    A file that is missing or cannot be decoded gives ``None`` and one line in ``warnings``
    naming it (once per file); the last few pictures read are cached.
    """

    def __init__(self, paths: dict[int, Path], warnings: list[str] | None = None) -> None:
        self.paths = paths
        self.warnings: list[str] = list(warnings or [])
        self._failed: set[Path] = set()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    @classmethod
    def from_folder(cls, folder: Path, images: list[dict[str, Any]]) -> PictureSource:
        """The ``file_name`` of each ground-truth ``images`` entry under ``folder``; a name that
        leaves the folder is refused with a warning."""
        base = os.path.normpath(folder)
        paths: dict[int, Path] = {}
        warnings = []
        for image in images:
            if not isinstance(image, dict):
                continue
            name, image_id = image.get("file_name"), image.get("id")
            if not isinstance(name, str) or not isinstance(image_id, int):
                continue
            joined = os.path.normpath(os.path.join(base, name))
            if os.path.isabs(name) or not joined.startswith(base + os.sep):
                warnings.append(f"{folder}: image {image_id}: file_name {name!r} is outside "
                                f"the folder, its pictures are left out")
                continue
            paths[image_id] = Path(joined)
        return cls(paths, warnings)

    def load(self, image_id: int) -> np.ndarray | None:
        """The RGB image ``image_id``, or ``None`` (see the class docstring)."""
        if image_id in self._cache:
            self._cache.move_to_end(image_id)
            return self._cache[image_id]
        path = self.paths.get(image_id)
        if path is None or path in self._failed:
            return None
        image = None
        try:
            data = np.fromfile(path, dtype=np.uint8)
            problem = "cannot decode the picture"
            if data.size:
                image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        except FileNotFoundError:
            problem = "missing"
        except OSError as err:
            problem = f"cannot read ({err.strerror or err})"
        if image is None:
            self._failed.add(path)
            self.warnings.append(f"{path}: {problem}; its pictures are left out of the report")
            return None
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        self._cache[image_id] = rgb
        if len(self._cache) > 8:
            self._cache.popitem(last=False)
        return rgb


def data_uri(rgb: np.ndarray) -> str:
    """``rgb`` as a ``data:image/jpeg;base64,...`` URI."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - only for arrays cv2 cannot encode at all
        raise ValueError(f"cannot encode a {rgb.shape} picture as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


@dataclass
class View:
    """A region ``(x0, y0)`` .. of the original image shown at ``scale``."""

    x0: int
    y0: int
    scale: float

    def box(self, box_xywh: Any) -> tuple[int, int, int, int]:
        """``box_xywh`` in the view's pixels, as integer ``x0, y0, x1, y1``."""
        x, y, w, h = (float(v) for v in box_xywh)
        s = self.scale
        return (round((x - self.x0) * s), round((y - self.y0) * s),
                round((x + w - self.x0) * s), round((y + h - self.y0) * s))

    def mask(self, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """A full-image binary ``mask`` cut and resized to a view of ``shape`` (h, w)."""
        h, w = shape
        x1 = self.x0 + int(np.ceil(w / self.scale))
        y1 = self.y0 + int(np.ceil(h / self.scale))
        part = np.ascontiguousarray(mask[self.y0:y1, self.x0:x1]).astype(np.uint8)
        if part.size == 0:
            return np.zeros(shape, np.uint8)
        return cv2.resize(part, (w, h), interpolation=cv2.INTER_NEAREST)


def fit(image: np.ndarray, side: int = FULL_SIDE, least: int = 320) -> tuple[np.ndarray, View]:
    """``image`` shrunk so its long side is at most ``side`` (or a small one enlarged, at most
    4x, towards ``least``, so its labels stay readable), and the view it shows."""
    h, w = image.shape[:2]
    long_side = max(h, w, 1)
    scale = side / long_side if long_side > side else min(4.0, max(1.0, least / long_side))
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, size, interpolation=interp)
    return np.ascontiguousarray(image), View(0, 0, scale)


def crop(image: np.ndarray, boxes_xywh: list[Any], side: int = CROP_SIDE,
         margin: float = 0.35) -> tuple[np.ndarray, View]:
    """The region around ``boxes_xywh`` (their union plus ``margin`` of its size, at least 24
    px) scaled so its long side is ``side`` (enlarged at most 4x), and its view."""
    h, w = image.shape[:2]
    xs = [float(b[0]) for b in boxes_xywh] + [float(b[0]) + float(b[2]) for b in boxes_xywh]
    ys = [float(b[1]) for b in boxes_xywh] + [float(b[1]) + float(b[3]) for b in boxes_xywh]
    pad = max(margin * max(max(xs) - min(xs), max(ys) - min(ys)), 12.0)
    x0 = int(max(0, np.floor(min(xs) - pad)))
    y0 = int(max(0, np.floor(min(ys) - pad)))
    x1 = int(min(w, np.ceil(max(xs) + pad)))
    y1 = int(min(h, np.ceil(max(ys) + pad)))
    if x1 <= x0 or y1 <= y0:  # a box outside the picture: show the whole picture
        x0, y0, x1, y1 = 0, 0, w, h
    part = image[y0:y1, x0:x1]
    scale = min(4.0, side / max(x1 - x0, y1 - y0))
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(part, size, interpolation=interp)), View(x0, y0, scale)


def draw_box(image: np.ndarray, view: View, box_xywh: Any, color: tuple[int, int, int],
             label: str | None = None, thickness: int = 2) -> None:
    """Draw ``box_xywh`` (and a small ``label`` above it) on ``image`` in place."""
    x0, y0, x1, y1 = view.box(box_xywh)
    cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
    if label:
        scale = 0.4
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 3 if y0 - th - base - 3 >= 0 else y0 + th + 3
        tx = min(max(x0, 0), max(image.shape[1] - tw - 2, 0))
        cv2.rectangle(image, (tx, ty - th - 2), (tx + tw + 2, ty + base - 1), color, -1)
        cv2.putText(image, label, (tx + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)


def draw_outline(image: np.ndarray, view_mask: np.ndarray, color: tuple[int, int, int],
                 thickness: int = 1) -> None:
    """Draw the outline of a binary mask already in the view's pixels, in place."""
    contours, _ = cv2.findContours(view_mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, color, thickness, cv2.LINE_AA)
