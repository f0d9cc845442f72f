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
"""

from __future__ import annotations

from detseg.track import bytetrack, ocsort
from detseg.track.base import TrackedObjects, Tracker
from detseg.track.registry import TRACKERS, build_tracker

__all__ = ["TRACKERS", "TrackedObjects", "Tracker", "build_tracker", "bytetrack", "ocsort"]
