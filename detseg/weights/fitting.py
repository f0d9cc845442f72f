"""Loading a state dict into a model: strict unless a transfer asks otherwise, and every
mismatch named (tensor names and both shapes, or the unmatched keys) instead of torch's
``RuntimeError``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from detseg.errors import WeightsError

SHOWN = 3  # names quoted in a message before "and N more"


def load_state_dict_checked(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    source: str,
    *,
    reinit_mismatched: bool = False,
) -> list[str]:
    """Load ``state_dict`` into ``model``; return the tensors left at their fresh initialisation.

    Args:
        model: the freshly built model.
        state_dict: the tensors to load (their keys must be exactly the model's).
        source: where the tensors came from (a file, an enum name), for messages.
        reinit_mismatched: a transfer to another class count: tensors whose shape differs
            from the model's (the class-dependent heads) keep the model's initialisation and
            their names are returned, sorted. Otherwise such tensors are an error.

    Raises:
        WeightsError: keys missing from ``state_dict`` or unknown to the model, or (without
            ``reinit_mismatched``) tensors of another shape; the message names them and
            ``source``.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise WeightsError(_key_message(model, state_dict, source, missing, unexpected))
    mismatched = sorted(k for k, v in state_dict.items() if v.shape != own[k].shape)
    if mismatched and not reinit_mismatched:
        shapes = [
            f"{key} (file {_shape(state_dict[key])}, model {_shape(own[key])})"
            for key in mismatched
        ]
        raise WeightsError(
            f"{source} does not fit {_describe(model)}: {len(mismatched)} tensors have another "
            f"shape: {_some(shapes)}; to start a model with another class count from these "
            f"weights, ask for it (num_classes) and the class-dependent layers are "
            f"re-initialised"
        )
    model.load_state_dict(
        {k: v for k, v in state_dict.items() if k not in mismatched}, strict=not mismatched
    )
    return mismatched


def _key_message(model: nn.Module, state_dict: Mapping[str, Tensor], source: str,
                 missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's tensors are not in it ({_some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} of its tensors are not in the model "
                     f"({_some(unexpected)})")
    message = f"{source} does not fit {_describe(model)}: {'; '.join(parts)}"
    heads = {key.split(".", 1)[0] for key in state_dict}
    if len(heads) == 1 and not heads & {key.split(".", 1)[0] for key in model.state_dict()}:
        message += (f" (every key of the file starts with {next(iter(heads)) + '.'!r}, which "
                    f"the model's keys do not)")
    return message + "; these weights are for another network"


def _describe(model: nn.Module) -> str:
    """``the faster_rcnn over tiny`` for detseg models, else the module's class name."""
    spec = getattr(model, "spec", None)
    family = getattr(spec, "family", None)
    if family is None:
        return f"the {type(model).__name__}"
    backbone = getattr(spec, "backbone", None)
    return f"the {family}" + (f" over {backbone}" if backbone else "")


def _shape(tensor: Tensor) -> str:
    return "x".join(str(d) for d in tensor.shape) or "scalar"


def _some(names: Sequence[str]) -> str:
    """The first ``SHOWN`` names, then how many more there are."""
    shown = ", ".join(names[:SHOWN])
    more = len(names) - SHOWN
    return f"{shown} and {more} more" if more > 0 else shown
