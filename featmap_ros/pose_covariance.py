"""How certain a pose is: 6x6 covariances from what the estimate knows, and their calibration.

One convention everywhere (ROS ``geometry_msgs/PoseWithCovariance``, REP 103): a pose's error is
``(dt, dtheta)``, ``t = t_hat + dt`` (metres) and ``R = exp(dtheta) R_hat`` (radians, a small turn
about the camera frame's fixed axes); the covariance is (6, 6) in the order (x, y, z, rot x, rot y,
rot z), metres^2 and radians^2. :mod:`featmap_ros.tracking`'s Kalman filter keeps its rotation
error the same way, so its state covariance is such a covariance too.

Where the numbers come from:

- a colour pose: the Gauss-Newton covariance of its PnP, ``s^2 (J^T J)^-1`` with ``J`` the
  Jacobian of the 8 projected box corners and ``s^2`` the variance of their reprojection
  residuals (``sum r^2 / (2N - 6)``) -- corners the network placed inconsistently with a rigid
  box give a wide covariance (:func:`pnp_covariance`);
- a depth-refined pose: the RMS residual of its point-to-plane fit, isotropic, the rotation's
  from it over the object's size (:func:`depth_fit_covariance`);
- both times a single calibrated factor (:class:`CovarianceScales`), because these are
  first-order figures that know nothing of the network's or the ICP's bias: fitted on real-like
  frames so that the true pose falls within the 2-sigma bound as often as a Gaussian's would
  (:func:`calibrate_scales`, ``featmap bench tracking``), one for the translation block and
  one for the rotation block.

"Within the 2-sigma bound" is for a 6-D error ``e``: ``e^T C^-1 e <= chi2_6(0.9545)`` (the
probability of 1-D 2 sigma); :func:`coverage` also gives the share per axis within ``2 sqrt(C_ii)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.stats import chi2

from featmap_ros.errors import InputError

#: Probability of a 1-D Gaussian within 2 sigma: the level of "the 2-sigma bound" in 6-D too.
TWO_SIGMA_PROB = 0.9544997361036416
#: The squared Mahalanobis distance of that level for a 6-D pose error.
TWO_SIGMA_CHI2_6 = float(chi2.ppf(TWO_SIGMA_PROB, 6))


@dataclass(frozen=True)
class CovarianceScales:
    """Variance factors of the first-order covariances (translation block, rotation block),
    calibrated on real-like frames.

    ``featmap bench tracking --seed 1234`` (a sequence other than the default one) prints the
    factors that put 95.45 % of its poses' translations (rotations) within the 3-D 2-sigma bound;
    these are those figures.
    """

    #: colour poses (PnP on the 8 box corners): translation, rotation
    pnp_t: float = 21.9
    pnp_rot: float = 30.8
    #: depth-refined poses (the fit's RMS residual): translation, rotation
    depth_t: float = 1.27
    depth_rot: float = 11.6


def scale_covariance(cov: np.ndarray, k_t: float, k_rot: float) -> np.ndarray:
    """``D C D`` with ``D = diag(sqrt(k_t) x 3, sqrt(k_rot) x 3)``: the translation block's
    variances times ``k_t``, the rotation block's times ``k_rot`` (the correlations kept).

    Args:
        cov: (6, 6); k_t, k_rot: positive factors.

    Returns:
        (6, 6) float64, a new array.
    """
    d = np.sqrt(np.array([k_t] * 3 + [k_rot] * 3, dtype=np.float64))
    return np.asarray(cov, np.float64) * d[:, None] * d[None, :]


def _skew(v: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N, 3, 3) cross-product matrices."""
    v = np.asarray(v, np.float64).reshape(-1, 3)
    out = np.zeros((len(v), 3, 3))
    out[:, 0, 1], out[:, 0, 2], out[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    out[:, 1, 0], out[:, 2, 0], out[:, 2, 1] = v[:, 2], -v[:, 1], v[:, 0]
    return out


def projection_jacobian(points_m: np.ndarray, R_m2c: np.ndarray, t_m2c_m: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Jacobian of the projected model points with respect to the pose error ``(dt, dtheta)``.

    Args:
        points_m: (N, 3) model points, metres.
        R_m2c: (3, 3) rotation; t_m2c_m: (3,) metres; K: (3, 3) pixels.

    Returns:
        (2N, 6) float64, pixels per metre / per radian, rows (u_0, v_0, u_1, ...).

    Raises:
        InputError: a point at or behind the camera.
    """
    X = np.asarray(points_m, np.float64).reshape(-1, 3) @ np.asarray(R_m2c, np.float64).T
    Pc = X + np.asarray(t_m2c_m, np.float64).reshape(3)
    z = Pc[:, 2]
    if not np.all(z > 1e-9):
        raise InputError("projection_jacobian: a model point is at or behind the camera")
    fx, fy = float(K[0][0]), float(K[1][1])
    Jp = np.zeros((len(Pc), 2, 3))  # d(u, v) / d(point in the camera frame)
    Jp[:, 0, 0], Jp[:, 0, 2] = fx / z, -fx * Pc[:, 0] / z**2
    Jp[:, 1, 1], Jp[:, 1, 2] = fy / z, -fy * Pc[:, 1] / z**2
    Jx = np.concatenate([np.broadcast_to(np.eye(3), (len(Pc), 3, 3)), -_skew(X)], axis=2)  # d point / d(dt, dtheta)
    return np.einsum("nij,njk->nik", Jp, Jx).reshape(-1, 6)


def pnp_covariance(points_m: np.ndarray, points_px: np.ndarray, R_m2c: np.ndarray, t_m2c_m: np.ndarray,
                   K: np.ndarray, min_sigma_px: float = 0.5) -> np.ndarray:
    """Covariance of a PnP pose from its reprojection residuals (Gauss-Newton).

    Args:
        points_m: (N, 3) model points, metres, N >= 4.
        points_px: (N, 2) their measured projections, pixels.
        R_m2c, t_m2c_m: the PnP pose.
        K: (3, 3) intrinsics.
        min_sigma_px: floor of the residuals' sigma (a perfect fit is not a certain pose).

    Returns:
        (6, 6) float64, ROS order (module docstring), symmetric positive definite.

    Raises:
        InputError: fewer than 4 points, non-finite input, a point behind the camera.
    """
    P = np.asarray(points_m, np.float64).reshape(-1, 3)
    uv = np.asarray(points_px, np.float64).reshape(-1, 2)
    if len(P) < 4 or len(uv) != len(P):
        raise InputError(f"pnp_covariance: expected N >= 4 points and as many projections, got {len(P)} and {len(uv)}")
    if not (np.all(np.isfinite(P)) and np.all(np.isfinite(uv))):
        raise InputError("pnp_covariance: non-finite points")
    J = projection_jacobian(P, R_m2c, t_m2c_m, K)
    Pc = P @ np.asarray(R_m2c, np.float64).T + np.asarray(t_m2c_m, np.float64).reshape(3)
    proj = Pc[:, :2] / Pc[:, 2:3] * [K[0][0], K[1][1]] + [K[0][2], K[1][2]]
    r = (uv - proj).reshape(-1)
    var = max(float(r @ r) / max(len(r) - 6, 1), min_sigma_px**2)
    return _symmetric(var * np.linalg.inv(J.T @ J))


def depth_fit_covariance(rmse_m: float, extents_m: np.ndarray, min_sigma_m: float = 0.0005) -> np.ndarray:
    """Covariance of a depth-refined pose from its fit's residuals: isotropic, ``rmse^2`` per axis
    in translation and ``(rmse / d)^2`` per axis in rotation, ``d`` the model box's diagonal (a
    turn by ``rmse / d`` moves the box's far corners by about the residual).

    The fit's full information (``A^T A / rmse^2``, rows ``[n, p x n]``) was tried first: its
    shape says more about the geometry than about the errors, which come from the model's and
    the sensor's biases; calibrated to the same coverage it gave 2-sigma bounds of 37 mm and 18 deg
    for errors of 1 mm and 1 deg (``featmap bench tracking``'s sequences), this one 1.7 mm and 2 deg.

    Args:
        rmse_m: the fit's RMS point-to-plane residual, metres (NaN -> the floor).
        extents_m: (3,) the model box's size, metres.
        min_sigma_m: floor of the residuals' sigma.

    Returns:
        (6, 6) float64 diagonal, ROS order.

    Raises:
        InputError: a model box of no size.
    """
    d = float(np.linalg.norm(np.asarray(extents_m, np.float64).reshape(3)))
    if not (np.isfinite(d) and d > 0):
        raise InputError(f"depth_fit_covariance: the model box has no size (extents_m {np.asarray(extents_m).tolist()})")
    sigma = max(float(rmse_m), min_sigma_m) if np.isfinite(rmse_m) else min_sigma_m
    return np.diag([sigma**2] * 3 + [(sigma / d) ** 2] * 3)


def _symmetric(c: np.ndarray) -> np.ndarray:
    return 0.5 * (c + c.T)


def pose_error(t_est_m: np.ndarray, R_est: np.ndarray, t_true_m: np.ndarray, R_true: np.ndarray) -> np.ndarray:
    """The error of estimates in the covariance's convention: ``(t_est - t_true, log(R_est R_true^T))``.

    Args:
        t_est_m, t_true_m: (N, 3) metres; R_est, R_true: (N, 3, 3).

    Returns:
        (N, 6) float64, metres and radians.
    """
    dt = np.asarray(t_est_m, np.float64).reshape(-1, 3) - np.asarray(t_true_m, np.float64).reshape(-1, 3)
    dth = (Rotation.from_matrix(np.asarray(R_est).reshape(-1, 3, 3)) * Rotation.from_matrix(np.asarray(R_true).reshape(-1, 3, 3)).inv()).as_rotvec()
    return np.concatenate([dt, dth], axis=1)


def mahalanobis2(errors: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """(N,) squared Mahalanobis distances of (N, 6) errors under (N, 6, 6) covariances."""
    e = np.asarray(errors, np.float64).reshape(-1, 6)
    C = np.asarray(covs, np.float64).reshape(-1, 6, 6)
    return np.einsum("ni,ni->n", e, np.linalg.solve(C, e[..., None])[..., 0])


def coverage(errors: np.ndarray, covs: np.ndarray) -> dict:
    """How often the truth lies within the 2-sigma bound.

    Args:
        errors: (N, 6) :func:`pose_error`; covs: (N, 6, 6). Rows with a NaN are left out.

    Returns:
        ``{"n", "joint"}`` (share with ``e^T C^-1 e <= chi2_6(0.9545)``), ``"per_axis"`` (6,
        shares with ``|e_i| <= 2 sqrt(C_ii)``), ``"median_d2"``; NaN shares when n is 0.
    """
    e = np.asarray(errors, np.float64).reshape(-1, 6)
    C = np.asarray(covs, np.float64).reshape(-1, 6, 6)
    ok = np.all(np.isfinite(e), axis=1) & np.all(np.isfinite(C.reshape(-1, 36)), axis=1)
    if not ok.any():
        return {"n": 0, "joint": float("nan"), "per_axis": [float("nan")] * 6, "median_d2": float("nan")}
    e, C = e[ok], C[ok]
    d2 = mahalanobis2(e, C)
    sd = np.sqrt(np.einsum("nii->ni", C))
    return {"n": int(ok.sum()), "joint": float(np.mean(d2 <= TWO_SIGMA_CHI2_6)),
            "per_axis": np.mean(np.abs(e) <= 2.0 * sd, axis=0).tolist(), "median_d2": float(np.median(d2))}


def calibrate_scales(errors: np.ndarray, covs: np.ndarray) -> tuple[float, float]:
    """The factors ``(k_t, k_rot)`` (:func:`scale_covariance`) for which 95.45 % of the truths
    lie within the 6-D 2-sigma bound.

    First each block's factor puts 95.45 % of the translations (rotations) within their 3-D
    bound (``quantile(d_block^2, 0.9545) / chi2_3(0.9545)``: the shape); then one common factor
    does the same for the whole 6-D error (the correlations the first step left alone).

    Args:
        errors: (N, 6); covs: (N, 6, 6) (uncalibrated). Rows with a NaN are left out.

    Returns:
        (k_t, k_rot).

    Raises:
        InputError: fewer than 10 usable rows.
    """
    e = np.asarray(errors, np.float64).reshape(-1, 6)
    C = np.asarray(covs, np.float64).reshape(-1, 6, 6)
    ok = np.all(np.isfinite(e), axis=1) & np.all(np.isfinite(C.reshape(-1, 36)), axis=1)
    if ok.sum() < 10:
        raise InputError(f"calibrate_scales: {int(ok.sum())} usable poses, need at least 10")
    e, C = e[ok], C[ok]
    c3 = float(chi2.ppf(TWO_SIGMA_PROB, 3))
    out = []
    for blk in (slice(0, 3), slice(3, 6)):
        eb, Cb = e[:, blk], C[:, blk, blk]
        d2 = np.einsum("ni,ni->n", eb, np.linalg.solve(Cb, eb[..., None])[..., 0])
        out.append(float(np.quantile(d2, TWO_SIGMA_PROB) / c3))
    scaled = np.array([scale_covariance(c, out[0], out[1]) for c in C])
    g = float(np.quantile(mahalanobis2(e, scaled), TWO_SIGMA_PROB) / TWO_SIGMA_CHI2_6)
    return out[0] * g, out[1] * g
