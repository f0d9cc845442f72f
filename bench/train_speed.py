"""``detseg train`` against torchvision's references/detection/train.py, side by side.

    python bench/train_speed.py --references ~/vision            # a torchvision checkout
    python bench/train_speed.py --references DIR --train 64 --val 32 --batch-size 4

``--references`` is a torchvision source tree (or its ``references/detection`` folder itself,
or a copy of it): its ``*.py`` files are copied into a temporary folder at run time and run
from there; nothing of theirs is kept. torchvision's repository is large: the fork
``chanwutk/vision_references`` carries upstream's references at commit acccf86
(``git archive acccf864 references/detection``; later commits of the fork change train.py).

Both sides train the same model, torchvision's ``fasterrcnn_mobilenet_v3_large_320_fpn`` with
random initial weights (detseg: the preset with ``--weights none``; the reference: ``--model``
with no ``--weights``, its class count set to the dataset's), on the same files: a ``detseg
dataset shapes`` set laid out as COCO 2017 (``train2017/``, ``val2017/``,
``annotations/instances_{train,val}2017.json``), for one epoch at the same batch size, learning
rate, thread count, on the CPU (``--device`` to change), without data-loading workers and with
horizontal flips as the only augmentation. Each side runs in its own process:

- reference: its ``main()`` with ``train_one_epoch`` and ``evaluate`` wrapped in timers
  (``evaluate`` runs pycocotools' COCOeval; it sets torch to one thread while it runs);
- detseg: ``Trainer(TrainConfig(...)).fit()``, what ``detseg train`` runs; training is timed
  by a ``TrainCallback`` (epoch start to validation start), validation by wrapping the
  trainer's ``Validation`` (metrics with detseg's evaluator, and the losses on the split with
  ``--val-loss``; not the checkpoints saved after it); once as ``detseg train`` runs by
  default, once with ``--val-loss``.

Printed per side: training images/s, validation seconds and images/s, peak resident memory
of the process (VmHWM) and the bbox AP the validation reports (a sanity check after one
epoch from scratch, not a comparison of accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
MARK = "TRAIN-SPEED-RESULT "


def _reference_worker(opts: dict[str, Any]) -> dict[str, Any]:
    """Run the reference's ``main()`` in this process with its epoch and evaluation timed."""
    import torch

    from detseg.profile import peak_rss_mb

    sys.path.insert(0, opts["reference_dir"])
    os.chdir(opts["reference_dir"])
    import engine  # the reference's own modules, from the temporary copy
    import train

    torch.set_num_threads(opts["threads"])
    spent: dict[str, float] = {"train_s": 0.0, "val_s": 0.0}
    found: dict[str, Any] = {}

    def timed(key: str, fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[key] += time.perf_counter() - t0
            return out
        return run

    def evaluate(model: Any, loader: Any, device: Any) -> Any:
        found["n_val"] = len(loader.dataset)
        evaluator = engine.evaluate(model, loader, device=device)
        found["ap"] = float(evaluator.coco_eval["bbox"].stats[0])
        return evaluator

    def train_one_epoch(model: Any, optimizer: Any, loader: Any, *args: Any, **kwargs: Any
                        ) -> Any:
        found["n_train"] = len(loader) * loader.batch_sampler.batch_size  # drop_last
        return engine.train_one_epoch(model, optimizer, loader, *args, **kwargs)

    get_dataset = train.get_dataset
    train.get_dataset = lambda is_train, args: (get_dataset(is_train, args)[0],
                                                opts["num_classes"])
    train.train_one_epoch = timed("train_s", train_one_epoch)
    train.evaluate = timed("val_s", evaluate)
    args = train.get_args_parser().parse_args([
        "--data-path", opts["data"], "--dataset", "coco", "--model", MODEL,
        "--device", opts["device"], "--batch-size", str(opts["batch_size"]),
        "--epochs", str(opts["epochs"]), "--workers", "0", "--lr", str(opts["lr"]),
        "--output-dir", opts["out"], "--print-freq", "1000",
        "--data-augmentation", "hflip", "--aspect-ratio-group-factor", "-1",
    ])
    train.main(args)
    return {**spent, **found, "peak_mb": peak_rss_mb()}


def _detseg_worker(opts: dict[str, Any], val_loss: bool) -> dict[str, Any]:
    """``detseg train`` (its Trainer) in this process, timed by a callback."""
    from detseg.engine.trainer import TrainCallback, TrainConfig, Trainer
    from detseg.profile import peak_rss_mb

    marks: dict[str, float] = {"train_s": 0.0, "val_s": 0.0}

    class Clock(TrainCallback):
        def on_epoch_start(self, epoch: int, num_batches: int, start_batch: int) -> None:
            marks["start"] = time.perf_counter()

        def on_validation_start(self, epoch: int) -> None:
            marks["train_s"] += time.perf_counter() - marks["start"]

        def on_epoch_end(self, epoch: int, row: dict[str, float]) -> None:
            marks["ap"] = row.get("metrics/bbox_AP", float("nan"))

    def timed(fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            marks["val_s"] += time.perf_counter() - t0
            return out
        return run

    config = TrainConfig(model=MODEL, weights="none", dataset="coco", data_root=opts["data"],
                         epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
                         augment="none", device=opts["device"], workers=0,
                         threads=opts["threads"], plots=False, val_loss=val_loss)
    trainer = Trainer(config, opts["out"], [Clock()], handle_sigint=False)
    trainer.train_set.transforms.transforms.insert(0, _hflip())
    validation = trainer.validation  # timed alone: the epoch's checkpoints are saved after it
    validation.loss_row = timed(validation.loss_row)  # type: ignore[method-assign]
    validation.metric_row = timed(validation.metric_row)  # type: ignore[method-assign]
    trainer.fit()
    return {"train_s": marks["train_s"], "val_s": marks["val_s"], "ap": marks["ap"],
            "n_train": len(trainer.train_set), "n_val": len(trainer.val_set),
            "peak_mb": peak_rss_mb()}


def _hflip() -> Any:
    """The reference's only augmentation (a horizontal flip, p = 0.5), as a v2 transform."""
    from torchvision.transforms import v2

    return v2.RandomHorizontalFlip(0.5)


def _coco_tree(shapes: Path, data: Path) -> None:
    """``detseg dataset shapes`` output laid out as COCO 2017 (links, nothing copied)."""
    (data / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (data / f"{split}2017").symlink_to(shapes / "images" / split)
        (data / "annotations" / f"instances_{split}2017.json").symlink_to(
            shapes / "annotations" / f"instances_{split}.json")


def _copy_references(source: Path, dest: Path) -> None:
    """The ``*.py`` files of references/detection under ``source`` into ``dest``."""
    folder = source / "references" / "detection" if (source / "references").is_dir() \
        else source
    files = sorted(folder.glob("*.py"))
    if not (folder / "train.py").is_file() or not (folder / "engine.py").is_file():
        sys.exit(f"error: {folder}: no references/detection train.py and engine.py there")
    dest.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, dest / path.name)


def _run(kind: str, opts: dict[str, Any]) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": str(opts["threads"])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, json.dumps(opts)],
                          capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"error: {kind} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix(MARK))
    result["process_s"] = time.perf_counter() - t0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--references", type=Path,
                        help="torchvision source tree, or its references/detection folder")
    parser.add_argument("--train", type=int, default=32, help="training images (32)")
    parser.add_argument("--val", type=int, default=16, help="validation images (16)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (256)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of both sides (1: the reference's evaluate() "
                             "forces 1 anyway, and on a shared machine more threads spin)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, opts = args.worker[0], json.loads(args.worker[1])
        result = (_reference_worker(opts) if kind == "reference" else
                  _detseg_worker(opts, val_loss=kind == "detseg-val-loss"))
        print(MARK + json.dumps(result), flush=True)
        return
    if args.references is None:
        parser.error("--references DIR is required (a torchvision checkout or a copy of its "
                     "references/detection)")
    with tempfile.TemporaryDirectory(prefix="detseg-train-bench-") as tmp_name:
        tmp = Path(tmp_name)
        _copy_references(args.references.expanduser().resolve(), tmp / "reference")
        subprocess.run([sys.executable, "-m", "detseg", "dataset", "shapes", "--out",
                        str(tmp / "shapes"), "--train", str(args.train), "--val",
                        str(args.val), "--size", str(args.size), "--seed", "0"],
                       check=True, capture_output=True)
        _coco_tree(tmp / "shapes", tmp / "coco")
        base = {"data": str(tmp / "coco"), "batch_size": args.batch_size,
                "epochs": args.epochs, "lr": args.lr, "threads": args.threads,
                "device": args.device, "num_classes": 5,
                "reference_dir": str(tmp / "reference")}
        print(f"{MODEL} from random weights, {args.train} train / {args.val} val shapes "
              f"images of {args.size} px, batch {args.batch_size}, {args.epochs} epoch(s), "
              f"{args.threads} threads, {args.device}")
        runs = {}
        for kind in ("reference", "detseg", "detseg-val-loss"):
            runs[kind] = _run(kind, {**base, "out": str(tmp / f"out-{kind}")})
        print(f"\n{'side':<28}{'train img/s':>12}{'val s':>8}{'val img/s':>10}"
              f"{'peak MB':>9}{'bbox AP':>9}{'process s':>11}")
        names = {"reference": "torchvision reference", "detseg": "detseg train",
                 "detseg-val-loss": "detseg train --val-loss"}
        for kind, r in runs.items():
            images = r["n_train"] * args.epochs
            print(f"{names[kind]:<28}{images / r['train_s']:>12.2f}{r['val_s']:>8.1f}"
                  f"{r['n_val'] * args.epochs / r['val_s']:>10.2f}{r['peak_mb']:>9.0f}"
                  f"{r['ap']:>9.4f}{r['process_s']:>11.1f}")
        ref = runs["reference"]
        for kind in ("detseg", "detseg-val-loss"):
            r = runs[kind]
            print(f"{names[kind]}: training {ref['train_s'] / r['train_s']:.2f}x the "
                  f"reference's speed, validation {r['val_s'] / ref['val_s']:.2f}x its time")


if __name__ == "__main__":
    main()
