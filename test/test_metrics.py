"""featmap_ros.evaluation.metrics: hand-computed cases for object errors, BOP-19 matching/recall, hand metrics."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros.evaluation import metrics as m
from featmap_ros.errors import InputError
from featmap_ros.evaluation import plots

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
I3 = np.eye(3)
T0 = np.array([0.0, 0.0, 1000.0])


def _box_points(n=400, seed=0):
    """Points on an asymmetric box surface, mm."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-1, 1, (n, 3)) * [40.0, 25.0, 15.0]
    axis = rng.integers(0, 3, n)
    p[np.arange(n), axis] = np.sign(p[np.arange(n), axis]) * np.array([40.0, 25.0, 15.0])[axis]
    return p


def _rz(deg):
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


# ---------------------------------------------------------------- object errors

def test_exact_pose_gives_zero_everywhere():
    p = _box_points()
    R = Rotation.from_rotvec([0.2, 0.3, -0.1]).as_matrix()
    syms = m.symmetry_transformations({})
    assert m.add_error(R, T0, R, T0, p) == 0.0
    assert m.adds_error(R, T0, R, T0, p) == 0.0
    assert m.proj2d_error(R, T0, R, T0, K, p) == 0.0
    assert m.mssd_error(R, T0, R, T0, p, syms) == 0.0
    assert m.mspd_error(R, T0, R, T0, K, p, syms) == 0.0
    assert m.rotation_error_deg(R, R) == pytest.approx(0.0, abs=1e-6)
    assert m.translation_error(T0, T0) == 0.0


def test_known_translation_shift():
    p = _box_points()
    shift = np.array([3.0, 4.0, 0.0])
    syms = m.symmetry_transformations({})
    assert m.add_error(I3, T0 + shift, I3, T0, p) == pytest.approx(5.0)
    assert m.mssd_error(I3, T0 + shift, I3, T0, p, syms) == pytest.approx(5.0)
    assert m.translation_error(T0 + shift, T0) == pytest.approx(5.0)
    assert m.adds_error(I3, T0 + shift, I3, T0, p) <= 5.0 + 1e-9  # closest point is never farther


def test_projection_error_of_planar_model_known_value():
    # all points at the same depth: an x shift of 2 mm at 1000 mm moves every projection by f*2/1000 px
    rng = np.random.default_rng(1)
    p = np.c_[rng.uniform(-50, 50, (100, 2)), np.zeros(100)]
    e = m.proj2d_error(I3, T0 + [2.0, 0, 0], I3, T0, K, p)
    assert e == pytest.approx(1.0)
    assert m.mspd_error(I3, T0 + [2.0, 0, 0], I3, T0, K, p, m.symmetry_transformations({})) == pytest.approx(1.0)
    assert m.proj2d_error(I3, [0, 0, -1000.0], I3, T0, K, p) == math.inf  # behind the camera


def test_rotation_error_and_5cm5deg():
    assert m.rotation_error_deg(_rz(4.0), I3) == pytest.approx(4.0)
    assert m.rotation_error_deg(_rz(180.0), I3) == pytest.approx(180.0)
    rot = [m.rotation_error_deg(R, I3) for R in (_rz(4.0), _rz(6.0), I3)]
    trans_m = [m.translation_error(t, T0) / 1000.0 for t in (T0 + [0, 0, 49.0], T0, T0 + [0, 51.0, 0])]
    assert m.within_5cm_5deg(rot, trans_m).tolist() == [True, False, False]
    assert (m.PROJ2D_PX, m.ADD_FRACTION, m.ROT_DEG, m.TRANS_M) == (5.0, 0.10, 5.0, 0.05)


def test_adds_zero_for_symmetric_point_set_add_not():
    # a square's corners rotated by 90 degrees about z: same point set, different correspondences
    p = np.array([[10.0, 10, 0], [-10, 10, 0], [-10, -10, 0], [10, -10, 0]])
    assert m.adds_error(_rz(90), T0, I3, T0, p) == pytest.approx(0.0, abs=1e-9)
    assert m.add_error(_rz(90), T0, I3, T0, p) == pytest.approx(20.0)


def test_bad_pose_input():
    p = _box_points(10)
    with pytest.raises(InputError, match="estimate"):
        m.add_error(np.full((3, 3), np.nan), T0, I3, T0, p)
    with pytest.raises(InputError, match="model points"):
        m.add_error(I3, T0, I3, T0, np.zeros((5, 2)))
    with pytest.raises(InputError, match="ground truth"):
        m.mssd_error(I3, T0, np.eye(4), T0, p, m.symmetry_transformations({}))


# ---------------------------------------------------------------- symmetries

def test_discrete_symmetry_read_from_models_info():
    # 180 degrees about z through the point (5, 0, 0): t = offset - R offset = (10, 0, 0)
    T = np.eye(4)
    T[:3, :3] = _rz(180)
    T[:3, 3] = [10.0, 0, 0]
    syms = m.symmetry_transformations({"symmetries_discrete": [T.ravel().tolist()]})
    assert len(syms) == 2
    np.testing.assert_allclose(syms[0].R, I3)
    np.testing.assert_allclose(syms[1].t, [10.0, 0, 0])
    with pytest.raises(InputError, match=r"symmetries_discrete\[0\]"):
        m.symmetry_transformations({"symmetries_discrete": [[1, 2, 3]]})


def test_symmetric_object_rotated_by_its_symmetry_has_zero_mssd_mspd():
    base = _box_points(300, seed=2)
    p = np.vstack([base, base @ _rz(180).T])  # symmetric under 180 degrees about z
    T = np.eye(4)
    T[:3, :3] = _rz(180)
    syms = m.symmetry_transformations({"symmetries_discrete": [T.ravel().tolist()]})
    R_gt = Rotation.from_rotvec([0.3, -0.4, 0.2]).as_matrix()
    R_est = R_gt @ _rz(180)
    assert m.mssd_error(R_est, T0, R_gt, T0, p, syms) == pytest.approx(0.0, abs=1e-9)
    assert m.mspd_error(R_est, T0, R_gt, T0, K, p, syms) == pytest.approx(0.0, abs=1e-9)
    no_syms = m.symmetry_transformations({})
    assert m.mssd_error(R_est, T0, R_gt, T0, p, no_syms) > 50.0  # without the symmetry: far off
    assert m.adds_error(R_est, T0, R_gt, T0, p) == pytest.approx(0.0, abs=1e-9)


def test_continuous_symmetry_discretised_like_the_toolkit():
    info = {"symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 0]}]}
    syms = m.symmetry_transformations(info)
    assert len(syms) == math.ceil(math.pi / 0.01) == 315
    # a ring of radius 30 mm about z: any rotation about z is a symmetry
    a = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    ring = np.c_[30 * np.cos(a), 30 * np.sin(a), np.repeat([-10.0, 10.0], 360)]
    R_gt = Rotation.from_rotvec([0.5, 0.1, 0.0]).as_matrix()
    for deg in (37.0, 123.4, 271.0):
        R_est = R_gt @ _rz(deg)
        e = m.mssd_error(R_est, T0, R_gt, T0, ring, syms)
        # at most half a discretisation step of arc at radius 30 mm
        assert e <= 30 * (2 * np.pi / 315) / 2 + 1e-9
        assert m.mssd_error(R_est, T0, R_gt, T0, ring, m.symmetry_transformations({})) > 15.0
    # discrete x continuous combine
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("x", 180, degrees=True).as_matrix()
    both = m.symmetry_transformations({**info, "symmetries_discrete": [T.ravel().tolist()]})
    assert len(both) == 2 * 315
    with pytest.raises(InputError, match="axis"):
        m.symmetry_transformations({"symmetries_continuous": [{"axis": [0, 0, 0], "offset": [0, 0, 0]}]})


def test_continuous_symmetry_with_offset_axis():
    # the axis passes through (0, 20, 0): rotating about it must keep such a ring in place
    syms = m.symmetry_transformations({"symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 20, 0]}]})
    a = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    ring = np.c_[25 * np.cos(a), 20 + 25 * np.sin(a), np.zeros(360)]
    k = 40  # exactly a discretisation step: error ~0
    Rk = _rz(k * 360.0 / 315)
    t_shift = np.array([0, 20.0, 0]) - Rk @ np.array([0, 20.0, 0])
    assert m.mssd_error(Rk, T0 + t_shift, I3, T0, ring, syms) == pytest.approx(0.0, abs=1e-6)


def test_bop19_thresholds_match_the_toolkit():
    assert len(m.BOP19_MSSD_THRESHOLDS) == 10 and len(m.BOP19_MSPD_THRESHOLDS) == 10
    assert m.BOP19_MSSD_THRESHOLDS[0] == pytest.approx(0.05) and m.BOP19_MSSD_THRESHOLDS[-1] == pytest.approx(0.5)
    assert m.BOP19_MSPD_THRESHOLDS == (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0)


# ---------------------------------------------------------------- BOP-19 protocol

def test_valid_gts_by_inst_count_and_by_visibility():
    obj = [1, 1, 5, 6]
    vis = [0.05, 0.8, 0.09, 0.5]
    # toolkit default: the inst_count most visible instances of each target object
    assert m.bop19_valid_gts(obj, vis, {1: 1, 5: 1}) == [False, True, True, False]
    assert m.bop19_valid_gts(obj, vis, {1: 2}) == [True, True, False, False]
    # fixed visibility threshold
    assert m.bop19_valid_gts(obj, vis, {1: 1, 5: 1}, visib_gt_min=0.1) == [False, True, False, False]
    with pytest.raises(InputError):
        m.bop19_valid_gts([1], [0.5, 0.5], {1: 1})


def test_top_estimates():
    assert m.bop19_top_estimates([0.2, 0.9, 0.5], 2) == [1, 2]
    assert m.bop19_top_estimates([0.5, 0.5, 0.1], 1) == [0]  # ties keep file order
    assert m.bop19_top_estimates([0.3], 0) == []


def test_greedy_matching_by_score():
    ests = [
        m.EstimateErrors(1, 0.4, {"e": {0: 0.1, 1: 0.5}}),
        m.EstimateErrors(1, 0.9, {"e": {0: 0.2, 1: 0.3}}),  # goes first, takes gt 0 (its lowest)
    ]
    assert m.match_greedy(ests, "e", 1.0, [True, True]) == {0: 1, 1: 0}
    assert m.match_greedy(ests, "e", 0.4, [True, True]) == {0: 1}  # second one's gt 1 error 0.5 > 0.4
    assert m.match_greedy(ests, "e", 1.0, [False, True]) == {1: 1}
    assert m.match_greedy(ests, "e", 0.2, [True, True]) == {0: 0}  # strict: 0.2 is not < 0.2


def test_localization_and_average_recall_hand_counted():
    ims = [
        m.ImageEval(2, 1, [1, 5], [True, True], [
            m.EstimateErrors(1, 1.0, {"e": {0: 0.12}}),
            m.EstimateErrors(5, 1.0, {"e": {1: 0.33}}),
        ]),
        m.ImageEval(2, 2, [1, 5], [True, False], [
            m.EstimateErrors(1, 1.0, {"e": {0: 0.27}}),
            m.EstimateErrors(5, 1.0, {"e": {1: 0.01}}),  # gt not a target: not counted
        ]),
        m.ImageEval(2, 3, [1], [True], []),  # missed target
    ]
    r = m.localization_recall(ims, "e", 0.3)
    assert (r.targets, r.true_positives) == (4, 2)
    assert r.recall == pytest.approx(0.5)
    assert r.obj_recalls == {1: pytest.approx(2 / 3), 5: 0.0}
    ar = m.average_recall(ims, "e", [0.1, 0.2, 0.3, 0.4])
    # matches per threshold: 0, 1, 2, 3 of 4 targets
    assert ar["recalls"] == [0.0, 0.25, 0.5, 0.75]
    assert ar["AR"] == pytest.approx(0.375)
    assert ar["obj_AR"][5] == pytest.approx(0.25)
    with pytest.raises(InputError):
        m.average_recall(ims, "e", [])


# ---------------------------------------------------------------- hands

def test_hand_errors_and_curve_hand_computed():
    gt = np.zeros((4, 2, 3))
    pred = gt.copy()
    pred[0, 0] = [3, 4, 0]      # frame 0: errors 5, 0 -> max 5
    pred[1, 1] = [0, 0, 12]     # frame 1: max 12
    pred[2] = [[0, 30, 0], [0, 0, 1]]  # frame 2: max 30
    # frame 3 exact
    e = m.hand_joint_errors_mm(pred, gt)
    np.testing.assert_allclose(e, [[5, 0], [0, 12], [30, 1], [0, 0]])
    frac = m.max_frame_fraction(e, [0, 5, 10, 20, 30])
    np.testing.assert_allclose(frac, [0.25, 0.5, 0.5, 0.75, 1.0])  # "<= D" includes the boundary
    hm = m.hand_metrics(e, subjects=((1, 2, "a"), (3, 4, "b")))
    assert hm.frames == 4
    assert hm.mean_mm == pytest.approx(48 / 8)
    np.testing.assert_allclose(hm.per_joint_mm, [35 / 4, 13 / 4])
    assert hm.per_subject_mm == {"a": pytest.approx(17 / 4), "b": pytest.approx(31 / 4)}
    assert hm.fraction_within(20) == pytest.approx(0.75)
    assert len(hm.max_frame_fraction) == 81
    with pytest.raises(InputError, match="subject"):
        m.hand_metrics(e, subjects=((1, 5, "x"),))
    with pytest.raises(InputError):
        m.hand_joint_errors_mm(pred[:, :1], gt)
    with pytest.raises(InputError):
        m.max_frame_fraction(np.zeros((0, 14)))


def test_plot_writes_png(tmp_path):
    th = np.arange(81.0)
    out = plots.plot_max_frame_curves({"a": (th, np.clip(th / 40, 0, 1))}, tmp_path / "curve.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
