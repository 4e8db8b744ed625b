"""featmap_ros.geometry: known values, round trips, bad input."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros import geometry as g
from featmap_ros.errors import InputError

K_LM = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
NYU = dict(fx=588.03, fy=587.07, cx=320.0, cy=240.0)


def test_project_known_values():
    K = np.array([[500.0, 0, 320], [0, 400, 240], [0, 0, 1]])
    uv = g.project_points(np.array([[0.0, 0.0, 2.0], [0.2, -0.1, 1.0], [1.0, 1.0, 4.0]]), K)
    np.testing.assert_allclose(uv, [[320, 240], [420, 200], [445, 340]])


def test_project_behind_camera_is_nan_and_shape_checked():
    uv = g.project_points(np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]]), K_LM)
    assert np.all(np.isnan(uv[0])) and np.all(np.isfinite(uv[1]))
    with pytest.raises(InputError, match="points_c"):
        g.project_points(np.zeros((4, 2)), K_LM)


def test_check_K_rejects_bad_matrices():
    with pytest.raises(InputError, match="9 values"):
        g.check_K(np.eye(2))
    with pytest.raises(InputError, match="NaN"):
        g.check_K([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(InputError, match="focal"):
        g.check_K([[-1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_camera_model_fields_and_bad_size():
    cam = g.CameraModel(K_LM, 640, 480, np.array([0.1, 0, 0, 0, 0]))
    assert (cam.fx, cam.cy, cam.width) == (pytest.approx(572.4114), pytest.approx(242.04899), 640)
    assert cam.is_distorted and not g.CameraModel(K_LM, 640, 480).is_distorted
    with pytest.raises(InputError, match="size"):
        g.CameraModel(K_LM, 0, 480)


def test_uvd_xyz_nyu_known_value_and_y_up():
    # a pixel above the principal point (v < cy) is at positive y in NYU's convention
    xyz = g.uvd_to_xyz(np.array([320.0 + 58.803, 240.0 - 58.707, 1000.0]), **NYU, y_up=True)
    np.testing.assert_allclose(xyz, [100.0, 100.0, 1000.0])
    xyz_down = g.uvd_to_xyz(np.array([320.0 + 58.803, 240.0 - 58.707, 1000.0]), **NYU, y_up=False)
    np.testing.assert_allclose(xyz_down, [100.0, -100.0, 1000.0])


@pytest.mark.parametrize("y_up", [True, False])
def test_uvd_xyz_round_trip(y_up):
    rng = np.random.default_rng(0)
    uvd = np.stack([rng.uniform(0, 640, (5, 14)), rng.uniform(0, 480, (5, 14)), rng.uniform(300, 1500, (5, 14))], -1)
    back = g.xyz_to_uvd(g.uvd_to_xyz(uvd, **NYU, y_up=y_up), **NYU, y_up=y_up)
    np.testing.assert_allclose(back, uvd, atol=1e-9)


def test_xyz_to_uvd_matches_projection():
    p = np.array([[0.1, -0.05, 0.8], [-0.2, 0.1, 1.3]])
    uvd = g.xyz_to_uvd(p, K_LM[0, 0], K_LM[1, 1], K_LM[0, 2], K_LM[1, 2])
    np.testing.assert_allclose(uvd[:, :2], g.project_points(p, K_LM))
    np.testing.assert_allclose(uvd[:, 2], p[:, 2])


def test_box_corners_order_and_bad_extents():
    c = g.box_corners([-1.0, -2.0, -3.0], [2.0, 4.0, 6.0])
    assert c.shape == (8, 3)
    np.testing.assert_allclose(c[0], [-1, -2, -3])
    np.testing.assert_allclose(c[7], [1, 2, 3])
    np.testing.assert_allclose(c[4], [1, -2, -3])  # bit 2 -> max x
    np.testing.assert_allclose(c[1], [-1, -2, 3])  # bit 0 -> max z
    assert len(g.BOX_EDGES) == 12
    for a, b in g.BOX_EDGES:
        assert np.count_nonzero(c[a] != c[b]) == 1
    with pytest.raises(InputError):
        g.box_corners([0, 0, 0], [1, -1, 1])
    pts = np.random.default_rng(1).normal(size=(50, 3))
    cc = g.box_corners_from_points(pts)
    np.testing.assert_allclose(cc[0], pts.min(0))
    np.testing.assert_allclose(cc[7], pts.max(0))


def _random_pose(rng):
    R = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
    t = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.6, 1.2)])
    return R, t


def test_pnp_round_trip_exact():
    rng = np.random.default_rng(2)
    corners = g.box_corners([-0.04, -0.04, -0.05], [0.08, 0.08, 0.1])
    for _ in range(5):
        R, t = _random_pose(rng)
        uv = g.project_model_points(corners, R, t, K_LM)
        R_e, t_e = g.solve_pnp(corners, uv, K_LM)
        assert g.rotation_angle_deg(R, R_e) < 1e-4
        np.testing.assert_allclose(t_e, t, atol=1e-6)


def test_pnp_round_trip_with_pixel_noise():
    rng = np.random.default_rng(3)
    corners = g.box_corners([-0.04, -0.04, -0.05], [0.08, 0.08, 0.1])
    rot_err, trans_err = [], []
    for _ in range(20):
        R, t = _random_pose(rng)
        uv = g.project_model_points(corners, R, t, K_LM) + rng.normal(0, 0.5, (8, 2))
        R_e, t_e = g.solve_pnp(corners, uv, K_LM)
        rot_err.append(g.rotation_angle_deg(R, R_e))
        trans_err.append(np.linalg.norm(t_e - t))
    # 0.5 px noise on a ~80 px object: about a degree and a centimetre at most
    assert np.median(rot_err) < 1.5 and max(rot_err) < 5.0
    assert np.median(trans_err) < 0.01


def test_pnp_bad_input():
    c = np.zeros((3, 3))
    with pytest.raises(InputError, match="at least 4"):
        g.solve_pnp(c, np.zeros((3, 2)), K_LM)
    with pytest.raises(InputError, match="model points"):
        g.solve_pnp(np.zeros((5, 3)), np.zeros((4, 2)), K_LM)
    pts = np.random.default_rng(0).normal(size=(6, 3))
    uv = np.ones((6, 2))
    uv[2, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        g.solve_pnp(pts, uv, K_LM)


def test_quaternion_order_is_xyzw_like_scipy():
    R = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    q = g.quat_xyzw_from_matrix(R)
    np.testing.assert_allclose(q, [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)], atol=1e-12)
    rng = np.random.default_rng(4)
    Rs = Rotation.random(10, random_state=5).as_matrix()
    qs = g.quat_xyzw_from_matrix(Rs)
    assert np.all(qs[:, 3] >= 0)
    np.testing.assert_allclose(g.matrix_from_quat_xyzw(qs), Rs, atol=1e-12)
    # scipy's own order is (x, y, z, w): same rotation either sign
    np.testing.assert_allclose(Rotation.from_quat(qs).as_matrix(), Rs, atol=1e-12)
    np.testing.assert_allclose(g.matrix_from_quat_xyzw(2.0 * qs[0]), Rs[0], atol=1e-12)  # normalised
    with pytest.raises(InputError, match="zero"):
        g.matrix_from_quat_xyzw([0, 0, 0, 0])
    del rng


def test_orthonormalize_nearest_rotation():
    R = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    noisy = R + 1e-3 * np.random.default_rng(6).normal(size=(3, 3))
    assert g.orthonormality_error(noisy) > 1e-4
    Ro = g.orthonormalize(noisy)
    assert g.orthonormality_error(Ro) < 1e-12
    assert np.linalg.det(Ro) == pytest.approx(1.0)
    assert g.rotation_angle_deg(R, Ro) < 0.2
    np.testing.assert_allclose(g.orthonormalize(R), R, atol=1e-12)  # a rotation is a fixed point


def test_rotation_angle_known():
    A = np.eye(3)
    B = Rotation.from_rotvec([0, 0, np.radians(30)]).as_matrix()
    assert g.rotation_angle_deg(A, B) == pytest.approx(30.0)
    assert g.rotation_angle_deg(B, B) == pytest.approx(0.0, abs=1e-6)


def test_look_at_puts_origin_on_optical_axis():
    for direction in ([0, 0, 1], [1, 1, 0.5], [0.2, -1, 0.3]):
        R = g.look_at_R_m2c(np.array(direction, float))
        assert g.orthonormality_error(R) < 1e-12 and np.linalg.det(R) == pytest.approx(1.0)
        d = np.asarray(direction, float) / np.linalg.norm(direction)
        cam_centre_m = 0.7 * d
        t = -R @ cam_centre_m
        np.testing.assert_allclose(t, [0, 0, 0.7], atol=1e-12)  # origin straight ahead at 0.7
    R0 = g.look_at_R_m2c(np.array([1.0, 0, 0]))
    R1 = g.look_at_R_m2c(np.array([1.0, 0, 0]), inplane_rad=np.pi / 2)
    assert g.rotation_angle_deg(R0, R1) == pytest.approx(90.0)
    with pytest.raises(InputError):
        g.look_at_R_m2c(np.zeros(3))
