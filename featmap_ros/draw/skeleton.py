"""Overlays of hand joints and skeletons on colour-mapped depth.

Images are (H, W, 3) uint8 RGB; functions return new images and leave their inputs untouched.
Joints are the 14 NYU evaluation joints in ``specs`` order (pinky tip, pinky mid, ring...,
thumb tip, thumb mid, thumb root, wrist ulnar, wrist radial, palm centre).
"""
from __future__ import annotations

import cv2
import numpy as np

from featmap_ros import geometry
from featmap_ros.data.specs import hand_dataset
from featmap_ros.draw.colours import ESTIMATE_RGB, GROUND_TRUTH_RGB
from featmap_ros.draw.images import colorize_depth
from featmap_ros.errors import InputError

#: Bones of the 14-joint skeleton (indices into the 14 evaluation joints).
NYU14_EDGES = hand_dataset("nyu").bone_indices()
#: Finger of each of the 14 joints: 0 pinky, 1 ring, 2 middle, 3 index, 4 thumb, 5 palm.
NYU14_FINGER = (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5)
FINGER_COLORS = ((230, 60, 60), (240, 170, 40), (80, 200, 80), (60, 140, 240), (190, 80, 220), (240, 240, 240))


def draw_hand_skeleton(image: np.ndarray, joints_px: np.ndarray, color: tuple[int, int, int] | None = None, radius: int = 3, thickness: int = 2) -> np.ndarray:
    """Draw the 14-joint skeleton.

    Args:
        image: (H, W, 3) uint8 RGB.
        joints_px: (14, 2) pixels; non-finite joints are skipped.
        color: one colour for everything, or None for per-finger colours.

    Returns:
        A new (H, W, 3) uint8 image.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"image: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    img = img.copy()
    p = np.asarray(joints_px, dtype=np.float64)
    if p.shape != (14, 2):
        raise InputError(f"joints_px: expected (14, 2), got {p.shape}")
    ok = np.all(np.isfinite(p), axis=1) & np.all(np.abs(p) < 1e6, axis=1)
    for a, b in NYU14_EDGES:
        if ok[a] and ok[b]:
            c = color or FINGER_COLORS[NYU14_FINGER[a] if NYU14_FINGER[a] != 5 else NYU14_FINGER[b]]
            cv2.line(img, (int(round(p[a, 0])), int(round(p[a, 1]))), (int(round(p[b, 0])), int(round(p[b, 1]))), c, thickness, cv2.LINE_AA)
    for j in range(14):
        if ok[j]:
            c = color or FINGER_COLORS[NYU14_FINGER[j]]
            cv2.circle(img, (int(round(p[j, 0])), int(round(p[j, 1]))), radius, c, -1, cv2.LINE_AA)
    return img


def project(joints_c_m: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(J, 3) camera-frame points -> (J, 2) pixels (NaN behind the camera)."""
    return geometry.project_points(joints_c_m, K)


def hand_overlay(depth_m: np.ndarray, K: np.ndarray, gt_c_m: np.ndarray | None = None, pred_c_m: np.ndarray | None = None, crop_to: np.ndarray | None = None, scale: int = 1) -> np.ndarray:
    """Depth (colour-mapped) with the ground-truth skeleton and a prediction, in
    :mod:`featmap_ros.draw.colours`' colours (green, blue).

    Args:
        depth_m: (H, W) metres.
        K: (3, 3) intrinsics.
        gt_c_m, pred_c_m: (14, 3) joints, camera frame, metres (either may be None).
        crop_to: optional (3,) centre: show only a 0.3 m window around it.
        scale: enlarge the result by this integer factor (joints drawn after resizing).

    Returns:
        (h, w, 3) uint8 RGB.
    """
    d = np.asarray(depth_m, dtype=np.float64)
    x0 = y0 = 0
    if crop_to is not None:
        c = np.asarray(crop_to, dtype=np.float64)
        half = 0.15 * K[0, 0] / c[2]
        uc, vc = project(c[None], K)[0]
        x0, y0 = max(int(uc - half), 0), max(int(vc - half), 0)
        x1, y1 = min(int(uc + half), d.shape[1]), min(int(vc + half), d.shape[0])
        d = d[y0:y1, x0:x1]
    valid = d[(d > 0) & np.isfinite(d)]
    if crop_to is not None and valid.size:
        img = colorize_depth(d, float(crop_to[2]) - 0.15, float(crop_to[2]) + 0.15)
    else:
        img = colorize_depth(d)
    if scale > 1:
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    off = np.array([x0, y0], dtype=np.float64)
    if gt_c_m is not None:
        img = draw_hand_skeleton(img, (project(gt_c_m, K) - off) * scale, color=GROUND_TRUTH_RGB, radius=2, thickness=1)
    if pred_c_m is not None:
        img = draw_hand_skeleton(img, (project(pred_c_m, K) - off) * scale, color=ESTIMATE_RGB)
    return img
