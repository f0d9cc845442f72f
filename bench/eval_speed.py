"""Time ``detseg eval --predictions`` against pycocotools, whole processes, in one run.

    python bench/eval_speed.py                 # 2000 images x 100 detections, bbox and segm
    python bench/eval_speed.py --plots         # detseg also writes its PR-curve PNGs
    python bench/eval_speed.py --in-process    # the evaluators alone, + faster-coco-eval

A COCO-scale synthetic set is generated (80 classes, ~7 polygon ground truths per image with
~1% crowd regions, 100 detections per image jittered from the ground truth plus background
boxes, masks as compressed RLE) and written as JSON files.

Default (whole process): each side is a fresh Python process timed from start to exit, as a
user runs it: ``python -m detseg eval --ann gt.json --predictions res.json --iou-type T
--no-plots --out DIR`` against a ``python -c`` doing pycocotools' ``COCO(gt.json)``,
``loadRes(res.json)``, ``evaluate()``, ``accumulate()``, ``summarize()``. Both read and parse
the JSON files themselves. Python's bytecode cache is on for both (kept in a temporary
folder and filled by one import before timing, as an installed package has its .pyc files;
``--no-bytecode-cache`` compiles at every start, as PYTHONDONTWRITEBYTECODE=1 does).
``--repeat N`` runs each N times, alternating, and keeps each side's fastest. Printed: wall
seconds, CPU seconds (user + system; what a shared machine's load changes least), peak
resident memory (the child's ``ru_maxrss`` from ``wait4``), AP, the speed-ups, and the
largest |difference| of the 12 summary numbers.

``--in-process``: the JSON files are parsed first (not timed), then loadRes + evaluate +
accumulate + summarize are timed inside one process per tool (detseg: evaluator construction,
which rasterizes the ground-truth polygons, + evaluate).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOOLS = ("detseg", "pycocotools", "faster-coco-eval")


def _ellipse_polygon(rng: np.random.Generator, boxes: np.ndarray, n_vertices: int = 12
                     ) -> np.ndarray:
    """``[N, 2 * n_vertices]`` jittered ellipses inscribed in xywh ``boxes``."""
    ang = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    rad = rng.uniform(0.8, 1.0, (len(boxes), n_vertices))
    cx = boxes[:, 0:1] + boxes[:, 2:3] / 2
    cy = boxes[:, 1:2] + boxes[:, 3:4] / 2
    xs = cx + boxes[:, 2:3] / 2 * rad * np.cos(ang)
    ys = cy + boxes[:, 3:4] / 2 * rad * np.sin(ang)
    return np.round(np.stack([xs, ys], axis=2).reshape(len(boxes), 2 * n_vertices), 2)


def generate(n_images: int, out: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write ``gt.json``, ``bbox.json`` and ``segm.json`` under ``out``."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    cat_ids = np.sort(rng.choice(np.arange(1, 91), 80, replace=False))
    images, anns, bbox_res, segm_res = [], [], [], []
    ann_id = 1
    for img_id in range(1, n_images + 1):
        h, w = int(rng.integers(320, 641)), int(rng.integers(320, 641))
        images.append({"id": img_id, "height": h, "width": w, "file_name": f"{img_id:012d}.jpg"})
        img_cats = rng.choice(cat_ids, int(rng.integers(1, 5)), replace=False)
        n_gt = int(rng.poisson(7))
        side = np.exp(rng.uniform(np.log(6), np.log(min(h, w) * 0.9), (n_gt, 2)))
        xy = rng.uniform(0, 1, (n_gt, 2)) * (np.array([w, h]) - side)
        gt_boxes = np.round(np.concatenate([xy, side], 1), 2)
        gt_cats = rng.choice(img_cats, n_gt)
        polys = _ellipse_polygon(rng, gt_boxes).tolist()
        rles = mask_utils.frPyObjects(polys, h, w) if n_gt else []
        areas = mask_utils.area(rles) if n_gt else []
        crowd = rng.random(n_gt) < 0.01
        for j in range(n_gt):
            if crowd[j]:
                m = mask_utils.decode(rles[j]).flatten(order="F")
                bounds = np.r_[0, np.flatnonzero(np.diff(m)) + 1, len(m)]
                counts = ([0] if m[0] else []) + np.diff(bounds).tolist()
                seg = {"size": [h, w], "counts": counts}
            else:
                seg = [polys[j]]
            anns.append({"id": ann_id, "image_id": img_id, "category_id": int(gt_cats[j]),
                         "bbox": gt_boxes[j].tolist(), "area": float(areas[j]),
                         "iscrowd": int(crowd[j]), "segmentation": seg})
            ann_id += 1
        # ~5 detections around each object, the rest background boxes; 100 per image.
        n_near = min(100, 5 * n_gt)
        src = rng.integers(0, max(n_gt, 1), n_near)
        near = gt_boxes[src] if n_gt else np.zeros((0, 4))
        noise = rng.normal(0, 0.12, (n_near, 4)) * np.concatenate([near[:, 2:], near[:, 2:]], 1)
        near = near + noise
        near[:, 2:] = np.maximum(near[:, 2:], 1.0)
        near_cats = np.where(rng.random(n_near) < 0.85, gt_cats[src] if n_gt else 0,
                             rng.choice(img_cats, n_near))
        n_bg = 100 - n_near
        side = np.exp(rng.uniform(np.log(4), np.log(min(h, w) * 0.8), (n_bg, 2)))
        bg = np.concatenate([rng.uniform(0, 1, (n_bg, 2)) * (np.array([w, h]) - side), side], 1)
        bg_cats = np.where(rng.random(n_bg) < 0.5, rng.choice(img_cats, n_bg),
                           rng.choice(cat_ids, n_bg))
        boxes = np.round(np.concatenate([near, bg]), 2)
        boxes[:, 0] = np.clip(boxes[:, 0], 0, w - 1)
        boxes[:, 1] = np.clip(boxes[:, 1], 0, h - 1)
        cats = np.concatenate([near_cats, bg_cats]).astype(int)
        scores = np.round(np.concatenate([rng.beta(4, 2, n_near), rng.beta(1.2, 4, n_bg)]), 3)
        det_rles = mask_utils.frPyObjects(_ellipse_polygon(rng, boxes).tolist(), h, w)
        for j in range(100):
            common = {"image_id": img_id, "category_id": int(cats[j]), "score": float(scores[j])}
            bbox_res.append({**common, "bbox": boxes[j].tolist()})
            rle = det_rles[j]
            segm_res.append({**common, "segmentation": {"size": rle["size"],
                                                        "counts": rle["counts"].decode()}})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": int(c), "name": f"class{int(c)}"} for c in cat_ids]}
    paths = (out / "gt.json", out / "bbox.json", out / "segm.json")
    for path, data in zip(paths, (gt, bbox_res, segm_res), strict=True):
        path.write_text(json.dumps(data))
    return paths


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    ``/proc/self/status`` VmHWM is per address space; ``ru_maxrss`` would also count the parent's
    peak, which a forked child inherits across exec on Linux.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(tool: str, iou_type: str, gt_path: str, res_path: str) -> dict:
    """Run one evaluator in this process; returns seconds, stats and peak RSS."""
    with open(gt_path) as f:
        gt = json.load(f)
    t0 = time.perf_counter()
    with open(res_path) as f:
        results = json.load(f)
    parse_s = time.perf_counter() - t0
    sink = io.StringIO()
    if tool == "detseg":
        from detseg.eval.coco_map import STAT_KEYS, COCOEvaluator

        t0 = time.perf_counter()
        metrics = COCOEvaluator(gt, iou_type).evaluate(results)
        seconds = time.perf_counter() - t0
        stats = [metrics.stats[k] for k in STAT_KEYS]
    else:
        if tool == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval as Eval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as Eval
        with contextlib.redirect_stdout(sink):
            coco = COCO()
            coco.dataset = gt
            coco.createIndex()
            t0 = time.perf_counter()
            dt = coco.loadRes(results)
            ev = Eval(coco, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            seconds = time.perf_counter() - t0
        stats = [float(v) for v in ev.stats[:12]]
    peak_mb = _peak_rss_mb()
    return {"seconds": seconds, "parse_s": parse_s, "stats": stats, "peak_mb": peak_mb}


def _run_worker(tool: str, iou_type: str, gt: Path, res: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", tool, iou_type, str(gt), str(res)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} {iou_type} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env(pycache: Path | None = None) -> dict[str, str]:
    """The children's environment: this checkout importable; with ``pycache``, Python's
    bytecode cache on and kept there (as an installed package has its .pyc files)."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


WARM_UP = ("import detseg.cli.main, detseg.eval.coco_map, detseg.eval.metrics_files, "
           "detseg.runs, pycocotools.coco, pycocotools.cocoeval")


PYCOCOTOOLS = """
import contextlib, io, json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    ev = COCOeval(gt, gt.loadRes(sys.argv[2]), sys.argv[3])
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
print(json.dumps([float(v) for v in ev.stats[:12]]))
"""


def _timed_process(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall seconds from start to exit, CPU seconds (user + system), peak RSS in MiB and
    stdout of one child process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{err.read()[-2000:]}")
        cpu = usage.ru_utime + usage.ru_stime
        return seconds, cpu, usage.ru_maxrss / 1024, out.read()


def _process_run(tool: str, iou_type: str, gt: Path, res: Path, out: Path,
                 plots: bool, env: dict[str, str]) -> dict:
    if tool == "detseg":
        cmd = [sys.executable, "-m", "detseg", "eval", "--ann", str(gt), "--predictions",
               str(res), "--iou-type", iou_type, "--plots" if plots else "--no-plots",
               "--json", "--out", str(out)]
        seconds, cpu, peak, stdout = _timed_process(cmd, env)
        stats = list(json.loads(stdout)[iou_type].values())
    else:
        seconds, cpu, peak, stdout = _timed_process(
            [sys.executable, "-c", PYCOCOTOOLS, str(gt), str(res), iou_type], env)
        stats = json.loads(stdout.strip().splitlines()[-1])
    return {"seconds": seconds, "cpu_s": cpu, "peak_mb": peak, "stats": stats}


def _whole_process(paths: tuple[Path, Path, Path], iou_types: list[str], n_images: int,
                   repeat: int, plots: bool, tmp: Path, bytecode_cache: bool) -> None:
    gt, bbox_res, segm_res = paths
    env = _env(tmp / "pycache" if bytecode_cache else None)
    subprocess.run([sys.executable, "-c", WARM_UP], check=True, env=env)
    print(f"whole process, fastest of {repeat}: `python -m detseg eval --predictions` "
          f"({'with' if plots else 'no'} plots) vs a python process running pycocotools; "
          f"bytecode cache {'on' if bytecode_cache else 'off'}")
    for iou_type in iou_types:
        res = bbox_res if iou_type == "bbox" else segm_res
        runs: dict[str, dict] = {}
        for i in range(repeat):
            for tool in ("detseg", "pycocotools"):
                r = _process_run(tool, iou_type, gt, res, tmp / f"{tool}-{iou_type}-{i}", plots,
                                 env)
                if tool not in runs or r["seconds"] < runs[tool]["seconds"]:
                    runs[tool] = r
        d, p = runs["detseg"], runs["pycocotools"]
        diff = max(abs(a - b) for a, b in zip(d["stats"], p["stats"], strict=True))
        print(f"\n[{iou_type}] {n_images} images x 100 detections")
        print(f"{'tool':<14}{'seconds':>9}{'CPU s':>8}{'peak MB':>9}{'AP':>8}")
        for tool, r in runs.items():
            print(f"{tool:<14}{r['seconds']:>9.2f}{r['cpu_s']:>8.2f}{r['peak_mb']:>9.0f}"
                  f"{r['stats'][0]:>8.4f}")
        print(f"speed-up {p['seconds'] / d['seconds']:.1f}x (CPU time "
              f"{p['cpu_s'] / d['cpu_s']:.1f}x), peak memory {p['peak_mb'] / d['peak_mb']:.1f}x "
              f"less, max|diff| of the 12 numbers {diff:.2e}")


def _in_process(paths: tuple[Path, Path, Path], iou_types: list[str], n_images: int,
                tools: list[str]) -> None:
    gt, bbox_res, segm_res = paths
    for iou_type in iou_types:
        res = bbox_res if iou_type == "bbox" else segm_res
        runs = {tool: _run_worker(tool, iou_type, gt, res) for tool in tools}
        ref = runs.get("pycocotools")
        parse = np.mean([r["parse_s"] for r in runs.values()])
        print(f"\n[{iou_type}] {n_images} images; parsing the results JSON took {parse:.2f}s "
              f"(not in the times below, the same for every tool)")
        print(f"{'tool':<18}{'seconds':>9}{'peak MB':>9}{'AP':>8}  speed-up vs "
              f"pycocotools / faster-coco-eval (with JSON parsing)  max|diff| vs pycocotools")
        for tool, r in runs.items():
            ratios = []
            for other in ("pycocotools", "faster-coco-eval"):
                if other in runs and other != tool:
                    o = runs[other]
                    ratios.append(f"{o['seconds'] / r['seconds']:.1f}x "
                                  f"({(o['seconds'] + parse) / (r['seconds'] + parse):.1f}x)")
                else:
                    ratios.append("-")
            diff = (max(abs(a - b) for a, b in zip(r["stats"], ref["stats"], strict=True))
                    if ref and tool != "pycocotools" else float("nan"))
            print(f"{tool:<18}{r['seconds']:>9.2f}{r['peak_mb']:>9.0f}{r['stats'][0]:>8.4f}  "
                  f"{' / '.join(ratios):<50}{diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="number of images (2000)")
    parser.add_argument("--iou-types", default="bbox,segm")
    parser.add_argument("--repeat", type=int, default=1,
                        help="whole-process runs per side, alternating; the fastest is kept")
    parser.add_argument("--plots", action="store_true",
                        help="detseg also writes its PR curves (imports matplotlib)")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="whole process: compile every module at every start (what "
                             "PYTHONDONTWRITEBYTECODE=1 does) instead of caching it once")
    parser.add_argument("--in-process", action="store_true",
                        help="time the evaluators inside one process each, JSON parsed first")
    parser.add_argument("--tools", default=",".join(TOOLS), help="with --in-process")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(*args.worker)))
        return
    if args.generate:
        generate(int(args.generate[0]), Path(args.generate[1]))
        return
    iou_types = args.iou_types.split(",")
    with tempfile.TemporaryDirectory(prefix="detseg-eval-bench-") as tmp:
        # In a child process: a child's ru_maxrss starts from its parent's peak, so the
        # parent stays small for the whole-process peaks to be the children's own.
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate", str(args.images), tmp],
                       check=True, env=_env())
        paths = (Path(tmp) / "gt.json", Path(tmp) / "bbox.json", Path(tmp) / "segm.json")
        print(f"generated {args.images} images, {100 * args.images} detections per type in "
              f"{time.perf_counter() - t0:.1f}s")
        if args.in_process:
            _in_process(paths, iou_types, args.images, args.tools.split(","))
        else:
            _whole_process(paths, iou_types, args.images, max(1, args.repeat), args.plots,
                           Path(tmp), not args.no_bytecode_cache)


if __name__ == "__main__":
    main()
