"""Build ``report.html`` (and, for detection runs, ``errors.json``) in a run folder.

- ``detection_report``: from COCO metrics (``bbox`` and/or ``segm``), the ground truth and the
  results; the error analysis (``detseg.eval.analysis``) runs here, once per IoU type;
- ``semantic_report``: from the pixel metrics of a semantic model run and its per-image
  observer (``SemanticImages``).

Pictures come from a ``PictureSource``; the ones that cannot be read are named in
``ReportFiles.warnings`` and the report is written without them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detseg.eval.analysis import analyse_detections, write_errors_json
from detseg.eval.coco.ground_truth import GroundTruth
from detseg.eval.coco.results import Detections
from detseg.eval.coco_map import COCOMetrics
from detseg.report.detection import detection_section
from detseg.report.page import Section, render_page, write_page
from detseg.report.pictures import PictureSource
from detseg.report.semantic import semantic_section
from detseg.report.semantic_images import SemanticImages

REPORT_NAME = "report.html"


@dataclass
class ReportFiles:
    """What a report build wrote (``written``) and the pictures it left out (``warnings``, one
    line each naming the file)."""

    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _meta(lines: list[str]) -> list[str]:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return [*lines, f"written {stamp} by detseg eval --report"]


def detection_report(out_dir: Path, evals: dict[str, COCOMetrics], gt: dict[str, Any],
                     results: list[dict[str, Any]], pictures: PictureSource | None = None,
                     meta: list[str] | None = None, score_threshold: float = 0.5,
                     parsed: dict[str, tuple[GroundTruth, Detections]] | None = None
                     ) -> ReportFiles:
    """Analyse ``results`` against ``gt`` for each IoU type of ``evals`` and write
    ``errors.json`` and ``report.html`` into ``out_dir``.

    ``results`` are COCO results (``bbox`` xywh absolute pixels, ``score``, ``segmentation``
    for ``segm``); counts, the confusion matrix and the galleries use IoU 0.5 and detections
    with ``score >= score_threshold``. ``parsed``: per IoU type, the evaluator's parse of
    ``gt`` and ``results`` (see ``analyse_detections``), not parsed again.
    """
    types: list[str] = [t for t in ("bbox", "segm") if t in evals]
    analyses: dict[str, Any] = {
        t: analyse_detections(gt, results, iou_type=t, score_threshold=score_threshold,
                              parsed=(parsed or {}).get(t))
        for t in types}
    sections = [detection_section(evals[t], analyses[t], pictures, gt, results,
                                  score_threshold) for t in types]
    files = ReportFiles()
    files.written.append(write_errors_json(analyses, out_dir))
    lines = [f"{len(gt.get('images', []))} images, {len(results)} detections, score "
             f"threshold {score_threshold:g}", *(meta or [])]
    files.written.append(_write(out_dir, lines, sections))
    files.warnings += pictures.warnings if pictures is not None else []
    return files


def semantic_report(out_dir: Path, metrics: dict[str, Any], confusion: np.ndarray,
                    class_names: list[str], images: SemanticImages | None,
                    pictures: PictureSource | None = None, meta: list[str] | None = None
                    ) -> ReportFiles:
    """Write ``report.html`` of a semantic run into ``out_dir`` (see ``semantic_section``)."""
    section = semantic_section(metrics, confusion, class_names, images, pictures)
    count = len(images.scores) if images is not None else None
    lines = ([f"{count} images"] if count is not None else []) + list(meta or [])
    files = ReportFiles()
    files.written.append(_write(out_dir, lines, [section]))
    files.warnings += pictures.warnings if pictures is not None else []
    return files


def _write(out_dir: Path, lines: list[str], sections: list[Section]) -> Path:
    page = render_page("detseg evaluation report", _meta(lines), sections)
    return write_page(out_dir / REPORT_NAME, page)


def model_report(out_dir: Path, result: dict[str, Any], images: SemanticImages | None,
                 image_paths: dict[int, Path], meta: list[str] | None = None,
                 score_threshold: float = 0.5) -> ReportFiles:
    """The report of ``evaluate_model``'s ``result`` (its ``details`` say which kind), with
    pictures read from ``image_paths`` (image id -> file), ``images`` the semantic observer
    that watched the run and ``score_threshold`` that of ``detection_report``."""
    pictures = PictureSource(image_paths)
    details = result["details"]
    if "confusion_matrix" in details:
        return semantic_report(out_dir, result["metrics"], details["confusion_matrix"],
                               list(details["class_names"]), images, pictures, meta)
    return detection_report(out_dir, details, result["ground_truth"], result["predictions"],
                            pictures, meta, score_threshold)
