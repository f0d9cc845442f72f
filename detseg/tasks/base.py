"""The task contract: how to feed a model of one task and read its output.

Every engine and tool (Predictor, evaluation, trainer, export, explain, benchmark) goes through
one ``TaskAdapter`` per task instead of branching on ``spec.task``:

- ``configure(model, settings)``: inference settings (``conf``, ``max_det``, ``imgsz``) written
  into the model where the model holds them (torchvision detectors' thresholds and resize);
- ``batch_key(h, w)``: images whose keys are equal can share a forward pass without changing
  each other's results (so metrics do not depend on the batch size);
- ``prepare(images)`` -> ``Prepared``; ``forward(model, prepared)``; ``postprocess(...)`` -> one
  ``Prediction`` per image in ORIGINAL image coordinates;
- ``loss(model, images, targets)``: the training loss dict (aux heads included);
- ``scorer(dataset, ...)``: accumulates predictions against targets into metrics;
- ``export_module(model, imgsz)`` and ``example_inputs(...)`` for export, benchmark, summary.

Images handed to an adapter are ``3 x H x W`` float tensors in [0, 1] on the model's device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from detseg.errors import UsageError
from detseg.prediction import Prediction, Scorer
from detseg.registry import Registry
from detseg.spec import MAX_IMGSZ, MIN_IMGSZ, ModelSpec

TASK_ADAPTERS: Registry[type[TaskAdapter]] = Registry("task")


@dataclass(frozen=True)
class InferenceSettings:
    """What a caller may set about inference; ``None`` keeps the model's own value.

    Attributes:
        conf: minimum score of a detection; for semantic models, pixels whose top class
            probability is below it are left unlabeled (255).
        max_det: most detections kept per image.
        imgsz: inference size in pixels (R-CNN: shorter side; SSD: square side; semantic:
            longer side).
        classes: keep only these model labels.
        iou: IoU above which non-maximum suppression drops the lower-scored of two boxes of a
            class (detectors only).
    """

    conf: float | None = None
    max_det: int | None = None
    imgsz: int | None = None
    classes: tuple[int, ...] | None = None
    iou: float | None = None

    def __post_init__(self) -> None:
        if self.conf is not None and not 0.0 <= self.conf <= 1.0:
            raise UsageError(f"conf must be within [0, 1], got {self.conf}")
        if self.iou is not None and not 0.0 <= self.iou <= 1.0:
            raise UsageError(f"iou must be within [0, 1], got {self.iou}")
        if self.max_det is not None and self.max_det < 1:
            raise UsageError(f"max_det must be >= 1, got {self.max_det}")
        if self.imgsz is not None and not MIN_IMGSZ <= self.imgsz <= MAX_IMGSZ:
            raise UsageError(f"imgsz must be within {MIN_IMGSZ}..{MAX_IMGSZ}, got {self.imgsz}")




def float_image(image: Any, device: str | torch.device | None = None) -> Tensor:
    """``3 x H x W`` float in [0, 1] (on ``device`` if given) from a uint8 or float image
    tensor or array; tv_tensors come out as plain tensors."""
    image = image.as_subclass(Tensor) if isinstance(image, Tensor) else torch.as_tensor(image)
    if device is not None:
        image = image.to(device, non_blocking=True)
    return image.float().div(255.0) if image.dtype == torch.uint8 else image.float()


def total_loss(losses: dict[str, Tensor]) -> Tensor:
    """The sum of the terms of a ``TaskAdapter.loss`` dict (never empty), added in order."""
    first, *rest = losses.values()
    return sum(rest, first)


@dataclass
class Prepared:
    """A batch ready for ``forward``.

    Attributes:
        inputs: what the model's forward takes (a list of CHW tensors, or an NCHW batch).
        sizes: each image's original ``(h, w)``.
        scaled: each image's ``(h, w)`` inside ``inputs`` (top-left region).
    """

    inputs: Any
    sizes: list[tuple[int, int]]
    scaled: list[tuple[int, int]] = field(default_factory=list)


class TaskAdapter(ABC):
    """The contract of one task for one model spec (see the module docstring)."""

    name: str = ""
    #: the validation number that decides ``best.pt`` (key of ``Scorer.compute``'s flat numbers)
    fitness_key: str = ""
    #: the ``conf`` used when the caller gives none
    default_conf: float = 0.0

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    # -------------------------------------------------------------- inference
    @abstractmethod
    def configure(self, model: nn.Module, settings: InferenceSettings) -> None:
        """Write ``settings`` into ``model`` where the model itself applies them."""

    @abstractmethod
    def batch_key(self, height: int, width: int, imgsz: int | None = None) -> Hashable:
        """Images with equal keys batch together without changing each other's output."""

    @abstractmethod
    def prepare(self, images: Sequence[Tensor], imgsz: int | None = None) -> Prepared: ...

    @abstractmethod
    def working_size(self, height: int, width: int, imgsz: int | None = None
                     ) -> tuple[int, int]:
        """The ``(h, w)`` an image of this size is resized to before the network sees it."""

    def forward(self, model: nn.Module, prepared: Prepared) -> Any:
        """The model's raw output for a prepared batch."""
        return model(prepared.inputs)

    @abstractmethod
    def postprocess(self, output: Any, prepared: Prepared,
                    settings: InferenceSettings) -> list[Prediction]: ...

    def pixel_scores(self, output: Any, prepared: Prepared) -> list[Tensor] | None:
        """Each image's ``C x h x w`` class scores (logits) at its original size, for callers
        that blend overlapping tiles before the argmax (sliced inference); ``None`` where the
        task predicts instances, which are merged as boxes instead."""
        return None

    def labels_from_scores(self, scores: Tensor, settings: InferenceSettings) -> Prediction:
        """The prediction of one image's ``C x H x W`` class scores (``pixel_scores``,
        blended), with ``conf`` and ``classes`` applied."""
        raise UsageError(f"{self.name} models predict instances, not class scores")

    def predict(self, model: nn.Module, images: Sequence[Tensor],
                settings: InferenceSettings) -> list[Prediction]:
        """``prepare``, ``forward`` and ``postprocess`` in one call (model in eval mode)."""
        prepared = self.prepare(images, settings.imgsz)
        return self.postprocess(self.forward(model, prepared), prepared, settings)

    # -------------------------------------------------------------- training
    @abstractmethod
    def loss(self, model: nn.Module, images: Sequence[Tensor],
             targets: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Named loss terms of one batch (``model`` in train mode); their sum is optimized."""

    # -------------------------------------------------------------- evaluation
    @abstractmethod
    def scorer(self, dataset: Any, iou_types: tuple[str, ...] | None = None,
               backend: str = "detseg") -> Scorer: ...

    # -------------------------------------------------------------- export, benchmark
    @abstractmethod
    def export_module(self, model: nn.Module, imgsz: int) -> tuple[nn.Module, list[str]]:
        """The wrapper exported in place of ``model`` (takes ``N x 3 x H x W`` RGB in [0, 1])
        and its output names."""

    @abstractmethod
    def example_inputs(self, imgsz: int | tuple[int, int], batch_size: int = 1,
                       device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> Any:
        """Random inputs in the form the model's forward takes."""

    #: whether one export call takes a batch of N images (False: one image per call)
    export_batches: bool = True
    #: targets are per-pixel class maps (so random-crop training applies)
    pixel_targets: bool = False
    #: every parameter takes part in every training step (DDP then skips the unused-parameter
    #: search; torchvision detectors leave some unused)
    all_parameters_used: bool = False
    #: channels-last memory format pays off on CUDA (dense convolutional outputs)
    channels_last_on_cuda: bool = False
