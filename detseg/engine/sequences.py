"""Tracking inputs: videos and image sequences, and their frames in source numbering.

``find_sequences`` turns command-line sources into sequences: a video file is one; a folder
holding ``img1/`` (MOT17 layout) or image files is one (named after the folder, frames sorted by
name); any other folder contributes every such sub-folder and every video directly inside it
(a MOT17 split folder, a folder of clips). Frames are numbered from 1 as MOTChallenge does: a
video's frame ``k`` (0-based) is number ``k + 1``; image files named by numbers
(``000001.jpg``) keep those numbers, other names count 1, 2, ... in sorted order.

``open_frames`` streams the selected frames of a sequence (``start``..``end`` frame numbers,
inclusive, then every ``stride``-th) as ``detseg.engine.frames.Frame`` objects whose ``index``
is the frame number minus one, decoded ahead in background threads (memory stays flat).
"""

from __future__ import annotations

import configparser
import glob
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from detseg.data.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, image_size, read_image
from detseg.engine.frames import DEFAULT_FPS, Frame, VideoFrames
from detseg.errors import ImageReadError, UsageError, VideoReadError
from detseg.runs import is_run_folder

_READ_AHEAD = 8


@dataclass(frozen=True)
class TrackSource:
    """One sequence to track: a video (``frames`` is ``None``) or image files with their frame
    ``numbers``; ``fps`` from the folder's ``seqinfo.ini`` (``None`` when unknown)."""

    name: str
    path: Path
    frames: tuple[Path, ...] | None = None
    numbers: tuple[int, ...] | None = None
    fps: float | None = None

    @property
    def is_video(self) -> bool:
        return self.frames is None


@dataclass
class FoundSequences:
    """``sequences`` in order, ``failures`` (one line per source that gave nothing) and
    ``notes`` (run folders of earlier detseg runs left out)."""

    sequences: list[TrackSource] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _images_in(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                      and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError:
        return []


def _seqinfo_fps(folder: Path) -> float | None:
    """``frameRate`` of ``folder/seqinfo.ini``, when it exists and says a positive number."""
    ini = configparser.ConfigParser()
    try:
        ini.read(folder / "seqinfo.ini", encoding="utf-8")
        fps = float(ini["Sequence"]["frameRate"])
    except (configparser.Error, KeyError, ValueError, UnicodeDecodeError):
        return None
    return fps if math.isfinite(fps) and fps > 0 else None


def frame_numbers(files: list[Path]) -> list[int]:
    """MOT frame numbers of image files: their numeric stems when all are distinct positive
    numbers, else 1, 2, ... in order."""
    stems = [f.stem for f in files]
    if stems and all(s.isdigit() for s in stems):
        numbers = [int(s) for s in stems]
        if min(numbers) > 0 and len(set(numbers)) == len(numbers):
            return numbers
    return list(range(1, len(files) + 1))


def _image_sequence(folder: Path) -> TrackSource | None:
    """The sequence of ``folder`` (``img1/`` or its own images), or ``None``."""
    frames_dir = folder / "img1" if (folder / "img1").is_dir() else folder
    files = _images_in(frames_dir)
    if not files:
        return None
    pairs = sorted(zip(frame_numbers(files), files, strict=True))
    return TrackSource(folder.resolve().name, folder, frames=tuple(p for _, p in pairs),
                       numbers=tuple(n for n, _ in pairs), fps=_seqinfo_fps(folder))


def _expand(path: Path, found: FoundSequences) -> list[TrackSource]:
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return [TrackSource(path.stem, path)]
        if path.suffix.lower() in IMAGE_SUFFIXES:
            found.failures.append(f"{path}: a single image; give the folder of a sequence's "
                                  f"frames")
        else:
            found.failures.append(f"{path}: not a video (suffix {path.suffix or 'none'})")
        return []
    if not path.is_dir():
        found.failures.append(f"{path}: no such file or folder")
        return []
    own = _image_sequence(path)
    if own is not None:
        return [own]
    out: list[TrackSource] = []
    try:
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    except OSError as err:
        found.failures.append(f"{path}: cannot read folder ({err.strerror or err})")
        return []
    for entry in entries:
        if entry.is_dir():
            if is_run_folder(entry):
                found.notes.append(f"skipped {entry}: output folder of an earlier detseg run")
                continue
            inner = _image_sequence(entry)
            if inner is not None:
                out.append(inner)
        elif entry.suffix.lower() in VIDEO_SUFFIXES:
            out.append(TrackSource(entry.stem, entry))
    if not out:
        found.failures.append(f"{path}: folder holds no videos, frames or sequence folders")
    return out


def find_sequences(sources: Sequence[str | Path]) -> FoundSequences:
    """The sequences of ``sources`` (videos, sequence folders, folders of them, globs), each
    once, with distinct names (``_2``, ``_3`` added on clashes)."""
    found = FoundSequences()
    seen: set[str] = set()
    names: dict[str, int] = {}
    for source in sources:
        text = os.path.expanduser(str(source))
        paths = [Path(text)]
        if not Path(text).exists() and any(ch in text for ch in "*?["):
            paths = [Path(m) for m in sorted(glob.glob(text))]
            if not paths:
                found.failures.append(f"{source}: glob matched nothing")
        for path in paths:
            for seq in _expand(path, found):
                key = os.path.realpath(seq.path)
                if key in seen:
                    continue
                seen.add(key)
                names[seq.name] = names.get(seq.name, 0) + 1
                name = seq.name if names[seq.name] == 1 else f"{seq.name}_{names[seq.name]}"
                found.sequences.append(TrackSource(name, seq.path, seq.frames, seq.numbers,
                                                   seq.fps))
    return found


@dataclass(frozen=True)
class FrameRange:
    """Which frames are tracked: numbers ``start``..``end`` (inclusive, from 1; ``None``: the
    first / last), then every ``stride``-th."""

    stride: int = 1
    start: int | None = None
    end: int | None = None

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise UsageError(f"--vid-stride must be >= 1, got {self.stride}")
        for flag, value in (("--start", self.start), ("--end", self.end)):
            if value is not None and value < 1:
                raise UsageError(f"{flag} is a frame number, counted from 1; got {value}")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise UsageError(f"--end ({self.end}) must not be before --start ({self.start})")


class SequenceFrames:
    """The selected frames of one sequence, decoded ahead; iterate for ``Frame`` objects
    (``index`` = frame number - 1, RGB image). ``fps`` is the source's frame rate, ``expected``
    the number of frames to come when known. Close it when done (safe twice).

    A video that cannot be opened raises ``VideoReadError``; a frame that cannot be read goes to
    ``on_error`` and is skipped.
    """

    def __init__(self, source: TrackSource, frames: FrameRange,
                 on_error: Callable[[ImageReadError], None]) -> None:
        self.source = source
        self.on_error = on_error
        self._video: VideoFrames | None = None
        self._pool: ThreadPoolExecutor | None = None
        if source.frames is None:
            self._open_video(frames)
        else:
            assert source.numbers is not None
            picked = [(n, p) for n, p in zip(source.numbers, source.frames, strict=True)
                      if (frames.start is None or n >= frames.start)
                      and (frames.end is None or n <= frames.end)][::frames.stride]
            self._files = picked
            self.fps = source.fps or DEFAULT_FPS
            self.expected: int | None = len(picked)
            self.size = _first_size(picked)

    def _open_video(self, frames: FrameRange) -> None:
        path = self.source.path
        if path.stat().st_size == 0:
            raise VideoReadError(path, "empty file (0 bytes)")
        probe = cv2.VideoCapture(str(path))
        fps = float(probe.get(cv2.CAP_PROP_FPS) or 0.0) if probe.isOpened() else 0.0
        probe.release()
        fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        start = (frames.start - 1) / fps if frames.start is not None else None
        end = frames.end / fps if frames.end is not None else None
        self._video = VideoFrames(path, stride=frames.stride, start=start, end=end,
                                  on_error=self.on_error)
        self.fps = self._video.fps
        self.expected = self._video.expected
        self.size = self._video.size

    def __iter__(self) -> Iterator[Frame]:
        if self._video is not None:
            yield from self._video
            return
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="detseg-frames")
        pending: deque[tuple[int, Path, Future[np.ndarray]]] = deque()
        files = iter(self._files)
        try:
            while True:
                while len(pending) < _READ_AHEAD:
                    item = next(files, None)
                    if item is None:
                        break
                    pending.append((item[0], item[1], self._pool.submit(read_image, item[1])))
                if not pending:
                    return
                number, path, future = pending.popleft()
                try:
                    image = future.result()
                except ImageReadError as err:
                    self.on_error(err)
                    continue
                except OSError as err:
                    self.on_error(ImageReadError(path, str(err)))
                    continue
                yield Frame(number - 1, (number - 1) / self.fps, image)
        finally:
            self.close()

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _first_size(files: list[tuple[int, Path]]) -> tuple[int, int] | None:
    """``(width, height)`` of the first readable image header among ``files`` (a few tried)."""
    for _, path in files[:5]:
        try:
            return image_size(path)
        except ImageReadError:
            continue
    return None
