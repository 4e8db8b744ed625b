"""Crops and their inverse mappings.

Colour (BB8-style): a square window around the object, side proportional to its projected
size, resampled to ``size x size``; network targets are 2D points in crop-normalised
coordinates in [-1, 1] (``-1`` = left/top edge of the window, ``+1`` = right/bottom edge).

Depth (DeepPrior): see the depth section below.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from featmap_ros.errors import InputError
from featmap_ros.geometry import check_K, project_model_points

#: The crop window's margin: side = WINDOW_SCALE x the larger extent of the projected 3D box corners.
WINDOW_SCALE = 1.1


@dataclass(frozen=True)
class Window:
    """A square window in full-image pixels.

    Attributes:
        center_u, center_v: window centre, pixels.
        side: window side, pixels (> 0).
    """

    center_u: float
    center_v: float
    side: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.center_u) and np.isfinite(self.center_v) and np.isfinite(self.side)):
            raise InputError(f"window: non-finite values {self}")
        if self.side <= 0:
            raise InputError(f"window: side must be positive, got {self.side}")

    def affine_to_crop(self, size: int) -> np.ndarray:
        """(2, 3) affine map from full-image pixels to crop pixels of a ``size`` crop.

        Pixel centres are at integer coordinates: the window's left edge
        ``center_u - side/2`` maps to crop coordinate ``-0.5``.
        """
        s = size / self.side
        return np.array(
            [[s, 0.0, size / 2.0 - 0.5 - s * self.center_u], [0.0, s, size / 2.0 - 0.5 - s * self.center_v]],
            dtype=np.float64,
        )

    def as_xywh(self) -> tuple[float, float, float, float]:
        h = self.side / 2.0
        return (self.center_u - h, self.center_v - h, self.side, self.side)


def window_from_bbox(bbox_xywh: np.ndarray, scale: float = 1.2, min_side: float = 8.0) -> Window:
    """Square window around an image box: side = scale * max(w, h).

    Args:
        bbox_xywh: (4,) x, y, w, h in pixels (BOP ``bbox_obj`` convention).
        scale: margin factor.
        min_side: smallest allowed side, pixels.
    """
    b = np.asarray(bbox_xywh, dtype=np.float64).reshape(-1)
    if b.size != 4 or not np.all(np.isfinite(b)):
        raise InputError(f"bbox: expected 4 finite values x, y, w, h, got {b.tolist()}")
    if b[2] <= 0 or b[3] <= 0:
        raise InputError(f"bbox: width and height must be positive, got {b.tolist()}")
    return Window(b[0] + b[2] / 2.0, b[1] + b[3] / 2.0, max(scale * max(b[2], b[3]), min_side))


def window_from_points(points_px: np.ndarray, scale: float = 1.2, min_side: float = 8.0) -> Window:
    """Square window around (N, 2) image points (e.g. projected box corners)."""
    p = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    p = p[np.all(np.isfinite(p), axis=1)]
    if p.shape[0] == 0:
        raise InputError("window_from_points: no finite points")
    lo, hi = p.min(axis=0), p.max(axis=0)
    return window_from_bbox([lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)], scale, min_side)


def object_window(corners_px: np.ndarray, scale: float = WINDOW_SCALE) -> Window:
    """The window of an object seen at a known pose: the square around its projected 3D box
    corners, ``scale`` times their larger extent.

    This is the one definition of "the ground-truth window": training crops are this window
    jittered (:func:`jitter_window`), and ``featmap eval object --boxes gt``, the ablation and the
    node's ``ground_truth`` (and ``tracking``) image windows use it as is.

    Args:
        corners_px: (8, 2) projected box corners, pixels.
    """
    return window_from_points(corners_px, scale=scale)


def ground_truth_window(corners_m: np.ndarray, R_m2c: np.ndarray, t_m2c_m: np.ndarray, K: np.ndarray) -> Window:
    """:func:`object_window` of the box ``corners_m`` ((8, 3) model frame, metres) at the pose
    ``R_m2c`` (3, 3), ``t_m2c_m`` (3,) metres, seen with intrinsics ``K`` (3, 3) pixels."""
    return object_window(project_model_points(corners_m, R_m2c, t_m2c_m, K))


def jitter_window(window: Window, rng: np.random.Generator, shift_px: float = 10.0, scale_frac: float = 0.2) -> Window:
    """BB8 training jitter: uniform shift in [-shift_px, shift_px], side scaled by 1 +- scale_frac.

    ``shift_px`` is in full-image pixels.
    """
    du, dv = rng.uniform(-shift_px, shift_px, size=2)
    s = rng.uniform(1.0 - scale_frac, 1.0 + scale_frac)
    return Window(window.center_u + du, window.center_v + dv, window.side * s)


def crop_image(image: np.ndarray, window: Window, size: int, border_value: float | tuple = 0) -> np.ndarray:
    """Resample the window of ``image`` to a ``size x size`` crop (bilinear, constant border).

    Args:
        image: (H, W) or (H, W, C) array.
        window: window in full-image pixels.
        size: output side in pixels.

    Returns:
        (size, size[, C]) array of the input dtype.
    """
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image: expected (H, W) or (H, W, C), got {image.shape}")
    M = window.affine_to_crop(size)
    interp = cv2.INTER_AREA if window.side > 2 * size else cv2.INTER_LINEAR
    if interp == cv2.INTER_AREA:  # warpAffine has no area filter: pre-blur instead
        sigma = 0.5 * window.side / size
        image = cv2.GaussianBlur(image, (0, 0), sigma)
        interp = cv2.INTER_LINEAR
    return cv2.warpAffine(image, M, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def image_to_crop_normalised(points_px: np.ndarray, window: Window) -> np.ndarray:
    """(..., 2) full-image pixels -> (..., 2) crop-normalised coordinates in [-1, 1] over the window."""
    p = np.asarray(points_px, dtype=np.float64)
    c = np.array([window.center_u, window.center_v])
    return (p - c) / (window.side / 2.0)


def crop_normalised_to_image(points_n: np.ndarray, window: Window) -> np.ndarray:
    """Inverse of :func:`image_to_crop_normalised`."""
    p = np.asarray(points_n, dtype=np.float64)
    c = np.array([window.center_u, window.center_v])
    return p * (window.side / 2.0) + c


# --------------------------------------------------------------------------------------------
# Depth (DeepPrior): a metric cube around a 3D centre.
#
# The crop covers the cube's x-y extent (``cube_m`` side) projected at the centre's depth; that
# window (square in metres, nearly square in pixels) is resampled by nearest neighbour to
# ``size x size`` with one scale for both axes (aspect kept), optionally rotated in-plane
# about the centre's pixel (training augmentation). Depth is clipped to the centre's z
# +- cube/2 and scaled to [-1, 1] (-1 = front of the cube); invalid pixels go to the back (+1).
# Joint targets are metric: (p - centre) / (cube / 2), in the camera frame; with an in-plane
# rotation the joints are first rotated in the image about the centre's pixel at their own
# depth (as DeepPrior++ does), so that label and image agree.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepthCropTransform:
    """Everything needed to map between a depth crop and the camera frame.

    Attributes:
        center_c_m: (3,) crop centre, camera optical frame, metres.
        cube_m: cube side, metres.
        size: crop side, pixels.
        K: (3, 3) intrinsics of the full image.
        angle_rad: in-plane rotation of the crop content about the centre's pixel.
        M_img2crop: (2, 3) affine map from full-image pixels to crop pixels.
    """

    center_c_m: np.ndarray
    cube_m: float
    size: int
    K: np.ndarray
    angle_rad: float
    M_img2crop: np.ndarray

    @property
    def center_px(self) -> np.ndarray:
        """(2,) pixel of the centre in the full image."""
        c = self.center_c_m
        return np.array([self.K[0, 0] * c[0] / c[2] + self.K[0, 2], self.K[1, 1] * c[1] / c[2] + self.K[1, 2]])


def depth_crop_transform(center_c_m: np.ndarray, K: np.ndarray, cube_m: float = 0.3, size: int = 128, angle_rad: float = 0.0) -> DepthCropTransform:
    """The crop geometry for a cube centred at ``center_c_m`` (see :func:`crop_depth`).

    Raises:
        InputError: non-finite centre, centre not in front of the camera, bad cube or size.
    """

    K = check_K(K)
    c = np.asarray(center_c_m, dtype=np.float64).reshape(-1)
    if c.size != 3 or not np.all(np.isfinite(c)):
        raise InputError(f"center_c_m: expected 3 finite values, got {c.tolist()}")
    if c[2] <= 1e-3:
        raise InputError(f"center_c_m: hand centre must be in front of the camera (z > 0), got z = {c[2]:.4f} m")
    if not (np.isfinite(cube_m) and cube_m > 0):
        raise InputError(f"cube_m must be positive, got {cube_m}")
    if int(size) < 2:
        raise InputError(f"crop size must be >= 2, got {size}")
    size = int(size)
    uc = K[0, 0] * c[0] / c[2] + K[0, 2]
    vc = K[1, 1] * c[1] / c[2] + K[1, 2]
    half_px = 0.5 * cube_m * max(K[0, 0], K[1, 1]) / c[2]
    s = size / (2.0 * half_px)
    ca, sa = np.cos(angle_rad), np.sin(angle_rad)
    A = s * np.array([[ca, -sa], [sa, ca]])
    o = size / 2.0 - 0.5
    M = np.concatenate([A, (np.array([o, o]) - A @ np.array([uc, vc]))[:, None]], axis=1)
    return DepthCropTransform(c.copy(), float(cube_m), size, K, float(angle_rad), M)


def crop_depth(
    depth_m: np.ndarray,
    center_c_m: np.ndarray,
    K: np.ndarray,
    cube_m: float = 0.3,
    size: int = 128,
    angle_rad: float = 0.0,
) -> tuple[np.ndarray, DepthCropTransform]:
    """DeepPrior crop of a depth map.

    Args:
        depth_m: (H, W) depth along z, metres, 0 (or non-finite) = invalid.
        center_c_m: (3,) cube centre, camera optical frame, metres.
        K: (3, 3) intrinsics, pixels.
        cube_m: cube side, metres (0.30; 0.25 for small hands).
        size: crop side, pixels.
        angle_rad: in-plane rotation (augmentation).

    Returns:
        crop (size, size) float32 in [-1, 1] (+1 = back of the cube or invalid) and its
        :class:`DepthCropTransform`.

    Raises:
        InputError: bad depth map or centre.
    """
    d = np.asarray(depth_m)
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] == 0:
        raise InputError(f"depth_m: expected (H, W), got shape {d.shape}")
    T = depth_crop_transform(center_c_m, K, cube_m, size, angle_rad)
    d32 = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
    warped = cv2.warpAffine(d32, T.M_img2crop, (T.size, T.size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    half = T.cube_m / 2.0
    n = (warped - np.float32(T.center_c_m[2])) / np.float32(half)
    n = np.where(warped > 0, np.clip(n, -1.0, 1.0), 1.0).astype(np.float32)
    return n, T


def _rotate_uv_about(uv: np.ndarray, center_uv: np.ndarray, angle_rad: float) -> np.ndarray:
    ca, sa = np.cos(angle_rad), np.sin(angle_rad)
    R = np.array([[ca, -sa], [sa, ca]])
    return (uv - center_uv) @ R.T + center_uv


def joints_to_crop(joints_c_m: np.ndarray, transform: DepthCropTransform) -> np.ndarray:
    """Camera-frame joints -> crop-normalised metric joints.

    Args:
        joints_c_m: (J, 3) camera optical frame, metres.
        transform: from :func:`crop_depth`.

    Returns:
        (J, 3) float64, (p - centre) / (cube / 2): in [-1, 1] inside the cube.
    """
    T = transform
    J = np.asarray(joints_c_m, dtype=np.float64)
    if J.ndim != 2 or J.shape[1] != 3:
        raise InputError(f"joints_c_m: expected (J, 3), got {J.shape}")
    if T.angle_rad != 0.0:
        K = T.K
        z = J[:, 2]
        uv = np.stack([K[0, 0] * J[:, 0] / z + K[0, 2], K[1, 1] * J[:, 1] / z + K[1, 2]], axis=1)
        uv = _rotate_uv_about(uv, T.center_px, T.angle_rad)
        J = np.stack([(uv[:, 0] - K[0, 2]) * z / K[0, 0], (uv[:, 1] - K[1, 2]) * z / K[1, 1], z], axis=1)
    return (J - T.center_c_m) / (T.cube_m / 2.0)


def crop_to_joints(joints_n: np.ndarray, transform: DepthCropTransform) -> np.ndarray:
    """Exact inverse of :func:`joints_to_crop`: (J, 3) normalised -> (J, 3) camera frame, metres."""
    T = transform
    n = np.asarray(joints_n, dtype=np.float64)
    if n.ndim != 2 or n.shape[1] != 3:
        raise InputError(f"joints_n: expected (J, 3), got {n.shape}")
    J = n * (T.cube_m / 2.0) + T.center_c_m
    if T.angle_rad != 0.0:
        K = T.K
        z = J[:, 2]
        uv = np.stack([K[0, 0] * J[:, 0] / z + K[0, 2], K[1, 1] * J[:, 1] / z + K[1, 2]], axis=1)
        uv = _rotate_uv_about(uv, T.center_px, -T.angle_rad)
        J = np.stack([(uv[:, 0] - K[0, 2]) * z / K[0, 0], (uv[:, 1] - K[1, 2]) * z / K[1, 1], z], axis=1)
    return J


def joints_to_crop_px(joints_c_m: np.ndarray, transform: DepthCropTransform) -> np.ndarray:
    """(J, 3) camera-frame joints -> (J, 2) crop pixel coordinates (for drawing)."""
    T = transform
    J = np.asarray(joints_c_m, dtype=np.float64).reshape(-1, 3)
    K = T.K
    uv = np.stack([K[0, 0] * J[:, 0] / J[:, 2] + K[0, 2], K[1, 1] * J[:, 1] / J[:, 2] + K[1, 2], np.ones(len(J))], axis=1)
    return uv @ T.M_img2crop.T


def augment_depth_crop(
    rng: np.random.Generator,
    center_c_m: np.ndarray,
    cube_m: float = 0.3,
    offset_sigma_m: float = 0.005,
    max_rotation_deg: float = 180.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
) -> tuple[np.ndarray, float, float]:
    """DeepPrior++ training augmentation of the crop parameters.

    Args:
        rng: random generator.
        center_c_m: (3,) the true centre, metres.
        cube_m: nominal cube side.
        offset_sigma_m: standard deviation of the 3D centre offset, metres.
        max_rotation_deg: in-plane rotation drawn from U(-max, max).
        scale_range: cube side scaled by U(lo, hi).

    Returns:
        (center_c_m (3,), cube_m, angle_rad) to pass to :func:`crop_depth`.
    """
    c = np.asarray(center_c_m, dtype=np.float64).reshape(3) + rng.normal(0.0, offset_sigma_m, size=3)
    cube = float(cube_m * rng.uniform(*scale_range))
    angle = float(np.radians(rng.uniform(-max_rotation_deg, max_rotation_deg)))
    return c, cube, angle


def pad_to_aspect(img: np.ndarray, aspect_w_over_h: float) -> np.ndarray:
    """(H, W, C) image padded with zeros on the right or at the bottom to width / height =
    ``aspect_w_over_h`` (pixel coordinates of the original are unchanged); returned as it is
    when it has that aspect already (to the pixel)."""
    H, W = img.shape[:2]
    Wt, Ht = max(W, int(round(H * aspect_w_over_h))), max(H, int(round(W / aspect_w_over_h)))
    if (Wt, Ht) == (W, H):
        return img
    out = np.zeros((Ht, Wt) + img.shape[2:], img.dtype)
    out[:H, :W] = img
    return out
