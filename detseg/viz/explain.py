"""See what a CNN learned: feature-map grids, first-layer filters, occlusion sensitivity and
Grad-CAM, for detection, instance and semantic models.

Every picture is an RGB uint8 array of the input image's size (``H x W x 3``):

- ``activation_grids``: the feature maps of chosen layers (default: each backbone stage's output)
  tiled in a square grid, strongest channels first (mean absolute activation).
- ``filter_grid``: the first convolution's kernels (RGB when it reads the 3 image channels).
- ``occlusion``: a grey patch slides over the image; the heatmap is how much the target's score
  drops when the patch covers each pixel (averaged over the patches covering it).
- ``grad_cam``: Selvaraju et al. 2017: channel weights = spatial mean of d(score)/d(activation),
  map = ReLU(sum_k w_k A_k), upsampled to the image.

Targets: for detectors a detection index into the model's (score-sorted) output for the clean
image, or a class name/label meaning that class's best detection; its score on a modified image
is ``max(score * IoU(box, target box))`` over detections of the same label. For semantic models a
class (name or index); its score is the mean softmax probability of that class over the pixels
the clean image predicts as that class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detseg.errors import DetsegError, UsageError
from detseg.summary import feature_extractor, find_backbone
from detseg.tasks import DetectionAdapter, task_adapter

METHODS = ("activations", "filters", "occlusion", "gradcam")
GRID_MAX_MAPS = 64
OCCLUSION_FILL = 0.5


@dataclass
class Target:
    """What an explanation is about. ``index`` is a detection index (detectors) or a class
    index (semantic); ``box`` and ``label`` describe a detection; ``base_score`` is its score
    on the clean image."""

    kind: str
    index: int
    label: int
    name: str
    base_score: float
    box: list[float] | None = None

    def describe(self) -> str:
        if self.kind == "box":
            coords = ", ".join(f"{v:.0f}" for v in self.box or [])
            return (f"detection {self.index} ({self.name}, score {self.base_score:.3f}, "
                    f"box [{coords}])")
        return f"class {self.index} ({self.name}, mean probability {self.base_score:.3f})"


@dataclass
class Explanation:
    """Pictures keyed by file stem, with what they show."""

    method: str
    images: dict[str, np.ndarray]
    target: Target | None = None
    layers: list[str] = field(default_factory=list)
    heatmap: np.ndarray | None = None

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write every picture as ``out_dir/<stem>.png``; returns the paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for stem, rgb in self.images.items():
            path = out_dir / f"{stem}.png"
            if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise DetsegError(f"{path}: could not write the PNG")
            paths.append(path)
        return paths


# ----------------------------------------------------------------------------- model plumbing

class _Runner:
    """Feeds RGB images in [0, 1] to a model the way its family expects.

    Detectors take the image as is (they resize and normalize themselves). Semantic models get
    the image at the scale ``detseg segment`` uses (long side = the spec's ``input_size``), each
    side rounded to a multiple of the backbone's largest stride, normalized with the spec's
    mean/std; their logits are resized back to the image size.
    """

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self.task = task_adapter(model).name
        self.detection = isinstance(task_adapter(model), DetectionAdapter)
        spec = getattr(model, "spec", None)
        self.names = spec.names() if spec is not None else None
        self.mean = torch.tensor(spec.mean if spec else (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std if spec else (1.0, 1.0, 1.0)).view(1, 3, 1, 1)
        self.input_size = spec.input_size if spec is not None else None
        backbone = find_backbone(model)
        self.divisor = max(backbone[1].strides) if backbone is not None else 32
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    def class_name(self, label: int) -> str:
        if self.names is not None and 0 <= label < len(self.names):
            return self.names[label]
        return f"class{label}"

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """``images [B, 3, H, W]`` in [0, 1] -> torchvision-style detections per image."""
        return self.model([img.to(self.device, self.dtype) for img in images])

    def logits(self, images: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` in [0, 1] -> logits ``[B, C, H, W]`` at the input size."""
        height, width = images.shape[-2:]
        scale = self.input_size / max(height, width) if self.input_size else 1.0
        side_h = max(self.divisor, round(height * scale / self.divisor) * self.divisor)
        side_w = max(self.divisor, round(width * scale / self.divisor) * self.divisor)
        x = images.to(self.device, self.dtype)
        if (side_h, side_w) != (height, width):
            x = F.interpolate(x, size=(side_h, side_w), mode="bilinear", align_corners=False)
        x = (x - self.mean.to(x)) / self.std.to(x)
        out = self.model(x)
        out = out["out"] if isinstance(out, dict) else out
        if out.shape[-2:] != (height, width):
            out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
        return out


def to_tensor(image_rgb: np.ndarray) -> Tensor:
    """``H x W x 3`` uint8 RGB -> ``3 x H x W`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float() / 255.0


def box_iou(box: Tensor, boxes: Tensor) -> Tensor:
    """IoU of one ``[4]`` xyxy box with ``[K, 4]`` boxes -> ``[K]``."""
    lt = torch.maximum(box[:2], boxes[:, :2])
    rb = torch.minimum(box[2:], boxes[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = (box[2:] - box[:2]).clamp(min=0).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area + areas - inter).clamp(min=1e-9)


def _class_index(token: str, runner: _Runner) -> int:
    if token.lstrip("-").isdigit():
        return int(token)
    names = runner.names or []
    if token not in names:
        raise UsageError(f"unknown class {token!r}; the model's classes are {', '.join(names)}")
    return names.index(token)


def resolve_target(model: nn.Module, image: Tensor, target: str | int | None = None) -> Target:
    """The explanation target on the clean ``image [3, H, W]`` (see the module docstring).

    Default: the top-scoring detection, or the most frequent non-background predicted class.
    """
    runner = _Runner(model)
    token = None if target is None else str(target)
    with torch.no_grad():
        if runner.detection:
            det = runner.detect(image[None])[0]
            if len(det["scores"]) == 0:
                raise UsageError("the model detects nothing in this image, so there is no box "
                                 "to explain; try another image or weights")
            if token is None:
                index = 0
            elif token.isdigit():
                index = int(token)
            else:
                label = _class_index(token, runner)
                hits = (det["labels"] == label).nonzero().flatten()
                if len(hits) == 0:
                    raise UsageError(f"no detection of class {token!r} in this image")
                index = int(hits[0])
            if index >= len(det["scores"]):
                raise UsageError(f"detection index {index} out of range: the model returns "
                                 f"{len(det['scores'])} detections")
            label = int(det["labels"][index])
            return Target("box", index, label, runner.class_name(label),
                          float(det["scores"][index]), det["boxes"][index].tolist())
        probs = runner.logits(image[None]).softmax(1)[0]
        pred = probs.argmax(0)
        if token is None:
            counts = torch.bincount(pred.flatten(), minlength=probs.shape[0])
            counts[0] = 0 if counts.sum() > counts[0] else counts[0]
            index = int(counts.argmax())
        else:
            index = _class_index(token, runner)
        if not 0 <= index < probs.shape[0]:
            raise UsageError(f"class {index} out of range: the model has {probs.shape[0]} classes")
        region = pred == index
        score = probs[index][region].mean() if region.any() else probs[index].mean()
        return Target("class", index, index, runner.class_name(index), float(score))


def score_function(model: nn.Module, image: Tensor, target: Target) -> Callable[[Tensor], Tensor]:
    """``f(images [B, 3, H, W]) -> scores [B]`` of ``target`` (differentiable where the model
    is)."""
    runner = _Runner(model)
    if target.kind == "box":
        box = torch.tensor(target.box)

        def detection_score(images: Tensor) -> Tensor:
            scores = []
            for det in runner.detect(images):
                same = det["labels"] == target.label
                if not same.any():
                    scores.append(det["scores"].new_zeros(()))
                    continue
                iou = box_iou(box.to(det["boxes"]), det["boxes"][same])
                scores.append((det["scores"][same] * iou).max())
            return torch.stack(scores)
        return detection_score
    with torch.no_grad():
        region = runner.logits(image[None])[0].argmax(0) == target.index
    if not region.any():
        region = torch.ones_like(region)

    def class_score(images: Tensor) -> Tensor:
        probs = runner.logits(images).softmax(1)[:, target.index]
        return probs[:, region].mean(1)
    return class_score


# ----------------------------------------------------------------------------- pictures

def colorize(heat: np.ndarray) -> np.ndarray:
    """``H x W`` float in [0, 1] -> ``H x W x 3`` uint8 RGB (jet colormap)."""
    gray = np.clip(heat * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(image_rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """Blend a [0, 1] heatmap (any size; resized) over the image, more opaque where hotter
    (opacity ``alpha * (0.2 + 0.8 * heat)``), so cold areas keep showing the image."""
    height, width = image_rgb.shape[:2]
    if heat.shape != (height, width):
        heat = cv2.resize(heat.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    opacity = (alpha * (0.2 + 0.8 * np.clip(heat, 0, 1)))[..., None]
    blended = (1 - opacity) * image_rgb.astype(np.float32) + opacity * colorize(heat)
    return blended.round().astype(np.uint8)


def _normalize(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def tile_grid(tiles: list[np.ndarray], height: int, width: int, square: bool = False,
              gap: int = 1) -> np.ndarray:
    """Tile RGB uint8 pictures in a near-square grid on a ``height x width`` dark canvas.

    ``square`` keeps tiles square (centred grid); otherwise cells take the canvas' aspect.
    """
    canvas = np.full((height, width, 3), 24, np.uint8)
    if not tiles:
        return canvas
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    cell_h, cell_w = height // rows, width // cols
    if square:
        cell_h = cell_w = min(cell_h, cell_w)
    top = (height - rows * cell_h) // 2
    left = (width - cols * cell_w) // 2
    inner_h, inner_w = max(1, cell_h - gap), max(1, cell_w - gap)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        interp = cv2.INTER_NEAREST if tile.shape[0] < inner_h else cv2.INTER_AREA
        resized = cv2.resize(tile, (inner_w, inner_h), interpolation=interp)
        y, x = top + r * cell_h, left + c * cell_w
        canvas[y:y + inner_h, x:x + inner_w] = resized
    return canvas


def list_layers(model: nn.Module) -> list[tuple[str, str, int]]:
    """``(name, type, parameters)`` of every named submodule, in definition order."""
    return [(name, type(module).__name__, sum(p.numel() for p in module.parameters()))
            for name, module in model.named_modules() if name]


def _module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        close = [n for n in modules if n and name in n][:5]
        hint = f"; did you mean {', '.join(close)}" if close else ""
        raise UsageError(f"no layer named {name!r}{hint} (see --layer list)")
    return modules[name]


def _capture(model: nn.Module, names: list[str], run: Callable[[], object],
             ) -> tuple[dict[str, Tensor], object]:
    """Run ``run()`` with forward hooks on ``names``; returns first outputs and run's result.

    A backbone's dict output is expanded to ``<name>:<key>`` entries.
    """
    captured: dict[str, Tensor] = {}
    hooks = []

    def keep(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, dict):
                for key, value in output.items():
                    captured.setdefault(f"{name}:{key}", value)
            elif isinstance(output, Tensor):
                captured.setdefault(name, output)
        return hook

    for name in names:
        hooks.append(_module(model, name).register_forward_hook(keep(name)))
    try:
        result = run()
    finally:
        for handle in hooks:
            handle.remove()
    return captured, result


def _default_layer(model: nn.Module) -> str:
    name, _ = feature_extractor(model)
    if not name:
        raise UsageError("this model has no backbone module; choose a layer with --layer "
                         "(see --layer list)")
    return name


def activation_grids(model: nn.Module, image_rgb: np.ndarray, layers: list[str] | None = None,
                     max_maps: int = GRID_MAX_MAPS) -> Explanation:
    """Feature-map grids of ``layers`` (default: every backbone stage output)."""
    runner = _Runner(model)
    names = layers or [_default_layer(model)]
    image = to_tensor(image_rgb)
    with torch.no_grad():
        captured, _ = _capture(model, names, lambda: (runner.detect(image[None]) if
                                                      runner.detection else
                                                      runner.logits(image[None])))
    height, width = image_rgb.shape[:2]
    pictures = {}
    for name, act in captured.items():
        if act.dim() != 4:
            raise UsageError(f"layer {name!r} outputs shape {list(act.shape)}, not feature maps")
        maps = act[0].float().cpu()
        strength = maps.abs().mean(dim=(1, 2))
        order = strength.argsort(descending=True)[:max_maps]
        tiles = [colorize(_normalize(maps[k].numpy())) for k in order]
        stem = "activations_" + name.replace(":", "_").replace(".", "-")
        pictures[stem] = tile_grid(tiles, height, width)
    if not pictures:
        raise UsageError(f"layers {', '.join(names)} did not run on this image")
    return Explanation("activations", pictures, layers=list(captured))


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """Name and module of the first ``Conv2d`` in definition order."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise UsageError("this model has no Conv2d layer, so there are no filters to show")


def filter_grid(model: nn.Module, height: int, width: int,
                max_filters: int = GRID_MAX_MAPS) -> Explanation:
    """The first convolution's kernels, each scaled to [0, 1] on its own, on an image-sized
    canvas; RGB when the layer reads 3 channels, else the mean over input channels."""
    name, conv = first_conv(model)
    weight = conv.weight.detach().float().cpu()[:max_filters]
    tiles = []
    for kernel in weight:
        if kernel.shape[0] == 3:
            rgb = _normalize(kernel.permute(1, 2, 0).numpy())
            tiles.append((rgb * 255).round().astype(np.uint8))
        else:
            gray = (_normalize(kernel.mean(0).numpy()) * 255).round().astype(np.uint8)
            tiles.append(np.repeat(gray[..., None], 3, axis=2))
    stem = "filters_" + name.replace(".", "-")
    return Explanation("filters", {stem: tile_grid(tiles, height, width, square=True)},
                       layers=[name])


def occlusion_map(score: Callable[[Tensor], Tensor], image: Tensor, patch: int, stride: int,
                  batch_size: int = 8, fill: float = OCCLUSION_FILL) -> np.ndarray:
    """Score drop per pixel, ``[H, W]`` float: for every ``patch x patch`` grey square (placed
    every ``stride`` pixels, edges included), ``score(clean) - score(occluded)``, averaged over
    the squares covering each pixel."""
    _, height, width = image.shape
    patch = max(1, min(patch, height, width))
    ys = _positions(height, patch, stride)
    xs = _positions(width, patch, stride)
    with torch.no_grad():
        base = float(score(image[None])[0])
        drops = []
        spots = [(y, x) for y in ys for x in xs]
        for start in range(0, len(spots), batch_size):
            chunk = spots[start:start + batch_size]
            batch = image[None].repeat(len(chunk), 1, 1, 1)
            for k, (y, x) in enumerate(chunk):
                batch[k, :, y:y + patch, x:x + patch] = fill
            drops.extend((base - score(batch)).float().cpu().tolist())
    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.float64)
    for (y, x), drop in zip(spots, drops, strict=True):
        total[y:y + patch, x:x + patch] += drop
        count[y:y + patch, x:x + patch] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def _positions(length: int, patch: int, stride: int) -> list[int]:
    last = length - patch
    positions = list(range(0, last + 1, max(1, stride)))
    if positions[-1] != last:
        positions.append(last)
    return positions


def occlusion(model: nn.Module, image_rgb: np.ndarray, target: str | int | None = None,
              patch: int | None = None, stride: int | None = None,
              batch_size: int = 8) -> Explanation:
    """Occlusion-sensitivity heatmap of ``target`` over the image (red = occluding it there
    lowers the score most). Default patch: 1/8 of the shorter side; stride: half the patch."""
    image = to_tensor(image_rgb)
    tgt = resolve_target(model, image, target)
    side = min(image_rgb.shape[:2])
    patch = patch or max(4, side // 8)
    stride = stride or max(1, patch // 2)
    heat = occlusion_map(score_function(model, image, tgt), image, patch, stride, batch_size)
    # the picture smooths the patch-grid steps (sigma = half the stride); the heatmap stays raw
    shown = cv2.GaussianBlur(np.clip(heat, 0, None), (0, 0), sigmaX=max(stride / 2, 0.5))
    shown = shown / shown.max() if shown.max() > 0 else shown
    picture = _mark_target(overlay(image_rgb, shown), tgt)
    return Explanation("occlusion", {f"occlusion_{_target_stem(tgt)}": picture}, target=tgt,
                       heatmap=heat)


def grad_cam(model: nn.Module, image_rgb: np.ndarray, target: str | int | None = None,
             layer: str | None = None) -> Explanation:
    """Grad-CAM of ``target`` at ``layer`` (default: the deepest backbone stage whose
    activations the target's score depends on)."""
    image = to_tensor(image_rgb)
    tgt = resolve_target(model, image, target)
    score_of = score_function(model, image, tgt)
    names = [layer or _default_layer(model)]
    with torch.enable_grad():
        captured, score = _capture(model, names, lambda: score_of(image[None])[0])
        acts = {name: act for name, act in captured.items() if act.dim() == 4 and
                act.requires_grad}
        if not acts:
            raise UsageError(f"layer {names[0]!r} gives no differentiable feature maps")
        grads = torch.autograd.grad(score, list(acts.values()), allow_unused=True)
    chosen = None
    for name, act, grad in reversed(list(zip(acts, acts.values(), grads, strict=True))):
        if grad is not None and float(grad.abs().sum()) > 0:
            chosen = (name, act.detach()[0].float(), grad[0].float())
            break
    if chosen is None:
        raise UsageError(f"the target's score does not depend on layer {names[0]!r}; pick "
                         "another with --layer")
    name, act, grad = chosen
    weights = grad.mean(dim=(1, 2))
    cam = F.relu((weights[:, None, None] * act).sum(0)).cpu().numpy()
    cam = _normalize(cam) if cam.max() > 0 else cam
    height, width = image_rgb.shape[:2]
    cam = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    picture = _mark_target(overlay(image_rgb, cam), tgt)
    stem = f"gradcam_{_target_stem(tgt)}_{name.replace(':', '_').replace('.', '-')}"
    return Explanation("gradcam", {stem: picture}, target=tgt, layers=[name], heatmap=cam)


def _target_stem(target: Target) -> str:
    if target.kind == "box":
        return f"box{target.index}-{target.name}"
    return f"class{target.index}-{target.name}"


def _mark_target(picture: np.ndarray, target: Target) -> np.ndarray:
    """Draw the target box (white, 2 px) on a picture; semantic targets are left as they are."""
    if target.kind != "box" or not target.box:
        return picture
    x0, y0, x1, y1 = (round(v) for v in target.box)
    marked = picture.copy()
    cv2.rectangle(marked, (x0, y0), (x1, y1), (255, 255, 255), 2)
    return marked


def explain(model: nn.Module, image_rgb: np.ndarray, method: str, layer: str | None = None,
            target: str | int | None = None, patch: int | None = None,
            stride: int | None = None) -> Explanation:
    """Dispatch to one of ``METHODS`` (see the module docstring)."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "activations":
        return activation_grids(model, image_rgb, [layer] if layer else None)
    if method == "filters":
        return filter_grid(model, *image_rgb.shape[:2])
    if method == "occlusion":
        return occlusion(model, image_rgb, target, patch, stride)
    return grad_cam(model, image_rgb, target, layer)
