"""Model families and torchvision presets behind one registry.

``build_model(name, backbone=..., num_classes=..., weights=..., **options)`` builds a family
(``faster_rcnn``, ``mask_rcnn``, ``ssd``, ``ssdlite``, ``unet``, ``segnet``) over any registry
backbone where it makes sense, or a torchvision preset (``fasterrcnn_resnet50_fpn_v2``,
``deeplabv3_resnet50``, ...). Every returned module carries ``.spec`` (a ``ModelSpec``) from
which ``build_from_spec`` rebuilds the same network.

I/O: detectors and instance segmenters take a list of CHW float images in 0..1 (their own
transform resizes and normalizes), return a dict of losses in train mode (with targets) and a
list of ``{boxes, labels, scores[, masks N x 1 x H x W]}`` in eval mode. Semantic models take a
normalized NCHW batch; ``unet``/``segnet`` return NCHW logits at input resolution, torchvision's
semantic presets ``{"out": logits[, "aux": ...]}``: ``semantic_logits`` gives the tensor of either.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

import detseg.models.families  # noqa: F401  (registers every family module)
from detseg.backbones import backbone_info, build_backbone
from detseg.errors import ModelBuildError, RegistryError
from detseg.models.family import FAMILIES as FAMILY_REGISTRY
from detseg.models.family import Family
from detseg.models.presets import PRESETS, Preset
from detseg.registry import Registry
from detseg.spec import TASKS, ModelSpec
from detseg.tasks.semantic import semantic_logits

__all__ = [
    "MODELS",
    "build_from_spec",
    "build_model",
    "list_models",
    "load_matching_state_dict",
    "make_spec",
    "model_info",
    "semantic_logits",
]

FAMILIES: dict[str, Family] = {e.name: e.builder for e in FAMILY_REGISTRY}

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
for _family in FAMILIES.values():
    MODELS.add(_family.name, _family.build, kind="family", task=_family.task,
               family=_family.name, backbone=_family.default_backbone, pretrained=False,
               weights=None, input_size=_family.input_size, summary=_family.summary)
for _preset in PRESETS.values():
    MODELS.add(_preset.name, _preset.build, kind="preset", task=_preset.task,
               family=_preset.family, backbone=_preset.backbone, pretrained=True,
               weights=_preset.weights, input_size=_preset.input_size,
               summary=f"torchvision {_preset.name} ({_preset.weights})")

# Keywords of build_model that fill ModelSpec fields rather than family options.
SPEC_FIELDS = ("class_names", "category_ids", "input_size", "mean", "std")
DEFAULT_CLASSES = {"detect": "FasterRCNN_ResNet50_FPN_Weights", "instance":
                   "FasterRCNN_ResNet50_FPN_Weights", "semantic": "DeepLabV3_ResNet50_Weights"}


def list_models(pattern: str = "*", task: str | None = None, kind: str | None = None) -> list[str]:
    """Family and preset names matching ``pattern`` (and ``task``, and ``kind`` ``family`` or
    ``preset``, if given), sorted."""
    if task is not None and task not in TASKS:
        raise RegistryError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    if kind not in (None, "family", "preset"):
        raise RegistryError(f"unknown model kind {kind!r}; kinds are family and preset")
    return [n for n in MODELS.names() if fnmatch.fnmatchcase(n, pattern)
            and (task is None or MODELS.get(n).meta["task"] == task)
            and (kind is None or MODELS.get(n).meta["kind"] == kind)]


def model_info(name: str) -> dict[str, Any]:
    """``{name, task, family, backbone, pretrained, kind, weights, input_size, summary}``."""
    return {"name": name, **MODELS.get(name).meta}


def _default_class_names(task: str) -> list[str]:
    import torchvision

    enum = getattr(torchvision.models.detection if task != "semantic"
                   else torchvision.models.segmentation, DEFAULT_CLASSES[task])
    return list(enum.DEFAULT.meta["categories"])


def make_spec(
    name: str, backbone: str | None = None, num_classes: int | None = None, **options: Any
) -> ModelSpec:
    """The complete ``ModelSpec`` of family or preset ``name`` with every default filled in.

    ``options`` may hold ``ModelSpec`` fields (``class_names``, ``category_ids``, ``input_size``,
    ``mean``, ``std``); the rest are family or preset options (see each family's module).
    Without ``num_classes`` a model gets ``len(class_names)``, else the preset's classes, else
    COCO's 91 (detection) or VOC's 21 (semantic) with their names.
    """
    entry = MODELS.get(name)
    fields = {k: options.pop(k) for k in SPEC_FIELDS if k in options}
    class_names = list(fields.pop("class_names", None) or [])
    if num_classes is None and class_names:
        num_classes = len(class_names)
    if entry.meta["kind"] == "preset":
        return _preset_spec(PRESETS[name], backbone, num_classes, class_names, fields, options)
    family = FAMILIES[name]
    backbone = backbone or family.default_backbone
    if num_classes is None:
        class_names = _default_class_names(family.task)
        num_classes = len(class_names)
    input_size = int(fields.pop("input_size", family.input_size))
    resolved = family.resolve_options(backbone_info(backbone), input_size, options)
    return ModelSpec(family=name, backbone=backbone, num_classes=int(num_classes),
                     task=family.task, class_names=class_names, input_size=input_size,
                     options=resolved, **fields)


def _preset_spec(preset: Preset, backbone: str | None, num_classes: int | None,
                 class_names: list[str], fields: dict[str, Any],
                 options: dict[str, Any]) -> ModelSpec:
    if backbone not in (None, preset.backbone):
        raise ModelBuildError(
            f"preset {preset.name} has backbone {preset.backbone}; for another backbone build "
            f"the family instead (build_model({preset.family!r}, backbone={backbone!r}))"
        )
    if num_classes is None:
        class_names = preset.class_names()
        num_classes = len(class_names)
    fields = {"input_size": preset.input_size, "mean": preset.mean, "std": preset.std, **fields}
    if preset.via_family:
        family = FAMILIES[preset.family]
        resolved = family.resolve_options(backbone_info(preset.backbone), fields["input_size"],
                                          {**preset.options, **options})
        return ModelSpec(family=preset.family, backbone=preset.backbone,
                         num_classes=int(num_classes), task=preset.task,
                         class_names=class_names, options=resolved, **fields)
    unknown = sorted(set(options) - set(preset.options))
    if unknown:
        raise ModelBuildError(f"preset {preset.name} has no option {', '.join(unknown)} "
                              f"(options: {', '.join(sorted(preset.options)) or 'none'})")
    return ModelSpec(family=preset.name, backbone=preset.backbone, num_classes=int(num_classes),
                     task=preset.task, class_names=class_names,
                     options={**preset.options, **options}, **fields)


def build_from_spec(spec: ModelSpec, pretrained_backbone: bool = False) -> nn.Module:
    """A randomly initialized model as ``spec`` describes, with ``.spec`` set.

    ``pretrained_backbone`` loads the backbone's ImageNet weights (families only).
    """
    entry = MODELS.get(spec.family)
    if entry.meta["kind"] == "preset":
        if pretrained_backbone:
            raise ModelBuildError(f"preset {spec.family} takes no pretrained_backbone; use "
                                  "weights='DEFAULT' for its pretrained weights")
        model = PRESETS[spec.family].build(spec)
    else:
        if spec.backbone is None:
            raise ModelBuildError(f"spec of family {spec.family} names no backbone")
        family = FAMILIES[spec.family]
        backbone_options = {k: spec.options[k] for k in family.backbone_options
                            if k in spec.options}
        model = family.build(build_backbone(spec.backbone, pretrained_backbone,
                                            **backbone_options), spec)
    # Module.__setattr__ is typed for tensors and submodules; any attribute is fine at runtime.
    model.spec = spec  # type: ignore[assignment]
    return model


def load_matching_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor],
                             source: str = "state dict") -> list[str]:
    """Load every entry of ``state_dict`` whose shape matches ``model``'s; return the skipped.

    For transfer learning: class-dependent head layers (the box predictor, the classifier) that
    differ in shape keep their fresh initialization, and their names come back sorted. Keys
    missing from ``state_dict`` or unknown to ``model`` raise ``WeightsError`` naming them and
    ``source`` (a different network, not a different head).
    """
    from detseg.weights import load_state_dict_checked

    return load_state_dict_checked(model, state_dict, source, reinit_mismatched=True)


def build_model(
    name: str | None = None,
    backbone: str | None = None,
    num_classes: int | None = None,
    weights: str | None = None,
    *,
    pretrained_backbone: bool = False,
    **options: Any,
) -> nn.Module:
    """Build family or preset ``name`` (see the module doc), optionally with ``weights``.

    ``weights`` is anything ``detseg.weights.resolve_weights`` accepts (``DEFAULT``, an enum
    name, a file, a manifest name, a URL) or ``None``/``"none"``. A detseg checkpoint carries its
    spec, so ``name`` may be ``None``. ``DEFAULT`` means the preset's torchvision weights
    (``MODELS`` metadata ``weights``). Loading is strict: tensors of another shape, or keys the
    model and the file do not share, raise ``WeightsError`` naming them. Only when a class count
    is asked for (``num_classes`` or ``class_names``) and differs from the weights' are the
    class-dependent head layers re-initialized instead (a transfer), and the model's spec takes
    the new classes. A model built with weights carries ``reinitialized``: the sorted names of
    the tensors left at their fresh initialization (``[]`` when everything loaded).
    ``pretrained_backbone`` loads ImageNet weights into a family's backbone (not stored in the
    spec; a checkpoint overrides it anyway).
    """
    if weights is None or str(weights).lower() == "none":
        if name is None:
            raise ModelBuildError("build_model needs a model name or weights with a spec")
        spec = make_spec(name, backbone, num_classes, **options)
        return build_from_spec(spec, pretrained_backbone)

    from detseg.weights import load_state_dict_checked, resolve_weights

    default_enum = MODELS.get(name).meta["weights"] if name is not None else None
    loaded = resolve_weights(weights, default_enum=default_enum)
    if loaded.spec is not None:
        spec = loaded.spec
        if name is not None and name not in (spec.family, _preset_family(name)):
            raise ModelBuildError(f"weights {weights} are for {spec.family}, not {name}")
        if backbone is not None and backbone != spec.backbone:
            raise ModelBuildError(f"weights {weights} are for backbone {spec.backbone}, "
                                  f"not {backbone}")
        if options:
            raise ModelBuildError(f"options {sorted(options)} cannot change a model built "
                                  f"from weights {weights}")
        if num_classes is not None and num_classes != spec.num_classes:
            spec = ModelSpec.from_dict({**spec.to_dict(), "num_classes": num_classes,
                                        "class_names": [], "category_ids": []})
    else:
        if name is None:
            raise ModelBuildError(f"weights {weights} carry no model spec: name the model too")
        spec = make_spec(name, backbone, num_classes, **options)
    model = build_from_spec(spec)
    classes_asked = num_classes is not None or bool(options.get("class_names"))
    reinitialized = load_state_dict_checked(model, loaded.state_dict, loaded.source,
                                            reinit_mismatched=classes_asked)
    model.reinitialized = reinitialized  # type: ignore[assignment]  # as .spec in build_from_spec
    return model


def _preset_family(name: str) -> str | None:
    preset = PRESETS.get(name)
    return preset.family if preset is not None and preset.via_family else None
