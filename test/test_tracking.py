"""featmap_ros.tracking: jitter at rest, lag in motion, resets, several instances, no mutation,
for both filters (Kalman and One-Euro); the Kalman filter's covariance."""
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros.errors import InputError
from featmap_ros.results import ObjectPose
from featmap_ros.tracking import (PoseFilterConfig, PoseTracker, SE3KalmanFilter, SE3OneEuroFilter, check_covariance,
                                  make_filter)

FPS = 30.0
R0 = Rotation.from_euler("xyz", [20, 30, 40], degrees=True)
T0 = np.array([0.05, -0.02, 0.7])
V_DIR = np.array([1.0, 0.3, 0.2]) / np.linalg.norm([1.0, 0.3, 0.2])
W_AXIS = np.array([0.2, 1.0, 0.1]) / np.linalg.norm([0.2, 1.0, 0.1])
#: Each filter, its measurement noise set to the streams' (3 mm, 0.6 deg per axis) for the Kalman filter.
CONFIGS = {"kalman": PoseFilterConfig(kind="kalman", meas_sigma_m=0.003, meas_sigma_deg=0.6),
           "one_euro": PoseFilterConfig(kind="one_euro")}
KINDS = pytest.mark.parametrize("kind", sorted(CONFIGS))


def stream(n, v_mps=0.0, w_degps=0.0, sigma_m=0.003, sigma_deg=0.6, seed=0):
    """Truth and noisy measurements at 30 Hz: constant velocity (along V_DIR, about W_AXIS).

    Yields (stamp_s, R_true, t_true, R_meas, t_meas); noise per axis, independent per frame.
    """
    rng = np.random.default_rng(seed)
    for k in range(n):
        s = k / FPS
        R_true = Rotation.from_rotvec(math.radians(w_degps) * s * W_AXIS) * R0
        t_true = T0 + v_mps * s * V_DIR
        R_meas = R_true * Rotation.from_rotvec(math.radians(sigma_deg) * rng.normal(size=3))
        yield s, R_true, t_true, R_meas.as_matrix(), t_true + sigma_m * rng.normal(size=3)


def run_filter(config, n=300, warmup=60, **kw):
    """Errors (filtered and raw) after the warm-up: dict of (N, 3) translation (m) and rotation
    vector (rad) errors, camera frame."""
    f = make_filter(config)
    e = {"t": [], "t_raw": [], "r": [], "r_raw": []}
    for k, (s, R_true, t_true, R_meas, t_meas) in enumerate(stream(n, **kw)):
        R, t, _ = f.update(R_meas, t_meas, s)
        if k >= warmup:
            e["t"].append(t - t_true)
            e["t_raw"].append(t_meas - t_true)
            e["r"].append((Rotation.from_matrix(R) * R_true.inv()).as_rotvec())
            e["r_raw"].append((Rotation.from_matrix(R_meas) * R_true.inv()).as_rotvec())
    return {k: np.array(v) for k, v in e.items()}


def spread(x):
    """Standard deviation of (N, 3) samples about their mean: sqrt of the summed variances."""
    return float(np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()))


def pose(name="toy", t=T0, R=R0.as_matrix(), obj_id=1):
    return ObjectPose(object_name=name, obj_id=obj_id, R_m2c=np.array(R, dtype=np.float64),
                      t_m2c_m=np.array(t, dtype=np.float64), score=0.9, corners_px=np.ones((8, 2)))


@KINDS
def test_static_pose_jitter_reduced_three_times(kind):
    e = run_filter(CONFIGS[kind])
    assert spread(e["t_raw"]) / spread(e["t"]) >= 3.0
    assert spread(e["r_raw"]) / spread(e["r"]) >= 3.0
    # and no bias at rest
    assert np.linalg.norm(e["t"].mean(axis=0)) < 1e-3


@KINDS
def test_constant_velocity_lag_within_a_frame(kind):
    v, w = 0.1, 30.0  # m/s, deg/s
    e = run_filter(CONFIGS[kind], v_mps=v, w_degps=w)
    lag_t = -float((e["t"] @ V_DIR).mean()) / (v / FPS)
    lag_r = -float((e["r"] @ W_AXIS).mean()) / (math.radians(w) / FPS)
    if kind == "one_euro":  # a low-pass filter is always behind
        assert 0.0 < lag_t <= 1.0 and 0.0 < lag_r <= 1.0
    else:  # constant velocity is the Kalman filter's model: no lag once it has converged
        assert abs(lag_t) <= 0.2 and abs(lag_r) <= 0.2


@KINDS
def test_exact_constant_pose_is_a_fixed_point(kind):
    f = make_filter(CONFIGS[kind])
    for k in range(10):
        R, t, reason = f.update(R0.as_matrix(), T0, k / FPS)
    np.testing.assert_allclose(R, R0.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(t, T0, atol=1e-12)
    assert reason == ""


@KINDS
def test_step_jump_resets(kind):
    f = make_filter(CONFIGS[kind])
    for k in range(10):
        f.update(R0.as_matrix(), T0, k / FPS)
    t_far = T0 + [0.2, 0, 0]
    R, t, reason = f.update(R0.as_matrix(), t_far, 10 / FPS)
    assert reason == "jump 0.200 m > 0.1 m"
    np.testing.assert_array_equal(t, t_far)
    R_turned = Rotation.from_rotvec([0, 0, math.radians(45)]).as_matrix() @ R0.as_matrix()
    R, t, reason = f.update(R_turned, t_far, 11 / FPS)
    assert reason == "jump 45.0 deg > 30.0 deg"
    np.testing.assert_array_equal(R, R_turned)
    # below the thresholds it filters (moves part of the way)
    R, t, reason = f.update(R_turned, t_far + [0.05, 0, 0], 12 / FPS)
    assert reason == "" and t_far[0] < t[0] < t_far[0] + 0.05


@KINDS
def test_gap_resets(kind):
    f = make_filter(replace(CONFIGS[kind], max_gap_s=0.5))
    f.update(R0.as_matrix(), T0, 0.0)
    f.update(R0.as_matrix(), T0, 0.1)
    t_new = T0 + [0.05, 0, 0]
    _, t, reason = f.update(R0.as_matrix(), t_new, 1.0)
    assert reason == "gap 0.90 s > 0.5 s"
    np.testing.assert_array_equal(t, t_new)


@KINDS
def test_non_monotonic_stamps_reset_and_bad_stamps_are_errors(kind):
    f = make_filter(CONFIGS[kind])
    f.update(R0.as_matrix(), T0, 3.1)
    _, _, reason = f.update(R0.as_matrix(), T0, 3.0)
    assert reason == "stamp 3.000 s not after 3.100 s"
    _, _, reason = f.update(R0.as_matrix(), T0, 3.0)  # the same stamp twice
    assert reason.startswith("stamp 3.000 s not after")
    with pytest.raises(InputError, match="stamp_s"):
        f.update(R0.as_matrix(), T0, float("nan"))
    with pytest.raises(InputError, match="t_m2c_m"):
        f.update(R0.as_matrix(), [0, 0, np.inf], 4.0)
    with pytest.raises(InputError, match="R_m2c"):
        f.update(np.eye(2), T0, 4.0)
    tracker = PoseTracker()
    with pytest.raises(InputError, match="stamp_s"):
        tracker.update([pose()], float("inf"))


@KINDS
def test_tracker_returns_copies_and_keeps_raw(kind):
    tracker = PoseTracker(CONFIGS[kind])
    rng = np.random.default_rng(1)
    for k in range(5):
        inputs = [pose(t=T0 + 0.003 * rng.normal(size=3))]
        kept = [(p.R_m2c.copy(), p.t_m2c_m.copy(), p.corners_px.copy()) for p in inputs]
        out = tracker.update(inputs, k / FPS)
        for p, (R, t, c) in zip(inputs, kept):  # inputs not mutated
            np.testing.assert_array_equal(p.R_m2c, R)
            np.testing.assert_array_equal(p.t_m2c_m, t)
            np.testing.assert_array_equal(p.corners_px, c)
        assert out[0] is not inputs[0] and out[0].t_m2c_m is not inputs[0].t_m2c_m
        assert out[0].corners_px is not inputs[0].corners_px
        np.testing.assert_array_equal(tracker.last_raw[0].t_m2c_m, inputs[0].t_m2c_m)
    assert not np.allclose(out[0].t_m2c_m, inputs[0].t_m2c_m)  # it filtered
    assert (out[0].object_name, out[0].score) == ("toy", 0.9)
    track = tracker.tracks["toy"][0]
    assert track.n_updates == 5 and track.last_reset == "first pose"
    out[0].t_m2c_m[:] = 0.0  # changing an output changes nothing inside
    assert np.all(track.filtered.t_m2c_m != 0.0)


@KINDS
def test_tracker_per_object_and_per_instance(kind):
    tracker = PoseTracker(CONFIGS[kind])
    a1, a2 = T0, T0 + [0.3, 0, 0]
    for k in range(10):
        d = 0.002 * (-1) ** k  # alternating jitter
        out = tracker.update([pose("a", a2 + d), pose("b", a1), pose("a", a1 - d)], k / FPS)
    assert len(tracker.tracks["a"]) == 2 and len(tracker.tracks["b"]) == 1
    # each instance kept its own track, in the input's order, jitter damped
    assert np.linalg.norm(out[0].t_m2c_m - a2) < 0.001 and np.linalg.norm(out[2].t_m2c_m - a1) < 0.001
    assert all(tr.last_reset == "first pose" for trs in tracker.tracks.values() for tr in trs)


def test_tracker_forgets_lost_tracks_and_restarts_when_time_goes_back():
    tracker = PoseTracker(PoseFilterConfig(max_gap_s=0.5))
    tracker.update([pose("a"), pose("b")], 0.0)
    tracker.update([pose("a")], 0.4)
    tracker.update([pose("a")], 0.8)
    assert set(tracker.tracks) == {"a"}  # b unseen for 0.8 s
    tracker.update([pose("a", T0 + [0.01, 0, 0])], 0.1)  # a bag looping
    assert tracker.tracks["a"][0].n_updates == 1
    np.testing.assert_array_equal(tracker.tracks["a"][0].filtered.t_m2c_m, T0 + [0.01, 0, 0])


def test_tracker_single_instance_jump_resets_its_track():
    tracker = PoseTracker()
    for k in range(5):
        tracker.update([pose("a")], k / FPS)
    out = tracker.update([pose("a", T0 + [0.5, 0, 0])], 5 / FPS)
    np.testing.assert_array_equal(out[0].t_m2c_m, T0 + [0.5, 0, 0])
    assert len(tracker.tracks["a"]) == 1 and tracker.tracks["a"][0].last_reset.startswith("jump 0.500 m")


@KINDS
def test_figures(kind):
    """The config's figures (``pytest -s -k figures``): jitter at rest and lag in motion."""
    cfg = CONFIGS[kind]
    rest = run_filter(cfg)
    v, w = 0.1, 30.0
    moving = run_filter(cfg, v_mps=v, w_degps=w)
    jit = (1e3 * spread(rest["t_raw"]), 1e3 * spread(rest["t"]),
           math.degrees(spread(rest["r_raw"])), math.degrees(spread(rest["r"])))
    lag_t = -float((moving["t"] @ V_DIR).mean()) / (v / FPS)
    lag_r = -float((moving["r"] @ W_AXIS).mean()) / (math.radians(w) / FPS)
    print(f"\n[tracking {kind}] 30 Hz, noise 3 mm / 0.6 deg per axis: jitter at rest {jit[0]:.2f} -> {jit[1]:.2f} mm "
          f"({jit[0] / jit[1]:.1f}x), {jit[2]:.2f} -> {jit[3]:.2f} deg ({jit[2] / jit[3]:.1f}x); "
          f"lag at {v} m/s {lag_t:.2f} frames, at {w:.0f} deg/s {lag_r:.2f} frames")
    assert jit[0] / jit[1] >= 3.0 and lag_t <= 1.0


def test_default_is_kalman_and_kinds_are_checked():
    assert PoseFilterConfig().kind == "kalman" and isinstance(make_filter(), SE3KalmanFilter)
    assert isinstance(make_filter(PoseFilterConfig(kind="one_euro")), SE3OneEuroFilter)
    with pytest.raises(InputError, match="'median' is not one of"):
        PoseFilterConfig(kind="median")
    with pytest.raises(InputError, match="meas_sigma_m"):
        PoseFilterConfig(meas_sigma_m=0.0)


def _minimum_jerk_errors(config, seed=3):
    """A rest, a 1.5 s minimum-jerk move of 6 cm and 20 deg, a rest: filtered errors in motion
    (translation, m) and at rest after it (N, 3), the truth's per-frame step in motion."""
    rng = np.random.default_rng(seed)
    f = make_filter(config)
    n_rest, n_move = 60, 45
    s = np.arange(1, n_move + 1) / n_move
    prof = np.concatenate([np.zeros(n_rest), s**3 * (10 - 15 * s + 6 * s * s), np.ones(2 * n_rest)])
    shift, turn = np.array([0.04, 0.02, 0.04]), math.radians(20.0)
    err, step = [], np.diff(prof, prepend=0.0)[:, None] * shift
    for k, c in enumerate(prof):
        t_true = T0 + c * shift
        R_true = Rotation.from_rotvec(c * turn * W_AXIS) * R0
        R_meas = R_true * Rotation.from_rotvec(math.radians(0.6) * rng.normal(size=3))
        _, t, _ = f.update(R_meas.as_matrix(), t_true + 0.003 * rng.normal(size=3), k / FPS)
        err.append(t - t_true)
    err = np.array(err)
    moving = slice(n_rest, n_rest + n_move)
    return err[moving], step[moving], err[n_rest + n_move + 30:]


def test_kalman_follows_a_minimum_jerk_move_with_less_lag_than_one_euro():
    lags = {}
    for kind, cfg in CONFIGS.items():
        e, v, _ = _minimum_jerk_errors(cfg)
        lags[kind] = -float(np.sum(e * v)) / float(np.sum(v * v))
    assert lags["kalman"] <= 1.0 and lags["kalman"] < lags["one_euro"]


def test_kalman_covariance_is_symmetric_psd_and_shrinks_at_rest_grows_in_motion():
    f = SE3KalmanFilter(CONFIGS["kalman"])
    rng = np.random.default_rng(0)
    covs = []
    for k in range(40):
        f.update(R0.as_matrix(), T0 + 0.003 * rng.normal(size=3), k / FPS)
        covs.append(f.covariance.copy())
    for c in covs:
        np.testing.assert_allclose(c, c.T, atol=0)
        assert np.linalg.eigvalsh(c).min() > 0
    first, settled = np.diag(covs[0]), np.diag(covs[-1])
    np.testing.assert_allclose(first, [0.003**2] * 3 + [math.radians(0.6) ** 2] * 3, rtol=1e-12)  # a reset: the measurement's
    assert np.all(settled < 0.5 * first)  # averaging several measurements
    # a move starts: the innovations raise the process noise (translation only) and with it the
    # covariance, until the velocity is known
    gains, var_x = [], []
    for k in range(40, 50):
        f.update(R0.as_matrix(), T0 + [0.01 * (k - 39), 0, 0], k / FPS)
        gains.append(f.noise_gain.copy())
        var_x.append(f.covariance[0, 0])
    gains = np.array(gains)
    assert gains[:, 0].max() > 10 and gains[:, 1].max() < 3 and max(var_x) > settled[0]


def test_kalman_uses_the_pose_covariance_as_measurement_noise():
    """A measurement said to be 10x less certain moves the estimate less."""
    moved = {}
    for sigma in (0.003, 0.03):
        f = SE3KalmanFilter(CONFIGS["kalman"])
        for k in range(20):
            f.update(R0.as_matrix(), T0, k / FPS)
        cov = np.diag([sigma**2] * 3 + [math.radians(0.6) ** 2] * 3)
        _, t, _ = f.update(R0.as_matrix(), T0 + [0.01, 0, 0], 20 / FPS, cov)
        moved[sigma] = t[0] - T0[0]
    assert 0 < moved[0.03] < 0.2 * moved[0.003]


def test_check_covariance_rejects_bad_matrices():
    good = np.diag([1e-6] * 3 + [1e-4] * 3)
    np.testing.assert_array_equal(check_covariance(good.reshape(-1)), good)
    with pytest.raises(InputError, match="cov: expected 36 values"):
        check_covariance(np.eye(3), "cov")
    asym = good.copy()
    asym[0, 1] = 1e-5
    with pytest.raises(InputError, match="not symmetric"):
        check_covariance(asym)
    with pytest.raises(InputError, match="not positive semi-definite"):
        check_covariance(np.diag([1e-6] * 5 + [-1e-4]))
    with pytest.raises(InputError, match="not finite"):
        check_covariance(np.full((6, 6), np.nan))
    f = SE3KalmanFilter()
    with pytest.raises(InputError, match="covariance"):
        f.update(R0.as_matrix(), T0, 0.0, np.eye(3))


def test_tracker_outputs_carry_the_filter_covariance():
    tracker = PoseTracker(CONFIGS["kalman"])
    for k in range(5):
        out = tracker.update([pose()], k / FPS)
    c = out[0].covariance
    assert c.shape == (6, 6) and np.all(np.diag(c) > 0)
    assert c is not tracker.tracks["toy"][0].filter.covariance
    tracker = PoseTracker(CONFIGS["one_euro"])
    given = np.diag([4e-6] * 3 + [1e-4] * 3)
    p = pose()
    p.covariance = given
    out = tracker.update([p], 0.0)
    np.testing.assert_array_equal(out[0].covariance, given)  # passed through
