"""Picture galleries of a detection section: the highest-scoring false positives, the largest
missed objects (a crop each, truth and prediction drawn, with the error type) and the images
with the most errors (the full annotated picture, opened large on click).

At most ``GALLERY_SIZE`` pictures per gallery, each a JPEG of long side <= ``CROP_SIDE`` (crops)
or ``FULL_SIDE`` (images), so the page's size does not grow with the dataset. Without pictures
(no ``--images``) the galleries list the same cases as text.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from detseg.data.masks import decode_segmentation, segmentation_problem
from detseg.eval.coco.json_input import box_problem, finite_number
from detseg.report.html import esc, note
from detseg.report.pictures import (
    GALLERY_SIZE,
    MISS,
    OTHER,
    PRED,
    TRUTH,
    PictureSource,
    View,
    crop,
    data_uri,
    draw_box,
    draw_outline,
    fit,
)

if TYPE_CHECKING:
    from detseg.eval.analysis import DetectionAnalysis, ErrorCase, ImageErrors

LEGEND = ('<div class="legend"><span><i style="background:var(--truth)"></i>truth</span>'
          '<span><i style="background:var(--pred)"></i>false positive</span>'
          '<span><i style="background:var(--other)"></i>other detections (score >= '
          'threshold)</span><span><i style="background:var(--miss)"></i>missed object</span>'
          '</div>')


class _Drawer:
    """Draws the cases of one section on pictures (boxes; mask outlines for ``segm``)."""

    def __init__(self, pictures: PictureSource | None, names: dict[int, str],
                 sizes: dict[int, tuple[int, int]], segm: bool) -> None:
        self.pictures, self.names, self.sizes, self.segm = pictures, names, sizes, segm

    def name(self, category_id: Any) -> str:
        known = isinstance(category_id, int) and category_id in self.names
        return self.names[category_id] if known else str(category_id)

    def outline(self, image: np.ndarray, view: View, image_id: int, segmentation: Any,
                color: tuple[int, int, int]) -> None:
        if not self.segm or segmentation is None or image_id not in self.sizes:
            return
        if segmentation_problem(segmentation, *self.sizes[image_id]) is not None:
            return  # the evaluator skipped it and named it already
        mask = decode_segmentation(segmentation, *self.sizes[image_id])
        draw_outline(image, view.mask(mask, image.shape[:2]), color)

    def case(self, case: ErrorCase, missed: bool) -> str:
        """A figure of one false positive (``missed=False``) or missed object."""
        score = "" if case.score is None else f" {case.score:.2f}"
        text = (f'<span class="tag {esc(case.error)}">{esc(case.error)}</span> '
                f"<b>{esc(self.name(case.category_id))}</b>{score} · image {case.image_id}")
        if case.other_category_id is not None and case.other_category_id != case.category_id:
            other = "detected as" if missed else "truth"
            text += f" · {other} {esc(self.name(case.other_category_id))}"
        image = self.pictures.load(case.image_id) if self.pictures is not None else None
        if image is None:
            return f'<figure class="nopic"><figcaption>{text}</figcaption></figure>'
        boxes = [case.box_xywh] + ([case.other_box_xywh] if case.other_box_xywh else [])
        shown, view = crop(image, boxes)
        own, other_color = (TRUTH, PRED) if missed else (PRED, TRUTH)
        if case.other_box_xywh:
            draw_box(shown, view, case.other_box_xywh, other_color)
        self.outline(shown, view, case.image_id, case.segmentation, own)
        draw_box(shown, view, case.box_xywh, own)
        alt = f"{case.error}: {self.name(case.category_id)}{score}, image {case.image_id}"
        return (f'<figure><img class="zoom" src="{data_uri(shown)}" alt="{esc(alt)}">'
                f"<figcaption>{text}</figcaption></figure>")

    def image(self, errors: ImageErrors, truth: list[dict], detections: list[dict],
              cases: list[tuple[ErrorCase, bool]]) -> str:
        """A figure of one image with its truth, detections and error cases drawn."""
        kinds = ", ".join(f"{k} {v}" for k, v in errors.errors.items() if v)
        text = (f"<b>{esc(errors.file_name)}</b> · GT {errors.num_gt} · TP {errors.tp} · "
                f"FP {errors.fp} · FN {errors.fn}" + (f" · {esc(kinds)}" if kinds else ""))
        image = self.pictures.load(errors.image_id) if self.pictures is not None else None
        if image is None:
            return f'<figure class="nopic"><figcaption>{text}</figcaption></figure>'
        shown, view = fit(image)
        for ann in truth[:100]:
            self.outline(shown, view, errors.image_id, ann.get("segmentation"), TRUTH)
            draw_box(shown, view, ann["bbox"], TRUTH, self.name(ann.get("category_id")))
        for det in detections[:100]:
            draw_box(shown, view, det["bbox"], OTHER, None, 1)
        for case, missed in cases:
            color = MISS if missed else PRED
            label = f"{case.error} {self.name(case.category_id)}"
            self.outline(shown, view, errors.image_id, case.segmentation, color)
            draw_box(shown, view, case.box_xywh, color, label)
        alt = f"{errors.file_name}: FP {errors.fp}, FN {errors.fn}"
        return (f'<figure><img class="zoom" src="{data_uri(shown)}" alt="{esc(alt)}">'
                f"<figcaption>{text}</figcaption></figure>")


def _gallery(section_id: str, kind: str, figures: list[str], empty: str) -> str:
    if not figures:
        return note(empty)
    return f'<div class="gallery" id="{esc(section_id)}-{kind}">{"".join(figures)}</div>'


def _of_images(entries: list[Any], images: set[int]) -> list[dict[str, Any]]:
    """The annotations or results of ``images`` that have a usable box (the files' bad
    entries were skipped and named by the evaluator)."""
    return [e for e in entries if type(e) is dict and type(e.get("image_id")) is int
            and e["image_id"] in images and box_problem(e.get("bbox")) is None]


def _area(case: ErrorCase) -> float:
    return float(case.box_xywh[2]) * float(case.box_xywh[3])


def detection_galleries(section_id: str, analysis: DetectionAnalysis,
                        pictures: PictureSource | None, gt: dict[str, Any],
                        results: list[dict[str, Any]], threshold: float) -> list[str]:
    """HTML of the three galleries of a section (``section_id``: ``bbox`` or ``segm``)."""
    names = dict(zip(analysis.category_ids, analysis.class_names, strict=True))
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt.get("images", [])
             if isinstance(im, dict) and all(type(im.get(k)) is int
                                             for k in ("id", "height", "width"))}
    drawer = _Drawer(pictures, names, sizes, section_id == "segm")
    fps = heapq.nsmallest(GALLERY_SIZE, analysis.false_positives, key=lambda c: -(c.score or 0))
    missed = heapq.nsmallest(GALLERY_SIZE, analysis.missed, key=lambda c: -_area(c))
    worst = heapq.nsmallest(GALLERY_SIZE, (im for im in analysis.per_image if im.fp + im.fn),
                            key=lambda im: (-(im.fp + im.fn), im.image_id))
    wanted = {im.image_id for im in worst}
    truth: dict[int, list[dict]] = defaultdict(list)
    for ann in _of_images(gt.get("annotations", []), wanted):
        if not ann.get("iscrowd"):
            truth[ann["image_id"]].append(ann)
    detections: dict[int, list[dict]] = defaultdict(list)
    for det in _of_images(results, wanted):
        if finite_number(det.get("score")) and det["score"] >= threshold:
            detections[det["image_id"]].append(det)
    cases: dict[int, list[tuple[ErrorCase, bool]]] = defaultdict(list)
    for missed_flag, group in ((False, analysis.false_positives), (True, analysis.missed)):
        for case in group:
            if case.image_id in wanted:
                cases[case.image_id].append((case, missed_flag))
    out = ["<h3>Galleries</h3>", LEGEND]
    if pictures is None:
        out.append(note("Pictures are unavailable: this report was built from files without "
                        "--images; the galleries list the cases only."))
    out += [
        f"<h4>Highest-scoring false positives (score >= {threshold:g})</h4>",
        _gallery(section_id, "fp", [drawer.case(c, False) for c in fps],
                 "No false positive above the score threshold."),
        "<h4>Largest missed objects</h4>",
        _gallery(section_id, "missed", [drawer.case(c, True) for c in missed],
                 "No missed object."),
        "<h4>Images with the most errors (click for the full picture)</h4>",
        _gallery(section_id, "worst",
                 [drawer.image(im, truth[im.image_id], detections[im.image_id],
                               cases[im.image_id]) for im in worst],
                 "No image has an error."),
    ]
    return out
