"""The synthetic shapes dataset: real files in every format, generated from one ground truth.

Layout written by ``generate_shapes(out, train=N, val=M)``::

    out/images/{train,val}/000000.jpg          JPEG images
    out/annotations/instances_{train,val}.json COCO instances (polygons along pixel edges)
    out/masks/{train,val}/000000.png           class-index PNGs (0 = background) + out/classes.txt
    out/labels/{train,val}/000000.txt          YOLO polygon lines + out/data.yaml

Each image gets 0 to 6 shapes (circle, rectangle, triangle, star) in random colours, sizes
spanning COCO's small/medium/large areas, random rotation, drawn on a textured noisy
background. Shapes drawn later hide the ones below; an instance whose visible part is less
than ``MIN_VISIBLE`` of itself, smaller than ``MIN_AREA`` pixels, split in pieces or holed is
dropped and the image is redrawn without it, so every annotation describes exactly the pixels
of its shape that can be seen. Boxes, areas and polygons are computed from those visible
masks. Every image has its own random stream (seed, split, index): the output depends only
on ``seed``, and a split's files do not change when the other split's count does.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detseg.data.masks import mask_has_holes, mask_to_polygons
from detseg.errors import UsageError

SHAPES_CLASSES: tuple[str, ...] = ("circle", "rectangle", "triangle", "star")
MIN_VISIBLE = 0.4  # an instance needs at least this fraction of its own pixels visible
MIN_AREA = 16  # visible pixels below which an instance is dropped
EMPTY_FRACTION = 0.06  # share of images without any shape
MAX_SHAPES = 6
_SPLIT_CODE = {"train": 0, "val": 1}
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly
_JPEG_QUALITY = 92


@dataclass
class _Shape:
    """One drawn shape: its class index (0-based), polygon in pixels and colour."""

    cls: int
    points: np.ndarray  # K x 2 float, pixel-edge coordinates
    color: np.ndarray  # 3 uint8, RGB


def shape_points(cls: int, cx: float, cy: float, radius: float, angle: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Polygon of a shape of class ``cls`` around ``(cx, cy)``."""
    name = SHAPES_CLASSES[cls]
    if name == "circle":
        t = np.linspace(0.0, 2 * math.pi, max(16, int(radius * 1.5)), endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * radius
    elif name == "rectangle":
        aspect = rng.uniform(0.35, 1.0)
        hw, hh = radius, radius * aspect
        pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
    elif name == "triangle":
        t = np.array([0.0, 2.0, 4.0]) * math.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * radius
    else:  # star
        t = np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.4, 0.55))
        pts = np.stack([np.cos(t) * r, np.sin(t) * r], axis=1)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T + np.array([cx, cy])


def fill_polygon(canvas: np.ndarray, points: np.ndarray, value: int) -> None:
    """Rasterize a polygon given in pixel-edge coordinates (pixel centres at +0.5)."""
    pts = np.round((points - 0.5) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_8, shift=_SHIFT)


class _NoiseBank:
    """A block of Gaussian noise drawn once per split; images take random windows of it.

    Drawing fresh per-pixel noise for every image costs more than everything else together.
    """

    def __init__(self, size: int, seed: int, split: str) -> None:
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], 1 << 30])
        self.side = 2 * size
        self.noise = rng.standard_normal((self.side, self.side, 3), dtype=np.float32)

    def sample(self, size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
        y, x = (int(v) for v in rng.integers(0, self.side - size + 1, 2))
        return cv2.multiply(self.noise[y:y + size, x:x + size], (sigma, sigma, sigma, 0))


def random_background(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Textured background (blotches on a colour gradient, clutter lines) and its mean colour.

    Blotches and gradient are laid out on a coarse grid and upsampled once (bilinear
    interpolation reproduces the linear gradient), which is far cheaper than full-size maths.
    """
    base = rng.uniform(30, 225, 3)
    cells = int(rng.integers(3, 12))
    grid = rng.normal(0.0, rng.uniform(8, 35), (cells, cells, 3))
    ramp = np.linspace(-1.0, 1.0, cells)
    direction = rng.uniform(-25, 25, 2)
    grid += ramp[None, :, None] * direction[0] + ramp[:, None, None] * direction[1] + base
    img = cv2.resize(grid.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(0, 6))):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        shade = tuple(float(v) for v in base + rng.normal(0, 30, 3))
        cv2.line(img, p1, p2, shade, int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    return img, base


def pick_color(avoid: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A random colour far enough from the background and from the other shapes."""
    best, best_dist = np.zeros(3), -1.0  # the first try always beats -1
    for _ in range(12):
        color = rng.integers(0, 256, 3).astype(np.float64)
        dist = min(float(np.linalg.norm(color - a)) for a in avoid) if avoid else 1e9
        if dist >= 90.0:
            return color.astype(np.uint8)
        if dist > best_dist:
            best, best_dist = color, dist
    return best.astype(np.uint8)


@dataclass
class _Footprint:
    """A shape rasterized alone: its box ``(x0, y0, x1, y1)`` in the image and mask crop."""

    box: tuple[int, int, int, int]
    mask: np.ndarray  # bool, (y1 - y0) x (x1 - x0)

    def area(self) -> int:
        return int(self.mask.sum())


def _footprint(points: np.ndarray, size: int) -> _Footprint:
    x0 = max(int(math.floor(points[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(points[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(points[:, 0].max())) + 1, size)
    y1 = min(int(math.ceil(points[:, 1].max())) + 1, size)
    if x1 <= x0 or y1 <= y0:
        return _Footprint((0, 0, 0, 0), np.zeros((0, 0), bool))
    crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fill_polygon(crop, points - np.array([x0, y0]), 1)
    return _Footprint((x0, y0, x1, y1), crop > 0)


def _overlaps(a: _Footprint, b: _Footprint) -> bool:
    x0, y0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    x1, y1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if x1 <= x0 or y1 <= y0:
        return False
    ma = a.mask[y0 - a.box[1]:y1 - a.box[1], x0 - a.box[0]:x1 - a.box[0]]
    mb = b.mask[y0 - b.box[1]:y1 - b.box[1], x0 - b.box[0]:x1 - b.box[0]]
    return bool((ma & mb).any())


def _layout(shapes: list[_Shape], size: int) -> tuple[np.ndarray, list[int], list[_Footprint]]:
    """Layer map (value k+1 where shape k is on top) after dropping badly hidden shapes.

    Returns the layer map, the indices of the kept shapes (bottom to top) and every
    shape's footprint.
    """
    prints = [_footprint(shape.points, size) for shape in shapes]
    keep = [k for k in range(len(shapes)) if prints[k].area() >= MIN_AREA]
    while True:
        layer = np.zeros((size, size), np.uint8)
        for k in keep:
            x0, y0, x1, y1 = prints[k].box
            layer[y0:y1, x0:x1][prints[k].mask] = k + 1
        visible = np.bincount(layer.ravel(), minlength=len(shapes) + 1)
        drop = None
        for k in keep:
            vis = int(visible[k + 1])
            if vis < MIN_AREA or vis < MIN_VISIBLE * prints[k].area():
                drop = k
                break
            x0, y0, x1, y1 = prints[k].box
            crop = (layer[y0:y1, x0:x1] == k + 1).astype(np.uint8)
            n_parts, _ = cv2.connectedComponents(crop, connectivity=4)
            if n_parts - 1 != 1 or mask_has_holes(crop):
                # the shape on top that cuts it in pieces (or, without one, the shape itself)
                above = [j for j in keep if j > k and _overlaps(prints[j], prints[k])]
                drop = above[-1] if above else k
                break
        if drop is None:
            return layer, keep, prints
        keep.remove(drop)


def _make_image(size: int, rng: np.random.Generator, bank: _NoiseBank):
    """Render one image: RGB uint8, layer map, ``(index, shape, footprint)`` bottom to top."""
    img, base = random_background(size, rng)
    n = 0 if rng.random() < EMPTY_FRACTION else int(rng.integers(1, MAX_SHAPES + 1))
    shapes: list[_Shape] = []
    colors = [base]
    r_min, r_max = 4.0 * size / 256, 0.42 * size
    for _ in range(n):
        cls = int(rng.integers(0, len(SHAPES_CLASSES)))
        radius = math.exp(rng.uniform(math.log(r_min), math.log(r_max)))
        margin = 0.3 * radius
        cx = rng.uniform(-margin, size + margin)
        cy = rng.uniform(-margin, size + margin)
        pts = shape_points(cls, cx, cy, radius, rng.uniform(0, 2 * math.pi), rng)
        color = pick_color(colors, rng)
        colors.append(color.astype(np.float64))
        shapes.append(_Shape(cls, pts, color))
    layer, keep, prints = _layout(shapes, size)
    for k in keep:
        x0, y0, x1, y1 = prints[k].box
        on = layer[y0:y1, x0:x1] == k + 1
        shade = rng.uniform(-18, 18, 2).astype(np.float32) / np.float32(max(size / 4, 1))
        gx = (np.arange(x0, x1, dtype=np.float32) - (x0 + x1) / 2) * shade[0]
        gy = (np.arange(y0, y1, dtype=np.float32) - (y0 + y1) / 2) * shade[1]
        fill = shapes[k].color.astype(np.float32) + (gy[:, None] + gx[None, :])[..., None]
        img[y0:y1, x0:x1][on] = fill[on]
    img += bank.sample(size, float(rng.uniform(2, 9)), rng)
    np.clip(img, 0, 255, out=img)
    kept = [(k, shapes[k], prints[k]) for k in keep]
    return img.astype(np.uint8), layer, kept


def _annotate(image_id: int, size: int, layer: np.ndarray, kept: list) -> tuple[list, list]:
    """COCO annotations (without ids) and YOLO polygon lines of one image's visible masks."""
    anns, lines = [], []
    for k, shape, foot in kept:
        fx0, fy0, fx1, fy1 = foot.box
        crop = layer[fy0:fy1, fx0:fx1] == k + 1
        rows = np.flatnonzero(crop.any(axis=1))
        cols = np.flatnonzero(crop.any(axis=0))
        x0, y0 = fx0 + int(cols[0]), fy0 + int(rows[0])
        x1, y1 = fx0 + int(cols[-1]) + 1, fy0 + int(rows[-1]) + 1
        polygon = mask_to_polygons(crop, offset=(fx0, fy0))[0]
        anns.append({
            "image_id": image_id, "category_id": shape.cls + 1,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": float(crop.sum()), "iscrowd": 0, "segmentation": [polygon],
        })
        lines.append(f"{shape.cls} " + " ".join(f"{v / size:.7f}" for v in polygon) + "\n")
    return anns, lines


_BANKS: dict[tuple[int, int, str], _NoiseBank] = {}


def _render_one(job: tuple[Path, str, int, int, int]) -> list[dict]:
    """Draw image ``i`` of a split, write its JPEG, PNG mask and YOLO labels; return its
    COCO annotations (without ids). Runs in worker processes."""
    out, split, i, size, seed = job
    key = (size, seed, split)
    if key not in _BANKS:
        _BANKS[key] = _NoiseBank(size, seed, split)
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
    rgb, layer, kept = _make_image(size, rng, _BANKS[key])
    stem = f"{i:06d}"
    _, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    lut = np.zeros(256, np.uint8)
    for k, shape, _ in kept:
        lut[k + 1] = shape.cls + 1
    _, png = cv2.imencode(".png", lut[layer], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    anns, lines = _annotate(i + 1, size, layer, kept)
    (out / "images" / split / f"{stem}.jpg").write_bytes(jpg.tobytes())
    (out / "masks" / split / f"{stem}.png").write_bytes(png.tobytes())
    (out / "labels" / split / f"{stem}.txt").write_text("".join(lines))
    return anns


def _write_split(out: Path, split: str, count: int, size: int, seed: int, workers: int) -> dict:
    """Write one split's images, masks and YOLO labels; return its COCO dict."""
    for kind in ("images", "masks", "labels"):
        (out / kind / split).mkdir(parents=True, exist_ok=True)
    jobs = [(out, split, i, size, seed) for i in range(count)]
    if workers > 1 and count >= 64:
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            per_image = list(pool.map(_render_one, jobs, chunksize=16))
    else:
        per_image = [_render_one(job) for job in jobs]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, anns in enumerate(per_image):
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": size, "height": size})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, **ann})
    categories = [{"id": c + 1, "name": name, "supercategory": "shape"}
                  for c, name in enumerate(SHAPES_CLASSES)]
    return {"info": {"description": f"detseg synthetic shapes ({split}, seed {seed})"},
            "images": images, "annotations": annotations, "categories": categories}


def generate_shapes(out: str | Path, train: int = 200, val: int = 50, size: int = 256,
                    seed: int = 0, workers: int | None = None) -> Path:
    """Write the shapes dataset (layout in the module docstring) under ``out``; return it.

    ``train=0`` or ``val=0`` skips that split. ``size`` is the square image side in pixels.
    ``workers`` processes draw in parallel (default: the CPU count, at most 8); the output
    is the same for any number of workers.
    """
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if train < 0 or val < 0 or train + val == 0:
        raise UsageError("shapes needs a positive image count in --train or --val")
    if size < 32:
        raise UsageError(f"shapes image size must be at least 32 pixels, got {size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = [s for s, n in (("train", train), ("val", val)) if n > 0]
    for split, count in (("train", train), ("val", val)):
        if count == 0:
            continue
        coco = _write_split(out, split, count, size, seed, workers)
        ann_dir = out / "annotations"
        ann_dir.mkdir(exist_ok=True)
        (ann_dir / f"instances_{split}.json").write_text(json.dumps(coco, separators=(",", ":")))
    (out / "classes.txt").write_text("background\n" + "".join(f"{c}\n" for c in SHAPES_CLASSES))
    yaml_lines = ["# detseg synthetic shapes; paths are relative to this file's folder"]
    yaml_lines += [f"{s}: images/{s}" for s in splits]
    yaml_lines.append(f"nc: {len(SHAPES_CLASSES)}")
    yaml_lines.append("names:")
    yaml_lines += [f"  {i}: {name}" for i, name in enumerate(SHAPES_CLASSES)]
    (out / "data.yaml").write_text("\n".join(yaml_lines) + "\n")
    return out
