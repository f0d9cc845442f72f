"""``detseg eval --report``: build report.html (and errors.json) beside metrics.json.

Called by ``cli/eval.py`` after the evaluation; prints one warning per picture that could not
be read (the report is written without it) and returns the files written and whether any
input failed, so the command can pick its exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .console import warn

MAX_LINES = 20


def _show(warnings: list[str]) -> None:
    for line in warnings[:MAX_LINES]:
        warn(line)
    if len(warnings) > MAX_LINES:
        warn(f"... and {len(warnings) - MAX_LINES} more pictures left out of the report")


def check_images_folder(images: Path | None) -> str | None:
    """The usage problem of ``--images`` for a report from files, or ``None``."""
    if images is not None and not images.is_dir():
        return f"--images: {images} is not a folder"
    return None


def load_inputs(ann: Path, predictions: Path) -> tuple[Any, Any]:
    """The ground truth and results files parsed once, for the evaluation and the report."""
    from detseg.eval.coco_map import load_json

    return load_json(ann, "ground-truth"), load_json(predictions, "results")


def report_from_files(ann: Path, predictions: Path, gt: Any, results: Any, images: Path | None,
                      evals: dict[str, Any], out_dir: Path, score_threshold: float = 0.5,
                      parsed: Any = None) -> tuple[list[Path], bool]:
    """The report of a scored results file (``gt`` and ``results`` parsed by ``load_inputs``;
    ``parsed`` the evaluator's arrays of them, ``(COCOEvaluator.gt, Detections)``, or None);
    ``(files written, some picture failed)``."""
    from detseg.report.build import detection_report
    from detseg.report.pictures import PictureSource

    pictures = None if images is None else PictureSource.from_folder(images, gt.get("images", []))
    files = detection_report(out_dir, evals, gt, results, pictures,
                             [f"ground truth {ann}", f"results {predictions}"]
                             + ([f"images {images}"] if images is not None else []),
                             score_threshold,
                             None if parsed is None else dict.fromkeys(evals, parsed))
    _show(files.warnings)
    return files.written, bool(files.warnings)


def observer(report: bool, num_classes: int) -> Any:
    """What watches a model run for the report (per-image pixel metrics), or ``None``."""
    if not report:
        return None
    from detseg.report.semantic_images import SemanticImages

    return SemanticImages(num_classes)


def report_from_model(result: dict[str, Any], watcher: Any, dataset: Any, out_dir: Path,
                      meta: list[str], score_threshold: float = 0.5) -> tuple[list[Path], bool]:
    """The report of a model run; ``(files written, some picture failed)``."""
    from detseg.report.build import model_report

    paths = {int(r.image_id): Path(r.path) for r in getattr(dataset, "records", [])}
    files = model_report(out_dir, result, watcher, paths, meta, score_threshold)
    _show(files.warnings)
    return files.written, bool(files.warnings)
