"""Camera model, projections, uvd<->xyz, 3D box corners, PnP and rotations.

Conventions (REP 103 / OpenCV optical frame unless a function says otherwise):
- camera frame: x right, y down, z forward; points in metres unless the name says ``_mm``;
- ``R_m2c`` (3, 3) and ``t_m2c_m`` (3,) map model points into the camera frame:
  ``p_c = R_m2c @ p_m + t_m2c_m``;
- quaternions are in ROS order (x, y, z, w), through scipy's ``Rotation``;
- ``K`` is the 3x3 pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from featmap_ros.errors import InputError

#: Order of the 8 box corners: bit 2 of the index selects max x, bit 1 max y, bit 0 max z.
BOX_CORNER_SIGNS = np.array(
    [[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=np.float64
)
#: The 12 edges of the box, as pairs of corner indices (for drawing).
BOX_EDGES = tuple(
    (a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1
)


def _as_array(x: Any, shape_tail: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < len(shape_tail) or arr.shape[arr.ndim - len(shape_tail):] != shape_tail:
        raise InputError(f"{name}: expected shape (..., {', '.join(map(str, shape_tail))}), got {arr.shape}")
    return arr


def check_pose(R_m2c, t_m2c_m) -> tuple[np.ndarray, np.ndarray]:
    """A pose as float64 arrays, or an InputError naming ``R_m2c`` / ``t_m2c_m``.

    Returns:
        ((3, 3) float64 rotation, (3,) float64 translation).
    """
    R = np.asarray(R_m2c, dtype=np.float64)
    t = np.asarray(t_m2c_m, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        raise InputError(f"R_m2c: expected a finite (3, 3) rotation, got shape {R.shape}")
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise InputError(f"t_m2c_m: expected a finite (3,) translation, got {t.tolist()}")
    return R, t


def check_K(K: Any, name: str = "K") -> np.ndarray:
    """Validate a pinhole matrix.

    Args:
        K: (3, 3) or 9 values row-major, pixels.
        name: what to call it in error messages.

    Returns:
        (3, 3) float64 copy.

    Raises:
        InputError: wrong size, non-finite values, or non-positive focal lengths.
    """
    arr = np.asarray(K, dtype=np.float64)
    if arr.size != 9:
        raise InputError(f"{name}: expected 9 values (3x3), got shape {arr.shape}")
    arr = arr.reshape(3, 3).copy()
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: contains NaN or inf: {arr.ravel().tolist()}")
    if arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise InputError(f"{name}: focal lengths must be positive, got fx={arr[0, 0]}, fy={arr[1, 1]}")
    return arr


@dataclass(frozen=True)
class CameraModel:
    """A pinhole camera.

    Attributes:
        K: (3, 3) float64 intrinsics, pixels.
        width: image width in pixels.
        height: image height in pixels.
        D: distortion coefficients (OpenCV order); images are assumed rectified, so the
            estimators ignore them, but they are kept for PnP on unrectified points.
    """

    K: np.ndarray
    width: int
    height: int
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", check_K(self.K))
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise InputError(f"camera size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "D", np.asarray(self.D, dtype=np.float64).ravel())

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def is_distorted(self) -> bool:
        return bool(self.D.size and np.any(np.abs(self.D) > 1e-12))

    @classmethod
    def from_fxfycxcy(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> "CameraModel":
        return cls(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64), width, height)

    def project(self, points_c_m: np.ndarray) -> np.ndarray:
        """Project camera-frame points. See :func:`project_points`."""
        return project_points(points_c_m, self.K)


def project_points(points_c: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project points given in the camera frame.

    Args:
        points_c: (..., 3) float, camera frame, any unit (only ratios matter).
        K: (3, 3) intrinsics, pixels.

    Returns:
        (..., 2) float64 pixel coordinates (u right, v down). Points with z <= 0 give NaN.
    """
    p = _as_array(points_c, (3,), "points_c")
    K = check_K(K)
    z = p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * p[..., 0] / z + K[0, 1] * p[..., 1] / z + K[0, 2]
        v = K[1, 1] * p[..., 1] / z + K[1, 2]
    uv = np.stack([u, v], axis=-1)
    uv[z <= 0] = np.nan
    return uv


def transform_points(points_m: np.ndarray, R_m2c: np.ndarray, t_m2c: np.ndarray) -> np.ndarray:
    """Apply ``p_c = R_m2c @ p_m + t_m2c`` to (N, 3) points (units of ``t``)."""
    p = _as_array(points_m, (3,), "points_m")
    R = _as_array(R_m2c, (3, 3), "R_m2c")
    t = np.asarray(t_m2c, dtype=np.float64).reshape(3)
    return p @ R.T + t


def project_model_points(points_m: np.ndarray, R_m2c: np.ndarray, t_m2c: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project model points at pose (R_m2c, t_m2c): (N, 3) -> (N, 2) pixels."""
    return project_points(transform_points(points_m, R_m2c, t_m2c), K)


def uvd_to_xyz(uvd: np.ndarray, fx: float, fy: float, cx: float, cy: float, y_up: bool = False) -> np.ndarray:
    """Back-project pixels with depth.

    Args:
        uvd: (..., 3) pixel u, pixel v, depth d (any unit; xyz come out in that unit).
        fx, fy, cx, cy: intrinsics in pixels.
        y_up: NYU's convention ``y = (cy - v) * d / fy`` when True; the optical frame's
            ``y = (v - cy) * d / fy`` (y down) when False.

    Returns:
        (..., 3) float64 points in the unit of d.
    """
    a = _as_array(uvd, (3,), "uvd")
    d = a[..., 2]
    x = (a[..., 0] - cx) * d / fx
    y = ((cy - a[..., 1]) if y_up else (a[..., 1] - cy)) * d / fy
    return np.stack([x, y, d], axis=-1)


def xyz_to_uvd(xyz: np.ndarray, fx: float, fy: float, cx: float, cy: float, y_up: bool = False) -> np.ndarray:
    """Inverse of :func:`uvd_to_xyz`: (..., 3) points -> (..., 3) (u, v, d)."""
    a = _as_array(xyz, (3,), "xyz")
    z = a[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = a[..., 0] * fx / z + cx
        v = (cy - a[..., 1] * fy / z) if y_up else (a[..., 1] * fy / z + cy)
    return np.stack([u, v, z], axis=-1)


def box_corners(min_xyz: np.ndarray, size_xyz: np.ndarray) -> np.ndarray:
    """The 8 corners of an axis-aligned box in the model frame.

    Args:
        min_xyz: (3,) minimum corner (BOP models_info ``min_x, min_y, min_z``).
        size_xyz: (3,) extents (BOP ``size_x, size_y, size_z``), same unit.

    Returns:
        (8, 3) float64, ordered as :data:`BOX_CORNER_SIGNS`.
    """
    lo = np.asarray(min_xyz, dtype=np.float64).reshape(3)
    size = np.asarray(size_xyz, dtype=np.float64).reshape(3)
    if np.any(size < 0) or not np.all(np.isfinite(size)):
        raise InputError(f"box extents must be finite and non-negative, got {size.tolist()}")
    return lo + BOX_CORNER_SIGNS * size


def box_corners_from_points(points: np.ndarray) -> np.ndarray:
    """Corners of the axis-aligned bounding box of (N, 3) points: (8, 3)."""
    p = _as_array(points, (3,), "points")
    if p.shape[0] == 0:
        raise InputError("points: empty")
    lo, hi = p.min(axis=0), p.max(axis=0)
    return box_corners(lo, hi - lo)


def solve_pnp(
    points_m: np.ndarray,
    points_px: np.ndarray,
    K: np.ndarray,
    dist: np.ndarray | None = None,
    refine: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Pose from 2D-3D correspondences: EPnP, then Levenberg-Marquardt refinement (OpenCV).

    Args:
        points_m: (N, 3) model points, N >= 4 (unit of the returned translation).
        points_px: (N, 2) their projections, pixels.
        K: (3, 3) intrinsics.
        dist: OpenCV distortion coefficients or None.
        refine: run the iterative refinement after EPnP.

    Returns:
        (R_m2c (3, 3), t_m2c (3,)) float64.

    Raises:
        InputError: fewer than 4 points, non-finite input, or OpenCV failure.
    """
    obj = _as_array(points_m, (3,), "points_m").reshape(-1, 3)
    img = _as_array(points_px, (2,), "points_px").reshape(-1, 2)
    if obj.shape[0] != img.shape[0]:
        raise InputError(f"PnP: {obj.shape[0]} model points but {img.shape[0]} image points")
    if obj.shape[0] < 4:
        raise InputError(f"PnP needs at least 4 correspondences, got {obj.shape[0]}")
    if not (np.all(np.isfinite(obj)) and np.all(np.isfinite(img))):
        raise InputError("PnP: correspondences contain NaN or inf")
    K = check_K(K)
    D = np.zeros(0) if dist is None else np.asarray(dist, dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, D, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        raise InputError("PnP: EPnP found no solution")
    if refine:
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, D, rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            raise InputError("PnP: refinement failed")
    R, _ = cv2.Rodrigues(rvec)
    return R, tvec.reshape(3).astype(np.float64)


def quat_xyzw_from_matrix(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) quaternions (x, y, z, w), w >= 0."""
    q = Rotation.from_matrix(_as_array(R, (3, 3), "R")).as_quat()
    return np.where(q[..., 3:4] < 0, -q, q)


def matrix_from_quat_xyzw(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w), normalised here -> (..., 3, 3) rotation matrices."""
    qa = _as_array(q, (4,), "quaternion")
    if np.any(np.linalg.norm(qa, axis=-1) < 1e-12):
        raise InputError("quaternion: zero norm")
    return Rotation.from_quat(qa).as_matrix()


def orthonormalize(R: np.ndarray) -> np.ndarray:
    """The rotation matrix nearest to ``R`` (Frobenius norm), via SVD; (3, 3) -> (3, 3)."""
    M = _as_array(R, (3, 3), "R")
    U, _, Vt = np.linalg.svd(M)
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    return U @ D @ Vt


def orthonormality_error(R: np.ndarray) -> float:
    """max |R R^T - I|: 0 for a rotation; BOP ground truth of LM-O reaches ~1e-3."""
    M = _as_array(R, (3, 3), "R")
    return float(np.abs(M @ M.T - np.eye(3)).max())


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle of the relative rotation R_a^T R_b in degrees, in [0, 180]."""
    A = _as_array(R_a, (3, 3), "R_a")
    B = _as_array(R_b, (3, 3), "R_b")
    cos = (np.trace(A.T @ B) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def look_at_R_m2c(direction_c2m: np.ndarray, inplane_rad: float = 0.0, up: np.ndarray | None = None) -> np.ndarray:
    """Rotation of a camera looking at the model origin from ``direction_c2m`` (model frame).

    Args:
        direction_c2m: (3,) vector from the model origin towards the camera, model frame.
        inplane_rad: rotation about the optical axis.
        up: model-frame up vector (default +z).

    Returns:
        R_m2c (3, 3): maps model coordinates into the camera optical frame.
    """
    d = np.asarray(direction_c2m, dtype=np.float64).reshape(3)
    n = np.linalg.norm(d)
    if n < 1e-12:
        raise InputError("look_at: zero direction")
    z_c = -d / n  # optical axis in model coordinates: from camera towards origin
    up_v = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    x_c = np.cross(z_c, up_v)
    if np.linalg.norm(x_c) < 1e-9:  # looking along up: pick any perpendicular
        x_c = np.cross(z_c, np.array([0.0, 1.0, 0.0]))
    x_c /= np.linalg.norm(x_c)
    y_c = np.cross(z_c, x_c)
    R_c2m = np.stack([x_c, y_c, z_c], axis=1)
    R_m2c = R_c2m.T
    if inplane_rad:
        R_m2c = Rotation.from_rotvec([0.0, 0.0, inplane_rad]).as_matrix() @ R_m2c
    return R_m2c
