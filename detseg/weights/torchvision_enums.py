"""torchvision weight enums (``ResNet50_Weights.IMAGENET1K_V2``): lookup, files and tensors."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

from torch import Tensor

from detseg.download import ProgressCallback
from detseg.errors import WeightsError
from detseg.weights.cache import fetch_file
from detseg.weights.checkpoint import read_weights_file


def torchvision_enum(name: str) -> Any:
    """The torchvision weight enum member ``name`` names.

    ``name`` is ``Enum.MEMBER`` (``ResNet18_Weights.IMAGENET1K_V1``, ``ResNet18_Weights.DEFAULT``)
    or a bare enum class name (``ResNet18_Weights``), which means its DEFAULT member.

    Raises:
        WeightsError: no such enum or member (the message lists the members that exist).
    """
    from torchvision.models import get_weight

    enum_name, _, member = name.partition(".")
    member = member or "DEFAULT"
    try:
        return get_weight(f"{enum_name}.{member}")
    except KeyError:
        members = [m.name for m in enum_members(enum_name)]
        raise WeightsError(
            f"{enum_name} has no weights {member!r}; it has {', '.join(members)} and DEFAULT"
        ) from None
    except ValueError:
        raise WeightsError(f"torchvision has no weight enum {enum_name!r}") from None


def enum_members(enum_name: str) -> list[Any]:
    """Every member of torchvision weight enum class ``enum_name``, in definition order.

    Raises:
        WeightsError: torchvision has no such enum.
    """
    from torchvision.models import get_weight

    try:
        enum_class: type[Enum] = type(get_weight(f"{enum_name}.DEFAULT"))
        return list(enum_class)
    except (KeyError, ValueError):
        raise WeightsError(f"torchvision has no weight enum {enum_name!r}") from None


def enum_name(member: Any) -> str:
    """``Enum.MEMBER`` of an enum member (DEFAULT resolved to the member it stands for)."""
    return f"{type(member).__name__}.{member.name}"


def torchvision_file(member: Any, progress: ProgressCallback | None = None) -> Path:
    """The local file of a torchvision weight enum member (cached, or downloaded and verified)."""
    return fetch_file(member.url, progress=progress)


def load_torchvision_weights(
    member: Any, progress: ProgressCallback | None = None
) -> dict[str, Tensor]:
    """The state dict of a torchvision weight enum member (or its ``Enum.MEMBER`` name).

    Cached under ``$DETSEG_HOME/weights`` (torch's hub cache is used when it has the file),
    verified by the hash prefix in the file name, read with ``torch.load(weights_only=True)``.
    """
    if isinstance(member, str):
        member = torchvision_enum(member)
    return read_weights_file(torchvision_file(member, progress)).state_dict
