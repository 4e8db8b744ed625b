"""Picture helpers shared by every overlay: depth colouring, text, PNG writing.

Images are (H, W, 3) uint8 RGB everywhere in ``featmap_ros.draw``; functions return new images
and leave their inputs untouched. Depth is coloured with one colour map (turbo, near = red).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from featmap_ros import atomic
from featmap_ros.errors import InputError


def colorize_depth(depth_m: np.ndarray, near_m: float | None = None, far_m: float | None = None) -> np.ndarray:
    """Colour-map a depth map (turbo; near = red end); invalid pixels (0, NaN) black.

    Args:
        depth_m: (H, W) metres, 0 or NaN = invalid (any unit works if near/far match).
        near_m, far_m: colour range (default: 2nd and 98th percentile of valid depth).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    d = np.asarray(depth_m, dtype=np.float64)
    if d.ndim != 2:
        raise InputError(f"depth_m: expected (H, W), got {d.shape}")
    valid = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape + (3,), np.uint8)
    if not valid.any():
        return out
    lo = float(np.percentile(d[valid], 2)) if near_m is None else near_m
    hi = float(np.percentile(d[valid], 98)) if far_m is None else far_m
    t = np.clip((np.where(valid, d, hi) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    idx = (255 * (1.0 - t)).astype(np.uint8)
    bgr = cv2.applyColorMap(idx, cv2.COLORMAP_TURBO)
    out[valid] = bgr[valid][:, ::-1]
    return out


def colorize_crop(crop_n: np.ndarray) -> np.ndarray:
    """Colour-map a normalised DeepPrior crop ((S, S) in [-1, 1], +1 = back) to RGB."""
    c = np.asarray(crop_n, dtype=np.float64)
    depth = np.where(c < 0.999, c + 2.0, 0.0)  # back of the cube shown black
    return colorize_depth(depth, 1.0, 3.0)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an image as PNG, atomically.

    Args:
        path: output file.
        image: (H, W, 3) uint8 RGB, or (H, W) uint8/uint16 grey.

    Returns:
        ``path`` as a Path.
    """
    img = np.asarray(image)
    if img.ndim == 3:
        if img.shape[2] != 3:
            raise InputError(f"{path}: expected an (H, W, 3) RGB image, got {img.shape}")
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise InputError(f"{path}: PNG encoding failed")
    atomic.write_bytes(path, buf.tobytes())
    return Path(path)
