"""``errors.json``: TIDE's dAP per error type of each evaluated IoU type."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detseg.errors import OutputError
from detseg.eval.analysis.analyse import DetectionAnalysis
from detseg.eval.analysis.tide import ERROR_TYPES, SPECIAL_ERROR_TYPES

ERRORS_FILE = "errors.json"


def errors_json(analyses: Mapping[Any, DetectionAnalysis]) -> dict[str, dict[str, float]]:
    """``{"bbox": {"Cls": dAP, "Loc": .., "Both": .., "Dupe": .., "Bkg": .., "Miss": ..,
    "FalsePos": .., "FalseNeg": ..}, "segm": {...}}`` (AP points 0-100, rounded to 1e-4) for
    ``{iou_type: analysis}``."""
    names = (*ERROR_TYPES, *SPECIAL_ERROR_TYPES)
    return {str(iou_type): {name: round(float(a.tide[name]), 4) for name in names}
            for iou_type, a in analyses.items()}


def write_errors_json(analyses: Mapping[Any, DetectionAnalysis], out_dir: Path) -> Path:
    """Write ``errors_json(analyses)`` to ``out_dir/errors.json`` (renamed into place, so
    never half-written); ``OutputError`` names the file when it cannot be written."""
    path = Path(out_dir) / ERRORS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(errors_json(analyses), indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the error breakdown "
                          f"({err.strerror or err})") from err
    return path
