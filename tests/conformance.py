"""The conformance kit: what every registered model family must do, through the public CLI.

``run_family_checks(family, tmp_path)`` writes a small dataset by hand in the format its task
reads (YOLO boxes and polygons for detectors, a class-index mask folder for semantic models),
with odd, non-square, mixed image sizes, then runs ``detseg train`` with default flags (one
epoch), ``eval``, ``detect``/``segment``, ``export --check``, ``explain``, ``summary`` and
``benchmark`` on the checkpoint it wrote, and asserts each exits 0 and writes its outputs.
tests/test_conformance.py runs it over the model registry; the adding-a-family guide's test
runs it on the guide's family in a temporary copy of the package.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.models import build_model, model_info
from detseg.tasks import InferenceSettings, task_adapter

# (height, width) of the hand-made images: odd, non-square, mixed.
SIZES = [(45, 67), (80, 52), (61, 61), (37, 90), (72, 49)]
CLASSES = ["box", "disc"]


def _image_and_mask(size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with a light rectangle and a dark disc, and its class-index mask."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    y0, x0 = h // 6, w // 8
    y1, x1 = y0 + h // 3, x0 + w // 3
    image[y0:y1, x0:x1] = (230, 220, 40)
    mask[y0:y1, x0:x1] = 1
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = int(h * 0.68), int(w * 0.66), max(5, min(h, w) // 6)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image[disc] = (20, 40, 200)
    mask[disc] = 2
    return image, mask


def write_yolo(root: Path) -> Path:
    """A YOLO tree (data.yaml, images/{train,val}, labels/{train,val}) with one box line and
    one polygon line per image."""
    for split, sizes in (("train", SIZES), ("val", SIZES[:3])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, size in enumerate(sizes):
            image, mask = _image_and_mask(size, i + (0 if split == "train" else 50))
            Image.fromarray(image).save(root / "images" / split / f"im{i}.png")
            h, w = size
            ys, xs = np.nonzero(mask == 1)
            box = ((xs.min() + xs.max() + 1) / 2 / w, (ys.min() + ys.max() + 1) / 2 / h,
                   (xs.max() + 1 - xs.min()) / w, (ys.max() + 1 - ys.min()) / h)
            ys, xs = np.nonzero(mask == 2)
            cy, cx = ys.mean(), xs.mean()
            ry, rx = (ys.max() + 1 - ys.min()) / 2, (xs.max() + 1 - xs.min()) / 2
            angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
            polygon = [v for a in angles for v in ((cx + rx * np.cos(a)) / w,
                                                   (cy + ry * np.sin(a)) / h)]
            lines = ["0 " + " ".join(f"{v:.5f}" for v in box),
                     "1 " + " ".join(f"{min(max(v, 0.0), 1.0):.5f}" for v in polygon)]
            (root / "labels" / split / f"im{i}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n"
        + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASSES)))
    return root


def write_mask_folder(root: Path) -> Path:
    """images/{train,val} + masks/{train,val} (class indices, ``_mask`` suffix) + classes.txt."""
    for split, sizes in (("train", SIZES), ("val", SIZES[:3])):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i, size in enumerate(sizes):
            image, mask = _image_and_mask(size, i + (0 if split == "train" else 50))
            Image.fromarray(image).save(root / "images" / split / f"im{i}.jpg", quality=95)
            Image.fromarray(mask).save(root / "masks" / split / f"im{i}_mask.png")
    (root / "classes.txt").write_text("background\n" + "\n".join(CLASSES) + "\n")
    return root


def write_coco(root: Path) -> Path:
    """A standard COCO tree: ``train2017/``, ``val2017/`` and ``annotations/instances_*.json``
    with RLE masks and non-contiguous category ids (3: box, 7: disc)."""
    from pycocotools import mask as mask_utils

    ids = {1: 3, 2: 7}
    (root / "annotations").mkdir(parents=True)
    for split, sizes in (("train", SIZES), ("val", SIZES[:3])):
        folder = root / f"{split}2017"
        folder.mkdir()
        images, annotations = [], []
        for i, size in enumerate(sizes):
            image, mask = _image_and_mask(size, i + (0 if split == "train" else 50))
            Image.fromarray(image).save(folder / f"{i:06d}.jpg", quality=95)
            images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "height": size[0],
                           "width": size[1]})
            for value, category in ids.items():
                binary = np.asfortranarray((mask == value).astype(np.uint8))
                rle = mask_utils.encode(binary)
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                    "category_id": category, "bbox": [x, y, w, h],
                                    "area": float(mask_utils.area(rle)), "iscrowd": 0,
                                    "segmentation": {"size": rle["size"],
                                                     "counts": rle["counts"].decode()}})
        categories = [{"id": c, "name": CLASSES[k - 1]} for k, c in ids.items()]
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
    return root


def write_voc(root: Path) -> Path:
    """A Pascal VOC tree (``VOC2012/``): XML boxes of ``cat`` (the rectangle) and ``dog`` (the
    disc), ``SegmentationClass`` (VOC indices 8 and 12) and ``SegmentationObject`` PNGs,
    ``ImageSets/Main`` and ``ImageSets/Segmentation`` split lists."""
    base = root / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject",
                "ImageSets/Main", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    names = {1: ("cat", 8), 2: ("dog", 12)}
    for split, sizes in (("train", SIZES), ("val", SIZES[:3])):
        stems = []
        for i, (h, w) in enumerate(sizes):
            stem = f"{split}_{i}"
            stems.append(stem)
            image, mask = _image_and_mask((h, w), i + (0 if split == "train" else 50))
            Image.fromarray(image).save(base / "JPEGImages" / f"{stem}.jpg", quality=95)
            objects = []
            for value, (name, _) in names.items():
                ys, xs = np.nonzero(mask == value)
                objects.append(
                    f"<object><name>{name}</name><difficult>0</difficult><bndbox>"
                    f"<xmin>{xs.min() + 1}</xmin><ymin>{ys.min() + 1}</ymin>"
                    f"<xmax>{xs.max() + 1}</xmax><ymax>{ys.max() + 1}</ymax></bndbox></object>")
            (base / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}.jpg</filename><size><width>{w}</width>"
                f"<height>{h}</height><depth>3</depth></size>{''.join(objects)}</annotation>")
            classes = np.zeros_like(mask)
            for value, (_, index) in names.items():
                classes[mask == value] = index
            Image.fromarray(classes).save(base / "SegmentationClass" / f"{stem}.png")
            Image.fromarray(mask).save(base / "SegmentationObject" / f"{stem}.png")
        for kind in ("Main", "Segmentation"):
            (base / "ImageSets" / kind / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root


#: every hand-made dataset format of the kit, by ``detseg.data`` format name
WRITERS = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc, "masks": write_mask_folder}


def _ok(runner: CliRunner, args: list[str]) -> str:
    result = runner.invoke(app, args)
    failure = "".join(traceback.format_exception(result.exception)) if result.exception else ""
    assert result.exit_code == 0, f"detseg {' '.join(args)}\n{result.output}\n{failure}"
    assert "Traceback" not in result.output, result.output
    return result.output


def run_family_checks(family: str, tmp_path: Path, backbone: str = "tiny") -> None:
    """Every command on ``family`` over ``backbone``; see the module docstring."""
    task = model_info(family)["task"]
    semantic = task == "semantic"
    data = write_mask_folder(tmp_path / "masks") if semantic else write_yolo(tmp_path / "yolo")
    fmt = "masks" if semantic else "yolo"
    runner = CliRunner()
    run = tmp_path / "run"
    _ok(runner, ["train", "--model", family, "--backbone", backbone, "--dataset", fmt,
                 "--data-root", str(data), "--epochs", "1", "--out", str(run)])
    weights = run / "last.pt"
    assert weights.is_file() and (run / "results.csv").is_file()

    _ok(runner, ["eval", "--dataset", fmt, "--data-root", str(data), "--weights", str(weights),
                 "--out", str(tmp_path / "eval"), "--no-plots"])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert ("mIoU" in metrics) if semantic else ("bbox" in metrics), metrics

    images = data / "images" / "val"
    command = "segment" if semantic else "detect"
    _ok(runner, [command, str(images), "--weights", str(weights), "--out",
                 str(tmp_path / command)])
    assert len(list((tmp_path / command).glob("*.png")) + list(
        (tmp_path / command).glob("*.jpg"))) >= 3

    onnx = tmp_path / "model.onnx"
    _ok(runner, ["export", "--weights", str(weights), "--format", "onnx", "--imgsz", "64",
                 "--check", "--out", str(onnx)])
    assert onnx.is_file()

    image = next(images.iterdir())
    _ok(runner, ["explain", str(image), "--weights", str(weights), "--method", "activations",
                 "--out", str(tmp_path / "explain")])
    assert list((tmp_path / "explain").glob("*.png"))

    _ok(runner, ["summary", "--weights", str(weights), "--imgsz", "64"])
    _ok(runner, ["benchmark", "--weights", str(weights), "--imgsz", "64", "--iters", "1",
                 "--warmup", "0", "--device", "cpu"])


def check_family_over_backbone(family: str, backbone: str) -> None:
    """``family`` over ``backbone`` builds, takes a loss/backward step on two odd-sized images
    and predicts in their own sizes."""
    torch.manual_seed(0)
    model = build_model(family, backbone=backbone, num_classes=3, input_size=96)
    adapter = task_adapter(model)
    images = [torch.rand(3, 61, 90), torch.rand(3, 80, 52)]
    if adapter.name == "semantic":
        targets = [{"mask": torch.randint(0, 3, im.shape[-2:])} for im in images]
    else:
        targets = []
        for im in images:
            h, w = im.shape[-2:]
            target = {"boxes": torch.tensor([[4.0, 6.0, w / 2, h / 2]]),
                      "labels": torch.tensor([1])}
            if adapter.name == "instance":
                mask = torch.zeros(1, h, w, dtype=torch.uint8)
                mask[0, 6 : h // 2, 4 : w // 2] = 1
                target["masks"] = mask
            targets.append(target)
    model.train()
    losses = adapter.loss(model, images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total) and total.requires_grad
    total.backward()
    model.eval()
    settings = InferenceSettings(conf=0.0, max_det=5)
    adapter.configure(model, settings)
    with torch.inference_mode():
        predictions = adapter.predict(model, images, settings)
    for prediction, image in zip(predictions, images, strict=True):
        assert prediction.size == tuple(image.shape[-2:])
        if adapter.name == "semantic":
            assert prediction.semantic.shape == prediction.size
        else:
            assert len(prediction.boxes) <= 5
