"""What a node does with one synchronised frame, without rclpy: messages in, messages out.

``ObjectPipeline`` / ``HandPipeline`` convert the input messages, pick the image windows, call
the estimator and build every output message with a message factory (rclpy in the nodes,
rosbags in the tests and in ``featmap bench node``). They time each stage, so the share spent
in conversions can be reported. The nodes only publish what they return.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from featmap_ros.draw.debug import draw_hand_debug, draw_object_debug
from featmap_ros.errors import InputError
from featmap_ros.results import HandPose, ObjectPose
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.params import check_objects, parse_objects
from featmap_ros.ros.roi import Tracker, keep_poses, select_rois


def uri_exists(uri: str, share_dir_of: Callable[[str], str | None]) -> bool:
    """Whether a ``package://pkg/path`` or ``file:///path`` mesh URI names an existing file
    (other schemes are taken on trust). ``share_dir_of(pkg)`` gives a package's share folder or None."""
    if uri.startswith("package://"):
        pkg, _, rel = uri[len("package://"):].partition("/")
        share = share_dir_of(pkg)
        return share is not None and os.path.isfile(os.path.join(share, rel))
    if uri.startswith("file://"):
        return os.path.isfile(uri[len("file://"):])
    return True


def mesh_uris(template: str, objects: Sequence[str], obj_ids: Mapping[str, int] | None = None,
              exists: Callable[[str], bool] | None = None) -> tuple[dict[str, str], list[str]]:
    """Mesh marker URIs from ``markers.mesh_resource`` (``{object}``, ``{obj_id}``, ``{obj_id:06d}``).

    Returns:
        (object name -> URI, URIs left out because ``exists`` said the file is missing).

    Raises:
        InputError: ``parameter 'markers.mesh_resource': ...`` for a template that does not format.
    """
    if not template:
        return {}, []
    out, missing = {}, []
    for name in objects:
        try:
            uri = template.format(object=name, obj_id=int((obj_ids or {}).get(name, 0)))
        except (KeyError, IndexError, ValueError) as e:
            raise InputError(f"parameter 'markers.mesh_resource': {template!r} does not format ({e!r}); "
                             "placeholders: {object}, {obj_id}, {obj_id:06d}") from None
        if exists is not None and not exists(uri):
            missing.append(uri)
        else:
            out[name] = uri
    return out, missing


@dataclass
class ObjectSettings:
    """The object node's behaviour (see ``OBJECT_NODE_PARAMS`` for each meaning).

    ``meshes``: object name -> mesh marker URI (objects without one get their box only).
    """

    objects: tuple[str, ...]
    roi_source: str = "localiser"
    min_score: float = 0.0
    frame_prefix: str = "featmap/"
    publish_tf: bool = True
    tracking_max_age_s: float = 0.5
    tracking_min_score: float = 0.3
    meshes: dict[str, str] = field(default_factory=dict)
    mesh_scale: float = 0.001

    @classmethod
    def from_params(cls, values: Mapping[str, Any], available: Sequence[str], obj_ids: Mapping[str, int] | None = None,
                    exists: Callable[[str], bool] | None = None) -> "ObjectSettings":
        """From validated parameter values (dotted names) and the checkpoint's object names (and ids)."""
        objects = check_objects(parse_objects(values["objects"]), tuple(available))
        return cls(
            objects=objects, roi_source=values["roi_source"], min_score=values["min_score"],
            frame_prefix=values["frame_prefix"], publish_tf=values["publish_tf"],
            tracking_max_age_s=values["tracking.max_age_s"], tracking_min_score=values["tracking.min_score"],
            meshes=mesh_uris(values["markers.mesh_resource"], objects, obj_ids, exists)[0],
            mesh_scale=values["markers.mesh_scale"],
        )


@dataclass
class ObjectOutputs:
    """Messages for one frame. ``poses``: object name -> PoseStamped of its best estimate."""

    detections: Any
    poses: dict[str, Any]
    transforms: list[Any]
    markers: Any
    debug_image: Any | None
    results: list[ObjectPose]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _best_per_object(poses: list[ObjectPose]) -> dict[str, ObjectPose]:
    best: dict[str, ObjectPose] = {}
    for p in poses:
        if p.object_name not in best or p.score > best[p.object_name].score:
            best[p.object_name] = p
    return best


class ObjectPipeline:
    """One colour frame -> Detection3DArray, PoseStamped per object, TF, markers, debug image.

    Args:
        estimator: has ``estimate(image_rgb, K, boxes=None) -> list[ObjectPose]``.
        msgs: message factory (:class:`~featmap_ros.ros.conversions.RclpyMessages` or
            :class:`~featmap_ros.ros.conversions.RosbagsMessages`).
        settings: behaviour; may be replaced between frames (dynamic parameters).
        clock: monotonic seconds, for the stage timings.
    """

    def __init__(self, estimator: Any, msgs: Any, settings: ObjectSettings, clock: Callable[[], float] = time.perf_counter) -> None:
        self.estimator = estimator
        self.msgs = msgs
        self.settings = settings
        self.clock = clock
        self.tracker = Tracker()

    def _with_model_box(self, pose: ObjectPose) -> ObjectPose:
        """A ground-truth pose whose bbox size is unset gets the model box the estimator knows."""
        if np.all(np.asarray(pose.extents_m) > 0):
            return pose
        names = list(getattr(self.estimator, "object_names", []))
        extents = getattr(self.estimator, "extents_m", None)
        if pose.object_name not in names or extents is None:
            return pose
        i = names.index(pose.object_name)
        centers = getattr(self.estimator, "center_m", np.zeros((len(names), 3)))
        return replace(pose, extents_m=np.asarray(extents[i], np.float64), center_m=np.asarray(centers[i], np.float64))

    def process(self, image_msg: Any, info_msg: Any, detections_msg: Any = None, ground_truth_msg: Any = None,
                want_debug: bool = False) -> ObjectOutputs:
        """Raises ConversionError (bad input message, naming the field) before any estimate."""
        s, msgs = self.settings, self.msgs
        t0 = self.clock()
        rgb = conv.image_to_rgb(image_msg, "image")
        camera = conv.camera_info_to_model(info_msg, "camera_info")
        conv.check_image_matches_camera(rgb.shape[:2], camera, "image")
        warnings = conv.camera_info_warnings(info_msg, "camera_info")
        boxes = conv.detection2d_array_to_boxes(detections_msg, "detections_2d") if detections_msg is not None else None
        gt = conv.detection3d_array_to_object_poses(ground_truth_msg, name="ground_truth/detections") if ground_truth_msg is not None else None
        if gt:
            gt = [self._with_model_box(p) for p in gt]
        stamp_s = conv.stamp_to_ns(image_msg.header.stamp) * 1e-9
        rois = select_rois(s.roi_source, s.objects, camera.K, rgb.shape[:2], stamp_s, detections=boxes, ground_truth=gt,
                           tracker=self.tracker, max_age_s=s.tracking_max_age_s, min_score=s.tracking_min_score)
        t1 = self.clock()
        results: list[ObjectPose] = []
        if rois is None or rois:
            results = list(self.estimator.estimate(rgb, camera.K, rois))
        t2 = self.clock()
        kept = keep_poses(results, s.objects, s.min_score)
        if s.roi_source == "tracking":
            self.tracker.update(kept, stamp_s)
        header = image_msg.header
        best = _best_per_object(kept)
        out = ObjectOutputs(
            detections=conv.object_poses_to_detection3d_array(msgs, kept, header),
            poses={n: conv.object_pose_to_pose_stamped(msgs, p, header) for n, p in best.items()},
            transforms=[conv.object_pose_to_transform(msgs, p, header, s.frame_prefix) for p in best.values()] if s.publish_tf else [],
            markers=conv.object_markers(msgs, kept, header, s.meshes, s.mesh_scale),
            debug_image=None, results=kept, warnings=warnings,
        )
        t3 = self.clock()
        if want_debug:
            out.debug_image = conv.numpy_to_image(msgs, draw_object_debug(rgb, kept, camera.K, rois), "rgb8", header)
        t4 = self.clock()
        out.timings = {"convert_in_s": t1 - t0, "estimate_s": t2 - t1, "convert_out_s": t3 - t2, "debug_s": t4 - t3}
        return out


@dataclass
class HandSettings:
    """The hand node's behaviour (see ``HAND_NODE_PARAMS``)."""

    min_score: float = 0.0
    frame_prefix: str = "featmap/"
    publish_tf: bool = True
    palm_joint: str = "palm_center"
    depth_scale_m: float = 0.001

    @classmethod
    def from_params(cls, values: Mapping[str, Any]) -> "HandSettings":
        return cls(min_score=values["min_score"], frame_prefix=values["frame_prefix"], publish_tf=values["publish_tf"],
                   palm_joint=values["palm_joint"], depth_scale_m=values["depth_scale_m"])


@dataclass
class HandOutputs:
    """Messages for one frame; with no hand found, ``hand_pose`` has no joints (score 0) and
    ``transform`` and ``result`` are None."""

    hand_pose: Any
    markers: Any
    transform: Any | None
    debug_image: Any | None
    result: HandPose | None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class HandPipeline:
    """One depth frame -> featmap_ros/HandPose, skeleton markers, palm TF, debug image.

    Args:
        estimator: has ``estimate(depth_m, K) -> HandPose | None``.
        msgs: message factory.
        settings: behaviour.
        clock: monotonic seconds.
    """

    def __init__(self, estimator: Any, msgs: Any, settings: HandSettings, clock: Callable[[], float] = time.perf_counter) -> None:
        self.estimator = estimator
        self.msgs = msgs
        self.settings = settings
        self.clock = clock

    def process(self, depth_msg: Any, info_msg: Any, want_debug: bool = False) -> HandOutputs:
        """Raises ConversionError (bad input message, naming the field) before any estimate."""
        s, msgs = self.settings, self.msgs
        t0 = self.clock()
        depth_m = conv.image_to_depth_m(depth_msg, "depth", s.depth_scale_m)
        camera = conv.camera_info_to_model(info_msg, "camera_info")
        conv.check_image_matches_camera(depth_m.shape, camera, "depth")
        warnings = conv.camera_info_warnings(info_msg, "camera_info")
        t1 = self.clock()
        hand = self.estimator.estimate(depth_m, camera.K)
        t2 = self.clock()
        if hand is not None and (hand.score < s.min_score or not np.all(np.isfinite(hand.joints_m))):
            hand = None
        header = depth_msg.header
        transform = None
        if hand is not None and s.publish_tf and s.palm_joint in hand.joint_names:
            palm = np.asarray(hand.joints_m, np.float64)[list(hand.joint_names).index(s.palm_joint)]
            transform = conv.transform_msg(msgs, np.eye(3), palm, header, f"{s.frame_prefix}hand")
        out = HandOutputs(
            hand_pose=conv.hand_pose_to_msg(msgs, hand, header) if hand is not None else conv.empty_hand_pose_msg(msgs, header),
            markers=conv.hand_markers(msgs, hand, header), transform=transform, debug_image=None, result=hand,
            warnings=warnings,
        )
        t3 = self.clock()
        if want_debug:
            out.debug_image = conv.numpy_to_image(msgs, draw_hand_debug(depth_m, hand, camera.K), "rgb8", header)
        t4 = self.clock()
        out.timings = {"convert_in_s": t1 - t0, "estimate_s": t2 - t1, "convert_out_s": t3 - t2, "debug_s": t4 - t3}
        return out
