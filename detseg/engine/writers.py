"""Writers for inference outputs: COCO results JSON, JSONL, YOLO txt, mask PNGs, annotated images.

Nothing half-written is left under a final name: files are written under a temporary name
(``detseg.runs.temporary_path``) and renamed into place when complete, the COCO JSON array is
valid JSON after every entry written, and JSONL lines reach the disk one by one. A file that
cannot be written raises ``OutputError`` naming it. ``RunWriter`` draws and writes each result in
a background thread so encoding overlaps the model.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from detseg.engine.background import BackgroundWorker
from detseg.engine.results import IGNORE_INDEX, Result, ResultStats
from detseg.errors import OutputError
from detseg.runs import temporary_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A distinct file stem per input path: the input stem, suffixed ``_2``, ``_3`` on clashes.

    Inputs from different folders often share names (``a/0.jpg``, ``b/0.jpg``).
    """
    seen: Counter[str] = Counter()
    taken: set[str] = set()
    stems = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] += 1
        candidate = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
        while candidate in taken:
            seen[stem] += 1
            candidate = f"{stem}_{seen[stem]}"
        taken.add(candidate)
        stems.append(candidate)
    return stems


def image_ids(paths: Sequence[Path]) -> list[int]:
    """COCO image ids for ``paths``.

    The numeric file stems when all are distinct positive numbers (COCO's
    ``000000000139.jpg`` naming: id 139), otherwise 1, 2, ... in order (a dataset whose files
    count from ``000000``, like shapes, numbers its images that way).
    """
    stems = [Path(p).stem for p in paths]
    if stems and all(s.isdigit() for s in stems):
        numbers = [int(s) for s in stems]
        if min(numbers) > 0 and len(set(numbers)) == len(numbers):
            return numbers
    return list(range(1, len(paths) + 1))


def input_names(paths: Sequence[Path]) -> list[str]:
    """The ``file_name`` of each input in predictions.json: its path relative to the folder
    holding every input (``a/b.jpg`` and ``c/b.jpg`` stay apart), ``/``-separated."""
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return [Path(os.path.relpath(p, root)).as_posix() for p in absolute]


def _cannot_write(path: Path, err: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write ({err.strerror or err})")


def _write_all(file: BinaryIO, data: bytes) -> None:
    """Write every byte of ``data`` to an unbuffered binary file."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.EIO, "nothing written")
        view = view[written:]


def write_file(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name, then rename it into place; raises
    ``OutputError`` naming ``path`` (and leaves nothing behind) when that fails."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise _cannot_write(path, err) from err


class CocoResultsWriter:
    """Streams a COCO results list (``[{image_id, category_id, bbox, score, ...}, ...]``).

    The array is written in place: after every ``write`` the file holds a complete JSON array
    (the closing bracket is rewritten after each entry), so a run that is killed, even with
    SIGKILL, leaves ``path`` readable with the entries written so far, and a write that fails (a
    full disk) keeps them too: it raises ``OutputError`` after closing the array again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._end = 1  # byte offset just after the last entry (the "[" to begin with)
        try:
            self._file = open(self.path, "w+b", buffering=0)  # noqa: SIM115 - see close
        except OSError as err:
            raise _cannot_write(self.path, err) from err
        try:
            _write_all(self._file, b"[\n]\n")
        except OSError as err:
            self._file.close()
            self.path.unlink(missing_ok=True)
            raise _cannot_write(self.path, err) from err

    def write(self, entries: Sequence[dict[str, Any]]) -> None:
        """Append ``entries``; the closing bracket is rewritten after them."""
        if not entries:
            return
        chunk = "".join(("\n" if self.count + i == 0 else ",\n") + json.dumps(entry)
                        for i, entry in enumerate(entries)).encode()
        try:
            self._file.seek(self._end)
            _write_all(self._file, chunk + b"\n]\n")
        except OSError as err:
            self._end_array()
            raise _cannot_write(self.path, err) from err
        self._end += len(chunk)
        self.count += len(entries)

    def _end_array(self) -> None:
        """Close the array after the last complete entry (those bytes were written before, so
        this needs no new space on a full disk)."""
        with contextlib.suppress(OSError):
            self._file.seek(self._end)
            _write_all(self._file, b"\n]\n")
            self._file.truncate(self._end + 3)

    def close(self) -> Path:
        """Close the file; safe to call twice."""
        if not self._file.closed:
            self._file.close()
        return self.path


def merge_coco_parts(parts: Sequence[Path], dest: Path) -> int:
    """Merge COCO results files (one per rank) into ``dest``, sorted by image id; the parts
    are removed. Returns the number of entries; ``OutputError`` names a part that cannot be read
    or a ``dest`` that cannot be written."""
    entries: list[dict[str, Any]] = []
    for part in parts:
        try:
            entries.extend(json.loads(Path(part).read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise OutputError(f"{part}: cannot read this process's results ({err})") from err
    entries.sort(key=lambda e: e["image_id"])
    writer = CocoResultsWriter(dest)
    try:
        writer.write(entries)
    finally:
        writer.close()
    for part in parts:
        Path(part).unlink(missing_ok=True)
    return writer.count


class JsonlWriter:
    """One JSON object per line, each line on disk as soon as it is written (a killed run keeps
    every finished line; a line that a full disk cuts short is removed again)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._end = 0
        try:
            self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as err:
            raise _cannot_write(self.path, err) from err

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode()
        try:
            _write_all(self._file, line)
        except OSError as err:
            with contextlib.suppress(OSError):
                self._file.truncate(self._end)
                self._file.seek(self._end)
            raise _cannot_write(self.path, err) from err
        self._end += len(line)
        self.count += 1

    def close(self) -> Path:
        if not self._file.closed:
            self._file.close()
        return self.path


def yolo_lines(result: Result) -> list[str]:
    """YOLO txt lines ``class cx cy w h conf`` (normalized to [0, 1]) for ``result``.

    ``class`` is the model label minus one for detectors (YOLO has no background class). With
    instance masks the line is the YOLO segmentation form ``class x1 y1 x2 y2 ... conf`` (the
    outline of the mask's largest region).
    """
    if result.semantic is not None:
        return []
    h, w = result.shape
    offset = 1 if result.names and result.names[0].strip("_").lower() == "background" else 0
    lines = []
    for i in range(len(result)):
        cls = int(result.labels[i]) - offset
        conf = float(result.scores[i])
        polygon = _outline(result.masks[i]) if result.masks is not None else None
        if polygon is not None:
            coords = " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in polygon)
            lines.append(f"{cls} {coords} {conf:.5f}")
            continue
        x1, y1, x2, y2 = (float(v) for v in result.boxes[i])
        lines.append(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                     f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f} {conf:.5f}")
    return lines


def _outline(mask: np.ndarray) -> np.ndarray | None:
    """The largest external contour of ``mask`` as K x 2 pixel coordinates (None if empty)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    return largest.reshape(-1, 2) if len(largest) >= 3 else None


def mask_image(result: Result) -> np.ndarray | None:
    """A single-channel PNG-ready map of ``result``'s masks, or ``None`` without masks.

    Semantic: class index per pixel (uint8, 255 = unlabeled). Instance: 0 for no object and
    ``k`` for the ``k``-th detection (1-based, the order of the JSON entries); uint8, or uint16
    past 254 detections.
    """
    if result.semantic is not None:
        return result.semantic.astype(np.uint8 if result.semantic.max(initial=0) <= 255
                                      else np.uint16)
    if result.masks is None:
        return None
    dtype = np.uint8 if len(result) < IGNORE_INDEX else np.uint16
    out = np.zeros(result.shape, dtype)
    # Paint lowest score first so the most confident instance wins overlaps.
    for i in reversed(range(len(result))):
        out[result.masks[i]] = i + 1
    return out


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Encode an RGB (or single-channel) image to ``path``, the format from the suffix; raises
    ``OutputError`` naming ``path`` on failure."""
    pixels = np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb
    ok, encoded = cv2.imencode(path.suffix or ".png", pixels)
    if not ok:
        raise OutputError(f"{path}: cannot encode the image")
    write_file(path, encoded.tobytes())


class RunWriter(BackgroundWorker):
    """Writes every output of an inference run into ``out_dir`` from a background thread.

    Layout: annotated images ``<stem><suffix>``, ``predictions.json`` (COCO results: ``bbox`` is
    ``[x, y, width, height]`` in pixels, plus ``file_name``), ``labels/<stem>.txt`` (YOLO) and
    ``masks/<stem>.png``; the subfolders are made when their first file is. ``add`` blocks when
    ``queue_size`` results are waiting, so memory stays flat. An error in the thread (an
    ``OutputError`` when a file cannot be written) drops the results queued after it and is
    raised again by the next ``add`` or by ``close``.
    """

    def __init__(self, out_dir: str | Path, *, save_images: bool = True,
                 json_name: str | None = "predictions.json", save_txt: bool = False,
                 save_masks: bool = False, plot_options: dict[str, Any] | None = None,
                 queue_size: int = 8) -> None:
        self.out_dir = Path(out_dir)
        self.save_images = save_images
        self.save_txt = save_txt
        self.save_masks = save_masks
        self.plot_options = plot_options or {}
        self.stats = ResultStats()
        self.files: Counter[str] = Counter()
        self.coco = CocoResultsWriter(self.out_dir / json_name) if json_name else None
        super().__init__("detseg-writer", queue_size)

    def add(self, result: Result, image_id: int, stem: str, file_name: str | None = None) -> None:
        """Queue ``result``: ``image_id`` and ``file_name`` (default: the image's name) for the
        JSON, ``stem`` for file names."""
        self._submit((result, image_id, stem, file_name))

    def close(self) -> None:
        """Wait for queued results, finish the JSON, and re-raise any writer error."""
        self._finish()
        if self.coco is not None:
            self.coco.close()
            self.files["json"] = 1
        self._raise_pending()

    def _subfolder(self, name: str) -> Path:
        folder = self.out_dir / name
        try:
            folder.mkdir(exist_ok=True)
        except OSError as err:
            raise _cannot_write(folder, err) from err
        return folder

    def _handle(self, item: tuple[Result, int, str, str | None]) -> None:
        result, image_id, stem, file_name = item
        self.stats.add(result)
        if self.coco is not None:
            name = file_name or (result.path.name if result.path is not None else f"{stem}.png")
            self.coco.write(result.to_coco(image_id, file_name=name))
        if self.save_images:
            suffix = result.path.suffix.lower() if result.path is not None else ".png"
            suffix = suffix if suffix in IMAGE_SUFFIXES else ".png"
            write_image(self.out_dir / f"{stem}{suffix}", result.plot(**self.plot_options))
            self.files["images"] += 1
        if self.save_txt and result.semantic is None:
            lines = yolo_lines(result)
            write_file(self._subfolder("labels") / f"{stem}.txt",
                       "".join(line + "\n" for line in lines).encode())
            self.files["labels"] += 1
        if self.save_masks:
            masks = mask_image(result)
            if masks is not None:
                write_image(self._subfolder("masks") / f"{stem}.png", masks)
                self.files["masks"] += 1
