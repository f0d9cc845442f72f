"""ModelSpec: everything needed to rebuild a model, stored inside every checkpoint.

``--weights run/best.pt`` alone rebuilds the network from the spec it carries.
Label convention: ``class_names[k]`` names model label ``k``. Detection and instance models
follow torchvision (label 0 is ``"__background__"``); semantic models predict class indices
directly (index 0 is usually ``"background"``). ``category_ids[k]`` is the dataset's category
id for label ``k`` (COCO ids are not contiguous), used when writing COCO results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from detseg.errors import UsageError, WeightsError

TASKS = ("detect", "instance", "semantic")
#: the range every image size option (``imgsz``, ``input_size``, ``crop``) must fall in
MIN_IMGSZ = 32
MAX_IMGSZ = 8192

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelSpec:
    """How to rebuild a model.

    Attributes:
        family: model family or preset name registered in ``detseg.models`` (e.g. ``faster_rcnn``).
        backbone: backbone name registered in ``detseg.backbones`` (e.g. ``tiny``), or ``None``
            when the preset fixes it.
        num_classes: number of model outputs, background included for detectors.
        task: one of ``detect``, ``instance``, ``semantic``.
        class_names: ``num_classes`` names, index = model label.
        category_ids: dataset category id per label (``0`` for background), or empty for identity.
        input_size: the image side in pixels the model was trained at (shorter side for R-CNNs).
        mean, std: per-channel normalization of RGB images scaled to [0, 1].
        options: extra keyword arguments of the family builder (anchor sizes, widths, ...).
    """

    family: str
    backbone: str | None
    num_classes: int
    task: str
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    input_size: int = 512
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise WeightsError(f"ModelSpec task must be one of {TASKS}, got {self.task!r}")
        if not MIN_IMGSZ <= int(self.input_size) <= MAX_IMGSZ:
            raise WeightsError(f"ModelSpec input_size must be within {MIN_IMGSZ}..{MAX_IMGSZ}, "
                               f"got {self.input_size}")
        if int(self.num_classes) < 1:
            raise WeightsError(f"ModelSpec num_classes must be at least 1, got "
                               f"{self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise WeightsError(
                f"ModelSpec has {len(self.class_names)} class names for {self.num_classes} classes"
            )
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)

    def names(self) -> list[str]:
        """Class names, falling back to ``class<k>`` where the spec has none."""
        return self.class_names or [f"class{k}" for k in range(self.num_classes)]

    def category_id(self, label: int) -> int:
        """The dataset category id for model label ``label``."""
        return self.category_ids[label] if self.category_ids else int(label)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, str, int, float), safe for ``torch.load(weights_only=True)``."""
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise WeightsError(f"ModelSpec has unknown keys {sorted(unknown)}")
        return cls(**data)


def model_spec(model: object) -> ModelSpec:
    """The ``ModelSpec`` a detseg model carries as its ``spec`` attribute (``UsageError`` when
    it has none)."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise UsageError("a model needs a `spec` (ModelSpec) attribute to be run by detseg")
    return spec
