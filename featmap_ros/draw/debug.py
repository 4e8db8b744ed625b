"""The ROS nodes' debug images (numpy + OpenCV, no ROS): projected 3D boxes and windows on the
colour image, the hand skeleton on the colourised depth. The nodes build them only when someone
subscribes to ``~/debug_image``."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from featmap_ros.crops import Window
from featmap_ros.data.specs import HAND_BONES, skeleton_edges
from featmap_ros.draw.boxes import draw_box, draw_label
from featmap_ros.draw.colours import ESTIMATE_RGB, WINDOW_RGB
from featmap_ros.draw.images import colorize_depth
from featmap_ros.geometry import project_points
from featmap_ros.results import HandPose, ObjectPose



def _pt(uv) -> tuple[int, int]:
    return int(round(float(uv[0]))), int(round(float(uv[1])))


def draw_object_debug(rgb: np.ndarray, poses: Sequence[ObjectPose], K: np.ndarray,
                      rois: Sequence[tuple[str, np.ndarray]] | None = None) -> np.ndarray:
    """Projected model boxes (the estimate's colour, :mod:`featmap_ros.draw.colours`) and the
    windows used (the window colour) on a copy of the image.

    Args:
        rgb: (H, W, 3) uint8.
        poses: estimates in the camera frame.
        K: (3, 3) intrinsics, pixels.
        rois: [(name, (4,) xywh detection box or :class:`~featmap_ros.crops.Window`)], or None.

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    for _, box in rois or []:
        x, y, w, h = np.asarray(box.as_xywh() if isinstance(box, Window) else box, np.float64)
        cv2.rectangle(out, _pt((x, y)), _pt((x + w, y + h)), WINDOW_RGB, 1, cv2.LINE_AA)
    for p in poses:
        corners_c = p.box_corners_c_m()
        if np.any(corners_c[:, 2] <= 1e-6) or not np.all(np.isfinite(corners_c)):
            continue
        uv = project_points(corners_c, K)
        out = draw_box(out, uv, ESTIMATE_RGB, 2)
        top = uv[np.argmin(uv[:, 1])]
        out = draw_label(out, f"{p.object_name} {p.score:.2f}", top - [0, 18], ESTIMATE_RGB)
    return out


def draw_hand_debug(depth_m: np.ndarray, hand: HandPose | None, K: np.ndarray,
                    bones: Sequence[tuple[str, str]] = HAND_BONES) -> np.ndarray:
    """The hand skeleton projected on the colourised depth image.

    Args:
        depth_m: (H, W) float32 metres (NaN or 0 invalid).
        hand: the estimate in the camera frame, or None.
        K: (3, 3) intrinsics, pixels.
        bones: the skeleton as pairs of joint names.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    out = colorize_depth(depth_m)
    if hand is None:
        return out
    joints = np.asarray(hand.joints_m, np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(joints)) or np.any(joints[:, 2] <= 1e-6):
        return out
    uv = project_points(joints, K)
    for a, b in skeleton_edges(hand.joint_names, bones):
        cv2.line(out, _pt(uv[a]), _pt(uv[b]), ESTIMATE_RGB, 2, cv2.LINE_AA)
    for q in uv:
        cv2.circle(out, _pt(q), 3, ESTIMATE_RGB, -1, cv2.LINE_AA)
    return out
