"""Constant-velocity Kalman filters of boxes, in the two parametrisations the trackers use.

- ``XYAHFilter`` (ByteTrack, after DeepSORT): state ``[cx, cy, a, h, vcx, vcy, va, vh]`` with
  ``a = w / h``; the noise scales with the box height.
- ``XYSRFilter`` (SORT, OC-SORT): state ``[cx, cy, s, r, vcx, vcy, vs]`` with ``s = w * h``
  (area, pixels^2) and ``r = w / h`` held constant; fixed noise as in SORT.

Each filter object holds one box's state; the ``predict_*`` / ``update_*`` functions advance a
whole list of them at once (one stacked matrix product per frame instead of one per track).
Boxes are xyxy pixels; one frame is one time step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _constant_velocity(n_pos: int, n_vel: int) -> np.ndarray:
    """Transition matrix: the first ``n_vel`` positions advance by their velocity each step."""
    f = np.eye(n_pos + n_vel)
    f[np.arange(n_vel), n_pos + np.arange(n_vel)] = 1.0
    return f


def _diag(std: np.ndarray) -> np.ndarray:
    """``(B, n)`` standard deviations -> ``(B, n, n)`` diagonal covariances."""
    out = np.zeros(std.shape + std.shape[-1:])
    idx = np.arange(std.shape[-1])
    out[:, idx, idx] = np.square(std)
    return out


def _predict(x: np.ndarray, p: np.ndarray, f: np.ndarray,
             q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prior of states ``x`` ``(B, n)`` with covariances ``p`` ``(B, n, n)``."""
    return x @ f.T, f @ p @ f.T + q


def _update(x: np.ndarray, p: np.ndarray, z: np.ndarray,
            r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of ``(x, p)`` (``(B, n)``, ``(B, n, n)``) given measurements ``z`` ``(B, m)`` of
    the first ``m`` state entries (``H = [I 0]``) with noise covariances ``r``."""
    m = z.shape[1]
    s = p[:, :m, :m] + r
    k = np.linalg.solve(s, p[:, :m, :]).transpose(0, 2, 1)
    x = x + np.einsum("bij,bj->bi", k, z - x[:, :m])
    p = p - k @ p[:, :m, :]
    return x, (p + p.transpose(0, 2, 1)) / 2


def _stack(filters: Sequence[XYAHFilter | XYSRFilter]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([f.x for f in filters]), np.stack([f.p for f in filters])


def _unstack(filters: Sequence[XYAHFilter | XYSRFilter], x: np.ndarray, p: np.ndarray) -> None:
    for f, xi, pi in zip(filters, x, p, strict=True):
        f.x, f.p = xi, pi


class XYAHFilter:
    """ByteTrack's filter of one box: centre, aspect ratio, height and their velocities."""

    F = _constant_velocity(4, 4)
    W_POS = 1.0 / 20
    W_VEL = 1.0 / 160

    def __init__(self, box: np.ndarray) -> None:
        z = self.measure(box[None])[0]
        self.x = np.concatenate([z, np.zeros(4)])
        h = z[3]
        self.p = np.diag(np.square([
            2 * self.W_POS * h, 2 * self.W_POS * h, 1e-2, 2 * self.W_POS * h,
            10 * self.W_VEL * h, 10 * self.W_VEL * h, 1e-5, 10 * self.W_VEL * h]))

    @staticmethod
    def measure(boxes: np.ndarray) -> np.ndarray:
        """``(B, 4)`` xyxy -> ``(B, 4)`` ``[cx, cy, a, h]``."""
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w / h, h], axis=1)


def boxes_xyah(filters: Sequence[XYAHFilter]) -> np.ndarray:
    """The current estimates of ``filters`` as ``(B, 4)`` xyxy."""
    x = np.array([f.x[:4] for f in filters]).reshape(-1, 4)
    w = x[:, 2] * x[:, 3]
    return np.stack([x[:, 0] - w / 2, x[:, 1] - x[:, 3] / 2, x[:, 0] + w / 2,
                     x[:, 1] + x[:, 3] / 2], axis=1)


def predict_xyah(filters: Sequence[XYAHFilter], hold_height: np.ndarray) -> None:
    """One step ahead for every filter; where ``hold_height`` ``(B,)`` bool is set (a lost
    track) the height velocity is zeroed first."""
    if not filters:
        return
    x, p = _stack(filters)
    x[np.asarray(hold_height, dtype=bool), 7] = 0.0
    h, one = x[:, 3], np.ones(len(x))
    wp, wv = XYAHFilter.W_POS * h, XYAHFilter.W_VEL * h
    q = _diag(np.stack([wp, wp, 1e-2 * one, wp, wv, wv, 1e-5 * one, wv], axis=1))
    _unstack(filters, *_predict(x, p, XYAHFilter.F, q))


def update_xyah(filters: Sequence[XYAHFilter], boxes: np.ndarray) -> None:
    """Correct ``filters[i]`` with the observed ``boxes[i]`` (``(B, 4)`` xyxy)."""
    if not filters:
        return
    x, p = _stack(filters)
    wp = XYAHFilter.W_POS * x[:, 3]
    r = _diag(np.stack([wp, wp, np.full(len(x), 1e-1), wp], axis=1))
    _unstack(filters, *_update(x, p, XYAHFilter.measure(boxes), r))


class XYSRFilter:
    """SORT's filter of one box: centre, area and aspect ratio; velocities of centre and area."""

    F = _constant_velocity(4, 3)
    R = np.diag([1.0, 1.0, 10.0, 10.0])
    Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])
    P0 = np.diag([10.0, 10.0, 10.0, 10.0, 10000.0, 10000.0, 10000.0])

    def __init__(self, box: np.ndarray) -> None:
        self.x = np.concatenate([self.measure(box[None])[0], np.zeros(3)])
        self.p = self.P0.copy()

    @staticmethod
    def measure(boxes: np.ndarray) -> np.ndarray:
        """``(B, 4)`` xyxy -> ``(B, 4)`` ``[cx, cy, s, r]``."""
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w * h, w / (h + 1e-6)],
                        axis=1)

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """A copy of the state and covariance (OC-SORT freezes it when a track is lost)."""
        return self.x.copy(), self.p.copy()

    def restore(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        """Go back to a ``state()``."""
        self.x, self.p = state[0].copy(), state[1].copy()



def boxes_xysr(filters: Sequence[XYSRFilter]) -> np.ndarray:
    """The current estimates of ``filters`` as ``(B, 4)`` xyxy (NaN rows where area times
    ratio is not positive)."""
    x = np.array([f.x[:4] for f in filters]).reshape(-1, 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.sqrt(x[:, 2] * x[:, 3])
        h = np.where(w > 0, x[:, 2] / w, np.nan)
    return np.stack([x[:, 0] - w / 2, x[:, 1] - h / 2, x[:, 0] + w / 2, x[:, 1] + h / 2],
                    axis=1)


def predict_xysr(filters: Sequence[XYSRFilter]) -> None:
    """One step ahead for every filter; an area velocity that would make the area
    non-positive is zeroed first."""
    if not filters:
        return
    x, p = _stack(filters)
    x[x[:, 2] + x[:, 6] <= 0, 6] = 0.0
    _unstack(filters, *_predict(x, p, XYSRFilter.F, XYSRFilter.Q))


def update_xysr(filters: Sequence[XYSRFilter], z: np.ndarray) -> None:
    """Correct ``filters[i]`` with the measurement ``z[i]`` (``(B, 4)`` ``[cx, cy, s, r]``,
    see ``XYSRFilter.measure``)."""
    if not filters:
        return
    x, p = _stack(filters)
    _unstack(filters, *_update(x, p, np.asarray(z, dtype=np.float64).reshape(-1, 4),
                               XYSRFilter.R))
