"""Time the error analysis (``analyse_detections``) against the COCO evaluation and the
``tidecv`` package on the same files, and check that the TIDE numbers agree.

    python bench/analysis_speed.py                          # 5000 images x 100 detections
    python bench/analysis_speed.py --images 500 --iou-types bbox,segm --no-tidecv

The synthetic COCO files of ``bench/eval_speed.py`` (80 classes, ~7 objects and 100 detections
per image) are written once (``--data`` keeps them). For each IoU type, in this process and
from the parsed JSON: ``COCOEvaluator(gt, iou_type).evaluate(results)`` (parsing into arrays
included), ``analyse_detections(gt, results, iou_type)`` on its own (parsing included) and on
the evaluator's arrays (``parsed=``, as ``eval --report`` runs it), best of ``--repeat``, wall
and CPU seconds (CPU is the steadier number on a loaded machine); then ``tidecv`` from the
files (its own loading included) and the largest difference between its dAPs / AP50 and ours.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _best(run: Callable[..., Any], args: tuple, repeat: int) -> tuple[float, float]:
    """Best wall and CPU seconds of ``run(*args)`` over ``repeat`` calls."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        run(*args)
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return wall, cpu


def _tidecv(gt_path: Path, res_path: Path, iou_type: str) -> tuple[dict[str, float], float,
                                                                    float]:
    """tidecv's dAPs, AP50 and CPU seconds (loading the files included)."""
    from tidecv import TIDE, datasets

    start = time.process_time()
    tide = TIDE()
    tide.evaluate(datasets.COCO(str(gt_path)), datasets.COCOResult(str(res_path)),
                  mode=TIDE.MASK if iou_type == "segm" else TIDE.BOX)
    errors = tide.get_all_errors()
    numbers = {**next(iter(errors["main"].values())), **next(iter(errors["special"].values()))}
    return numbers, next(iter(tide.runs.values())).ap, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000, help="number of images (5000)")
    parser.add_argument("--iou-types", default="bbox", help="bbox, segm or bbox,segm")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement (best)")
    parser.add_argument("--no-tidecv", action="store_true", help="skip the tidecv comparison")
    parser.add_argument("--data", type=Path, help="folder for the generated files (kept; "
                        "reused when they are there)")
    args = parser.parse_args()
    if args.data is not None:
        args.data.mkdir(parents=True, exist_ok=True)
        _run(args, args.data)
    else:  # generated for this run only
        with tempfile.TemporaryDirectory(prefix="analysis-speed-") as folder:
            _run(args, Path(folder))


def _run(args: argparse.Namespace, data: Path) -> None:
    """Time and compare each IoU type on the files under ``data`` (generated first when
    missing) and print one row each."""
    from eval_speed import generate

    from detseg.eval.analysis import analyse_detections
    from detseg.eval.coco_map import COCOEvaluator, load_json

    paths = (data / "gt.json", data / "bbox.json", data / "segm.json")
    if not all(p.is_file() for p in paths):
        paths = generate(args.images, data)
    gt = load_json(paths[0], "ground-truth")
    print(f"{args.images} images x 100 detections under {data}")
    print(f"{'':6} {'COCO evaluate':>22} {'analyse_detections':>22} {'... parsed=':>22} "
          f"{'tidecv':>9} {'max |diff|':>11}")
    print(f"{'':6}" + f" {'wall s':>10} {'CPU s':>11}" * 3 + f" {'CPU s':>9}")
    for iou_type in args.iou_types.split(","):
        res_path = paths[1] if iou_type == "bbox" else paths[2]
        results = load_json(res_path, "results")
        evaluate = _best(lambda g, r, t: COCOEvaluator(g, t).evaluate(r), (gt, results, iou_type),
                         args.repeat)
        analyse = _best(analyse_detections, (gt, results, iou_type), args.repeat)
        evaluator = COCOEvaluator(gt, iou_type)
        parsed = (evaluator.gt, evaluator.parse(results))
        reuse = _best(lambda g, r, t, p: analyse_detections(g, r, t, parsed=p),
                      (gt, results, iou_type, parsed), args.repeat)
        ref_cpu, diff = "-", "-"
        if not args.no_tidecv:
            want, want_ap, seconds = _tidecv(paths[0], res_path, iou_type)
            got = analyse_detections(gt, results, iou_type, parsed=parsed)
            worst = max([abs(got.ap50 - want_ap)] + [abs(got.tide[k] - v) for k, v in want.items()])
            ref_cpu, diff = f"{seconds:.1f}", f"{worst:.1e}"
        print(f"{iou_type:6}" + "".join(f" {w:10.2f} {c:11.2f}" for w, c in (evaluate, analyse,
                                                                             reuse))
              + f" {ref_cpu:>9} {diff:>11}")


if __name__ == "__main__":
    main()
