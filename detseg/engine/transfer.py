"""Transfer learning: start a model from other weights, and freeze backbone stages.

``load_transfer_weights`` fills a freshly built model from a checkpoint, manifest name or preset
weights (class-count heads that do not fit start fresh, and it says so; another family's
checkpoint over the same backbone starts just the backbone); ``inherited_options`` gives the
options a checkpoint of the same family was built with, so the fine-tuned model matches it.
``freeze_stages`` stops gradients and BatchNorm statistics of the first stages the backbone
declares (``Backbone.stages()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from detseg.backbones.base import Backbone, module_stages
from detseg.errors import UsageError
from detseg.spec import model_spec

if TYPE_CHECKING:
    from detseg.weights import LoadedWeights


def find_backbone(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The qualified name and module of the feature extractor inside ``model``.

    A detseg backbone is recognised by its ``channels`` and ``strides`` attributes; for
    torchvision presets the ``backbone.body`` (without FPN) or ``backbone`` module is used.
    """
    for name, module in model.named_modules():
        if name and hasattr(module, "channels") and hasattr(module, "strides"):
            return name, module
    for name in ("backbone.body", "backbone", "encoder"):
        with contextlib.suppress(AttributeError):
            return name, model.get_submodule(name)
    return None


class FrozenBatchNormGuard:
    """Keeps the BatchNorm layers of frozen stages in eval mode whenever the model trains."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.norms = [m for stage in modules for m in stage.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def apply(self) -> None:
        for m in self.norms:
            m.eval()


def freeze_stages(model: nn.Module, n: int) -> tuple[list[str], FrozenBatchNormGuard]:
    """Freeze the first ``n`` backbone stages (no gradients, BatchNorm statistics fixed).

    Returns the frozen parameter names and a guard to re-apply after each ``model.train()``.
    """
    found = find_backbone(model)
    if found is None:
        raise UsageError("--freeze: this model has no backbone to freeze")
    _, backbone = found
    stages = backbone.stage_modules() if isinstance(backbone, Backbone) \
        else module_stages(backbone)
    if n > len(stages):
        raise UsageError(f"--freeze {n}: the backbone has only {len(stages)} stages")
    frozen_ids = set()
    for stage in stages[:n]:
        for p in stage.parameters():
            p.requires_grad_(False)
            frozen_ids.add(id(p))
    names = [name for name, p in model.named_parameters() if id(p) in frozen_ids]
    return names, FrozenBatchNormGuard(stages[:n])


def resolve_transfer_weights(weights: str, preset: str | None = None) -> LoadedWeights:
    """The tensors (and spec, for detseg checkpoints) ``weights`` names; ``DEFAULT`` means
    the default weights of ``preset``."""
    from detseg.models import model_info
    from detseg.weights import resolve_weights

    default_enum = model_info(preset)["weights"] if preset else None
    return resolve_weights(weights, default_enum=default_enum)


def inherited_options(loaded: LoadedWeights, family: str, backbone: str | None) -> dict[str, Any]:
    """The options a detseg checkpoint of ``family`` over ``backbone`` (None: the family's
    default) was built with and that differ from the family's defaults at its input size
    (ASPP rates, anchors, proposal counts...): a model fine-tuned from it starts with them, as
    its weights were trained for them. Options equal to the defaults are left out, so those
    that follow the input size are computed anew for a new ``--imgsz``. Empty for another
    family or backbone, and for weights without a spec."""
    from detseg.models import FAMILIES, make_spec

    donor = loaded.spec
    if donor is None or donor.family != family or family not in FAMILIES:
        return {}
    if donor.backbone != (backbone or FAMILIES[family].default_backbone):
        return {}
    defaults = make_spec(family, donor.backbone, donor.num_classes,
                         input_size=donor.input_size).options
    return {k: v for k, v in donor.options.items() if k not in defaults or defaults[k] != v}


def load_transfer_weights(model: nn.Module, loaded: LoadedWeights) -> list[str]:
    """Start ``model`` from ``loaded`` (``resolve_transfer_weights``) for training; returns what
    was done, as notes.

    Tensors the model lacks are ignored (a Mask R-CNN's mask head starting a Faster R-CNN);
    tensors whose shape differs (class-count heads) keep their fresh initialisation; a
    checkpoint of another family over the same backbone starts just the backbone.
    """
    from detseg.models import load_matching_state_dict

    own = model.state_dict()
    donor = loaded.spec
    if donor is not None and donor.family != model_spec(model).family \
            and not set(own) <= set(loaded.state_dict):
        return [load_donor_backbone(model, loaded)]
    notes: list[str] = []
    extra = sorted(k for k in loaded.state_dict if k not in own)
    state = {k: v for k, v in loaded.state_dict.items() if k in own}
    if extra:
        # e.g. a Mask R-CNN checkpoint starting a Faster R-CNN: its mask head is not used.
        heads = sorted({k.rsplit(".", 2)[0] for k in extra})
        notes.append(f"{loaded.source}: ignored {len(extra)} tensors this model does not "
                     f"have ({', '.join(heads[:4])}{', ...' if len(heads) > 4 else ''})")
    skipped = load_matching_state_dict(model, state)
    if skipped:
        notes.append(f"loaded {loaded.source}; {len(skipped)} class-count head tensors do not "
                     f"fit these classes and start fresh ({', '.join(skipped)})")
    else:
        notes.append(f"loaded {loaded.source}")
    return notes


def load_donor_backbone(model: nn.Module, loaded: LoadedWeights) -> str:
    """Load only the backbone of a checkpoint of another family (same backbone name),
    e.g. a U-Net trained on the same images starting a Faster R-CNN."""
    from detseg.models import build_from_spec

    donor_spec, own_spec = loaded.spec, model_spec(model)
    if donor_spec is None:
        raise UsageError(f"--weights {loaded.source}: carries no model spec to find its backbone")
    if donor_spec.backbone != own_spec.backbone:
        raise UsageError(
            f"--weights {loaded.source}: a {donor_spec.family} over {donor_spec.backbone}; "
            f"only its backbone could start this {own_spec.family}, whose backbone is "
            f"{own_spec.backbone}")
    with torch.device("meta"):
        donor = build_from_spec(donor_spec)
    found_donor, found_own = find_backbone(donor), find_backbone(model)
    if found_donor is None or found_own is None:
        raise UsageError(f"--weights {loaded.source}: no backbone to transfer into "
                         f"{own_spec.family}")
    src, dst = found_donor[0] + ".", found_own[0] + "."
    state = {dst + k[len(src):]: v for k, v in loaded.state_dict.items()
             if k.startswith(src)}
    own = model.state_dict()
    misfit = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if misfit or not state:
        raise UsageError(f"--weights {loaded.source}: its {donor_spec.backbone} backbone "
                         f"does not fit this model ({misfit[:3]})")
    model.load_state_dict(state, strict=False)
    return (f"loaded the {donor_spec.backbone} backbone of {loaded.source} "
            f"({donor_spec.family}, {len(state)} tensors); the {own_spec.family} "
            "layers start fresh")
