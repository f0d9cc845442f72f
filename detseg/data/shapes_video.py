"""Synthetic tracking clips: moving, crossing and occluding shapes with exact MOT ground truth.

Layout written by ``generate_shapes_video(out, sequences=N)`` (MOTChallenge / MOT17 style)::

    out/shapes-01/img1/000001.jpg ...   the frames (JPEG), numbered from 1
    out/shapes-01/gt/gt.txt             frame,id,x,y,w,h,1,class,visibility
    out/shapes-01/seqinfo.ini           name, imDir, frameRate, seqLength, imWidth, imHeight, imExt
    out/shapes-01/shapes-01.mp4         the same frames as a video (mp4v), for demos

The shapes are those of ``detseg dataset shapes`` (circle, rectangle, triangle, star; same
outlines, colours picked against the textured background, shading and noise), so the shipped
shapes detectors see them as they were trained to. Each shape moves at a constant velocity,
spins slowly and bounces off the picture's edges (it always stays whole inside the picture);
shapes are stacked at fixed depths, so a shape drawn later hides what it covers. Shapes are
planned in pairs that cross: both pass through the same point (a fraction of their radius
apart) at the same frame, so one hides the other for a few frames; a clip's shapes are drawn
again until no two of them touch for more than ``MAX_CONTACT`` frames in a row (a crossing, not
two shapes travelling together).

Ground truth, in the same pixel convention as every detseg box (``x, y`` the top-left corner of
the top-left pixel, ``w, h`` in pixels; integers): the box is the tight box of the shape's own
rasterized pixels, whole even where another shape hides part of it (MOTChallenge's convention),
and ``visibility`` the fraction of those pixels that are seen. A shape hidden completely is left
out of that frame (no one can see it, so no tracker can be expected to report it); ``class`` is
the shapes category id (1 circle, 2 rectangle, 3 triangle, 4 star); the consider flag is 1.
Every clip has its own random stream (seed, clip index), so the output depends only on the
seed, and a clip's files do not change with the number of clips or frames asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detseg.data.shapes import (
    SHAPES_CLASSES,
    fill_polygon,
    pick_color,
    random_background,
    shape_points,
)
from detseg.errors import OutputError, UsageError

MIN_SIDE = 48  # smallest picture side in pixels
_JPEG_QUALITY = 92
_MAX_SHAPES = 4
CONTACT = 0.9  # shapes touch when their centres are closer than this x the sum of reaches
MAX_CONTACT = 12  # most frames in a row two shapes of a clip may touch
PLAN_TRIES = 200  # draws of a clip's shapes before the last one is kept as it is


@dataclass(frozen=True)
class MovingShape:
    """One shape of a clip and its motion.

    Attributes:
        track_id: its MOT id (>= 1).
        cls: index into ``SHAPES_CLASSES`` (the MOT class is ``cls + 1``).
        outline: K x 2 polygon in pixels around the centre ``(0, 0)``, at angle 0.
        centre: ``(x, y)`` pixels at frame 1, before bouncing (see ``polygon``).
        velocity: ``(vx, vy)`` pixels per frame.
        angle, spin: rotation at frame 1 (radians) and per frame (radians).
        color: RGB fill colour.
        shade: colour change per pixel along x and y from the centre (a light gradient).
    """

    track_id: int
    cls: int
    outline: np.ndarray
    centre: tuple[float, float]
    velocity: tuple[float, float]
    angle: float = 0.0
    spin: float = 0.0
    color: tuple[int, int, int] = (255, 255, 255)
    shade: tuple[float, float] = (0.0, 0.0)

    @property
    def reach(self) -> float:
        """Largest distance of the outline from the centre, in pixels."""
        return float(np.hypot(self.outline[:, 0], self.outline[:, 1]).max())

    def position(self, frame: int, width: int, height: int) -> tuple[float, float]:
        """Centre at 1-based ``frame``: the straight path folded back at the picture's edges
        (a bounce), keeping ``reach`` pixels from every edge."""
        x, y = self.path(np.array([frame]), width, height)[0]
        return float(x), float(y)

    def path(self, frames: np.ndarray, width: int, height: int) -> np.ndarray:
        """``(F, 2)`` centres at the 1-based ``frames`` (see ``position``)."""
        t = np.asarray(frames, np.float64) - 1
        reach = self.reach
        return np.stack([_fold(self.centre[0] + self.velocity[0] * t, reach, width - reach),
                         _fold(self.centre[1] + self.velocity[1] * t, reach, height - reach)],
                        axis=1)

    def polygon(self, frame: int, width: int, height: int) -> np.ndarray:
        """K x 2 outline in pixels at 1-based ``frame``."""
        a = self.angle + self.spin * (frame - 1)
        c, s = math.cos(a), math.sin(a)
        return self.outline @ np.array([[c, s], [-s, c]]) + np.array(
            self.position(frame, width, height))


def _fold(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``u`` reflected into ``[lo, hi]`` (a triangle wave of period ``2 (hi - lo)``)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(u, (lo + hi) / 2)
    m = np.mod(u - lo, 2 * span)
    return lo + np.where(m <= span, m, 2 * span - m)


@dataclass
class Clip:
    """Everything that defines a clip's frames: size, length, background, noise, shapes.

    ``background`` is H x W x 3 float32 RGB; ``noise`` the standard deviation of the Gaussian
    noise added to each frame (drawn from the stream ``(seed, index, frame)``); ``shapes`` are
    listed bottom to top.
    """

    name: str
    width: int
    height: int
    frames: int
    fps: float
    background: np.ndarray
    noise: float
    shapes: list[MovingShape]
    seed: int = 0
    index: int = 0


@dataclass(frozen=True)
class GroundTruth:
    """One object in one frame: MOT id, class index, tight box ``(x1, y1, x2, y2)`` of its whole
    outline in integer pixels, and the visible fraction of its pixels in (0, 1]."""

    track_id: int
    cls: int
    box: tuple[int, int, int, int]
    visibility: float


@dataclass
class Frame:
    """A rendered frame: ``image`` H x W x 3 uint8 RGB, ``layer`` H x W int32 (the track id of
    the shape seen at each pixel, 0 for background) and the ground truth of its objects."""

    image: np.ndarray
    layer: np.ndarray
    objects: list[GroundTruth]


def _raster(points: np.ndarray, width: int, height: int) -> tuple[tuple[int, int, int, int],
                                                                   np.ndarray]:
    """The pixels of a polygon: a crop box ``(x0, y0, x1, y1)`` and its bool mask."""
    x0 = max(int(math.floor(points[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(points[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(points[:, 0].max())) + 1, width)
    y1 = min(int(math.ceil(points[:, 1].max())) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0), np.zeros((0, 0), bool)
    crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fill_polygon(crop, points - np.array([x0, y0]), 1)
    return (x0, y0, x1, y1), crop > 0


def render_frame(clip: Clip, frame: int) -> Frame:
    """Draw 1-based ``frame`` of ``clip`` and measure its ground truth (see the module doc)."""
    if not 1 <= frame <= clip.frames:
        raise UsageError(f"frame {frame} is outside clip {clip.name} (1..{clip.frames})")
    w, h = clip.width, clip.height
    image = clip.background.copy()
    layer = np.zeros((h, w), np.int32)
    prints = []
    for shape in clip.shapes:
        box, mask = _raster(shape.polygon(frame, w, h), w, h)
        prints.append((box, mask))
        x0, y0, x1, y1 = box
        layer[y0:y1, x0:x1][mask] = shape.track_id
    objects = []
    for shape, ((x0, y0, x1, y1), mask) in zip(clip.shapes, prints, strict=True):
        area = int(mask.sum())
        seen = (layer[y0:y1, x0:x1] == shape.track_id) & mask
        visible = int(seen.sum())
        if area == 0 or visible == 0:
            continue
        cx, cy = shape.position(frame, w, h)
        gx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx)) * np.float32(shape.shade[0])
        gy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy)) * np.float32(shape.shade[1])
        fill = np.asarray(shape.color, np.float32) + (gy[:, None] + gx[None, :])[..., None]
        image[y0:y1, x0:x1][seen] = fill[seen]
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        objects.append(GroundTruth(
            shape.track_id, shape.cls,
            (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1),
            visible / area))
    if clip.noise > 0:
        rng = np.random.default_rng([clip.seed, clip.index, frame])
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(clip.noise)
    np.clip(image, 0, 255, out=image)
    return Frame(image.astype(np.uint8), layer, objects)


def _crossing_pair(first: int, shapes: tuple[tuple[int, np.ndarray], tuple[int, np.ndarray]],
                   width: int, height: int, frames: int, scale: float,
                   rng: np.random.Generator) -> list[tuple[int, int, np.ndarray, tuple, tuple]]:
    """Two shapes whose paths meet at one point and frame (ids ``first``, ``first + 1``)."""
    reach = max(float(np.hypot(o[:, 0], o[:, 1]).max()) for _, o in shapes)
    when = float(rng.uniform(0.3, 0.7)) * (frames - 1)
    px = float(np.clip(rng.uniform(0.3, 0.7) * width, reach, width - reach))
    py = float(np.clip(rng.uniform(0.3, 0.7) * height, reach, height - reach))
    heading = rng.uniform(0, 2 * math.pi)
    turn = rng.uniform(math.radians(90), math.radians(170)) * rng.choice([-1.0, 1.0])
    out = []
    for j, (cls, outline) in enumerate(shapes):
        direction = heading + j * turn
        speed = rng.uniform(1.2, 2.4) * scale / 100
        vx, vy = speed * math.cos(direction), speed * math.sin(direction)
        # the second passes a little to one side of the meeting point
        side = j * rng.uniform(-0.4, 0.4) * reach
        mx, my = px - side * math.sin(heading), py + side * math.cos(heading)
        out.append((first + j, cls, outline, (mx - vx * when, my - vy * when), (vx, vy)))
    return out


def _longest_contact(shapes: list[MovingShape], width: int, height: int, frames: int) -> int:
    """The most frames in a row that two shapes spend touching (centres closer than
    ``CONTACT`` times the sum of their reaches)."""
    steps = np.arange(1, frames + 1)
    centres = [s.path(steps, width, height) for s in shapes]
    longest = 0
    for a in range(len(shapes)):
        for b in range(a + 1, len(shapes)):
            near = np.hypot(*(centres[a] - centres[b]).T) < CONTACT * (shapes[a].reach
                                                                       + shapes[b].reach)
            edges = np.flatnonzero(np.diff(np.concatenate([[0], near.astype(np.int8), [0]])))
            longest = max(longest, int((edges[1::2] - edges[::2]).max(initial=0)))
    return longest


def _plan_shapes(width: int, height: int, frames: int, base: np.ndarray,
                 rng: np.random.Generator) -> list[MovingShape]:
    """One draw of 3 or 4 shapes, paired into crossings (an odd one wanders alone): sizes,
    paths, colours and depths (bottom to top)."""
    scale = float(min(width, height))
    count = int(rng.integers(3, _MAX_SHAPES + 1))
    outlines = []
    for _ in range(count):
        cls = int(rng.integers(0, len(SHAPES_CLASSES)))
        radius = rng.uniform(0.06, 0.1) * scale
        outlines.append((cls, shape_points(cls, 0.0, 0.0, radius, 0.0, rng)))
    motions = []
    for pair in range(count // 2):
        motions += _crossing_pair(2 * pair + 1, (outlines[2 * pair], outlines[2 * pair + 1]),
                                  width, height, frames, scale, rng)
    if count % 2:
        cls, outline = outlines[-1]
        direction = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(1.2, 2.4) * scale / 100
        motions.append((count, cls, outline,
                        (rng.uniform(0, width), rng.uniform(0, height)),
                        (speed * math.cos(direction), speed * math.sin(direction))))
    colors = [base]
    shapes = []
    for track_id, cls, outline, centre, velocity in motions:
        color = pick_color(colors, rng)
        colors.append(color.astype(np.float64))
        shade = rng.uniform(-18, 18, 2) / max(scale / 4, 1.0)
        shapes.append(MovingShape(
            track_id=track_id, cls=cls, outline=outline,
            centre=(float(centre[0]), float(centre[1])),
            velocity=(float(velocity[0]), float(velocity[1])),
            angle=float(rng.uniform(0, 2 * math.pi)), spin=float(rng.uniform(-0.03, 0.03)),
            color=(int(color[0]), int(color[1]), int(color[2])),
            shade=(float(shade[0]), float(shade[1]))))
    return [shapes[k] for k in rng.permutation(len(shapes))]


def plan_clip(index: int, width: int, height: int, frames: int, fps: float = 30.0,
              seed: int = 0) -> Clip:
    """The ``index``-th clip (0-based) of seed ``seed``: the background, and shapes drawn again
    (up to ``PLAN_TRIES`` times) until no two of them touch for more than ``MAX_CONTACT``
    frames in a row, so crossings stay crossings rather than shapes travelling together."""
    rng = np.random.default_rng([seed, index])
    background, base = random_background(max(width, height), rng)
    background = np.ascontiguousarray(background[:height, :width])
    for _ in range(PLAN_TRIES):
        shapes = _plan_shapes(width, height, frames, base, rng)
        if _longest_contact(shapes, width, height, frames) <= MAX_CONTACT:
            break
    return Clip(name=f"shapes-{index + 1:02d}", width=width, height=height, frames=frames,
                fps=fps, background=background, noise=float(rng.uniform(2, 6)),
                shapes=shapes, seed=seed, index=index)


def mot_lines(frame: int, objects: list[GroundTruth]) -> list[str]:
    """``frame,id,x,y,w,h,1,class,visibility`` lines of one frame, by id."""
    lines = []
    for obj in sorted(objects, key=lambda o: o.track_id):
        x1, y1, x2, y2 = obj.box
        lines.append(f"{frame},{obj.track_id},{x1},{y1},{x2 - x1},{y2 - y1},1,{obj.cls + 1},"
                     f"{obj.visibility:.5f}\n")
    return lines


def seqinfo(clip: Clip) -> str:
    """The ``seqinfo.ini`` text of ``clip``."""
    return (f"[Sequence]\nname={clip.name}\nimDir=img1\nframeRate={clip.fps:g}\n"
            f"seqLength={clip.frames}\nimWidth={clip.width}\nimHeight={clip.height}\n"
            f"imExt=.jpg\n")


def write_clip(clip: Clip, out: str | Path) -> Path:
    """Write ``clip`` as ``out/<name>/`` (layout in the module docstring); return that folder.
    ``OutputError`` names a file that cannot be written."""
    folder = Path(out) / clip.name
    images = folder / "img1"
    video_path = folder / f"{clip.name}.mp4"
    try:
        images.mkdir(parents=True, exist_ok=True)
        (folder / "gt").mkdir(exist_ok=True)
    except OSError as err:
        raise OutputError(f"{folder}: cannot create ({err.strerror or err})") from err
    video = cv2.VideoWriter(str(video_path), cv2.VideoWriter.fourcc(*"mp4v"), clip.fps,
                            (clip.width, clip.height))
    if not video.isOpened():
        video.release()
        raise OutputError(f"{video_path}: cannot open an mp4v video writer")
    lines: list[str] = []
    current = images
    try:
        for frame in range(1, clip.frames + 1):
            drawn = render_frame(clip, frame)
            bgr = np.ascontiguousarray(drawn.image[:, :, ::-1])
            current = images / f"{frame:06d}.jpg"
            ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
            if not ok:
                raise OutputError(f"{current}: cannot encode the frame")
            current.write_bytes(jpg.tobytes())
            video.write(bgr)
            lines += mot_lines(frame, drawn.objects)
        current = folder / "gt" / "gt.txt"
        current.write_text("".join(lines))
        current = folder / "seqinfo.ini"
        current.write_text(seqinfo(clip))
    except OSError as err:
        raise OutputError(f"{current}: cannot write ({err.strerror or err})") from err
    finally:
        video.release()
    return folder


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (or ``N`` for a square) as ``(width, height)``; ``UsageError`` naming ``--size``
    when malformed or under ``MIN_SIDE``."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 320x240")
    width, height = int(parts[0]), int(parts[-1])
    if min(width, height) < MIN_SIDE:
        raise UsageError(f"--size {text!r}: each side must be at least {MIN_SIDE} pixels")
    return width, height


def generate_shapes_video(out: str | Path, sequences: int = 4, frames: int = 90,
                          size: tuple[int, int] = (256, 256), seed: int = 0,
                          fps: float = 30.0) -> list[Path]:
    """Write ``sequences`` clips of ``frames`` frames of ``size`` ``(width, height)`` pixels
    under ``out`` (layout in the module docstring); return their folders."""
    if sequences < 1:
        raise UsageError(f"--sequences must be at least 1, got {sequences}")
    if frames < 1:
        raise UsageError(f"--frames must be at least 1, got {frames}")
    if not (math.isfinite(fps) and fps > 0):
        raise UsageError(f"--fps must be a positive number, got {fps}")
    width, height = size
    if min(width, height) < MIN_SIDE:
        raise UsageError(f"--size {width}x{height}: each side must be at least {MIN_SIDE} "
                         f"pixels")
    return [write_clip(plan_clip(i, width, height, frames, fps, seed), out)
            for i in range(sequences)]
