"""Time ``detseg detect`` against a plain torchvision loop on the same model, weights and inputs.

Images: ``--images`` shapes images. The baseline reads each with cv2, runs the model on it
alone, draws boxes and labels with cv2 and writes the JPEG; ``detseg detect`` does the same job
(plus ``predictions.json``) at batch 1 and at batch ``--batch``. Video: a ``--frames``-frame clip;
the baseline reads, runs, draws and writes frame by frame, ``detseg detect`` decodes and encodes
in threads and batches frames. Both sides build the model from the same checkpoint inside the
timed region. The configurations are run in turn ``--repeats`` times; the best time of each
is kept (the machine may be shared).

Model: ``--weights``, else ``shapes-faster_rcnn`` when the manifest lists it, else a seeded
random tiny ``faster_rcnn`` at the image size. Both sides keep ``--max-det`` boxes above
``--conf`` per image and draw them (a random model scores about 0.22 everywhere).

    python bench/infer_speed.py                 # 64 images, 300 frames, batch 8, CPU
    python bench/infer_speed.py --device cuda --half

``--runtimes``: instead, ``detseg detect`` over the same folder with the PyTorch checkpoint and
with its ONNX export (``detseg.runtime``, ONNX Runtime), for shapes-ssd and shapes-faster_rcnn
(``--runtime-weights``), side by side in one process, ``--threads`` torch threads (ONNX Runtime
follows torch's count), ``--size`` px images; prints ms per image and the ONNX / PyTorch ratio.

    python bench/infer_speed.py --runtimes --threads 1 --size 256 --images 32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

SHIPPED = "shapes-faster_rcnn"

def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=160, help="image and frame side (pixels)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--conf", type=float, default=0.2)
    parser.add_argument("--max-det", type=int, default=10, help="boxes kept (and drawn) per image")
    parser.add_argument("--weights", default=None,
                        help=f"a detseg checkpoint or manifest name (default: {SHIPPED} when "
                             f"the manifest has it, else a random tiny faster_rcnn)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true", help="fp16 autocast on CUDA (both sides)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--runtimes", action="store_true",
                        help="compare the PyTorch checkpoint with its ONNX export instead")
    parser.add_argument("--runtime-weights", default="shapes-ssd,shapes-faster_rcnn",
                        help="checkpoints compared with --runtimes (comma-separated)")
    parser.add_argument("--threads", type=int, default=None, help="torch (and ONNX Runtime) "
                        "threads (default: torch's own)")
    return parser.parse_args()


def _make_inputs(root: Path, images: int, frames: int, size: int) -> tuple[Path, Path]:
    from detseg.data.shapes import generate_shapes

    shapes = generate_shapes(root / "shapes", train=0, val=images, size=size)
    folder = shapes / "images" / "val"
    paths = sorted(folder.glob("*.jpg"))
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (size, size))
    for i in range(frames):
        writer.write(cv2.imread(str(paths[i % len(paths)])))
    writer.release()
    return folder, video


def _checkpoint(root: Path, weights: str | None, size: int) -> str:
    from detseg.weights import load_manifest

    if weights is not None:
        return weights
    if SHIPPED in load_manifest():
        return SHIPPED
    from detseg.data.shapes import SHAPES_CLASSES
    from detseg.models import build_from_spec, make_spec
    from detseg.weights import save_checkpoint

    torch.manual_seed(0)
    spec = make_spec("faster_rcnn", "tiny", class_names=["__background__", *SHAPES_CLASSES],
                     input_size=size)
    return str(save_checkpoint(root / "tiny_faster_rcnn.pt", build_from_spec(spec).state_dict(),
                               spec))


def _warm_up(folder: Path, weights: str, args) -> None:
    """Import everything and run each side once, untimed, so neither pays first-call costs."""
    image = sorted(folder.glob("*.jpg"))[0]
    model = _baseline_model(weights, args)
    _forward(model, cv2.imread(str(image))[..., ::-1].copy(), args.device, args.half)
    with tempfile.TemporaryDirectory(prefix="detseg-bench-warm-") as tmp:
        detseg_detect(image, Path(tmp) / "out", weights, 1, args)


def _baseline_model(weights: str, args):
    from detseg.models import build_model

    model = build_model(weights=weights).eval().to(args.device)
    model.roi_heads.score_thresh = args.conf
    model.roi_heads.detections_per_img = args.max_det
    return model


def _draw(bgr: np.ndarray, out: dict, names: list[str], conf: float) -> np.ndarray:
    keep = out["scores"] >= conf
    for box, label, score in zip(out["boxes"][keep].tolist(), out["labels"][keep].tolist(),
                                 out["scores"][keep].tolist(), strict=True):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(bgr, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.putText(bgr, f"{names[label]} {score:.2f}", (x1, max(y1 - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1, cv2.LINE_AA)
    return bgr


def _forward(model, rgb: np.ndarray, device: str, half: bool) -> dict:
    x = torch.from_numpy(rgb).to(device).permute(2, 0, 1).float().div(255)
    with torch.inference_mode(), torch.autocast("cuda", enabled=half):
        out = model([x])[0]
    return {k: (v.float() if v.is_floating_point() else v).cpu() for k, v in out.items()}


def baseline_images(folder: Path, out: Path, weights: str, args) -> float:
    began = time.perf_counter()
    model = _baseline_model(weights, args)
    names = model.spec.names()
    out.mkdir(parents=True)
    for path in sorted(folder.glob("*.jpg")):
        bgr = cv2.imread(str(path))
        result = _forward(model, np.ascontiguousarray(bgr[..., ::-1]), args.device, args.half)
        cv2.imwrite(str(out / path.name), _draw(bgr, result, names, args.conf))
    return time.perf_counter() - began


def baseline_video(video: Path, out: Path, weights: str, args) -> float:
    began = time.perf_counter()
    model = _baseline_model(weights, args)
    names = model.spec.names()
    out.mkdir(parents=True)
    cap = cv2.VideoCapture(str(video))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(out / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                             cap.get(cv2.CAP_PROP_FPS), size)
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        result = _forward(model, np.ascontiguousarray(bgr[..., ::-1]), args.device, args.half)
        writer.write(_draw(bgr, result, names, args.conf))
    writer.release()
    cap.release()
    return time.perf_counter() - began


def detseg_detect(source: Path, out: Path, weights: str, batch: int, args) -> float:
    from detseg.cli.main import main

    argv = ["detseg", "detect", str(source), "--weights", weights, "--device", args.device,
            "--conf", str(args.conf), "--max-det", str(args.max_det), "-b", str(batch),
            "--out", str(out), "--quiet"]
    if args.half:
        argv.append("--half")
    saved, sys.argv = sys.argv, argv
    began = time.perf_counter()
    try:
        main()
    except SystemExit as done:
        if done.code not in (0, None):
            raise RuntimeError(f"detseg detect exited with {done.code}") from None
    finally:
        sys.argv = saved
    return time.perf_counter() - began


def compare_runtimes(args) -> None:
    """``detseg detect`` over one folder: each checkpoint and its ONNX export, in turn."""
    from detseg.export import export_model
    from detseg.models import build_model

    names = [n.strip() for n in args.runtime_weights.split(",") if n.strip()]
    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="detseg-bench-rt-") as tmp:
        root = Path(tmp)
        from detseg.data.shapes import generate_shapes

        folder = generate_shapes(root / "shapes", train=0, val=args.images,
                                 size=args.size) / "images" / "val"
        files = {}
        for name in names:
            onnx_path = root / f"{name}.onnx"
            export_model(build_model(weights=name), "onnx", onnx_path, imgsz=args.size,
                         dynamic=True)
            files[name] = {"torch": name, "onnxruntime": str(onnx_path)}
        run = 0
        for name in names:  # warm-up: imports and first-call costs, untimed
            for weights in files[name].values():
                run += 1
                detseg_detect(sorted(folder.glob("*.jpg"))[0], root / f"rt{run}", weights, 1,
                              args)
        for _ in range(args.repeats):
            for name in names:
                for runtime, weights in files[name].items():
                    run += 1
                    seconds = detseg_detect(folder, root / f"rt{run}", weights, 1, args)
                    best[(name, runtime)] = min(seconds, best.get((name, runtime), float("inf")))
                    print(f"  {name:<20} {runtime:<12} {seconds:7.2f} s", flush=True)
    print(f"\nbest of {args.repeats} (detect over {args.images} images at {args.size}px, batch 1, "
          f"{args.device}, torch threads {torch.get_num_threads()}):")
    rows = []
    for name in names:
        torch_s, onnx_s = best[(name, "torch")], best[(name, "onnxruntime")]
        rows.append({"weights": name, "torch_ms": round(torch_s / args.images * 1e3, 2),
                     "onnxruntime_ms": round(onnx_s / args.images * 1e3, 2),
                     "ratio": round(onnx_s / torch_s, 3)})
        print(f"  {name:<20} torch {torch_s / args.images * 1e3:7.1f} ms/image   onnxruntime "
              f"{onnx_s / args.images * 1e3:7.1f} ms/image   x{onnx_s / torch_s:.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"device": args.device, "rows": rows}, indent=2))


def main() -> None:
    args = _args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.runtimes:
        compare_runtimes(args)
        return
    with tempfile.TemporaryDirectory(prefix="detseg-bench-") as tmp:
        root = Path(tmp)
        folder, video = _make_inputs(root, args.images, args.frames, args.size)
        weights = _checkpoint(root, args.weights, args.size)
        label = "random tiny faster_rcnn" if weights.endswith("tiny_faster_rcnn.pt") else weights
        _warm_up(folder, weights, args)
        jobs = {
            "images: torchvision loop": lambda o: baseline_images(folder, o, weights, args),
            "images: detseg -b 1": lambda o: detseg_detect(folder, o, weights, 1, args),
            f"images: detseg -b {args.batch}":
                lambda o: detseg_detect(folder, o, weights, args.batch, args),
        }
        if not args.skip_video:
            jobs.update({
                "video: naive loop": lambda o: baseline_video(video, o, weights, args),
                "video: detseg -b 1": lambda o: detseg_detect(video, o, weights, 1, args),
                f"video: detseg -b {args.batch}":
                    lambda o: detseg_detect(video, o, weights, args.batch, args),
            })
        best: dict[str, float] = {}
        run = 0
        for _ in range(args.repeats):
            for name, job in jobs.items():
                run += 1
                seconds = job(root / f"out{run}")
                best[name] = min(seconds, best.get(name, float("inf")))
                print(f"  {name:<28} {seconds:7.2f} s", flush=True)
    device = args.device + (" fp16" if args.half else "")
    print(f"\nbest of {args.repeats} ({device}, torch threads {torch.get_num_threads()}, "
          f"{args.images} images / {args.frames} frames at {args.size}px, weights "
          f"{label}):")
    rows = []
    for kind, count, base in (("images", args.images, "images: torchvision loop"),
                              ("video", args.frames, "video: naive loop")):
        if base not in best:
            continue
        for name in [n for n in best if n.startswith(kind)]:
            ratio = best[name] / best[base]
            rows.append({"run": name, "seconds": round(best[name], 3),
                         "per_item_ms": round(best[name] / count * 1e3, 2),
                         "vs_baseline": round(ratio, 3)})
            print(f"  {name:<28} {best[name]:7.2f} s  {best[name] / count * 1e3:7.1f} ms/item  "
                  f"x{ratio:.3f} of baseline")
    if args.json is not None:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
