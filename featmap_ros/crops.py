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
