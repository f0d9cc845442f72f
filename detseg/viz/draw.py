"""Draw detections, instance masks and semantic maps on RGB images (OpenCV).

Line width and font scale follow the image size, so labels stay readable on a 64 px
thumbnail and on a 4K frame. Every function returns a new ``H x W x 3`` uint8 RGB array and
leaves its input untouched.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Hand-picked first colours (clearly distinct on photos), then golden-ratio hues.
_BASE = np.array([
    (255, 56, 56), (50, 205, 50), (30, 144, 255), (255, 178, 29), (207, 56, 255),
    (0, 212, 187), (255, 112, 31), (146, 204, 23), (255, 55, 199), (61, 219, 134),
    (72, 249, 10), (0, 194, 255), (255, 149, 200), (132, 56, 255), (187, 212, 0),
    (26, 147, 52), (44, 153, 168), (82, 0, 133), (203, 56, 255), (255, 157, 151),
], dtype=np.uint8)


def palette(n: int) -> np.ndarray:
    """``n x 3`` uint8 RGB colours, distinct and the same on every call (index = class)."""
    if n <= len(_BASE):
        return _BASE[:n].copy()
    extra = []
    for i in range(n - len(_BASE)):
        hue = (0.11 + i * 0.6180339887) % 1.0
        sat = 0.55 + 0.4 * ((i // 3) % 2)
        val = 0.95 - 0.25 * ((i // 2) % 2)
        extra.append([round(c * 255) for c in colorsys.hsv_to_rgb(hue, sat, val)])
    return np.concatenate([_BASE, np.array(extra, dtype=np.uint8)])


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def label_sizes(height: int, width: int, line_width: int | None) -> tuple[int, float, int]:
    """Line width, font scale and text thickness for an image of this size."""
    lw = line_width or max(round((height + width) / 2 * 0.003), 1)
    font_scale = max(lw / 3.0, 0.35)
    text_thick = max(lw - 1, 1)
    return lw, font_scale, text_thick


def _text_color(color: np.ndarray) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``color``."""
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luma > 150 else (255, 255, 255)


def draw_label(img: np.ndarray, text: str, x: int, y: int, color: np.ndarray, font_scale: float,
           thickness: int) -> None:
    """A text label on a filled box whose bottom-left corner sits at (x, y) when it fits
    above, else just below ``y`` (inside the object's box); the label always stays inside the
    picture (the font shrinks when the text is wider than the image)."""
    height, width = img.shape[:2]
    pad = max(thickness, 1)
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thickness)
    if tw + 2 * pad > width:
        font_scale *= (width - 2 * pad) / max(tw, 1)
        thickness = 1
        (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thickness)
    box_w, box_h = tw + 2 * pad, th + base + 2 * pad
    x = int(min(max(x, 0), max(width - box_w, 0)))
    top = y - box_h
    if top < 0:
        top = y
    top = int(min(max(top, 0), max(height - box_h, 0)))
    bottom = top + box_h
    cv2.rectangle(img, (x, top), (x + box_w - 1, bottom - 1), tuple(int(c) for c in color), -1)
    cv2.putText(img, text, (x + pad, bottom - base - pad), _FONT, font_scale,
                _text_color(color), thickness, cv2.LINE_AA)


def _binary_masks(masks: Any, height: int, width: int) -> np.ndarray:
    """``N x H x W`` bool from ``N x H x W`` or ``N x 1 x H x W`` bool/int/float (> 0.5)."""
    arr = _as_numpy(masks)
    if arr.ndim == 4:
        arr = arr[:, 0]
    binary = arr > 0.5 if arr.dtype.kind == "f" else arr > 0
    if binary.shape[1:] != (height, width):
        binary = np.stack([cv2.resize(m.astype(np.uint8), (width, height),
                                      interpolation=cv2.INTER_NEAREST) > 0 for m in binary]) \
            if len(binary) else np.zeros((0, height, width), bool)
    return binary


def instance_colors(labels: np.ndarray, scores: np.ndarray | None,
                    class_colors: np.ndarray) -> np.ndarray:
    """``N x 3`` uint8 colours: each detection its class colour, shaded apart from the other
    detections of its class (the best-scored keeps the pure colour, the next ones alternate
    darker and lighter), so touching objects of one class stay distinguishable."""
    order = np.argsort(-scores, kind="stable") if scores is not None else np.arange(len(labels))
    seen: dict[int, int] = {}
    out = np.zeros((len(labels), 3), np.uint8)
    for k in order:
        label = int(labels[k])
        rank = seen.get(label, 0)
        seen[label] = rank + 1
        color = class_colors[label].astype(np.float32)
        if rank:
            amount = min(0.5 + 0.15 * ((rank - 1) // 2), 0.8)
            target = 0.0 if rank % 2 else 255.0
            color = color * (1 - amount) + target * amount
        out[k] = np.clip(color + 0.5, 0, 255).astype(np.uint8)
    return out


def draw_detections(image_rgb: np.ndarray, boxes: Any, labels: Any, names: Sequence[str],
                    scores: Any = None, masks: Any = None, line_width: int | None = None,
                    hide_labels: bool = False, hide_conf: bool = False,
                    mask_alpha: float = 0.45) -> np.ndarray:
    """Boxes (xyxy pixels), ``name score`` labels on filled backgrounds and semi-transparent
    instance masks with outlines. ``names[label]`` names a label (unknown labels print their
    number). Colours come from ``palette`` by label; with masks, each instance gets its own
    shade of its class colour (``instance_colors``) for mask, outline, box and label."""
    img = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    height, width = img.shape[:2]
    boxes = _as_numpy(boxes).reshape(-1, 4).astype(np.float64)
    labels = _as_numpy(labels).reshape(-1).astype(np.int64)
    scores = None if scores is None else _as_numpy(scores).reshape(-1).astype(np.float64)
    colors = palette(max(int(labels.max(initial=0)) + 1, len(names), 1))
    lw, font_scale, text_thick = label_sizes(height, width, line_width)
    if masks is not None and len(labels):
        colors_of = instance_colors(labels, scores, colors)
        binary = _binary_masks(masks, height, width)
        overlay = img.astype(np.float32)
        for k in range(len(binary)):
            on = binary[k]
            overlay[on] = overlay[on] * (1 - mask_alpha) + colors_of[k] * mask_alpha
        img = np.clip(overlay + 0.5, 0, 255).astype(np.uint8)
        for k in range(len(binary)):
            outlines, _ = cv2.findContours(binary[k].astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, outlines, -1, tuple(int(c) for c in colors_of[k]),
                             max(lw // 2, 1), cv2.LINE_AA)
    else:
        colors_of = colors[labels] if len(labels) else np.zeros((0, 3), np.uint8)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(boxes))
    for k in order:  # most confident last, so its label ends up on top
        color = colors_of[k]
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[k])
        cv2.rectangle(img, (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0)),
                      tuple(int(c) for c in color), lw, cv2.LINE_AA)
        if hide_labels:
            continue
        label = int(labels[k])
        text = names[label] if 0 <= label < len(names) else str(label)
        if scores is not None and not hide_conf:
            text = f"{text} {scores[k]:.2f}"
        draw_label(img, text, x0, y0, color, font_scale, text_thick)
    return img


def draw_semantic(image_rgb: np.ndarray, mask: Any, names: Sequence[str], alpha: float = 0.5,
                  legend: bool = True) -> np.ndarray:
    """Blend class colours over the image (index 0 = background and 255 = ignore stay
    uncoloured) and, with ``legend``, list the classes present with their colour swatches."""
    img = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    height, width = img.shape[:2]
    classes = _as_numpy(mask)
    # uint8 class maps (255 = ignore stays 255) keep a huge picture's overlay small in memory
    small = classes.size == 0 or int(classes.max()) <= 255
    classes = classes.astype(np.uint8 if small else np.int32, copy=False)
    if classes.shape != (height, width):
        classes = cv2.resize(classes if small else classes.astype(np.int32), (width, height),
                             interpolation=cv2.INTER_NEAREST)
    painted = (classes > 0) & (classes != 255)
    top = int(classes[painted].max(initial=0))
    colors = palette(max(len(names), top + 1, 256 if small else 0))
    colors[0] = 0
    if small:
        colors[255] = 0
    colored = colors.astype(np.uint8)[classes]
    blended = cv2.addWeighted(img, 1 - alpha, colored, alpha, 0.0)
    del colored
    img = np.where(painted[..., None], blended, img)
    del blended
    if legend:
        present = [int(c) for c in np.unique(classes[painted])]
        _legend(img, present, names, colors.astype(np.uint8))
    return img


def _legend(img: np.ndarray, present: list[int], names: Sequence[str],
            colors: np.ndarray) -> None:
    """Colour swatches and class names in the top-left corner on a darkened panel."""
    if not present:
        return
    height, width = img.shape[:2]
    _, font_scale, thick = label_sizes(height, width, None)
    entries = [names[c] if c < len(names) else str(c) for c in present]
    (_, th), base = cv2.getTextSize("Ag", _FONT, font_scale, thick)
    row = th + base + 4
    rows = max(min(len(entries), (height - 4) // row), 1)
    if rows < len(entries):
        entries = entries[: rows - 1] + [f"+{len(entries) - rows + 1} more"]
    text_w = max(cv2.getTextSize(e, _FONT, font_scale, thick)[0][0] for e in entries)
    panel_w = min(text_w + row + 10, width)
    panel_h = min(len(entries) * row + 6, height)
    img[:panel_h, :panel_w] = (img[:panel_h, :panel_w].astype(np.float32) * 0.35).astype(np.uint8)
    for i, entry in enumerate(entries):
        y = 3 + i * row
        if i < len(present) and not entry.startswith("+"):
            cv2.rectangle(img, (4, y + 1), (4 + row - 4, y + row - 3),
                          tuple(int(c) for c in colors[present[i]]), -1)
        cv2.putText(img, entry, (row + 4, y + th + 1), _FONT, font_scale, (255, 255, 255),
                    thick, cv2.LINE_AA)
