"""Writers for inference outputs: COCO results JSON, JSONL, YOLO txt, mask PNGs, annotated images.

Everything streams: the COCO JSON array is written entry by entry (to a ``.part`` file renamed
into place on ``close``, so a reader never sees half a file), and ``RunWriter`` draws and writes
each result in a background thread so encoding overlaps the model.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detseg.engine.background import BackgroundWorker
from detseg.engine.results import IGNORE_INDEX, Result, ResultStats

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


class CocoResultsWriter:
    """Streams a COCO results list (``[{image_id, category_id, bbox, score, ...}, ...]``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._part = self.path.with_name(self.path.name + ".part")
        self._file = open(self._part, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._file.write("[")
        self.count = 0

    def write(self, entries: Sequence[dict[str, Any]]) -> None:
        for entry in entries:
            self._file.write(("\n" if self.count == 0 else ",\n") + json.dumps(entry))
            self.count += 1

    def close(self) -> Path:
        """Finish the JSON array and move it into place; safe to call twice."""
        if not self._file.closed:
            self._file.write("\n]\n")
            self._file.close()
            self._part.replace(self.path)
        return self.path


def merge_coco_parts(parts: Sequence[Path], dest: Path) -> int:
    """Merge COCO results files (one per rank) into ``dest``, sorted by image id; the parts
    are removed. Returns the number of entries."""
    entries: list[dict[str, Any]] = []
    for part in parts:
        entries.extend(json.loads(Path(part).read_text(encoding="utf-8")))
    entries.sort(key=lambda e: e["image_id"])
    writer = CocoResultsWriter(dest)
    writer.write(entries)
    writer.close()
    for part in parts:
        Path(part).unlink()
    return writer.count


class JsonlWriter:
    """One JSON object per line, flushed as written (a killed run keeps every finished line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
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
    """Encode an RGB image to ``path`` (format from the suffix); raises ``OSError`` on failure."""
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb):
        raise OSError(f"{path}: could not write image")


class RunWriter(BackgroundWorker):
    """Writes every output of an inference run into ``out_dir`` from a background thread.

    Layout: annotated images ``<stem><suffix>``, ``predictions.json`` (COCO results, with
    ``file_name``), ``labels/<stem>.txt`` (YOLO) and ``masks/<stem>.png``. ``add`` blocks
    when ``queue_size`` results are waiting, so memory stays flat. An error in the thread is
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
        for sub, wanted in (("labels", save_txt), ("masks", save_masks)):
            if wanted:
                (self.out_dir / sub).mkdir(parents=True, exist_ok=True)
        super().__init__("detseg-writer", queue_size)

    def add(self, result: Result, image_id: int, stem: str) -> None:
        """Queue ``result`` (``image_id`` for the JSON, ``stem`` for file names)."""
        self._submit((result, image_id, stem))

    def close(self) -> None:
        """Wait for queued results, finish the JSON, and re-raise any writer error."""
        self._finish()
        if self.coco is not None:
            self.coco.close()
            self.files["json"] = 1
        self._raise_pending()

    def _handle(self, item: tuple[Result, int, str]) -> None:
        result, image_id, stem = item
        self.stats.add(result)
        name = result.path.name if result.path is not None else f"{stem}.png"
        if self.coco is not None:
            self.coco.write(result.to_coco(image_id, file_name=name))
        if self.save_images:
            suffix = result.path.suffix.lower() if result.path is not None else ".png"
            suffix = suffix if suffix in IMAGE_SUFFIXES else ".png"
            write_image(self.out_dir / f"{stem}{suffix}", result.plot(**self.plot_options))
            self.files["images"] += 1
        if self.save_txt and result.semantic is None:
            lines = yolo_lines(result)
            (self.out_dir / "labels" / f"{stem}.txt").write_text(
                "".join(line + "\n" for line in lines), encoding="utf-8")
            self.files["labels"] += 1
        if self.save_masks:
            masks = mask_image(result)
            if masks is not None:
                write_image(self.out_dir / "masks" / f"{stem}.png", masks)
                self.files["masks"] += 1
