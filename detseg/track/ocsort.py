"""OC-SORT (Cao et al., "Observation-Centric SORT: Rethinking SORT for Robust Multi-Object
Tracking", CVPR 2023).

SORT (a Kalman filter on centre, area and aspect ratio: ``XYSRFilter``; IoU and the Hungarian
algorithm) made to trust observations over the filter's estimates when objects are occluded:

- observation-centric momentum (OCM): association maximises ``IoU + inertia x score x
  (pi/2 - angle) / pi`` where ``angle`` is between the track's direction of motion (from its
  observation ``delta_t`` frames back to its last one) and the direction from that same
  observation to the candidate detection; a pair is kept if its IoU is ``>= iou_threshold``;
- observation-centric recovery (OCR): tracks left unmatched get a second chance against the
  detections left, by IoU with their LAST OBSERVATION instead of their prediction;
- observation-centric re-update (ORU): when a lost track is found again, its filter goes back
  to the state frozen when it was lost and is re-updated along a virtual trajectory that
  interpolates (centre, width, height) linearly from the last observation to the new one,
  which removes the error accumulated while it ran on predictions alone.

Only detections scoring ``>= det_thresh`` are used, unless ``use_byte`` (the authors' option,
off by default as in the paper's main results): then the detections scoring between
``low_thresh`` and ``det_thresh`` are offered to the tracks still unmatched after the first
association, by IoU with their prediction, before OCR (they never start a track). A track is
reported in a frame when it was matched in it and has ``min_hits`` matches in a row (every
matched track during the first ``min_hits`` frames), with the detection's box; it is dropped
after ``max_age`` frames (of a 30 fps video, scaled by the frame rate) without a match.
Matching only pairs a track with detections of its class unless ``class_agnostic``.
Differences from the authors' code: ids are handed out at the first report (so they are
consecutive), a new track's first box counts as its last observation (OCR and ORU apply to it),
and ``max_age`` scales with the frame rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detseg.errors import UsageError
from detseg.track.base import Frame, Tracker, check_params, lost_frames, param
from detseg.track.kalman import XYSRFilter, boxes_xysr, predict_xysr, update_xysr
from detseg.track.matching import box_iou, match_by_class, max_value_pairs
from detseg.track.registry import TRACKERS


@dataclass(frozen=True)
class OCSortParams:
    """OC-SORT's parameters (defaults: the paper's, with roboflow ``trackers``' det_thresh)."""

    det_thresh: float = param(
        0.6, "detections scoring at least this are tracked; the others are ignored", 0.0, 1.0)
    max_age: int = param(
        30, "frames (of a 30 fps video, scaled by the frame rate) a track survives unmatched",
        0)
    min_hits: int = param(
        3, "matches in a row before a track is reported (after a miss too)", 1)
    iou_threshold: float = param(
        0.3, "smallest IoU for a track and a detection to be matched", 0.0, 1.0)
    delta_t: int = param(
        3, "frames back to the observation the direction of motion is measured from", 1)
    inertia: float = param(
        0.2, "weight of the direction-consistency term (OCM) in the association", 0.0)
    use_byte: bool = param(
        False, "also match low-score detections (above low_thresh, below det_thresh) to the "
        "tracks left unmatched, by IoU with their prediction (the authors' BYTE option)")
    low_thresh: float = param(
        0.1, "with use_byte: detections scoring above this enter the low-score association",
        0.0, 1.0)
    class_agnostic: bool = param(
        False, "match detections to tracks of any class (a track keeps its first class)")

    def __post_init__(self) -> None:
        check_params(self)
        if self.low_thresh > self.det_thresh:
            raise UsageError(f"tracker parameter low_thresh ({self.low_thresh}) must not exceed "
                             f"det_thresh ({self.det_thresh})")


def _direction(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Unit ``(dy, dx)`` vectors from the centres of boxes ``src`` ``(..., 4)`` to those of
    ``dst`` ``(..., 4)`` (broadcast); zero where the centres coincide."""
    dx = (dst[..., 0] + dst[..., 2]) / 2 - (src[..., 0] + src[..., 2]) / 2
    dy = (dst[..., 1] + dst[..., 3]) / 2 - (src[..., 1] + src[..., 3]) / 2
    norm = np.sqrt(dx ** 2 + dy ** 2) + 1e-6
    return np.stack([dy / norm, dx / norm], axis=-1)


class _Track:
    """One OC-SORT track: filter, observations, motion direction, counters."""

    def __init__(self, box: np.ndarray, cls: int, delta_t: int) -> None:
        self.kf = XYSRFilter(box)
        self.cls = cls
        self.id = 0
        self.delta_t = delta_t
        self.age = 0
        self.since_update = 0
        self.streak = 0
        self.last_obs = box
        self.observations: dict[int, np.ndarray] = {}
        self.velocity: np.ndarray | None = None
        self.frozen: tuple[np.ndarray, np.ndarray] | None = None
        self.row = -1

    def step(self) -> None:
        """Start a frame, before the filters predict: if the last frame went unmatched, keep
        the filter as it stood then (for ORU); count the frame."""
        if self.since_update == 1 and self.frozen is None:
            self.frozen = self.kf.state()
        self.age += 1
        if self.since_update > 0:
            self.streak = 0
        self.since_update += 1

    def previous_obs(self) -> np.ndarray:
        """The observation ``delta_t`` frames back (the nearest one after it in the window,
        else the last observation)."""
        for dt in range(self.delta_t, 0, -1):
            if self.age - dt in self.observations:
                return self.observations[self.age - dt]
        return self.last_obs

    def observe(self, box: np.ndarray, row: int) -> None:
        """Book the observed ``box`` (xyxy, detection ``row``): direction of motion, ORU through
        the gap if the track was lost, counters. The filter's correction with ``box`` itself
        follows, with the other tracks' (``update_xysr``)."""
        if self.observations:
            src = self.previous_obs()
            dx = float(box[0] + box[2] - src[0] - src[2]) / 2
            dy = float(box[1] + box[3] - src[1] - src[3]) / 2
            norm = math.hypot(dx, dy) + 1e-6
            self.velocity = np.array([dy / norm, dx / norm])
        if self.frozen is not None:
            self._reupdate(box)
        self.since_update = 0
        self.streak += 1
        self.last_obs = box
        self.row = row
        self.observations[self.age] = box
        for age in [a for a in self.observations if a < self.age - self.delta_t]:
            del self.observations[age]

    def _reupdate(self, box: np.ndarray) -> None:
        """ORU: from the frozen state, update along the line from the last observation to
        ``box`` one frame at a time (the last virtual observation is ``box`` itself; the real
        one is applied after it, as in the authors' code)."""
        assert self.frozen is not None
        self.kf.restore(self.frozen)
        self.frozen = None
        gap = self.since_update
        (x1, y1), (x2, y2) = _centre(self.last_obs), _centre(box)
        (w1, h1), (w2, h2) = _size(self.last_obs), _size(box)
        for i in range(1, gap + 1):
            f = i / gap
            x, y = x1 + f * (x2 - x1), y1 + f * (y2 - y1)
            w, h = w1 + f * (w2 - w1), h1 + f * (h2 - h1)
            update_xysr([self.kf], np.array([[x, y, w * h, w / h]]))
            if i < gap:
                predict_xysr([self.kf])


def _centre(box: np.ndarray) -> tuple[float, float]:
    return float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2


def _size(box: np.ndarray) -> tuple[float, float]:
    return float(box[2] - box[0]), float(box[3] - box[1])


@TRACKERS.register("ocsort", summary="OC-SORT: SORT with observation-centric re-update, "
                   "momentum and recovery (Cao et al. 2023)")
class OCSort(Tracker):
    """OC-SORT over a Kalman filter and IoU; see the module docstring."""

    params = OCSortParams
    p: OCSortParams

    def __init__(self, params: OCSortParams | None = None, frame_rate: float = 30.0) -> None:
        super().__init__(params, frame_rate)
        self.max_age = lost_frames(self.p.max_age, self.frame_rate)
        self.tracks: list[_Track] = []

    def _clear(self) -> None:
        self.tracks = []

    def _step(self, frame: Frame) -> tuple[list[int], list[int], list[int]]:
        p = self.p
        rows = np.flatnonzero(frame.scores >= p.det_thresh)
        boxes, scores = frame.boxes[rows], frame.scores[rows]
        classes = frame.classes[rows]
        for track in self.tracks:
            track.step()
        predict_xysr([t.kf for t in self.tracks])
        predicted = boxes_xysr([t.kf for t in self.tracks])
        finite = np.isfinite(predicted).all(axis=1)
        self.tracks = [t for t, ok in zip(self.tracks, finite, strict=True) if ok]
        predicted = predicted[finite]
        track_cls = np.array([t.cls for t in self.tracks], dtype=np.int64)

        def first(r: np.ndarray, c: np.ndarray) -> list[tuple[int, int]]:
            iou = box_iou(predicted[r], boxes[c])
            value = iou + p.inertia * self._momentum(r, boxes[c]) * scores[c][None, :]
            return max_value_pairs(value, iou >= p.iou_threshold)

        matches, left_t, left_d = match_by_class(track_cls, classes, p.class_agnostic, first)
        matched = [(self.tracks[ti], int(rows[dj])) for ti, dj in matches]

        if p.use_byte and left_t:  # low-score detections, by IoU with the prediction
            low = np.flatnonzero((frame.scores > p.low_thresh) & (frame.scores < p.det_thresh))
            waiting = predicted[left_t]

            def byte(r: np.ndarray, c: np.ndarray) -> list[tuple[int, int]]:
                iou = box_iou(waiting[r], frame.boxes[low[c]])
                return max_value_pairs(iou, iou >= p.iou_threshold)

            matches, rest_t, _ = match_by_class(track_cls[left_t], frame.classes[low],
                                                p.class_agnostic, byte)
            matched += [(self.tracks[left_t[ti]], int(low[dj])) for ti, dj in matches]
            left_t = [left_t[i] for i in rest_t]

        if left_t and left_d:  # OCR: the last observations of the tracks left
            last = np.array([self.tracks[i].last_obs for i in left_t])
            left_boxes = boxes[left_d]

            def recover(r: np.ndarray, c: np.ndarray) -> list[tuple[int, int]]:
                iou = box_iou(last[r], left_boxes[c])
                return max_value_pairs(iou, iou >= p.iou_threshold)

            matches, rest_t, rest_d = match_by_class(track_cls[left_t], classes[left_d],
                                                     p.class_agnostic, recover)
            matched += [(self.tracks[left_t[ti]], int(rows[left_d[dj]])) for ti, dj in matches]
            left_d = [left_d[j] for j in rest_d]
        for track, row in matched:
            track.observe(frame.boxes[row], row)
        update_xysr([t.kf for t, _ in matched],
                    XYSRFilter.measure(frame.boxes[[r for _, r in matched]].reshape(-1, 4)))

        for d in left_d:
            track = _Track(boxes[d], int(classes[d]), p.delta_t)
            track.row = int(rows[d])
            self.tracks.append(track)
        self.tracks = [t for t in self.tracks if t.since_update <= self.max_age]

        shown = [t for t in self.tracks if t.since_update == 0
                 and (t.streak >= p.min_hits or self.frame <= p.min_hits)]
        for t in shown:
            if not t.id:
                t.id = self._new_id()
        return [t.id for t in shown], [t.row for t in shown], [t.cls for t in shown]

    def _momentum(self, tracks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """OCM ``(T, D)`` for the tracks at indices ``tracks`` and detections ``boxes``
        ``(D, 4)``: ``(pi/2 - angle) / pi`` between each track's direction of motion and the
        direction from its observation ``delta_t`` back to each detection; 0 for a track
        without a direction yet."""
        chosen = [self.tracks[i] for i in tracks]
        velocity = np.array([t.velocity if t.velocity is not None else (0.0, 0.0)
                             for t in chosen]).reshape(-1, 2)
        reference = np.array([t.previous_obs() for t in chosen]).reshape(-1, 4)
        towards = _direction(reference[:, None, :], boxes[None, :, :])
        cos = np.clip((towards * velocity[:, None, :]).sum(axis=-1), -1.0, 1.0)
        known = np.array([t.velocity is not None for t in chosen], dtype=bool)[:, None]
        return np.where(known, (np.pi / 2 - np.arccos(cos)) / np.pi, 0.0)
