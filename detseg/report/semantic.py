"""The semantic-segmentation part of the report: pixel metrics, both mIoU definitions side by
side, the per-class table, the row-normalised pixel confusion matrix and the worst images with
image / truth / prediction / error panels."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from detseg.report.html import cards, esc, fmt, note, table
from detseg.report.page import Section
from detseg.report.pictures import PictureSource, data_uri
from detseg.report.semantic_images import ImageScore, SemanticImages
from detseg.viz.draw import palette

IGNORED = np.array([40, 40, 40], np.uint8)
WRONG = np.array([230, 30, 30], np.uint8)

MIOU_NOTE = (
    "mIoU (dataset) sums one confusion matrix over every pixel of every image and averages the "
    "per-class IoU over the classes present: it is the number `detseg eval` prints and writes "
    "to metrics.json. mIoU (per image) averages each image's own mIoU (over the classes "
    "present in that image's truth or prediction): every image weighs the same, so small "
    "images and rare classes count more.")


def _colour_map(classes: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """``h x w`` class indices (255 = ignored) -> RGB."""
    lut = np.tile(IGNORED, (256, 1))
    lut[: len(colours)] = colours[:256]
    return lut[classes]


def panels(image: np.ndarray | None, score: ImageScore, colours: np.ndarray) -> list[str]:
    """``data:`` URIs of the image, the truth, the prediction and the errors (wrong pixels
    red, ignored ones dark) at the size of the kept maps; without a picture the maps alone.
    Class 0 (background) is left untinted in the truth and prediction panels."""
    if score.truth is None or score.pred is None:
        return []
    h, w = score.truth.shape
    base = None
    if image is not None:
        base = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    out = [] if base is None else [data_uri(base)]
    plain = np.full((h, w, 3), 200, np.uint8) if base is None else base
    for classes in (score.truth, score.pred):
        shown = _colour_map(classes, colours)
        if base is not None:
            shown = cv2.addWeighted(base, 0.45, shown, 0.55, 0.0)
        shown[classes == 0] = plain[classes == 0]
        out.append(data_uri(shown))
    grey = (np.full((h, w, 3), 200, np.uint8) if base is None else
            (cv2.cvtColor(cv2.cvtColor(base, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) // 2
             + 64).astype(np.uint8))
    ignored = score.truth == 255
    grey[(score.truth != score.pred) & ~ignored] = WRONG
    grey[ignored] = IGNORED
    out.append(data_uri(grey))
    return out


def _worst_gallery(images: SemanticImages, pictures: PictureSource | None,
                   colours: np.ndarray) -> str:
    figures = []
    for score in images.worst():
        image = pictures.load(score.image_id) if pictures is not None else None
        path = pictures.paths.get(score.image_id) if pictures is not None else None
        name = path.name if path is not None else f"image {score.image_id}"
        uris = panels(image, score, colours)
        if not uris:
            continue
        labels = (["image"] if len(uris) == 4 else []) + ["truth", "prediction", "errors"]
        imgs = "".join(f'<img class="zoom" src="{uri}" alt="{esc(name)}: {label}" '
                       f'title="{label}">' for uri, label in zip(uris, labels, strict=True))
        figures.append(f'<figure class="wide"><div class="panels">{imgs}</div><figcaption>'
                       f"<b>{esc(name)}</b> · mIoU {fmt(score.miou)} · pixel accuracy "
                       f"{fmt(score.pixel_acc)} · panels: {', '.join(labels)}</figcaption>"
                       "</figure>")
    if not figures:
        return note("No image was scored.")
    return f'<div class="gallery" id="semantic-worst">{"".join(figures)}</div>'


def _legend(names: list[str], colours: np.ndarray) -> str:
    """Swatches of the classes (class 0, background, is shown untinted), ignored and wrong."""
    items = "".join(f'<span><i style="background:rgb({c[0]},{c[1]},{c[2]});height:10px">'
                    f"</i>{esc(n)}</span>"
                    for n, c in zip(names[1:], colours[1:], strict=True))
    items = f"<span>{esc(names[0])}: untinted</span>" + items if names else items
    return (f'<div class="legend">{items}<span><i style="background:#282828;height:10px"></i>'
            'ignored</span><span><i style="background:#e61e1e;height:10px"></i>'
            "wrong pixel</span></div>")


def semantic_section(metrics: dict[str, Any], confusion: np.ndarray, class_names: list[str],
                     images: SemanticImages | None, pictures: PictureSource | None) -> Section:
    """The section of a semantic run: ``metrics`` is ``ConfusionMatrix.compute()``'s dict,
    ``confusion`` its ``C x C`` counts (rows truth), ``images`` the per-image observer."""
    per_image = images.mean_image_miou() if images is not None else None
    summary = cards([
        ("pixel accuracy", metrics["pixel_acc"], "correct pixels / counted pixels"),
        ("mean accuracy", metrics["mean_acc"], "mean per-class recall"),
        ("mIoU (dataset)", metrics["mIoU"], "accumulated over the dataset; the CLI prints this"),
        ("mIoU (per image)", per_image, "mean over the images of each image's mIoU"),
        ("fwIoU", metrics["fwIoU"], "IoU weighted by the true pixels of each class"),
        ("mDice", metrics["mDice"], "mean Dice over the classes present"),
    ])
    rows = [[name, row["IoU"], row["Dice"], row["acc"], row["pixels"]]
            for name, row in metrics["per_class"].items()]
    colours = palette(len(class_names))
    matrix = {"labels": list(class_names), "counts": np.asarray(confusion).astype(int).tolist(),
              "rowLabel": "truth", "colLabel": "predicted"}
    body = [summary, note(MIOU_NOTE), "<h3>Per class</h3>",
            note("Accumulated over the dataset; acc is the class's recall. Click a column "
                 "header to sort."),
            table("semantic-classes", ["class", "IoU", "Dice", "acc", "pixels"], rows),
            "<h3>Pixel confusion matrix</h3>",
            note("Rows are the true class, columns the predicted class; row-normalised, each "
                 "row shows where that class's pixels went."),
            '<div class="matrix-view" data-src="semantic.confusion" data-mode="rows">'
            '<div class="toggle"><button data-mode="counts">counts</button>'
            '<button data-mode="rows" class="on">row-normalised</button></div>'
            '<div class="scroll matrix-host"></div></div>',
            "<h3>Images with the lowest mIoU (click a panel to enlarge)</h3>",
            _legend(list(class_names), colours)]
    if images is None:
        body.append(note("Per-image results were not recorded."))
    else:
        body.append(_worst_gallery(images, pictures, colours))
    return Section("semantic", "Semantic segmentation", "".join(body),
                   {"semantic.confusion": matrix})
