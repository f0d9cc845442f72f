"""The explain-method registry, the pictures a method returns, and the model runner.

- ``EXPLAIN_METHODS``: every method, registered with ``register_method`` next to its function
  (the modules of ``detseg.explain``); ``explain`` runs one by name.
- ``Explanation``: RGB uint8 pictures of the input image's size, keyed by file stem.
- ``ModelRunner``: a model and its task adapter; images go through ``adapter.prepare``,
  ``forward`` and ``postprocess`` as in every detseg command (semantic models see the image
  letterboxed to their input size, as ``detseg segment`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from detseg.errors import DetsegError, UsageError
from detseg.prediction import Prediction
from detseg.registry import Registry
from detseg.tasks import InferenceSettings, Prepared, task_adapter

if TYPE_CHECKING:
    from detseg.explain.targets import Target

#: every explain method, filled by the modules of ``detseg.explain`` as they are imported
EXPLAIN_METHODS: Registry[ExplainMethod] = Registry("explain method")
#: ``(model, image_rgb H x W x 3 uint8, **options) -> Explanation``
MethodFunction = Callable[..., "Explanation"]


@dataclass(frozen=True)
class ExplainMethod:
    """One registered explain method.

    Attributes:
        name: registry name (``gradcam``).
        summary: one line for listings.
        tasks: the tasks whose models it explains (``detect``, ``instance``, ``semantic``).
        options: the keyword options ``run`` takes besides the model and image (``layer``,
            ``target``, ``patch``, ``stride``).
        run: ``(model, image_rgb, **options) -> Explanation``.
    """

    name: str
    summary: str
    tasks: tuple[str, ...]
    options: tuple[str, ...]
    run: MethodFunction

    def unused(self, options: Mapping[str, Any]) -> list[str]:
        """Names of the given (not ``None``) ``options`` this method does not take."""
        return [name for name, value in options.items()
                if value is not None and name not in self.options]


def register_method(name: str, *, summary: str, tasks: tuple[str, ...],
                    options: tuple[str, ...] = ()) -> Callable[[MethodFunction], MethodFunction]:
    """Decorator registering an explain method's function in ``EXPLAIN_METHODS``::

        @register_method("gradcam", summary="Grad-CAM of a box or class",
                         tasks=("detect", "instance", "semantic"), options=("target", "layer"))
        def grad_cam(model: nn.Module, image_rgb: np.ndarray, target=None, layer=None): ...
    """

    def decorator(run: MethodFunction) -> MethodFunction:
        method = ExplainMethod(name=name, summary=summary, tasks=tuple(tasks),
                               options=tuple(options), run=run)
        EXPLAIN_METHODS.add(name, method, tasks=method.tasks)
        return run

    return decorator


def get_method(name: str) -> ExplainMethod:
    """The registered method ``name``; an unknown name is a ``UsageError`` listing them."""
    if name not in EXPLAIN_METHODS:
        raise UsageError(f"unknown explain method {name!r}; the methods are "
                         f"{', '.join(EXPLAIN_METHODS.names())}")
    return EXPLAIN_METHODS.get(name).builder


@dataclass
class Explanation:
    """Pictures keyed by file stem, with what they show.

    Attributes:
        method: the method's registry name.
        images: ``stem -> H x W x 3`` uint8 RGB pictures of the input image's size.
        target: what occlusion and Grad-CAM explain (``None`` for the others).
        layers: the layers pictured or used.
        heatmap: ``H x W`` float32 map behind the picture, where there is one.
    """

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


class ModelRunner:
    """A model (put in eval mode) and its task adapter, with the model's own inference
    settings (``InferenceSettings()``: no threshold or size is changed)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        self.adapter = task_adapter(model)
        self.settings = InferenceSettings()
        self.names = self.adapter.spec.names()
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")

    @property
    def task(self) -> str:
        """``detect``, ``instance`` or ``semantic``."""
        return self.adapter.name

    def class_name(self, label: int) -> str:
        """The model's name for ``label`` (``class<label>`` out of range)."""
        return self.names[label] if 0 <= label < len(self.names) else f"class{label}"

    def forward(self, images: Tensor) -> tuple[Any, Prepared]:
        """``images [B, 3, H, W]`` RGB in [0, 1] -> the model's raw output for the prepared
        batch, and that batch (its ``scaled`` sizes say where each image lies in the input)."""
        prepared = self.adapter.prepare([image.to(self.device) for image in images],
                                        self.settings.imgsz)
        return self.adapter.forward(self.model, prepared), prepared

    def predict(self, image: Tensor) -> tuple[Any, Prepared, Prediction]:
        """``image [3, H, W]`` -> raw output, prepared batch and its ``Prediction`` (original
        image coordinates)."""
        output, prepared = self.forward(image[None])
        return output, prepared, self.adapter.postprocess(output, prepared, self.settings)[0]


def to_tensor(image_rgb: np.ndarray) -> Tensor:
    """``H x W x 3`` uint8 RGB -> ``3 x H x W`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float() / 255.0


def explain(model: nn.Module, image_rgb: np.ndarray, method: str,
            **options: Any) -> Explanation:
    """Run the registered ``method`` on an ``H x W x 3`` uint8 RGB image.

    ``options`` the method does not take, or that are ``None``, are left out, so one call can
    try every method. Raises ``UsageError`` for an unknown method, a model of a task the
    method does not explain, or an image that is not ``H x W x 3``.
    """
    entry = get_method(method)
    task = task_adapter(model).name
    if task not in entry.tasks:
        raise UsageError(f"explain method {method!r} does not explain {task} models (it "
                         f"explains {', '.join(entry.tasks)} models)")
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or min(image_rgb.shape[:2]) < 1:
        raise UsageError(f"image_rgb must be H x W x 3, got shape {list(image_rgb.shape)}")
    taken = {name: value for name, value in options.items()
             if name in entry.options and value is not None}
    return entry.run(model, image_rgb, **taken)
