"""Constant-velocity Kalman filters of one box, in the two parametrisations the trackers use.

- ``XYAHFilter`` (ByteTrack, after DeepSORT): state ``[cx, cy, a, h, vcx, vcy, va, vh]`` with
  ``a = w / h``; the noise scales with the box height.
- ``XYSRFilter`` (SORT, OC-SORT): state ``[cx, cy, s, r, vcx, vcy, vs]`` with ``s = w * h``
  (area, pixels^2) and ``r = w / h`` held constant; fixed noise as in SORT.

Boxes in and out are ``(4,)`` xyxy pixels; one frame is one time step.
"""

from __future__ import annotations

import numpy as np


def _predict(x: np.ndarray, p: np.ndarray, f: np.ndarray,
             q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return f @ x, f @ p @ f.T + q


def _update(x: np.ndarray, p: np.ndarray, z: np.ndarray,
            r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of ``(x, p)`` given a measurement ``z`` of the first ``len(z)`` state entries
    with noise covariance ``r`` (so ``H = [I 0]``)."""
    m = len(z)
    s = p[:m, :m] + r
    k = np.linalg.solve(s, p[:m, :]).T
    p = p - k @ p[:m, :]
    return x + k @ (z - x[:m]), (p + p.T) / 2


def _constant_velocity(n_pos: int, n_vel: int) -> np.ndarray:
    """Transition matrix: the first ``n_vel`` positions advance by their velocity each step."""
    f = np.eye(n_pos + n_vel)
    f[np.arange(n_vel), n_pos + np.arange(n_vel)] = 1.0
    return f


class XYAHFilter:
    """ByteTrack's filter: centre, aspect ratio, height and their velocities."""

    _F = _constant_velocity(4, 4)
    _W_POS = 1.0 / 20
    _W_VEL = 1.0 / 160

    def __init__(self, box: np.ndarray) -> None:
        z = self._measure(box)
        self.mean = np.concatenate([z, np.zeros(4)])
        h = z[3]
        std = [2 * self._W_POS * h, 2 * self._W_POS * h, 1e-2, 2 * self._W_POS * h,
               10 * self._W_VEL * h, 10 * self._W_VEL * h, 1e-5, 10 * self._W_VEL * h]
        self.cov = np.diag(np.square(std))

    @staticmethod
    def _measure(box: np.ndarray) -> np.ndarray:
        w, h = box[2] - box[0], box[3] - box[1]
        return np.array([box[0] + w / 2, box[1] + h / 2, w / h, h])

    def predict(self, hold_height: bool = False) -> None:
        """One step ahead; ``hold_height`` zeroes the height velocity first (a lost track)."""
        if hold_height:
            self.mean[7] = 0.0
        h = self.mean[3]
        std = [self._W_POS * h, self._W_POS * h, 1e-2, self._W_POS * h,
               self._W_VEL * h, self._W_VEL * h, 1e-5, self._W_VEL * h]
        self.mean, self.cov = _predict(self.mean, self.cov, self._F, np.diag(np.square(std)))

    def update(self, box: np.ndarray) -> None:
        """Correct with an observed ``box`` (xyxy)."""
        h = self.mean[3]
        r = np.diag(np.square([self._W_POS * h, self._W_POS * h, 1e-1, self._W_POS * h]))
        self.mean, self.cov = _update(self.mean, self.cov, self._measure(box), r)

    def box(self) -> np.ndarray:
        """The current estimate as ``(4,)`` xyxy."""
        cx, cy, a, h = self.mean[:4]
        w = a * h
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class XYSRFilter:
    """SORT's filter: centre, area and aspect ratio; velocities of centre and area."""

    _F = _constant_velocity(4, 3)
    _R = np.diag([1.0, 1.0, 10.0, 10.0])
    _Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])
    _P0 = np.diag([10.0, 10.0, 10.0, 10.0, 10000.0, 10000.0, 10000.0])

    def __init__(self, box: np.ndarray) -> None:
        self.x = np.concatenate([self.measure(box), np.zeros(3)])
        self.p = self._P0.copy()

    @staticmethod
    def measure(box: np.ndarray) -> np.ndarray:
        """``(4,)`` xyxy -> ``[cx, cy, s, r]``."""
        w, h = box[2] - box[0], box[3] - box[1]
        return np.array([box[0] + w / 2, box[1] + h / 2, w * h, w / (h + 1e-6)])

    def predict(self) -> None:
        """One step ahead; an area velocity that would make the area non-positive is zeroed."""
        if self.x[2] + self.x[6] <= 0:
            self.x[6] = 0.0
        self.x, self.p = _predict(self.x, self.p, self._F, self._Q)

    def update(self, z: np.ndarray) -> None:
        """Correct with a measurement ``[cx, cy, s, r]`` (see ``measure``)."""
        self.x, self.p = _update(self.x, self.p, z, self._R)

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """A copy of the state and covariance (OC-SORT freezes it when a track is lost)."""
        return self.x.copy(), self.p.copy()

    def restore(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        """Go back to a ``state()``."""
        self.x, self.p = state[0].copy(), state[1].copy()

    def box(self) -> np.ndarray:
        """The current estimate as ``(4,)`` xyxy (NaN where area times ratio is negative)."""
        cx, cy, s, r = self.x[:4]
        with np.errstate(invalid="ignore"):
            w = np.sqrt(s * r)
        h = s / w if w > 0 else np.nan
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
