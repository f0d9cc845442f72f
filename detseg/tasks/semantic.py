"""The ``semantic`` task contract (per-pixel class maps).

Models take a normalized ``N x 3 x H x W`` batch and return ``N x C x H x W`` logits (or
torchvision's ``{"out": logits, "aux": logits}``).

One letterbox policy everywhere (inference, evaluation, explain, benchmark): each image is
resized so its longer side is ``imgsz`` (the spec's ``input_size`` by default), normalized, and
padded at the bottom and right to a multiple of 32; logits are cropped to the image and resized
back to its ORIGINAL size, where metrics are computed (as MMSegmentation does). Images batch
together only when their padded shapes are equal (``batch_key``), so a batch never adds padding
to an image and results do not depend on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detseg.errors import ModelBuildError
from detseg.prediction import Prediction, Scorer
from detseg.tasks.base import InferenceSettings, Prepared, TaskAdapter

PAD_MULTIPLE = 32
IGNORE_INDEX = 255
#: weight of torchvision's auxiliary head loss (as in torchvision's segmentation references)
AUX_WEIGHT = 0.5
# Above this many logit values per image, maps are upsampled as labels, not logits.
MAX_UPSAMPLED_LOGITS = 1 << 26


def semantic_logits(output: Tensor | Mapping[str, Tensor]) -> Tensor:
    """The ``N x C x H x W`` logits of a semantic model (a tensor, or torchvision's ``"out"``)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping) and "out" in output:
        return output["out"]
    raise ModelBuildError(f"not a semantic model output: {type(output).__name__}")


def letterbox_size(height: int, width: int, side: int) -> tuple[int, int]:
    """``(h, w)`` after resizing so the longer side is ``side`` (aspect kept, at least 1)."""
    ratio = side / max(height, width)
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def padded(size: int) -> int:
    """``size`` rounded up to a multiple of 32."""
    return math.ceil(size / PAD_MULTIPLE) * PAD_MULTIPLE


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """``1 - mean soft Dice`` over the classes present in ``target``.

    ``logits``: ``N x C x H x W``; ``target``: ``N x H x W`` class indices (255 ignored).
    Counters the background's dominance in cross-entropy on images with small objects.
    """
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    probs = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1])
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + eps) / (total + eps)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def top_k_cross_entropy(logits: Tensor, target: Tensor, fraction: float) -> Tensor:
    """Mean cross-entropy of the hardest ``fraction`` of the labelled pixels (hard-pixel
    mining; ``fraction=1``: plain cross-entropy).

    ``logits``: ``N x C x H x W``; ``target``: ``N x H x W`` class indices (255 ignored).
    """
    if fraction >= 1:
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    labelled = per_pixel[target != IGNORE_INDEX]
    if labelled.numel() == 0:
        return logits.sum() * 0
    return labelled.topk(max(1, round(fraction * labelled.numel()))).values.mean()


class SemanticAdapter(TaskAdapter):
    """Class-index maps (``semantic``)."""

    name = "semantic"
    fitness_key = "mIoU"
    default_conf = 0.0
    pixel_targets = True
    all_parameters_used = True
    channels_last_on_cuda = True

    def _normalize(self, images: Tensor) -> Tensor:
        mean = torch.tensor(self.spec.mean, device=images.device).view(-1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=images.device).view(-1, 3, 1, 1)
        return (images - mean) / std

    # -------------------------------------------------------------- inference
    def configure(self, model: nn.Module, settings: InferenceSettings) -> None:
        """Semantic models hold no inference settings; they apply in ``postprocess``."""

    def batch_key(self, height: int, width: int, imgsz: int | None = None) -> Hashable:
        h, w = letterbox_size(height, width, imgsz or self.spec.input_size)
        return padded(h), padded(w)

    def working_size(self, height: int, width: int, imgsz: int | None = None
                     ) -> tuple[int, int]:
        return letterbox_size(height, width, imgsz or self.spec.input_size)

    def prepare(self, images: Sequence[Tensor], imgsz: int | None = None) -> Prepared:
        """Letterbox, normalize and pad (zeros after normalization) to one batch."""
        side = imgsz or self.spec.input_size
        scaled, sizes, shapes = [], [], []
        for image in images:
            h, w = int(image.shape[-2]), int(image.shape[-1])
            size = letterbox_size(h, w, side)
            x = image[None].float()
            if size != (h, w):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                  antialias=size[0] < h)
            scaled.append(self._normalize(x)[0])
            sizes.append((h, w))
            shapes.append(size)
        ph = padded(max(s[0] for s in shapes))
        pw = padded(max(s[1] for s in shapes))
        batch = scaled[0].new_zeros((len(scaled), 3, ph, pw))
        for i, (x, (h, w)) in enumerate(zip(scaled, shapes, strict=True)):
            batch[i, :, :h, :w] = x
        return Prepared(batch, sizes, shapes)

    def postprocess(self, output: Any, prepared: Prepared,
                    settings: InferenceSettings) -> list[Prediction]:
        logits = semantic_logits(output).float()
        predictions = []
        for i, ((h, w), (sh, sw)) in enumerate(zip(prepared.sizes, prepared.scaled,
                                                  strict=True)):
            x = self._only_classes(logits[i : i + 1, :, :sh, :sw], settings.classes)
            if x.shape[1] * h * w <= MAX_UPSAMPLED_LOGITS:
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
                labels = self._pixel_labels(x, settings.conf)
            else:
                labels = self._pixel_labels(x, settings.conf)[None, None].float()
                labels = F.interpolate(labels, size=(h, w), mode="nearest")[0, 0].long()
            predictions.append(Prediction(size=(h, w),
                                          semantic=labels.cpu().numpy().astype(np.int64)))
        return predictions

    def pixel_scores(self, output: Any, prepared: Prepared) -> list[Tensor]:
        """Each image's ``C x h x w`` logits, cropped from the padding and resized (bilinear)
        to its original size."""
        logits = semantic_logits(output).float()
        return [F.interpolate(logits[i : i + 1, :, :sh, :sw], size=size, mode="bilinear",
                              align_corners=False)[0]
                for i, (size, (sh, sw)) in enumerate(zip(prepared.sizes, prepared.scaled,
                                                         strict=True))]

    def labels_from_scores(self, scores: Tensor, settings: InferenceSettings) -> Prediction:
        """The class map of ``C x H x W`` logits (``classes`` kept, ``conf`` applied)."""
        labels = self._pixel_labels(self._only_classes(scores[None].float(), settings.classes),
                                    settings.conf)
        return Prediction(size=(int(scores.shape[-2]), int(scores.shape[-1])),
                          semantic=labels.cpu().numpy().astype(np.int64))

    @staticmethod
    def _only_classes(logits: Tensor, classes: tuple[int, ...] | None) -> Tensor:
        """1 x C x H x W logits with the classes outside ``classes`` (background always kept)
        set to -inf."""
        if classes is None:
            return logits
        blocked = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
        blocked[[c for c in classes if c < logits.shape[1]]] = False
        blocked[0] = False
        return logits.masked_fill(blocked.view(1, -1, 1, 1), float("-inf"))

    @staticmethod
    def _pixel_labels(logits: Tensor, conf: float | None) -> Tensor:
        """1 x C x H x W logits -> H x W labels, 255 where the top probability is below conf."""
        if not conf:
            return logits[0].argmax(0)
        prob, labels = logits[0].softmax(0).max(0)
        return labels.masked_fill(prob < conf, IGNORE_INDEX)

    # -------------------------------------------------------------- training
    def loss(self, model: nn.Module, images: Sequence[Tensor],
             targets: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Cross-entropy + soft Dice on the main logits, plus ``0.5 x`` cross-entropy of an
        auxiliary head where the model returns one (torchvision's DeepLabV3/FCN ``aux``).
        A model whose spec has option ``loss_top_k`` < 1 averages the cross-entropy over
        that fraction of its pixels, the hardest (``top_k_cross_entropy``).

        Images of different sizes are padded to one batch; padded pixels are ignored.
        """
        h = padded(max(int(im.shape[-2]) for im in images))
        w = padded(max(int(im.shape[-1]) for im in images))
        x = images[0].new_zeros((len(images), 3, h, w))
        y = torch.full((len(images), h, w), IGNORE_INDEX, dtype=torch.long,
                       device=images[0].device)
        for i, (image, target) in enumerate(zip(images, targets, strict=True)):
            ih, iw = image.shape[-2:]
            x[i, :, :ih, :iw] = self._normalize(image[None].float())[0]
            mask = torch.as_tensor(target["mask"]).long()
            y[i, :ih, :iw] = mask.reshape(mask.shape[-2:]).to(y.device)
        output = model(x)
        logits = semantic_logits(output).float()
        top_k = float(self.spec.options.get("loss_top_k", 1.0))
        losses = {"loss_ce": top_k_cross_entropy(logits, y, top_k),
                  "loss_dice": soft_dice_loss(logits, y)}
        if isinstance(output, Mapping) and output.get("aux") is not None:
            losses["loss_aux"] = AUX_WEIGHT * F.cross_entropy(
                output["aux"].float(), y, ignore_index=IGNORE_INDEX)
        return losses

    # -------------------------------------------------------------- evaluation
    def scorer(self, dataset: Any, iou_types: tuple[str, ...] | None = None,
               backend: str = "detseg") -> Scorer:
        from detseg.errors import UsageError
        from detseg.eval.scorers import PixelScorer

        if iou_types:
            raise UsageError(f"iou_type {', '.join(iou_types)} applies to detection and "
                             f"instance models; {self.spec.family} is semantic")
        return PixelScorer(self.spec)

    # -------------------------------------------------------------- export, benchmark
    def export_module(self, model: nn.Module, imgsz: int) -> tuple[nn.Module, list[str]]:
        param = next(model.parameters())
        wrapper = SemanticExport(model.eval(), self.spec.mean, self.spec.std)
        return wrapper.to(param.device, param.dtype).eval(), ["logits"]

    def example_inputs(self, imgsz: int | tuple[int, int], batch_size: int = 1,
                       device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> Tensor:
        height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        images = torch.rand(batch_size, 3, height, width, device=device)
        return self._normalize(images).to(dtype)


class SemanticExport(nn.Module):
    """``images [N, 3, H, W]`` in [0, 1] -> ``logits [N, C, H, W]`` (normalizes first)."""

    mean: Tensor  # [1, 3, 1, 1] buffer
    std: Tensor  # [1, 3, 1, 1] buffer

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return semantic_logits(self.model((images - self.mean) / self.std))
