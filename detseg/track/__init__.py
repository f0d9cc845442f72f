"""Multi-object tracking: identities across video frames from per-frame detections.

::

    from detseg.track import TRACKERS, build_tracker

    tracker = build_tracker("bytetrack", frame_rate=30, track_high_thresh=0.5)
    for boxes, scores, classes in frames:            # (N, 4) xyxy px, (N,), (N,) int
        tracked = tracker.update(boxes, scores, classes)
        tracked.ids, tracked.boxes_xyxy, tracked.det_index   # confirmed tracks in this frame

- ``TRACKERS``: name -> tracker class (``"bytetrack"``, ``"ocsort"``);
  ``TRACKERS[name].params`` is its parameter dataclass.
- ``Tracker`` / ``TrackedObjects``: the contract (``base``); ``kalman``, ``matching``: the
  shared pieces; ``bytetrack``, ``ocsort``: the trackers.

Every module of this package is imported here, so a tracker module registers itself
(``@TRACKERS.register``) and adding a tracker is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil

from detseg.track.base import TrackedObjects, Tracker
from detseg.track.registry import TRACKERS, build_tracker

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TRACKERS", "TrackedObjects", "Tracker", "build_tracker"]
