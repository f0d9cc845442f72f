"""What a tracking run writes per sequence: the MOTChallenge text, the frame JSONL and the
annotated video, and the statistics of its identities.

The text and JSONL files reach the disk frame by frame (a killed run keeps every finished
frame); the video is encoded in a background thread into a temporary file renamed into place
when closed (Ctrl-C closes it, so it stays playable). A file that cannot be written raises
``OutputError`` naming it.
"""

from __future__ import annotations

import contextlib
import errno
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detseg.engine.video import AnnotatedVideoWriter
from detseg.engine.writers import JsonlWriter
from detseg.errors import OutputError, VideoReadError
from detseg.track import TrackedObjects
from detseg.viz.tracks import Trails, draw_tracks


def mot_rows(number: int, tracked: TrackedObjects) -> str:
    """MOTChallenge result lines ``frame,id,x,y,w,h,conf,-1,-1,-1`` of one frame (``number``
    from 1; box in pixels, top-left corner and size)."""
    lines = []
    for track_id, box, score in zip(tracked.ids.tolist(), tracked.boxes_xyxy.tolist(),
                                    tracked.scores.tolist(), strict=True):
        x1, y1, x2, y2 = box
        lines.append(f"{number},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                     f"{score:.4f},-1,-1,-1\n")
    return "".join(lines)


def frame_record(number: int, tracked: TrackedObjects, names: list[str]) -> dict[str, Any]:
    """One JSONL line: ``{"frame": number, "objects": [{"id", "class", "label", "score",
    "box_xyxy"}]}`` (box corners in pixels)."""
    objects = []
    for track_id, box, cls, score in zip(tracked.ids.tolist(), tracked.boxes_xyxy.tolist(),
                                         tracked.classes.tolist(), tracked.scores.tolist(),
                                         strict=True):
        objects.append({"id": track_id, "class": names[cls] if 0 <= cls < len(names) else
                        str(cls), "label": cls, "score": round(score, 5),
                        "box_xyxy": [round(v, 2) for v in box]})
    return {"frame": number, "objects": objects}


class TextWriter:
    """Appends text to ``path``, each chunk on disk as soon as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._end = 0
        try:
            self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as err:
            raise OutputError(f"{path}: cannot write ({err.strerror or err})") from err

    def write(self, text: str) -> None:
        data = text.encode()
        try:
            view = memoryview(data)
            while view:
                written = self._file.write(view)
                if not written:
                    raise OSError(errno.EIO, "nothing written")
                view = view[written:]
        except OSError as err:
            with contextlib.suppress(OSError):
                self._file.truncate(self._end)
            raise OutputError(f"{self.path}: cannot write ({err.strerror or err})") from err
        self._end += len(data)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def track_video_writer(stem: Path, fps: float, size: tuple[int, int], names: list[str],
                       trail: int = 30) -> AnnotatedVideoWriter[tuple[np.ndarray, TrackedObjects]]:
    """A video writer of ``(frame RGB, its tracks)`` pairs: boxes in each identity's colour,
    ``#id class`` labels and the trail of each identity's last ``trail`` centres."""
    trails = Trails(trail)

    def render(item: tuple[np.ndarray, TrackedObjects]) -> np.ndarray:
        image, tracked = item
        trails.update(tracked.ids, tracked.boxes_xyxy)
        return draw_tracks(image, tracked.ids, tracked.boxes_xyxy, tracked.classes, names,
                           trails)

    return AnnotatedVideoWriter(stem, fps, size, render, thread_name="detseg-track-video")


@dataclass
class IdentityStats:
    """Per identity: frames it was reported in and its class name; summed per sequence."""

    lengths: Counter[int] = field(default_factory=Counter)
    classes: dict[int, str] = field(default_factory=dict)

    def add(self, tracked: TrackedObjects, names: list[str]) -> None:
        for track_id, cls in zip(tracked.ids.tolist(), tracked.classes.tolist(), strict=True):
            self.lengths[track_id] += 1
            self.classes.setdefault(track_id, names[cls] if 0 <= cls < len(names) else str(cls))

    def summary(self) -> dict[str, Any]:
        """``tracks``, ``mean_length`` (frames) and ``ids_per_class``."""
        count = len(self.lengths)
        per_class = Counter(self.classes.values())
        return {"tracks": count,
                "mean_length": round(sum(self.lengths.values()) / count, 2) if count else 0.0,
                "ids_per_class": dict(sorted(per_class.items()))}


class SequenceOutputs:
    """The files of one sequence in ``run_dir``: ``<name>.txt`` (MOTChallenge), ``<name>.jsonl``
    (a line per frame) and, with ``save_video``, ``<name>.mp4`` (annotated; opened at the first
    frame, at its size, ``fps`` frames per second)."""

    def __init__(self, run_dir: Path, name: str, names: list[str], fps: float,
                 save_video: bool = True, trail: int = 30) -> None:
        self.run_dir, self.name, self.names = run_dir, name, names
        self.fps, self.save_video, self.trail = fps, save_video, trail
        self.mot = TextWriter(run_dir / f"{name}.txt")
        self.video: AnnotatedVideoWriter[tuple[np.ndarray, TrackedObjects]] | None = None
        self.stats = IdentityStats()
        try:
            self.jsonl = JsonlWriter(run_dir / f"{name}.jsonl")
        except BaseException:
            self.mot.close()
            raise

    def write(self, number: int, image: np.ndarray, tracked: TrackedObjects) -> None:
        """Write frame ``number`` (from 1)."""
        self.mot.write(mot_rows(number, tracked))
        self.jsonl.write(frame_record(number, tracked, self.names))
        if self.save_video:
            if self.video is None:
                size = (int(image.shape[1]), int(image.shape[0]))
                try:
                    self.video = track_video_writer(self.run_dir / self.name, self.fps, size,
                                                    self.names, self.trail)
                except VideoReadError as err:  # no codec could open the file
                    raise OutputError(str(err)) from err
            self.video.write((image, tracked))
        self.stats.add(tracked, self.names)

    def close(self) -> None:
        """Close every file, even when one fails; the first ``OutputError`` is raised after."""
        failure: OutputError | None = None
        closers = [self.mot.close, self.jsonl.close]
        if self.video is not None:
            closers.append(self.video.close)
        for close in closers:
            try:
                close()
            except OutputError as err:
                failure = failure or err
        if failure is not None:
            raise failure
