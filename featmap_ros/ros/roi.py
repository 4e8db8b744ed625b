"""Where the object node looks: image windows from detections, ground truth, tracking or the localiser.

Pure functions over arrays and result dataclasses. ``None`` as a window list means "let the
estimator's built-in localiser find the objects".
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from featmap_ros.crops import Window, object_window
from featmap_ros.errors import InputError
from featmap_ros.geometry import project_points
from featmap_ros.results import ObjectPose

ROI_SOURCES = ("localiser", "detections", "tracking", "ground_truth")

#: [(object name, window)]: a 2D detection box (4,) xywh pixels, cropped with the checkpoint's
#: margin, or a :class:`~featmap_ros.crops.Window` used as it is (ground truth, tracking).
Rois = list[tuple[str, "np.ndarray | Window"]]


def window_from_pose(pose: ObjectPose, K: np.ndarray, image_hw: tuple[int, int]) -> Window | None:
    """The ground-truth window of a pose (:func:`featmap_ros.crops.object_window` of its
    projected 3D box): the window the networks were trained on, the one ``featmap eval object
    --boxes gt`` crops.

    Returns None when a box corner is behind the camera or the window misses the image.
    """
    corners_c = pose.box_corners_c_m()
    if not np.all(np.isfinite(corners_c)) or np.any(corners_c[:, 2] <= 1e-6):
        return None
    win = object_window(project_points(corners_c, K))
    x, y, side, _ = win.as_xywh()
    h, w = int(image_hw[0]), int(image_hw[1])
    if x + side < 1 or y + side < 1 or x > w - 1 or y > h - 1:
        return None
    return win


def rois_from_poses(poses: Sequence[ObjectPose], objects: Sequence[str], K: np.ndarray, image_hw: tuple[int, int]) -> Rois:
    """Windows of the poses of the wanted objects (those outside the image are left out)."""
    out = []
    for p in poses:
        if p.object_name in objects:
            win = window_from_pose(p, K, image_hw)
            if win is not None:
                out.append((p.object_name, win))
    return out


def rois_from_detections(boxes: Sequence[tuple[str, np.ndarray]], objects: Sequence[str]) -> Rois:
    """External 2D detections of the wanted objects (others are ignored)."""
    return [(name, np.asarray(box, np.float64)) for name, box in boxes if name in objects]


class Tracker:
    """Last good pose of each object, to look for it in the next frame at the same place."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, ObjectPose]] = {}

    def update(self, poses: Sequence[ObjectPose], stamp_s: float) -> None:
        """Remember the best-scored pose of each object seen at ``stamp_s``."""
        for p in sorted(poses, key=lambda q: q.score):
            self._last[p.object_name] = (float(stamp_s), p)

    def rois(self, objects: Sequence[str], stamp_s: float, K: np.ndarray, image_hw: tuple[int, int],
             max_age_s: float, min_score: float) -> Rois | None:
        """Windows for every wanted object, or None (use the localiser) if any is lost.

        An object is lost if never seen, seen longer than ``max_age_s`` ago (or in the future:
        a replay that jumped back), scored below ``min_score``, or out of the image.
        """
        out = []
        for name in objects:
            entry = self._last.get(name)
            if entry is None:
                return None
            t, pose = entry
            age = float(stamp_s) - t
            if age < 0 or age > max_age_s or pose.score < min_score:
                return None
            win = window_from_pose(pose, K, image_hw)
            if win is None:
                return None
            out.append((name, win))
        return out


def select_rois(source: str, objects: Sequence[str], K: np.ndarray, image_hw: tuple[int, int], stamp_s: float, *,
                detections: Sequence[tuple[str, np.ndarray]] | None = None,
                ground_truth: Sequence[ObjectPose] | None = None,
                tracker: Tracker | None = None, max_age_s: float = 0.5, min_score: float = 0.3) -> Rois | None:
    """The windows to estimate in, for one frame.

    Args:
        source: one of :data:`ROI_SOURCES`.
        objects: names wanted.
        K: (3, 3) intrinsics, pixels.
        image_hw: (height, width).
        stamp_s: the frame's stamp, seconds.
        detections: external 2D boxes (source ``detections``).
        ground_truth: poses from the player (source ``ground_truth``).
        tracker: last poses (source ``tracking``).

    Returns:
        :data:`Rois` (detections as boxes; ground truth and tracking as their ground-truth
        windows), or None for the built-in localiser.
    """
    if source == "localiser":
        return None
    if source == "detections":
        return rois_from_detections(detections or [], objects)
    if source == "ground_truth":
        return rois_from_poses(ground_truth or [], objects, K, image_hw)
    if source == "tracking":
        return tracker.rois(objects, stamp_s, K, image_hw, max_age_s, min_score) if tracker is not None else None
    raise ValueError(f"roi source {source!r}: valid {ROI_SOURCES}")


def check_roi_source(source: str, has_localiser: bool) -> str:
    """Refuse a source that needs the built-in localiser when the checkpoint has none.

    Raises:
        InputError: ``parameter 'roi_source': ...``.
    """
    if source not in ROI_SOURCES:
        raise InputError(f"parameter 'roi_source': {source!r} is not one of {list(ROI_SOURCES)}")
    if source in ("localiser", "tracking") and not has_localiser:
        raise InputError(f"parameter 'roi_source': {source!r} needs the built-in localiser, which this checkpoint "
                         "does not have; use 'detections' (a 2D detector on detections_2d) or 'ground_truth'")
    return source


def keep_poses(poses: Sequence[ObjectPose], objects: Sequence[str], min_score: float) -> list[ObjectPose]:
    """The estimates to publish: wanted objects, score >= min_score, finite pose."""
    return [p for p in poses if p.object_name in objects and p.score >= min_score
            and np.all(np.isfinite(p.R_m2c)) and np.all(np.isfinite(p.t_m2c_m))]
