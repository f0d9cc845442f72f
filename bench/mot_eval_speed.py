"""Time ``detseg eval --mot`` against TrackEval on a MOT17-sized synthetic set, in one process.

    python bench/mot_eval_speed.py                  # 7 sequences, MOT17 train's lengths
    python bench/mot_eval_speed.py --objects 15     # fewer targets per frame

The set has MOT17 train's seven sequence lengths (5316 frames), ~``--objects`` pedestrians
alive per frame walking straight with jittered, dropped (8%) and re-identified (0.5%) predictions
plus background false positives, and MOT17's annotation conventions: static persons and
distractors (classes 7, 8) with predictions on some of them, cars (class 3, not considered)
and visibilities. Both tools read the same files from disk: detseg through ``evaluate_mot``
(+ ``metrics_json``), TrackEval through its ``Evaluator`` and ``MotChallenge2DBox`` (single
process, no outputs). Printed: seconds each, the speed-up, and the largest |difference| over
the combined HOTA, DetA, AssA, LocA, MOTA, MOTP, IDF1, IDSW, Frag, MT, ML, FP, FN.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LENGTHS = {"MOT17-02": 600, "MOT17-04": 1050, "MOT17-05": 837, "MOT17-09": 525,
           "MOT17-10": 654, "MOT17-11": 900, "MOT17-13": 750}


def _sequence(rng: np.random.Generator, frames: int, objects: int) -> tuple[list[str], list[str]]:
    gt: list[str] = []
    pred: list[str] = []
    next_id = 1000
    tracks = objects * frames // 150  # each lives ~150 frames on average
    for obj in range(tracks):
        start = int(rng.integers(1, frames))
        end = min(frames, start + int(rng.integers(30, 270)))
        x, y = rng.uniform(0, 1800), rng.uniform(0, 900)
        vx, vy = rng.uniform(-3, 3), rng.uniform(-1, 1)
        w = rng.uniform(25, 110)
        cls, flag = (1, 1) if obj % 10 else ((7, 0), (8, 0), (3, 0))[obj // 10 % 3]
        pid, next_id = next_id, next_id + 1
        for f in range(start, end + 1):
            bx, by = x + vx * (f - start), y + vy * (f - start)
            gt.append(f"{f},{obj + 1},{bx:.1f},{by:.1f},{w:.1f},{2.5 * w:.1f},{flag},{cls},"
                      f"{rng.uniform(0.05, 1):.2f}")
            r = rng.uniform()
            if r < 0.08 or (cls != 1 and r < 0.5):
                continue
            if r < 0.085:
                pid, next_id = next_id, next_id + 1
            jx, jy = rng.normal(0, 4, 2)
            pred.append(f"{f},{pid},{bx + jx:.2f},{by + jy:.2f},{w:.2f},{2.5 * w:.2f},0.9,-1,-1,-1")
    for _ in range(frames // 2):
        pred.append(f"{int(rng.integers(1, frames + 1))},{next_id},{rng.uniform(0, 1800):.1f},"
                    f"{rng.uniform(0, 900):.1f},40,100,0.3,-1,-1,-1")
        next_id += 1
    return gt, pred


def write_set(root: Path, objects: int, seed: int) -> int:
    """Ground truth under ``root/gt/<seq>`` and predictions under ``root/trackers/t/data``;
    returns the number of ground-truth rows."""
    rng = np.random.default_rng(seed)
    rows = 0
    for seq, length in LENGTHS.items():
        gt, pred = _sequence(rng, length, objects)
        (root / "gt" / seq / "gt").mkdir(parents=True)
        (root / "gt" / seq / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
        (root / "gt" / seq / "seqinfo.ini").write_text(
            f"[Sequence]\nname={seq}\nseqLength={length}\n")
        (root / "trackers" / "t" / "data").mkdir(parents=True, exist_ok=True)
        (root / "trackers" / "t" / "data" / f"{seq}.txt").write_text("\n".join(pred) + "\n")
        rows += len(gt)
    return rows


def run_detseg(root: Path) -> dict:
    from detseg.eval.mot import evaluate_mot
    from detseg.eval.mot.tables import metrics_json

    return metrics_json(evaluate_mot(root / "gt", root / "trackers" / "t" / "data"))["combined"]


def run_trackeval(root: Path) -> dict:
    import trackeval

    evaluator = trackeval.Evaluator({
        "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
        "TIME_PROGRESS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
        "PLOT_CURVES": False, "LOG_ON_ERROR": None})
    dataset = trackeval.datasets.MotChallenge2DBox({
        "GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"),
        "SKIP_SPLIT_FOL": True, "SEQ_INFO": dict.fromkeys(LENGTHS), "PRINT_CONFIG": False})
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
               trackeval.metrics.Identity({"PRINT_CONFIG": False})]
    with contextlib.redirect_stdout(io.StringIO()):
        results, _ = evaluator.evaluate([dataset], metrics)
    combined = results["MotChallenge2DBox"]["t"]["COMBINED_SEQ"]["pedestrian"]
    out = {k: float(np.mean(combined["HOTA"][k])) for k in ("HOTA", "DetA", "AssA", "LocA")}
    out.update({k: float(combined["CLEAR"][k]) for k in ("MOTA", "MOTP", "IDSW", "Frag", "MT",
                                                         "ML")})
    out.update(FP=float(combined["CLEAR"]["CLR_FP"]), FN=float(combined["CLEAR"]["CLR_FN"]),
               IDF1=float(combined["Identity"]["IDF1"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=30, help="pedestrians per frame")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = write_set(root, args.objects, args.seed)
        print(f"{len(LENGTHS)} sequences, {sum(LENGTHS.values())} frames, {rows} ground-truth "
              f"rows")
        start = time.perf_counter()
        ours = run_detseg(root)
        mine = time.perf_counter() - start
        start = time.perf_counter()
        reference = run_trackeval(root)
        theirs = time.perf_counter() - start
    worst = max(abs(ours[k] - v) for k, v in reference.items())
    print(f"detseg {mine:.2f} s, TrackEval {theirs:.2f} s ({theirs / mine:.1f}x); HOTA "
          f"{ours['HOTA']:.4f} MOTA {ours['MOTA']:.4f} IDF1 {ours['IDF1']:.4f}; largest "
          f"|difference| {worst:.2e}")


if __name__ == "__main__":
    main()
