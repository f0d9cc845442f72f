"""Sliced inference: detseg's ``--slice`` against the ``sahi`` package on the same model and
pictures, side by side: recall at IoU 0.5, duplicate pairs, detections and time.

Pictures: 1280 x 1280, each made of 25 ``detseg dataset shapes`` images (256 px, 5 x 5, one
seed per picture). ``seamless`` pictures paste the shapes that lie whole inside their image,
each at its image's place, onto one smooth background (a large photo of small objects);
``mosaic`` pictures are the 25 images side by side as they are (their backgrounds meet in
seams that a tile shows as large rectangles, and shapes cut by their image's border count).
Ground truth: the COCO boxes, shifted to their image's place.

Model: ``--weights`` (shipped ``shapes-faster_rcnn`` and ``shapes-ssd`` by default). sahi runs
the same ``Predictor`` (whole tiles, same conf) through a ``DetectionModel`` subclass written
here and its ``get_sliced_prediction``; detseg runs ``Predictor(slicing=...)``. Both use 256 px
tiles with detseg's default overlap (0.3), matched by IoS > 0.5. A duplicate pair: two kept
boxes of one class with IoU > 0.5 or one (90 %) inside the other. Times: whole seconds per
picture (all passes and the merge), best of ``--repeats`` (the configurations run in turn on
each picture, each repeat starting with another), one torch thread by default. Both sides keep
the best ``--max-det`` detections (1000).

    python bench/slice_speed.py                                  # 3 seamless + 1 mosaic
    python bench/slice_speed.py --weights shapes-ssd --seeds 7 8 --kinds seamless
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

SIDE, CELL = 1280, 256


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", nargs="+", default=["shapes-faster_rcnn", "shapes-ssd"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9])
    parser.add_argument("--kinds", nargs="+", default=["seamless", "mosaic"],
                        choices=["seamless", "mosaic"])
    parser.add_argument("--mosaic-seeds", type=int, default=1,
                        help="mosaic pictures are made for the first N seeds only")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=None,
                        help="tile overlap (default: detseg's, 0.3)")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--max-det", type=int, default=1000,
                        help="detections kept per picture, best first (both sides)")
    parser.add_argument("--batch", type=int, default=4, help="tiles per forward pass (both)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.overlap is None:
        from detseg.engine.slicing import DEFAULT_OVERLAP

        args.overlap = DEFAULT_OVERLAP
    return args


# ---------------------------------------------------------------------- pictures


def make_picture(root: Path, seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A 1280 x 1280 RGB picture of 25 shapes images and its ground truth (K x 5: xyxy pixels
    and the COCO category id)."""
    from detseg.data.shapes import generate_shapes

    data = generate_shapes(root / f"shapes-{seed}", train=0, val=25, seed=seed, workers=1)
    coco = json.loads((data / "annotations" / "instances_val.json").read_text())
    rng = np.random.default_rng(seed)
    background = cv2.resize(rng.uniform(40, 215, (3, 3, 3)).astype(np.float32), (SIDE, SIDE))
    canvas = np.clip(background + rng.normal(0, 4, background.shape), 0, 255).astype(np.uint8)
    truth = []
    for image in coco["images"]:
        row, col = divmod(image["id"] - 1, 5)
        rgb = cv2.cvtColor(cv2.imread(str(data / "images" / "val" / image["file_name"])),
                           cv2.COLOR_BGR2RGB)
        place = np.s_[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL]
        if kind == "mosaic":
            canvas[place] = rgb
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = ann["bbox"]
            whole = x > 0.5 and y > 0.5 and x + w < CELL - 0.5 and y + h < CELL - 0.5
            if kind == "seamless":
                if not whole:
                    continue
                mask = np.zeros((CELL, CELL), np.uint8)
                cv2.fillPoly(mask, [np.round(np.reshape(p, (-1, 2))).astype(np.int32)
                                    for p in ann["segmentation"]], 1)
                canvas[place][mask > 0] = rgb[mask > 0]
            truth.append([x + col * CELL, y + row * CELL, x + w + col * CELL,
                          y + h + row * CELL, ann["category_id"]])
    return canvas, np.array(truth, np.float32)


# ---------------------------------------------------------------------- scoring


def scores(truth: np.ndarray, boxes: np.ndarray, cats: np.ndarray) -> dict[str, Any]:
    """Recall at IoU 0.5 (one detection per object, greedy by IoU), duplicate pairs, count."""
    from detseg.engine.slice_merge import box_ios, box_iou

    iou = box_iou(truth[:, :4], boxes) * (truth[:, 4:5] == cats[None, :])
    found, used = 0, set()
    for g in np.argsort(-iou.max(1, initial=0)):
        free = [j for j in np.argsort(-iou[g]) if iou[g, j] >= 0.5 and j not in used]
        if free:
            found += 1
            used.add(free[0])
    same = (cats[:, None] == cats[None, :]) & ((box_iou(boxes, boxes) > 0.5)
                                               | (box_ios(boxes, boxes) > 0.9))
    return {"recall": found / max(len(truth), 1), "duplicates": int(np.triu(same, 1).sum()),
            "detections": len(boxes)}


# ---------------------------------------------------------------------- the two sides


def detseg_side(weights: str, options: Any, args: argparse.Namespace
                ) -> Any:
    """A function running detseg (``options``: a ``SliceOptions`` or ``None`` for whole
    pictures) on a picture: ``(boxes, category ids)``."""
    from detseg.engine.predictor import Predictor

    predictor = Predictor(weights=weights, device="cpu", conf=args.conf, batch_size=args.batch,
                          max_det=args.max_det, slicing=options)

    def run(picture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = predictor.predict_arrays([picture])[0]
        cats = np.array([predictor.spec.category_id(int(k)) for k in result.labels])
        return result.boxes, cats

    return run


def sahi_side(weights: str, postprocess: str, standard: bool, args: argparse.Namespace) -> Any:
    """The same: sahi's ``get_sliced_prediction`` over the same (unsliced) Predictor."""
    from sahi.models.base import DetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.prediction import ObjectPrediction

    from detseg.engine.predictor import Predictor

    class DetsegModel(DetectionModel):
        """sahi's model interface around a detseg ``Predictor`` (tiles run one at a time, or
        ``batch`` at a time through ``perform_batch_inference``)."""

        def load_model(self) -> None:
            self.set_model(Predictor(weights=weights, device="cpu", conf=args.conf,
                                     batch_size=args.batch))

        def set_model(self, model: Any, **kwargs: Any) -> None:
            self.model = model
            self.category_mapping = {str(i): n for i, n in enumerate(model.names)}

        def perform_inference(self, image: np.ndarray) -> None:
            self._original_predictions = self.model.predict_arrays([image])

        def perform_batch_inference(self, images: list[np.ndarray]) -> None:
            self._original_predictions = self.model.predict_arrays(images)

        def _create_object_prediction_list_from_original_predictions(
                self, shift_amount_list: Any = None, full_shape_list: Any = None) -> None:
            n = len(self._original_predictions)
            shifts = shift_amount_list or [[0, 0]] * n
            shapes = full_shape_list or [None] * n
            # a single image's pass (the standard prediction) gives one flat pair of each
            shifts = [shifts] if isinstance(shifts[0], int | float) else shifts
            shapes = [shapes] if shapes and isinstance(shapes[0], int | float) else shapes
            self._object_prediction_list_per_image = [
                [ObjectPrediction(bbox=box.tolist(), category_id=int(label),
                                  category_name=self.model.names[int(label)],
                                  score=float(score), shift_amount=list(shift),
                                  full_shape=shape)
                 for box, label, score in zip(r.boxes, r.labels, r.scores, strict=True)
                 if score > self.confidence_threshold]
                for r, shift, shape in zip(self._original_predictions, shifts, shapes,
                                           strict=True)]

    model = DetsegModel(confidence_threshold=args.conf, device="cpu")

    def run(picture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = get_sliced_prediction(
            picture, model, slice_height=args.tile, slice_width=args.tile,
            overlap_height_ratio=args.overlap, overlap_width_ratio=args.overlap,
            perform_standard_pred=standard, postprocess_type=postprocess,
            postprocess_match_metric="IOS", postprocess_match_threshold=0.5, verbose=0,
            batch_size=args.batch)
        found = sorted(result.object_prediction_list, key=lambda p: -p.score.value)
        found = found[: args.max_det]
        boxes = np.array([p.bbox.to_xyxy() for p in found], np.float32).reshape(-1, 4)
        spec = model.model.spec
        return boxes, np.array([spec.category_id(p.category.id) for p in found])

    return run


def configurations(weights: str, args: argparse.Namespace) -> list[tuple[str, Any]]:
    from detseg.engine.slicing import SliceOptions

    def ours(merge: str, full: bool) -> Any:
        return detseg_side(weights, SliceOptions(args.tile, args.overlap, merge, full), args)

    return [
        ("detseg, whole picture", detseg_side(weights, None, args)),
        ("detseg --slice (nms)", ours("nms", False)),
        ("detseg --slice --slice-merge gnmm", ours("gnmm", False)),
        ("detseg --slice --slice-full (nms)", ours("nms", True)),
        ("sahi NMS", sahi_side(weights, "NMS", False, args)),
        ("sahi GREEDYNMM", sahi_side(weights, "GREEDYNMM", False, args)),
        ("sahi GREEDYNMM + standard pred (its defaults)",
         sahi_side(weights, "GREEDYNMM", True, args)),
    ]


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    try:
        import sahi.predict  # noqa: F401  (installed without its dependencies)
    except ImportError as err:
        sys.exit(f"sahi does not import ({err}); `make install` installs the test oracles")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        pictures = [(kind, seed, *make_picture(Path(tmp), seed, kind)) for kind in args.kinds
                    for seed in (args.seeds if kind == "seamless"
                                 else args.seeds[: args.mosaic_seeds])]
        for weights in args.weights:
            runs = configurations(weights, args)
            for _, run in runs:
                run(pictures[0][2][:300, :300])  # warm-up
            for kind, seed, picture, truth in pictures:
                # every configuration in turn, repeated: load on a shared machine hits all alike
                best = {name: float("inf") for name, _ in runs}
                found: dict[str, Any] = {}
                for repeat in range(args.repeats):
                    shift = repeat % len(runs)  # a different configuration goes first
                    for name, run in runs[shift:] + runs[:shift]:
                        began = time.perf_counter()
                        found[name] = run(picture)
                        best[name] = min(best[name], time.perf_counter() - began)
                for name, _ in runs:
                    row = {"weights": weights, "config": name, "picture": f"{kind}-{seed}",
                           "objects": len(truth), "seconds": round(best[name], 2),
                           **scores(truth, *found[name])}
                    rows.append(row)
                    print(f"{weights:20s} {row['picture']:12s} {name:46s} recall "
                          f"{row['recall']:.3f}  duplicates {row['duplicates']:3d}  "
                          f"detections {row['detections']:3d}  {best[name]:6.2f} s", flush=True)
    print("\nmean over the pictures of each kind:")
    keys = sorted(dict.fromkeys((r["weights"], r["picture"].split("-")[0], r["config"])
                                for r in rows), key=lambda k: (k[0], k[1]))
    for weights, kind, name in keys:
        mine = [r for r in rows if (r["weights"], r["picture"].split("-")[0], r["config"])
                == (weights, kind, name)]
        print(f"{weights:20s} {kind:9s} {name:46s} recall "
              f"{np.mean([r['recall'] for r in mine]):.3f}  duplicates "
              f"{sum(r['duplicates'] for r in mine):3d}  "
              f"{np.mean([r['seconds'] for r in mine]):6.2f} s/picture")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
