"""A small generic registry: name -> builder plus metadata, with glob listing.

Used by every registry (backbones, families, models, dataset formats, explain methods)::

    BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")

    @BACKBONES.register("tiny", pretrained=False)
    def tiny(pretrained: bool = False) -> nn.Module: ...
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from detseg.errors import RegistryError

#: what a registry holds: a builder function, or an object describing one (a ``Family``)
T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered builder and the metadata it was registered with."""

    name: str
    builder: T
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps names to builders. ``kind`` names what is registered, for error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``builder`` under ``name`` with free-form metadata."""

        def decorator(builder: T) -> T:
            self.add(name, builder, **meta)
            return builder

        return decorator

    def add(self, name: str, builder: T, **meta: Any) -> None:
        """Register ``builder`` under ``name``; a name can be registered once."""
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, builder, dict(meta))

    def get(self, name: str) -> Entry[T]:
        """The entry for ``name``; an unknown name raises with close matches suggested."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}{hint} (list them with `detseg {self.kind}s`)"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
