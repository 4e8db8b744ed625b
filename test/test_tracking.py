"""featmap_ros.tracking: jitter at rest, lag in motion, resets, several instances, no mutation."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros.errors import InputError
from featmap_ros.results import ObjectPose
from featmap_ros.tracking import PoseFilterConfig, PoseTracker, SE3OneEuroFilter

FPS = 30.0
R0 = Rotation.from_euler("xyz", [20, 30, 40], degrees=True)
T0 = np.array([0.05, -0.02, 0.7])
V_DIR = np.array([1.0, 0.3, 0.2]) / np.linalg.norm([1.0, 0.3, 0.2])
W_AXIS = np.array([0.2, 1.0, 0.1]) / np.linalg.norm([0.2, 1.0, 0.1])


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
    f = SE3OneEuroFilter(config)
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


def test_static_pose_jitter_reduced_three_times():
    e = run_filter(PoseFilterConfig())
    assert spread(e["t_raw"]) / spread(e["t"]) >= 3.0
    assert spread(e["r_raw"]) / spread(e["r"]) >= 3.0
    # and no bias at rest
    assert np.linalg.norm(e["t"].mean(axis=0)) < 1e-3


def test_constant_velocity_lag_within_a_frame():
    v, w = 0.1, 30.0  # m/s, deg/s
    e = run_filter(PoseFilterConfig(), v_mps=v, w_degps=w)
    lag_t = -float((e["t"] @ V_DIR).mean()) / (v / FPS)
    lag_r = -float((e["r"] @ W_AXIS).mean()) / (math.radians(w) / FPS)
    assert 0.0 < lag_t <= 1.0 and 0.0 < lag_r <= 1.0


def test_exact_constant_pose_is_a_fixed_point():
    f = SE3OneEuroFilter()
    for k in range(10):
        R, t, reason = f.update(R0.as_matrix(), T0, k / FPS)
    np.testing.assert_allclose(R, R0.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(t, T0, atol=1e-12)
    assert reason == ""


def test_step_jump_resets():
    f = SE3OneEuroFilter()
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


def test_gap_resets():
    f = SE3OneEuroFilter(PoseFilterConfig(max_gap_s=0.5))
    f.update(R0.as_matrix(), T0, 0.0)
    f.update(R0.as_matrix(), T0, 0.1)
    t_new = T0 + [0.05, 0, 0]
    _, t, reason = f.update(R0.as_matrix(), t_new, 1.0)
    assert reason == "gap 0.90 s > 0.5 s"
    np.testing.assert_array_equal(t, t_new)


def test_non_monotonic_stamps_reset_and_bad_stamps_are_errors():
    f = SE3OneEuroFilter()
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


def test_tracker_returns_copies_and_keeps_raw():
    tracker = PoseTracker()
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


def test_tracker_per_object_and_per_instance():
    tracker = PoseTracker()
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


def test_figures():
    """The config's figures (``pytest -s -k figures``): jitter at rest and lag in motion."""
    cfg = PoseFilterConfig()
    rest = run_filter(cfg)
    v, w = 0.1, 30.0
    moving = run_filter(cfg, v_mps=v, w_degps=w)
    jit = (1e3 * spread(rest["t_raw"]), 1e3 * spread(rest["t"]),
           math.degrees(spread(rest["r_raw"])), math.degrees(spread(rest["r"])))
    lag_t = -float((moving["t"] @ V_DIR).mean()) / (v / FPS)
    lag_r = -float((moving["r"] @ W_AXIS).mean()) / (math.radians(w) / FPS)
    print(f"\n[tracking] 30 Hz, noise 3 mm / 0.6 deg per axis: jitter at rest {jit[0]:.2f} -> {jit[1]:.2f} mm "
          f"({jit[0] / jit[1]:.1f}x), {jit[2]:.2f} -> {jit[3]:.2f} deg ({jit[2] / jit[3]:.1f}x); "
          f"lag at {v} m/s {lag_t:.2f} frames, at {w:.0f} deg/s {lag_r:.2f} frames")
    assert jit[0] / jit[1] >= 3.0 and lag_t <= 1.0
