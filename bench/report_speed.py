"""Time ``detseg eval --predictions`` with and without ``--report``, side by side.

    python bench/report_speed.py                     # 5000 images x 100 detections, bbox
    python bench/report_speed.py --images 500 --iou-types bbox,segm

The synthetic COCO files of ``bench/eval_speed.py`` (80 classes, ~7 objects and 100 detections
per image, no pictures) are written once; then for each IoU type the command runs in a fresh
process without and with ``--report`` (best of ``--repeat``), and, in this process, the parts:
parsing the JSON files, then into arrays (``COCOEvaluator`` and its ``parse``), the evaluation,
the error analysis (``analyse_detections`` on the evaluator's arrays, as ``eval --report``
runs it) and building the page (sections + HTML). Wall and CPU seconds are
printed (CPU time is the steadier number on a loaded machine). The report's extra time should be
no longer than the evaluation itself; the size of report.html is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cli_seconds(args: list[str], repeat: int) -> tuple[float, float, int]:
    """Best wall and CPU seconds of ``python -m detseg ARGS`` over ``repeat`` runs, and the
    size of the report.html it wrote (0 without)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    best_wall = best_cpu = float("inf")
    size = 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="report-speed-") as folder:
            out = Path(folder) / "run"
            start, cpu = time.perf_counter(), _cpu_children()
            proc = subprocess.run([sys.executable, "-m", "detseg", *args, "--out", str(out)],
                                  capture_output=True, text=True, env=env)
            wall, cpu = time.perf_counter() - start, _cpu_children() - cpu
            if proc.returncode != 0:
                sys.exit(f"detseg {' '.join(args)} failed ({proc.returncode}): "
                         f"{proc.stderr[-800:]}")
            best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
            page = out / "report.html"
            size = page.stat().st_size if page.is_file() else 0
    return best_wall, best_cpu, size


def _parts(gt_path: Path, res_path: Path, iou_type: str) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds of each part of an evaluation with a report, in this process."""
    from detseg.eval.analysis import analyse_detections
    from detseg.eval.coco_map import COCOEvaluator, load_json
    from detseg.report.detection import detection_section
    from detseg.report.page import render_page

    times: dict[str, tuple[float, float]] = {}
    clock = (time.perf_counter(), time.process_time())

    def lap(name: str) -> None:
        nonlocal clock
        now = (time.perf_counter(), time.process_time())
        times[name] = (now[0] - clock[0], now[1] - clock[1])
        clock = now

    gt, results = load_json(gt_path, "ground-truth"), load_json(res_path, "results")
    lap("parse JSON")
    evaluator = COCOEvaluator(gt, iou_type)
    dets = evaluator.parse(results)
    lap("parse to arrays")
    metrics = evaluator.evaluate(dets)
    lap("evaluate")
    analysis = analyse_detections(gt, results, iou_type, parsed=(evaluator.gt, dets))
    lap("analyse (TIDE, confusion, cases)")
    render_page("bench", [], [detection_section(metrics, analysis, None, gt, results, 0.5)])
    lap("build page")
    return times


def _measure(args: argparse.Namespace, data: Path) -> list[tuple]:
    """``(iou type, plain CLI times, --report CLI times, parts)`` per IoU type, on the files
    under ``data`` (generated there first when missing)."""
    from eval_speed import generate

    paths = (data / "gt.json", data / "bbox.json", data / "segm.json")
    if not all(p.is_file() for p in paths):
        start = time.perf_counter()
        paths = generate(args.images, data)
        print(f"generated {args.images} images x 100 detections in "
              f"{time.perf_counter() - start:.1f} s under {data}")
    gt_path = paths[0]
    rows = []
    for iou_type in args.iou_types.split(","):
        res_path = paths[1] if iou_type == "bbox" else paths[2]
        base = ["eval", "--ann", str(gt_path), "--predictions", str(res_path), "--iou-type",
                iou_type, "--no-plots", "-q"]
        plain = _cli_seconds(base, args.repeat)
        report = _cli_seconds([*base, "--report"], args.repeat)
        parts = _parts(gt_path, res_path, iou_type)
        rows.append((iou_type, plain, report, parts))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000, help="number of images (5000)")
    parser.add_argument("--iou-types", default="bbox", help="bbox, segm or bbox,segm")
    parser.add_argument("--repeat", type=int, default=1, help="CLI runs per setting (best)")
    parser.add_argument("--data", type=Path, help="folder for the generated files (kept; "
                        "reused when they are there)")
    args = parser.parse_args()
    if args.data is not None:
        args.data.mkdir(parents=True, exist_ok=True)
        rows = _measure(args, args.data)
    else:  # generated for this run only
        with tempfile.TemporaryDirectory(prefix="report-speed-data-") as folder:
            rows = _measure(args, Path(folder))
    print(f"\n{'':14} {'eval':>8} {'eval --report':>14} {'report extra':>13} "
          f"{'extra / eval':>13} {'report.html':>12}")
    for iou_type, plain, report, _ in rows:
        for k, what in ((0, "wall s"), (1, "CPU s")):
            extra = report[k] - plain[k]
            print(f"{iou_type + ' ' + what:14} {plain[k]:8.2f} {report[k]:14.2f} {extra:13.2f} "
                  f"{extra / plain[k]:13.2f} {report[2] / 1e6:9.2f} MB")
    for iou_type, _, _, parts in rows:
        print(f"\n{iou_type}, in one process: {'wall s':>8} {'CPU s':>8}")
        for name, (wall, cpu) in parts.items():
            print(f"  {name:34} {wall:8.2f} {cpu:8.2f}")


if __name__ == "__main__":
    main()
