"""ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection
Box", ECCV 2022).

Per frame, after a Kalman prediction of every track (``XYAHFilter``):

1. confirmed tracks (tracked and lost) take the high-score detections (``>=
   track_high_thresh``), cost ``1 - IoU x score`` (``1 - IoU`` without ``fuse_score``), no pair
   above ``match_thresh``; a lost track matched here is recovered with its id;
2. the tracked ones left take the low-score detections (``track_low_thresh < score <
   track_high_thresh``), cost ``1 - IoU`` up to ``low_match_thresh``: the "BYTE" step that keeps
   an occluded object whose score dropped; tracked ones still left become lost;
3. unconfirmed tracks take the high-score detections left, up to ``new_match_thresh``; an
   unconfirmed track that is not matched is dropped, one matched ``min_hits`` frames in a row
   is confirmed and gets the next id;
4. a high-score detection still left that scores ``>= new_track_thresh`` starts a track
   (confirmed at once in the first frame, as in the paper);
5. a track lost for more than ``track_buffer`` frames (of a 30 fps video, scaled by the frame
   rate) is dropped for good.

Matching only pairs a track with detections of its class unless ``class_agnostic``. Reported:
the confirmed tracks matched in the frame, with the detection's box and score. Differences from
the authors' code: ids are handed out at confirmation (so they are consecutive), unconfirmed
tracks are predicted too (so ``min_hits > 2`` follows moving objects), and the final
duplicate-track removal heuristic of their code is not applied.

The filter's velocity is stiff and the costs are the paper's (tuned on pedestrians): for
objects that turn or bounce, looser costs keep more ids (shapes clips: ``match_thresh 0.9
low_match_thresh 0.9`` took ground-truth-derived detections from IDF1 0.85 to 0.95).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detseg.errors import UsageError
from detseg.track.base import Frame, Tracker, check_params, lost_frames, param
from detseg.track.kalman import XYAHFilter, boxes_xyah, predict_xyah, update_xyah
from detseg.track.matching import box_iou, match_by_class, min_cost_pairs
from detseg.track.registry import TRACKERS


@dataclass(frozen=True)
class ByteTrackParams:
    """ByteTrack's parameters (defaults: roboflow ``trackers``' thresholds, the paper's costs)."""

    track_high_thresh: float = param(
        0.6, "detections scoring at least this enter the first association", 0.0, 1.0)
    track_low_thresh: float = param(
        0.1, "detections scoring above this and below track_high_thresh enter the second "
        "association", 0.0, 1.0)
    new_track_thresh: float = param(
        0.7, "an unmatched detection scoring at least this starts a new track", 0.0, 1.0)
    match_thresh: float = param(
        0.8, "first association: largest accepted cost 1 - IoU x score", 0.0, 1.0)
    low_match_thresh: float = param(
        0.5, "second association (low-score detections): largest accepted cost 1 - IoU",
        0.0, 1.0)
    new_match_thresh: float = param(
        0.7, "unconfirmed tracks: largest accepted cost 1 - IoU x score", 0.0, 1.0)
    track_buffer: int = param(
        30, "frames (of a 30 fps video, scaled by the frame rate) a lost track can be found "
        "again", 0)
    min_hits: int = param(
        2, "frames in a row a new track must be matched to be confirmed and get an id", 1)
    fuse_score: bool = param(
        True, "weight IoU by the detection score when matching high-score detections")
    class_agnostic: bool = param(
        False, "match detections to tracks of any class (a track keeps its first class)")

    def __post_init__(self) -> None:
        check_params(self)
        if self.track_low_thresh > self.track_high_thresh:
            raise UsageError(f"tracker parameter track_low_thresh ({self.track_low_thresh}) "
                             f"must not exceed track_high_thresh ({self.track_high_thresh})")


class _Track:
    """One ByteTrack track: its filter, class, id (0 until confirmed) and bookkeeping."""

    def __init__(self, box: np.ndarray, cls: int, frame: int, row: int) -> None:
        self.kf = XYAHFilter(box)
        self.cls = cls
        self.id = 0
        self.hits = 1
        self.lost = False
        self.last_seen = frame
        self.row = row


@TRACKERS.register("bytetrack", summary="ByteTrack: two-stage IoU association that also "
                   "uses low-score detections (Zhang et al. 2022)")
class ByteTrack(Tracker):
    """ByteTrack over a Kalman filter and IoU; see the module docstring."""

    params = ByteTrackParams
    p: ByteTrackParams

    def __init__(self, params: ByteTrackParams | None = None, frame_rate: float = 30.0) -> None:
        super().__init__(params, frame_rate)
        self.max_lost = lost_frames(self.p.track_buffer, self.frame_rate)
        self.tracks: list[_Track] = []

    def _clear(self) -> None:
        self.tracks = []

    def _step(self, frame: Frame) -> tuple[list[int], list[int], list[int]]:
        p = self.p
        high = frame.scores >= p.track_high_thresh
        hi_rows = np.flatnonzero(high)
        lo_rows = np.flatnonzero(~high & (frame.scores > p.track_low_thresh))
        predict_xyah([t.kf for t in self.tracks], np.array([t.lost for t in self.tracks], bool))
        matched: list[_Track] = []
        confirmed = [t for t in self.tracks if t.id]
        unconfirmed = [t for t in self.tracks if not t.id]

        matches, left, left_hi = self._associate(confirmed, frame, hi_rows, p.match_thresh,
                                                 p.fuse_score)
        for ti, dj in matches:
            matched.append(self._hit(confirmed[ti], int(hi_rows[dj])))
        tracked = [confirmed[i] for i in left if not confirmed[i].lost]
        matches, left, _ = self._associate(tracked, frame, lo_rows, p.low_match_thresh, False)
        for ti, dj in matches:
            matched.append(self._hit(tracked[ti], int(lo_rows[dj])))
        for i in left:
            tracked[i].lost = True

        rows = hi_rows[left_hi]
        matches, left, left_new = self._associate(unconfirmed, frame, rows, p.new_match_thresh,
                                                  p.fuse_score)
        for ti, dj in matches:
            matched.append(self._hit(unconfirmed[ti], int(rows[dj])))
        update_xyah([t.kf for t in matched], frame.boxes[[t.row for t in matched]])
        dropped = {id(unconfirmed[i]) for i in left}
        self.tracks = [t for t in self.tracks if id(t) not in dropped
                       and self.frame - t.last_seen <= self.max_lost]
        for dj in left_new:
            row = int(rows[dj])
            if frame.scores[row] >= p.new_track_thresh:
                track = _Track(frame.boxes[row], int(frame.classes[row]), self.frame, row)
                if self.frame == 1 or p.min_hits <= 1:
                    track.id = self._new_id()
                self.tracks.append(track)

        shown = [t for t in self.tracks if t.id and t.last_seen == self.frame]
        return [t.id for t in shown], [t.row for t in shown], [t.cls for t in shown]

    def _hit(self, track: _Track, row: int) -> _Track:
        """Book ``track`` as matched to detection ``row`` in this frame (its filter is corrected
        with the others at the end of the association); returns it."""
        track.lost = False
        track.last_seen = self.frame
        track.row = row
        track.hits += 1
        if not track.id and track.hits >= self.p.min_hits:
            track.id = self._new_id()
        return track

    def _associate(self, tracks: list[_Track], frame: Frame, rows: np.ndarray, max_cost: float,
                   fuse: bool) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Match ``tracks`` to the detections ``rows`` of ``frame``: ``(matches as (track,
        position in rows), unmatched tracks, unmatched positions)``."""
        predicted = boxes_xyah([t.kf for t in tracks])
        boxes, scores = frame.boxes[rows], frame.scores[rows]

        def pairs(r: np.ndarray, c: np.ndarray) -> list[tuple[int, int]]:
            sim = box_iou(predicted[r], boxes[c])
            if fuse:
                sim *= scores[c][None, :]
            return min_cost_pairs(1.0 - sim, max_cost)

        return match_by_class(np.array([t.cls for t in tracks], dtype=np.int64),
                              frame.classes[rows], self.p.class_agnostic, pairs)
