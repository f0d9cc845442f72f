"""Image reading and source expansion: one reader for every image path the CLI meets.

``read_image`` decodes JPEG, PNG, BMP, TIFF and WebP with Pillow, applies the EXIF
orientation and returns RGB ``uint8`` ``H x W x 3`` whatever the stored mode (grayscale,
RGBA, palette, CMYK, 16-bit). Anything that cannot be decoded raises ``ImageReadError``
naming the file and the reason. ``expand_sources`` turns command-line sources (files,
folders, globs, videos, ``.txt`` lists) into sorted, de-duplicated paths; folder walks visit
each real folder once, so symlink loops neither hang nor repeat images.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from detseg.errors import ImageReadError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"}
)
_GLOB_CHARS = frozenset("*?[")



def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> RGB uint8 array; high bit depths are scaled, not clipped."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = float(arr.max(initial=0.0))
        if mode.startswith("I;16") or 255.0 < top <= 65535.0:
            arr = arr * (255.0 / 65535.0)
        elif top > 65535.0:
            arr = arr * (255.0 / top)
        elif mode == "F" and top <= 1.0:
            arr = arr * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB ``uint8`` array of shape ``H x W x 3``.

    EXIF orientation is applied; alpha is dropped; grayscale, palette, CMYK and 16-bit
    images are converted (16-bit values are scaled by 255/65535).
    Raises ``ImageReadError(path, reason)`` for missing, empty, truncated, corrupt or
    non-image files, and for images above Pillow's decompression-bomb bound (179 megapixels
    by default; Pillow's own warning for smaller large images is silenced).
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageReadError(path, f"cannot stat file ({err.strerror or err})") from err
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            img.load()
            arr = _to_rgb(ImageOps.exif_transpose(img))
    except UnidentifiedImageError as err:
        raise ImageReadError(path, "not a recognized image format") from err
    except Image.DecompressionBombError as err:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise ImageReadError(path, f"image too large to decode (detseg reads up to "
                                   f"{limit:.0f} megapixels)") from err
    except (OSError, SyntaxError, ValueError) as err:
        reason = str(err) or type(err).__name__
        if "truncated" in reason:
            reason = f"truncated image data ({reason})"
        else:
            reason = f"corrupt image data ({reason})"
        raise ImageReadError(path, reason) from err
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(path, f"decoded to an unusable shape {arr.shape}")
    return arr


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, read from the header only (no decode)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, f"cannot read image header ({err})") from err
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return width, height


@dataclass
class Sources:
    """Expanded command-line sources.

    Attributes:
        images: image files in order (folders sorted), duplicates removed.
        videos: video files in order, duplicates removed.
        missing: sources that matched nothing (missing path, empty glob, unreadable list).
        skipped_links: folder links not followed, each ``"link -> target (why)"``: their
            target was already visited (a loop such as ``self -> .``, or a second way in).
    """

    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped_links: list[str] = field(default_factory=list)


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _folder_files(folder: Path, skipped_links: list[str]) -> list[Path]:
    """Image and video files under ``folder`` (recursive), sorted by relative path.

    Links to folders are followed, but every real folder is visited once: a link to a
    folder already visited (or queued) is skipped and reported in ``skipped_links``.
    """
    found = []
    visited = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if real not in visited:
                visited.add(real)
                kept.append(name)
            elif os.path.islink(path):
                skipped_links.append(f"{path} -> {os.readlink(path)} (folder already visited)")
        dirnames[:] = kept
        for name in filenames:
            suffix = Path(name).suffix.lower()
            if not name.startswith(".") and (suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _list_file_entries(list_file: Path) -> list[str]:
    """Non-empty, non-comment lines of a ``.txt`` list; relative entries resolve next to it."""
    entries = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(line).expanduser()
        if not entry.is_absolute() and not entry.exists():
            entry = list_file.parent / entry
        entries.append(str(entry))
    return entries


def expand_sources(sources: list[str | Path]) -> Sources:
    """Expand files, folders (recursive, sorted), globs, videos and ``.txt`` lists of paths.

    A file named explicitly is kept even if its suffix is unknown (the reader will then say
    why it fails); folders and globs only contribute image and video suffixes. A ``.txt``
    file is read as a list of sources (one per line, ``#`` comments allowed). A file reached
    through several links or sources is kept once (the first way it was reached).
    """
    out = Sources()
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.normcase(os.path.realpath(path))  # one file reached two ways: once
        if key in seen:
            return
        seen.add(key)
        (out.videos if _is_video(path) else out.images).append(path)

    def expand(source: str, from_lists: frozenset[str]) -> None:
        path = Path(source).expanduser()
        if path.is_dir():
            files = _folder_files(path, out.skipped_links)
            if not files:
                out.missing.append(f"{source} (folder holds no images or videos)")
            for f in files:
                add(f)
        elif path.is_file():
            if path.suffix.lower() == ".txt":
                key = os.path.abspath(path)
                if key in from_lists:
                    out.missing.append(f"{source} (list includes itself)")
                    return
                try:
                    entries = _list_file_entries(path)
                except (OSError, UnicodeDecodeError) as err:
                    out.missing.append(f"{source} (cannot read list: {err})")
                    return
                for entry in entries:
                    expand(entry, from_lists | {key})
            else:
                add(path)
        elif any(ch in source for ch in _GLOB_CHARS):
            matches = sorted(glob.glob(os.path.expanduser(source), recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()
                     and Path(m).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
            if not files:
                out.missing.append(f"{source} (glob matched no images or videos)")
            for f in files:
                add(f)
        else:
            out.missing.append(source)

    for source in sources:
        expand(str(source), frozenset())
    return out
