"""featmap_ros.pose_covariance: the PnP covariance against finite differences and a Monte Carlo,
the depth-fit covariance, coverage on hand-computed cases, calibration, bad input."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros import geometry
from featmap_ros import pose_covariance as pc
from featmap_ros.errors import InputError

K = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]])
CORNERS = geometry.box_corners(np.array([-0.04, -0.03, -0.05]), np.array([0.08, 0.06, 0.1]))
R0 = Rotation.from_euler("xyz", [20, -30, 40], degrees=True).as_matrix()
T0 = np.array([0.03, -0.02, 0.6])


def project(R, t):
    return geometry.project_points(CORNERS @ R.T + t, K)


def test_projection_jacobian_equals_finite_differences():
    J = pc.projection_jacobian(CORNERS, R0, T0, K)
    assert J.shape == (16, 6)
    h = 1e-6
    for k in range(6):
        d = np.zeros(6)
        d[k] = h
        R = Rotation.from_rotvec(d[3:]).as_matrix() @ R0  # the convention: R = exp(dtheta) R_hat, t = t_hat + dt
        num = (project(R, T0 + d[:3]) - project(R0, T0)).reshape(-1) / h
        np.testing.assert_allclose(J[:, k], num, rtol=1e-4, atol=1e-3)


def test_pnp_covariance_matches_the_spread_of_pnp_under_pixel_noise():
    """Monte Carlo: corners with 1.5 px noise through the real PnP; the covariance from the
    residuals predicts the poses' spread (within 30 %, 400 draws)."""
    rng = np.random.default_rng(0)
    uv0 = project(R0, T0)
    errs, covs = [], []
    for _ in range(400):
        uv = uv0 + rng.normal(0, 1.5, uv0.shape)
        R, t = geometry.solve_pnp(CORNERS, uv, K)
        errs.append(pc.pose_error(t[None], R[None], T0[None], R0[None])[0])
        covs.append(pc.pnp_covariance(CORNERS, uv, R, t, K))
    errs, covs = np.array(errs), np.array(covs)
    emp = np.cov(errs.T)
    pred = covs.mean(axis=0)
    np.testing.assert_allclose(np.sqrt(np.diag(pred)), np.sqrt(np.diag(emp)), rtol=0.3)
    for c in covs[:5]:
        np.testing.assert_allclose(c, c.T, atol=0)
        assert np.linalg.eigvalsh(c).min() > 0
    # a Gaussian's coverage at 2 sigma (6-D) with the mean covariance; each frame's own, whose sigma
    # comes from 10 degrees of freedom of residuals, covers less (why the node calibrates it)
    assert 0.93 <= pc.coverage(errs, np.broadcast_to(pred, covs.shape))["joint"] <= 0.98
    assert 0.80 <= pc.coverage(errs, covs)["joint"] < 0.95


def test_pnp_covariance_floor_and_bad_input():
    uv = project(R0, T0)
    c = pc.pnp_covariance(CORNERS, uv, R0, T0, K, min_sigma_px=0.5)  # a perfect fit: the floor
    J = pc.projection_jacobian(CORNERS, R0, T0, K)
    np.testing.assert_allclose(c, 0.25 * np.linalg.inv(J.T @ J), rtol=1e-9)
    with pytest.raises(InputError, match="N >= 4"):
        pc.pnp_covariance(CORNERS[:3], uv[:3], R0, T0, K)
    with pytest.raises(InputError, match="non-finite"):
        pc.pnp_covariance(CORNERS, np.full_like(uv, np.nan), R0, T0, K)
    with pytest.raises(InputError, match="behind the camera"):
        pc.projection_jacobian(CORNERS, R0, np.array([0, 0, -0.5]), K)


def test_depth_fit_covariance():
    c = pc.depth_fit_covariance(0.002, np.array([0.06, 0.08, 0.0]))  # box diagonal 0.1 m
    np.testing.assert_allclose(np.diag(c), [4e-6] * 3 + [4e-4] * 3)
    np.testing.assert_allclose(np.diag(pc.depth_fit_covariance(float("nan"), np.ones(3)))[:3], [0.0005**2] * 3)
    with pytest.raises(InputError, match="no size"):
        pc.depth_fit_covariance(0.002, np.zeros(3))


def test_scale_covariance_keeps_correlations():
    c = np.diag([1.0, 2, 3, 4, 5, 6])
    c[0, 3] = c[3, 0] = 0.5
    s = pc.scale_covariance(c, 4.0, 9.0)
    np.testing.assert_allclose(np.diag(s), [4, 8, 12, 36, 45, 54])
    assert s[0, 3] == pytest.approx(0.5 * 2 * 3)
    assert s is not c and c[0, 0] == 1.0  # the input is left alone


def test_coverage_on_hand_computed_cases():
    C = np.broadcast_to(np.eye(6), (4, 6, 6))
    e = np.zeros((4, 6))
    e[1, 0] = 1.9  # inside 2 sigma on its axis, d^2 = 3.61
    e[2, :] = 1.5  # each axis within 2 sigma, but d^2 = 13.5 > chi2_6(0.9545) = 12.85
    e[3, 2] = 3.7  # d^2 = 13.69: out
    r = pc.coverage(e, C)
    assert pc.TWO_SIGMA_CHI2_6 == pytest.approx(12.85, abs=0.01)
    assert r["n"] == 4 and r["joint"] == 0.5
    assert r["per_axis"] == [1.0, 1.0, 0.75, 1.0, 1.0, 1.0]
    nan = e.copy()
    nan[0, 0] = np.nan
    assert pc.coverage(nan, C)["n"] == 3
    assert pc.coverage(np.full((2, 6), np.nan), C[:2])["n"] == 0


def test_calibrated_scales_give_the_two_sigma_share():
    """Errors drawn with 3x the sigma in translation and 5x in rotation of the stated covariance:
    the calibration finds about 9 and 25, and the scaled covariances cover 95.45 %."""
    rng = np.random.default_rng(1)
    n = 4000
    C = np.diag([1e-6] * 3 + [1e-4] * 3)
    e = rng.normal(size=(n, 6)) * np.sqrt(np.diag(C)) * [3, 3, 3, 5, 5, 5]
    kt, kr = pc.calibrate_scales(e, np.broadcast_to(C, (n, 6, 6)))
    assert kt == pytest.approx(9.0, rel=0.12) and kr == pytest.approx(25.0, rel=0.12)
    scaled = np.broadcast_to(pc.scale_covariance(C, kt, kr), (n, 6, 6))
    assert pc.coverage(e, scaled)["joint"] == pytest.approx(pc.TWO_SIGMA_PROB, abs=0.005)
    with pytest.raises(InputError, match="at least 10"):
        pc.calibrate_scales(e[:5], np.broadcast_to(C, (5, 6, 6)))


def test_pose_error_convention():
    dth = np.array([0.01, -0.02, 0.03])
    R = Rotation.from_rotvec(dth).as_matrix() @ R0
    e = pc.pose_error((T0 + [0.001, 0, 0])[None], R[None], T0[None], R0[None])[0]
    np.testing.assert_allclose(e, [0.001, 0, 0, *dth], atol=1e-12)
    assert math.isclose(np.linalg.norm(e[3:]), np.linalg.norm(dth))
