"""The tracker registry and the one way to build a tracker by name.

``TRACKERS[name]`` is the tracker class (``TRACKERS.get(name)`` its registry entry, whose
``meta["summary"]`` is a one-line description); ``TRACKERS[name].params`` is the dataclass of
its parameters (fields with defaults and ``metadata["help"]``, ``["min"]``, ``["max"]``).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from detseg.errors import UsageError
from detseg.registry import Registry
from detseg.track.base import Tracker


class TrackerRegistry(Registry[type[Tracker]]):
    """A ``Registry`` of tracker classes that also answers ``TRACKERS[name]`` with the class."""

    def __getitem__(self, name: str) -> type[Tracker]:
        return self.get(name).builder


TRACKERS = TrackerRegistry("tracker")


def build_tracker(name: str, frame_rate: float = 30.0, **overrides: Any) -> Tracker:
    """A new tracker ``name`` for a video of ``frame_rate`` frames per second, its parameters
    at their defaults except ``overrides``.

    Raises ``UsageError`` (``RegistryError`` for an unknown name) naming the unknown parameter
    or the value out of range.
    """
    cls = TRACKERS[name]
    known = [f.name for f in dataclasses.fields(cls.params)]
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"unknown {name} parameter {key!r}{hint} "
                             f"(known: {', '.join(known)})")
    return cls(cls.params(**overrides), frame_rate=frame_rate)
