"""Stable object poses over time: a Kalman or a One-Euro filter on SE(3), per object track.

Two filters, chosen by ``PoseFilterConfig.kind`` (``filter.kind`` in the node):

- ``kalman`` (the default), :class:`SE3KalmanFilter`: a constant-velocity Kalman filter on SE(3).
  Its state is the translation and its velocity (camera frame, metres, m/s) and the rotation with
  its angular velocity, the rotation kept as a nominal ``R_m2c`` and an error in the tangent space
  about it (a rotation vector in the camera frame: ``R = exp(dtheta) R_nominal``, the convention of
  ROS's ``PoseWithCovariance``), which is folded into the nominal after every update. Predict and
  update use scipy's ``Rotation`` for ``exp``/``log`` (boxplus / boxminus).

  A pose's covariance (``ObjectPose.covariance``, calibrated on the error against the truth,
  :mod:`featmap_ros.pose_covariance`) holds two parts: the jitter, new in every frame, and a
  bias that stays while the view stays. The jitter's share (``jitter_share``, a ratio of sigmas
  measured at rest) is the filter's measurement noise: ``R = share^2 C``; the rest,
  ``(1 - share^2) C``, no filter removes, and it is added to the state covariance's pose block
  to give the filtered pose's covariance. A pose without a covariance takes the configured
  sigmas (``meas_sigma_m``, ``meas_sigma_deg``) as its jitter, and the filtered covariance is
  the state's alone.

  The process noise is white acceleration (translation and rotation), raised while the
  innovations are larger than the measurement noise explains (their normalised square,
  averaged over ``nis_frames``, to the power ``nis_power``): little at rest, where it averages
  the jitter away, much in motion, where it follows without lag.
- ``one_euro``, :class:`SE3OneEuroFilter` (Casiez, Roussel and Vogel, CHI 2012): a first-order
  low-pass filter whose cutoff rises with the signal's speed, on the translation per camera axis
  and on the rotation in the tangent space (``log(R_prev^T R)``). It has no covariance (the
  pose's own, if any, passes through).

Time comes from the input stamps (seconds), never from the wall clock, so that a replayed bag is
filtered as it was recorded. A track starts over (output = input) after a gap longer than
``max_gap_s``, a stamp not after the previous one (a bag looping), or a jump beyond
``max_jump_m`` / ``max_jump_deg`` (a wrong detection, or the object was moved while unseen).

The trackers hold state by design (one object per instance); nothing is cached at module level,
and the input poses are never changed: the outputs are copies.

Figures: ``featmap bench tracking`` measures both filters on a real-like sequence (jitter at rest,
lag in motion, error on the minimum-jerk moves; docs/benchmarks.md); ``pytest -s
test/test_tracking.py -k figures`` prints synthetic ones (constant velocity, white noise).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from featmap_ros.errors import InputError
from featmap_ros.geometry import check_pose
from featmap_ros.results import ObjectPose


#: ``PoseFilterConfig.kind`` values (``filter.kind``).
FILTER_KINDS = ("kalman", "one_euro")


@dataclass(frozen=True)
class PoseFilterConfig:
    """Constants of the pose filters and of the track resets.

    One-Euro: the cutoffs are in Hz; a beta raises the cutoff by ``beta * speed`` (speed in m/s
    for the translation, rad/s for the rotation), so its unit is Hz per (m/s) or Hz per (rad/s).
    Kalman: sigmas per axis; the acceleration noises are spectral densities' square roots
    (white acceleration: the velocity's variance grows by ``sigma^2 * dt``).
    """

    #: ``kalman`` (constant velocity on SE(3)) or ``one_euro``.
    kind: str = "kalman"
    #: Kalman: the jitter's share of a pose's covariance, as a ratio of sigmas: jitter at rest
    #: over the calibrated sigma in ``featmap bench tracking`` (0.44-0.90 over two sequences,
    #: colour-only and refined, translation and rotation); higher = more smoothing, a narrower
    #: filtered covariance (0.7: 95 % coverage of the filtered poses at 2 sigma).
    jitter_share: float = 0.7
    #: Kalman: measurement noise per axis of a pose without a covariance of its own (metres): the
    #: jitter of depth-refined poses at rest in ``featmap bench tracking`` (0.74 mm RMS in 3D).
    meas_sigma_m: float = 0.00045
    #: Kalman: the same for the rotation, degrees per axis (1.20 deg in 3D at rest).
    meas_sigma_deg: float = 0.7
    #: Kalman: acceleration noise at rest, m/s^2 per sqrt(Hz): lower = less jitter, more lag
    #: until the innovations raise it.
    accel_sigma_mps2: float = 0.0002
    #: Kalman: angular acceleration noise at rest, rad/s^2 per sqrt(Hz).
    ang_accel_sigma_radps2: float = 0.005
    #: Kalman: the process noise's sigma is multiplied by the averaged normalised innovation
    #: squared (1 = what the measurement noise explains) to this power, when above 1.
    nis_power: float = 3.0
    #: Kalman: frames over which that innovation is averaged (exponential, time constant).
    nis_frames: float = 2.0
    #: Kalman: the process noise's sigma is raised at most this many times.
    max_noise_gain: float = 10000.0
    #: Translation cutoff at rest: lower = less jitter, more lag when motion starts.
    trans_min_cutoff_hz: float = 0.2
    #: Translation cutoff rise with the filtered speed (norm of the velocity): higher = less lag
    #: in motion, more jitter at rest (the noise looks like speed). 30: 0.84 frames behind at
    #: 0.1 m/s and 30 Hz, 3.4x less jitter at rest with 3 mm noise per axis.
    trans_beta_hz_s_per_m: float = 30.0
    #: Rotation cutoff at rest.
    rot_min_cutoff_hz: float = 0.2
    #: Rotation cutoff rise with the filtered angular speed (norm): 0.85 frames behind at
    #: 30 deg/s, 4.1x less jitter at rest with 0.6 deg noise per axis.
    rot_beta_hz_s_per_rad: float = 6.0
    #: Cutoff of the speed estimate itself (the paper's d_cutoff): lower = a steadier speed at
    #: rest (less jitter) but a slower response when motion starts (0.3 Hz: 1.25 frames behind
    #: on average over the first second of motion, 0.5 Hz: 1.07 frames and 3.0x at rest).
    d_cutoff_hz: float = 0.3
    #: A track with no pose for longer than this starts over (and is forgotten by PoseTracker).
    max_gap_s: float = 0.5
    #: A new pose further than this from the filtered one starts the track over; PoseTracker
    #: also matches instances of one object to tracks within this distance.
    max_jump_m: float = 0.1
    #: A new pose turned by more than this from the filtered one starts the track over.
    max_jump_deg: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in FILTER_KINDS:
            raise InputError(f"filter kind {self.kind!r} is not one of {list(FILTER_KINDS)}")
        if not 0.0 < self.jitter_share <= 1.0:
            raise InputError(f"filter jitter_share: expected a ratio in (0, 1], got {self.jitter_share!r}")
        for name in ("meas_sigma_m", "meas_sigma_deg", "accel_sigma_mps2", "ang_accel_sigma_radps2", "nis_frames"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"filter {name}: expected a positive number, got {v!r}")
        if not self.max_noise_gain >= 1.0:
            raise InputError(f"filter max_noise_gain: expected >= 1, got {self.max_noise_gain!r}")


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt_s)


class _PoseFilter:
    """What both pose filters share: the constants, and the last filtered pose with its stamp
    and (6, 6) covariance (None: none)."""

    def __init__(self, config: PoseFilterConfig | None = None) -> None:
        self.config = PoseFilterConfig() if config is None else config
        self.reset()

    def reset(self) -> None:
        """Forget the state: the next pose passes through unchanged."""
        self.stamp_s: float | None = None
        self.R_m2c: np.ndarray | None = None
        self.t_m2c_m: np.ndarray | None = None
        self.covariance: np.ndarray | None = None


class SE3OneEuroFilter(_PoseFilter):
    """A One-Euro filter on one pose stream (rotation model -> camera, translation in metres).

    Args:
        config: the filter's constants; defaults to :class:`PoseFilterConfig()`.
    """

    def reset(self) -> None:
        """Forget the state: the next pose passes through unchanged (:attr:`covariance`: the
        last input pose's, passed through)."""
        super().reset()
        self._v_mps = np.zeros(3)  # filtered velocity, camera frame
        self._w_radps = np.zeros(3)  # filtered angular velocity, rotation vector in the model frame

    def update(self, R_m2c: np.ndarray, t_m2c_m: np.ndarray, stamp_s: float,
               covariance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """Filter one pose.

        Args:
            R_m2c: (3, 3) float rotation, model -> camera.
            t_m2c_m: (3,) float translation, metres.
            stamp_s: the pose's time stamp, seconds (from the input message, not the clock).
            covariance: (6, 6) the pose's covariance or None; the One-Euro filter does not use
                it, it becomes :attr:`covariance` as it is.

        Returns:
            (R_m2c (3, 3), t_m2c_m (3,), reset): the filtered pose (new arrays) and why the
            filter started over at this pose ("" when it filtered; "first pose", "gap 0.80 s >
            0.5 s", "stamp 3.000 s not after 3.100 s", "jump 0.200 m > 0.1 m", ...).

        Raises:
            InputError: a non-finite stamp or pose, or arrays of the wrong shape.
        """
        cfg = self.config
        R, t = check_pose(R_m2c, t_m2c_m)
        stamp = _check_stamp(stamp_s)
        cov = None if covariance is None else check_covariance(covariance, "covariance")
        reason = reset_reason(self, R, t, stamp)
        self.covariance = cov
        if reason:
            self.reset()
            self.covariance = cov
            self.stamp_s, self.R_m2c, self.t_m2c_m = stamp, R.copy(), t.copy()
            return R.copy(), t.copy(), reason
        dt = stamp - self.stamp_s
        a_d = _alpha(cfg.d_cutoff_hz, dt)
        # translation, per axis
        self._v_mps = self._v_mps + a_d * ((t - self.t_m2c_m) / dt - self._v_mps)
        # the cutoff follows the speed, not each axis's: the same lag whatever the direction
        speed = float(np.linalg.norm(self._v_mps))
        a_t = float(_alpha(cfg.trans_min_cutoff_hz + cfg.trans_beta_hz_s_per_m * speed, dt))
        self.t_m2c_m = self.t_m2c_m + a_t * (t - self.t_m2c_m)
        # rotation, in the tangent space at the previous filtered rotation
        delta = Rotation.from_matrix(self.R_m2c.T @ R).as_rotvec()
        self._w_radps = self._w_radps + a_d * (delta / dt - self._w_radps)
        w_norm = float(np.linalg.norm(self._w_radps))
        a_r = float(_alpha(cfg.rot_min_cutoff_hz + cfg.rot_beta_hz_s_per_rad * w_norm, dt))
        self.R_m2c = self.R_m2c @ Rotation.from_rotvec(a_r * delta).as_matrix()
        self.stamp_s = stamp
        return self.R_m2c.copy(), self.t_m2c_m.copy(), ""


def _check_stamp(stamp_s: float) -> float:
    stamp = float(stamp_s)
    if not math.isfinite(stamp):
        raise InputError(f"stamp_s: expected a finite time in seconds, got {stamp_s!r}")
    return stamp


def check_covariance(cov: np.ndarray, name: str = "covariance") -> np.ndarray:
    """A pose covariance checked: (6, 6) float64, finite, symmetric, positive semi-definite.

    Args:
        cov: (6, 6) or (36,) row-major, order (x, y, z, rot x, rot y, rot z): metres^2,
            radians^2, the rotation about the fixed axes of the parent (camera) frame (ROS
            ``PoseWithCovariance``).
        name: what the error names.

    Returns:
        (6, 6) float64 (a new array), symmetrised.

    Raises:
        InputError: wrong size, non-finite, asymmetric beyond rounding or with a negative eigenvalue.
    """
    c = np.asarray(cov, dtype=np.float64)
    if c.size != 36:
        raise InputError(f"{name}: expected 36 values (6x6), got shape {c.shape}")
    c = c.reshape(6, 6)
    if not np.all(np.isfinite(c)):
        raise InputError(f"{name}: not finite")
    scale = max(float(np.abs(c).max()), 1e-300)
    if np.abs(c - c.T).max() > 1e-9 * scale:
        raise InputError(f"{name}: not symmetric (largest difference {np.abs(c - c.T).max():.3g})")
    c = 0.5 * (c + c.T)
    if np.linalg.eigvalsh(c).min() < -1e-9 * scale:
        raise InputError(f"{name}: not positive semi-definite (eigenvalue {np.linalg.eigvalsh(c).min():.3g})")
    return c


def reset_reason(f, R: np.ndarray, t: np.ndarray, stamp: float) -> str:
    """Why filter ``f`` (with ``config``, ``stamp_s``, ``R_m2c``, ``t_m2c_m``) starts over at this
    pose: "" when it filters; "first pose", "gap ...", "stamp ... not after ...", "jump ..."."""
    cfg = f.config
    if f.stamp_s is None:
        return "first pose"
    if stamp <= f.stamp_s:
        return f"stamp {stamp:.3f} s not after {f.stamp_s:.3f} s"
    if stamp - f.stamp_s > cfg.max_gap_s:
        return f"gap {stamp - f.stamp_s:.2f} s > {cfg.max_gap_s} s"
    jump_m = float(np.linalg.norm(t - f.t_m2c_m))
    if jump_m > cfg.max_jump_m:
        return f"jump {jump_m:.3f} m > {cfg.max_jump_m} m"
    jump_deg = math.degrees(Rotation.from_matrix(f.R_m2c.T @ R).magnitude())
    if jump_deg > cfg.max_jump_deg:
        return f"jump {jump_deg:.1f} deg > {cfg.max_jump_deg} deg"
    return ""


#: State layout of :class:`SE3KalmanFilter`: translation, velocity, rotation error, angular velocity.
_T, _V, _TH, _W = slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)
#: The measured part of the state: translation and rotation error (the covariance's order).
_POSE = np.r_[0:3, 6:9]


class SE3KalmanFilter(_PoseFilter):
    """A constant-velocity Kalman filter on one pose stream (rotation model -> camera,
    translation in metres), with an innovation-adaptive process noise (module docstring).

    State (12,): translation t (camera frame, m), velocity v (m/s), rotation error dtheta (rad,
    camera frame, about the nominal ``R_m2c``; zero between updates), angular velocity w (rad/s,
    camera frame: ``R(t + dt) = exp(w dt) R(t)``). :attr:`covariance` is the (6, 6) covariance of
    the filtered pose (the state's pose block plus the input's bias part), order (x, y, z, rot x,
    rot y, rot z), ROS ``PoseWithCovariance``.

    Args:
        config: the filter's constants; defaults to :class:`PoseFilterConfig()`.
    """

    def reset(self) -> None:
        """Forget the state: the next pose passes through unchanged."""
        super().reset()
        self.x = np.zeros(12)
        self.P = np.zeros((12, 12))
        #: averaged normalised innovation squared per degree of freedom (translation, rotation)
        self.nis = np.ones(2)
        #: the process noise sigmas' factors (translation, rotation) of the last update
        self.noise_gain = np.ones(2)

    def _process_noise(self, dt: float, gain: np.ndarray) -> np.ndarray:
        """(12, 12) white-acceleration process noise over ``dt`` seconds, sigmas times ``gain``."""
        cfg = self.config
        q_block = np.array([[dt**3 / 3.0, dt**2 / 2.0], [dt**2 / 2.0, dt]])
        Q = np.zeros((12, 12))
        for (pos, vel), sigma in zip(((_T, _V), (_TH, _W)), (cfg.accel_sigma_mps2 * gain[0], cfg.ang_accel_sigma_radps2 * gain[1])):
            q = sigma**2 * q_block
            Q[pos, pos], Q[pos, vel], Q[vel, pos], Q[vel, vel] = (np.eye(3) * q[i, j] for i in (0, 1) for j in (0, 1))
        return Q

    def _noise_and_bias(self, covariance: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(measurement noise, the part of the pose's covariance no filter removes), both (6, 6)."""
        cfg = self.config
        if covariance is None:
            return np.diag([cfg.meas_sigma_m**2] * 3 + [math.radians(cfg.meas_sigma_deg) ** 2] * 3), np.zeros((6, 6))
        c = check_covariance(covariance, "covariance")
        share2 = cfg.jitter_share**2
        return share2 * c, (1.0 - share2) * c

    def update(self, R_m2c: np.ndarray, t_m2c_m: np.ndarray, stamp_s: float,
               covariance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """Predict to ``stamp_s``, then correct with one measured pose.

        Args:
            R_m2c: (3, 3) float rotation, model -> camera.
            t_m2c_m: (3,) float translation, metres.
            stamp_s: the pose's time stamp, seconds (from the input message, not the clock).
            covariance: (6, 6) the measured pose's covariance (ROS order, m^2 / rad^2; its
                ``jitter_share`` is the measurement noise), or None for the configured
                ``meas_sigma_m`` / ``meas_sigma_deg``.

        Returns:
            (R_m2c (3, 3), t_m2c_m (3,), reset) as :meth:`SE3OneEuroFilter.update`.

        Raises:
            InputError: a non-finite stamp or pose, arrays of the wrong shape, a covariance that
                is not a (6, 6) symmetric PSD matrix.
        """
        cfg = self.config
        R, t = check_pose(R_m2c, t_m2c_m)
        stamp = _check_stamp(stamp_s)
        Rn, bias = self._noise_and_bias(covariance)
        reason = reset_reason(self, R, t, stamp)
        if reason:
            self.reset()
            self.stamp_s, self.R_m2c, self.t_m2c_m = stamp, R.copy(), t.copy()
            self.x[_T] = t
            # the velocities are unknown: a prior wide enough for any hand-held motion
            self.P[np.ix_(_POSE, _POSE)] = Rn
            self.P[_V, _V] = np.eye(3) * 0.5**2
            self.P[_W, _W] = np.eye(3) * math.radians(90.0) ** 2
            self.covariance = Rn + bias
            return R.copy(), t.copy(), reason
        dt = stamp - self.stamp_s
        # predict: constant velocity; the rotation error stays zero, the nominal turns by w dt
        F = np.eye(12)
        F[_T, _V] = np.eye(3) * dt
        F[_TH, _W] = np.eye(3) * dt
        x = F @ self.x
        x[_TH] = 0.0  # the mean turn goes into the nominal (F's w -> dtheta block is for the covariance)
        R_pred = Rotation.from_rotvec(self.x[_W] * dt).as_matrix() @ self.R_m2c
        # innovation = measured boxminus predicted
        y = np.concatenate([t - x[_T], Rotation.from_matrix(R @ R_pred.T).as_rotvec()])
        # the process noise follows this innovation too (a move is seen in the frame it starts):
        # translation and rotation each their own, from the prediction with the last gains
        FPF = F @ self.P @ F.T
        P_last = FPF + self._process_noise(dt, self.noise_gain)
        S_last = P_last[np.ix_(_POSE, _POSE)] + Rn
        a = 1.0 / cfg.nis_frames
        for k, blk in enumerate((slice(0, 3), slice(3, 6))):
            m = float(y[blk] @ np.linalg.solve(S_last[blk, blk], y[blk])) / 3.0
            self.nis[k] = (1.0 - a) * self.nis[k] + a * m
        self.noise_gain = np.minimum(cfg.max_noise_gain, np.maximum(1.0, self.nis) ** cfg.nis_power)
        P = FPF + self._process_noise(dt, self.noise_gain)
        S = P[np.ix_(_POSE, _POSE)] + Rn
        K = np.linalg.solve(S, P[_POSE, :]).T  # P H^T S^-1, S symmetric
        x = x + K @ y
        IKH = np.eye(12)
        IKH[:, _POSE] -= K
        P = IKH @ P @ IKH.T + K @ Rn @ K.T  # Joseph form: stays symmetric PSD
        # boxplus: fold the rotation error into the nominal rotation
        self.R_m2c = Rotation.from_rotvec(x[_TH]).as_matrix() @ R_pred
        x[_TH] = 0.0
        self.x, self.P = x, 0.5 * (P + P.T)
        self.t_m2c_m = x[_T].copy()
        self.covariance = self.P[np.ix_(_POSE, _POSE)] + bias
        self.stamp_s = stamp
        return self.R_m2c.copy(), self.t_m2c_m.copy(), ""


def make_filter(config: PoseFilterConfig | None = None) -> SE3KalmanFilter | SE3OneEuroFilter:
    """The filter ``config.kind`` names (default config: the Kalman filter)."""
    cfg = PoseFilterConfig() if config is None else config
    return SE3KalmanFilter(cfg) if cfg.kind == "kalman" else SE3OneEuroFilter(cfg)


class PoseTrack:
    """One object instance over time: its raw and filtered poses.

    Attributes:
        object_name: the object's name.
        raw: the last input pose (a copy), or None.
        filtered: the last filtered pose (a copy of the input with the filtered R_m2c, t_m2c_m).
        last_reset: why the filter last started over ("first pose", "gap ...", ...).
        n_updates: poses filtered since the track began.
    """

    def __init__(self, object_name: str, config: PoseFilterConfig | None = None) -> None:
        self.object_name = object_name
        self.filter = make_filter(config)
        self.raw: ObjectPose | None = None
        self.filtered: ObjectPose | None = None
        self.last_reset = ""
        self.n_updates = 0

    @property
    def stamp_s(self) -> float | None:
        return self.filter.stamp_s

    def update(self, pose: ObjectPose, stamp_s: float) -> ObjectPose:
        """Filter one pose of this object; returns a new ObjectPose (the input is not changed).

        Its ``covariance`` is the filter's (Kalman: the state's pose block; One-Euro: the
        input's). Its other fields (score, corners_px, bbox_xywh, ...) are copied from the input as they
        are: the corners stay the network's raw output.
        """
        R, t, reason = self.filter.update(pose.R_m2c, pose.t_m2c_m, stamp_s, pose.covariance)
        if reason:
            self.last_reset = reason
        out = copy.deepcopy(pose)
        out.R_m2c, out.t_m2c_m = R, t
        out.covariance = None if self.filter.covariance is None else self.filter.covariance.copy()
        self.raw, self.filtered = copy.deepcopy(pose), out
        self.n_updates += 1
        return copy.deepcopy(out)


class PoseTracker:
    """Tracks of the objects in a stream of frames, keyed by object name.

    Several instances of one object are matched to that object's tracks by translation, nearest
    first, within ``max_jump_m``; an unmatched instance starts a track; a track not seen for
    ``max_gap_s`` is forgotten.

    Args:
        config: the filter's constants; defaults to :class:`PoseFilterConfig()`.
    """

    def __init__(self, config: PoseFilterConfig | None = None) -> None:
        self.config = PoseFilterConfig() if config is None else config
        self.tracks: dict[str, list[PoseTrack]] = {}
        self.last_stamp_s: float | None = None
        self.last_raw: list[ObjectPose] = []

    def update(self, poses: Sequence[ObjectPose], stamp_s: float) -> list[ObjectPose]:
        """Filter the poses of one frame.

        Args:
            poses: the frame's poses (any number per object name).
            stamp_s: the frame's stamp, seconds (``header.stamp``).

        Returns:
            One filtered :class:`ObjectPose` per input pose, in the input's order (new objects;
            the inputs are not changed). The raw ones stay in ``last_raw``.

        Raises:
            InputError: a non-finite stamp (naming ``stamp_s``), or a pose with a bad array.
        """
        stamp = float(stamp_s)
        if not math.isfinite(stamp):
            raise InputError(f"stamp_s: expected a finite time in seconds, got {stamp_s!r}")
        if self.last_stamp_s is not None and stamp <= self.last_stamp_s:
            self.tracks = {}  # time went back (a bag looping, a new recording): start over
        self.last_stamp_s = stamp
        for name in list(self.tracks):
            self.tracks[name] = [tr for tr in self.tracks[name] if stamp - tr.stamp_s <= self.config.max_gap_s]
            if not self.tracks[name]:
                del self.tracks[name]
        out: list[ObjectPose | None] = [None] * len(poses)
        by_name: dict[str, list[int]] = {}
        for i, p in enumerate(poses):
            by_name.setdefault(p.object_name, []).append(i)
        for name, idx in by_name.items():
            tracks = self.tracks.setdefault(name, [])
            for i, tr in self._match(poses, idx, tracks):
                if tr is None:
                    tr = PoseTrack(name, self.config)
                    tracks.append(tr)
                out[i] = tr.update(poses[i], stamp)
        self.last_raw = [copy.deepcopy(p) for p in poses]
        return out  # type: ignore[return-value]

    def _match(self, poses: Sequence[ObjectPose], idx: list[int], tracks: list[PoseTrack]):
        """Greedy nearest-first pairs (pose index, track or None)."""
        pairs = []
        for i in idx:
            t = np.asarray(poses[i].t_m2c_m, dtype=np.float64).reshape(-1)
            for k, tr in enumerate(tracks):
                if t.shape == (3,):
                    pairs.append((float(np.linalg.norm(t - tr.filter.t_m2c_m)), i, k))
        pairs.sort()
        taken_i: dict[int, PoseTrack | None] = {}
        taken_k: set[int] = set()
        for d, i, k in pairs:
            if d <= self.config.max_jump_m and i not in taken_i and k not in taken_k:
                taken_i[i] = tracks[k]
                taken_k.add(k)
        if len(idx) == 1 and len(tracks) == 1 and idx[0] not in taken_i:
            taken_i[idx[0]] = tracks[0]  # one instance, one track: the same object, jumped (reset)
        return [(i, taken_i.get(i)) for i in idx]
