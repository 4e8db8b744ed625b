"""What the estimators return: plain dataclasses, no ROS, no torch.

Data flows message -> numpy -> network -> these results -> message; the ROS conversions in
``featmap_ros/ros/`` and the evaluators read only these types.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from featmap_ros.geometry import BOX_CORNER_SIGNS


@dataclass
class ObjectPose:
    """One object instance's 6D pose in the camera optical frame.

    Attributes:
        object_name: the object's name (used as vision_msgs class_id and TF child suffix).
        obj_id: dataset object id (BOP ``obj_id``).
        R_m2c: (3, 3) float64 rotation, model -> camera.
        t_m2c_m: (3,) float64 translation, metres.
        score: confidence in [0, 1].
        corners_px: (8, 2) float64 predicted box-corner projections, pixels (BB8 output).
        bbox_xywh: (4,) float64 image box used for the crop, pixels.
        extents_m: (3,) float64 box size of the model, metres (for Detection3D.bbox).
        center_m: (3,) float64 box centre in the model frame, metres.
        refined: whether ``R_m2c``/``t_m2c_m`` come from depth refinement
            (:mod:`featmap_ros.depth_refine`); False = the colour estimate.
        refine_fitness: fraction of the visible model points the depth confirmed (within 5 mm)
            at the refined pose; 0 when no refinement was tried.
        refine_rmse_m: RMS point-to-plane distance of those points, metres (NaN = none).
        refine_reason: why a refinement was rejected or skipped (the colour pose was kept);
            "" when refined, or when no depth was given.
        covariance: (6, 6) float64 covariance of the pose, or None (unknown): order (x, y, z,
            rot x, rot y, rot z), metres^2 and radians^2, the rotation a small turn about the
            camera frame's axes (``R = exp(dtheta) R_m2c``), as ROS ``PoseWithCovariance``.
    """

    object_name: str
    obj_id: int
    R_m2c: np.ndarray
    t_m2c_m: np.ndarray
    score: float
    corners_px: np.ndarray = field(default_factory=lambda: np.zeros((8, 2)))
    bbox_xywh: np.ndarray = field(default_factory=lambda: np.zeros(4))
    extents_m: np.ndarray = field(default_factory=lambda: np.zeros(3))
    center_m: np.ndarray = field(default_factory=lambda: np.zeros(3))
    refined: bool = False
    refine_fitness: float = 0.0
    refine_rmse_m: float = float("nan")
    refine_reason: str = ""
    covariance: np.ndarray | None = None

    def box_corners_m(self) -> np.ndarray:
        """The 8 corners of the model's box in the model frame: (8, 3) float64, metres.

        Ordered as :data:`featmap_ros.geometry.BOX_CORNER_SIGNS`.
        """
        ext = np.asarray(self.extents_m, np.float64).reshape(3)
        return np.asarray(self.center_m, np.float64).reshape(3) + (BOX_CORNER_SIGNS - 0.5) * ext

    def box_corners_c_m(self) -> np.ndarray:
        """The box corners in the camera optical frame: (8, 3) float64, metres."""
        R = np.asarray(self.R_m2c, np.float64).reshape(3, 3)
        return self.box_corners_m() @ R.T + np.asarray(self.t_m2c_m, np.float64).reshape(3)


@dataclass
class HandPose:
    """One hand's joints in the camera optical frame (x right, y down, z forward).

    Attributes:
        joint_names: names, one per joint.
        joints_m: (J, 3) float64, metres.
        score: confidence in [0, 1].
        joint_scores: (J,) float64 or empty.
        crop_center_m: (3,) float64 centre of the crop cube, metres.
    """

    joint_names: list[str]
    joints_m: np.ndarray
    score: float
    joint_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    crop_center_m: np.ndarray = field(default_factory=lambda: np.zeros(3))
