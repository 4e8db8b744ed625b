"""Debug overlays (numpy + OpenCV, no ROS): projected 3D boxes on the colour image, the hand
skeleton on the colourised depth. The nodes build them only when someone subscribes."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from featmap_ros.geometry import BOX_CORNER_SIGNS, BOX_EDGES, project_points
from featmap_ros.results import HandPose, ObjectPose
from featmap_ros.ros.conversions import HAND_SKELETON, skeleton_edges


def _pt(uv: np.ndarray) -> tuple[int, int]:
    return int(round(float(uv[0]))), int(round(float(uv[1])))


def draw_object_debug(rgb: np.ndarray, poses: Sequence[ObjectPose], K: np.ndarray,
                      rois: Sequence[tuple[str, np.ndarray]] | None = None) -> np.ndarray:
    """Projected model boxes (green) and the windows used (blue) on a copy of the image.

    Args:
        rgb: (H, W, 3) uint8.
        poses: estimates in the camera frame.
        K: (3, 3) intrinsics, pixels.
        rois: [(name, (4,) xywh)] windows, or None.

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    for _, box in rois or []:
        x, y, w, h = np.asarray(box, np.float64)
        cv2.rectangle(out, _pt((x, y)), _pt((x + w, y + h)), (60, 120, 255), 1, cv2.LINE_AA)
    for p in poses:
        ext = np.asarray(p.extents_m, np.float64).reshape(3)
        corners_m = np.asarray(p.center_m, np.float64).reshape(3) + (BOX_CORNER_SIGNS - 0.5) * ext
        corners_c = corners_m @ np.asarray(p.R_m2c).T + np.asarray(p.t_m2c_m).reshape(3)
        if np.any(corners_c[:, 2] <= 1e-6) or not np.all(np.isfinite(corners_c)):
            continue
        uv = project_points(corners_c, K)
        for a, b in BOX_EDGES:
            cv2.line(out, _pt(uv[a]), _pt(uv[b]), (40, 230, 60), 2, cv2.LINE_AA)
        top = uv[np.argmin(uv[:, 1])]
        cv2.putText(out, f"{p.object_name} {p.score:.2f}", _pt(top - [0, 6]), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (40, 230, 60), 1, cv2.LINE_AA)
    return out


def colourise_depth(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) float32 metres (NaN invalid) -> (H, W, 3) uint8 RGB, near = bright, invalid = black."""
    d = np.asarray(depth_m, np.float32)
    valid = np.isfinite(d)
    out = np.zeros(d.shape + (3,), np.uint8)
    if valid.any():
        lo, hi = np.percentile(d[valid], [1, 99])
        g = np.clip((hi - d) / max(hi - lo, 1e-6), 0, 1)
        grey = (np.nan_to_num(g) * 255).astype(np.uint8)
        out = cv2.applyColorMap(grey, cv2.COLORMAP_BONE)[:, :, ::-1].copy()
        out[~valid] = 0
    return out


def draw_hand_debug(depth_m: np.ndarray, hand: HandPose | None, K: np.ndarray,
                    skeleton: Sequence[tuple[str, str]] = HAND_SKELETON) -> np.ndarray:
    """The hand skeleton projected on the colourised depth image.

    Args:
        depth_m: (H, W) float32 metres.
        hand: the estimate in the camera frame, or None.
        K: (3, 3) intrinsics, pixels.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    out = colourise_depth(depth_m)
    if hand is None:
        return out
    joints = np.asarray(hand.joints_m, np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(joints)) or np.any(joints[:, 2] <= 1e-6):
        return out
    uv = project_points(joints, K)
    for a, b in skeleton_edges(hand.joint_names, skeleton):
        cv2.line(out, _pt(uv[a]), _pt(uv[b]), (255, 140, 30), 2, cv2.LINE_AA)
    for q in uv:
        cv2.circle(out, _pt(q), 3, (255, 60, 60), -1, cv2.LINE_AA)
    return out
