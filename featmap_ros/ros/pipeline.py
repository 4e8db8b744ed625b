"""What a node does with one synchronised frame, without rclpy: messages in, messages out.

``ObjectPipeline`` / ``HandPipeline`` convert the input messages, pick the image windows, call
the estimator and build every output message with a message factory (rclpy in the nodes,
rosbags in the tests and in ``featmap bench node``). They time each stage, so the share spent
in conversions can be reported. The nodes only publish what they return.

The object pipeline refines the poses with a registered depth image when one comes with the
frame (``refine.depth``), and filters them over time per object track (``filter.*``,
:class:`featmap_ros.tracking.PoseTracker`, stamps from the input header): filtered poses on
``detections``, the per-frame ones on ``detections_raw``. A depth frame it cannot use (another
size than the colour image, a wrong encoding, no valid pixel, other intrinsics) leaves the
colour poses in place and comes back as a warning naming the topic and field.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from featmap_ros.depth_refine import rejection_kind
from featmap_ros.draw.debug import draw_hand_debug, draw_object_debug
from featmap_ros.errors import InputError
from featmap_ros.geometry import CameraModel
from featmap_ros.results import HandPose, ObjectPose
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.params import check_objects, parse_objects
from featmap_ros.ros.planning_scene import PlanningSceneObjects
from featmap_ros.ros.roi import Tracker, keep_poses, select_rois
from featmap_ros.tracking import PoseFilterConfig, PoseTracker

#: ``refine.depth`` values.
REFINE_DEPTH_MODES = ("auto", "on", "off")
#: Intrinsics of a registered depth image equal the colour image's within this (pixels).
REGISTERED_K_TOL_PX = 0.5


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
              exists: Callable[[str], bool] | None = None,
              fallback_files: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Mesh marker URIs from ``markers.mesh_resource`` (``{object}``, ``{obj_id}``, ``{obj_id:06d}``).

    Args:
        template: the parameter; "" = boxes only.
        objects: object names.
        obj_ids: name -> dataset id (for ``{obj_id}``).
        exists: whether a URI names an existing file (None: all do).
        fallback_files: name -> the estimator's mesh file (``refine.mesh_root``/``meta.mesh_paths``,
            e.g. ``<lmo>/models/obj_000001.ply``): used as ``file://`` when the template's file is
            missing, so that a BOP folder's meshes are drawn.

    Returns:
        (object name -> URI, URIs left out because neither the template's nor the fallback file exists).

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
            fallback = (fallback_files or {}).get(name, "")
            if fallback and os.path.isfile(fallback):
                out[name] = "file://" + os.path.abspath(fallback)
            else:
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
    refine_depth: str = "auto"
    filter_enabled: bool = True
    filter_config: PoseFilterConfig = field(default_factory=PoseFilterConfig)

    @classmethod
    def from_params(cls, values: Mapping[str, Any], available: Sequence[str], obj_ids: Mapping[str, int] | None = None,
                    exists: Callable[[str], bool] | None = None,
                    mesh_files: Mapping[str, str] | None = None) -> "ObjectSettings":
        """From validated parameter values (dotted names) and the checkpoint's object names (and
        ids, and mesh files: :func:`mesh_uris`'s ``fallback_files``)."""
        objects = check_objects(parse_objects(values["objects"]), tuple(available))
        return cls(
            objects=objects, roi_source=values["roi_source"], min_score=values["min_score"],
            frame_prefix=values["frame_prefix"], publish_tf=values["publish_tf"],
            tracking_max_age_s=values["tracking.max_age_s"], tracking_min_score=values["tracking.min_score"],
            meshes=mesh_uris(values["markers.mesh_resource"], objects, obj_ids, exists, mesh_files)[0],
            mesh_scale=values["markers.mesh_scale"], refine_depth=values["refine.depth"],
            filter_enabled=values["filter.enabled"], filter_config=filter_config_from_params(values),
        )


def filter_config_from_params(values: Mapping[str, Any]) -> PoseFilterConfig:
    """The pose filter's constants from the ``filter.*`` parameters (One-Euro: one cutoff for
    translation and rotation at rest)."""
    return PoseFilterConfig(
        kind=values["filter.kind"], meas_sigma_m=values["filter.meas_sigma_m"],
        meas_sigma_deg=values["filter.meas_sigma_deg"], accel_sigma_mps2=values["filter.accel_sigma"],
        ang_accel_sigma_radps2=values["filter.ang_accel_sigma"],
        trans_min_cutoff_hz=values["filter.min_cutoff"], rot_min_cutoff_hz=values["filter.min_cutoff"],
        trans_beta_hz_s_per_m=values["filter.beta"], rot_beta_hz_s_per_rad=values["filter.beta_rot"],
        d_cutoff_hz=values["filter.d_cutoff"], max_gap_s=values["filter.max_gap_s"],
        max_jump_m=values["filter.max_jump_m"], max_jump_deg=values["filter.max_jump_deg"],
    )


def registered_depth(depth_msg: Any, depth_info_msg: Any, image_hw: tuple[int, int], camera: CameraModel,
                     mode: str = "auto") -> tuple[np.ndarray | None, list[str]]:
    """The depth image of a frame in metres, if it can refine the colour poses.

    Args:
        depth_msg: sensor_msgs/Image (16UC1 millimetres or 32FC1 metres, REP 117), or None.
        depth_info_msg: its sensor_msgs/CameraInfo, or None (then its K is not checked).
        image_hw: (H, W) of the colour image.
        camera: the colour camera (from ``camera_info``).
        mode: ``refine.depth``: auto | on | off.

    Returns:
        ((H, W) float32 metres with NaN = invalid, or None; warnings). A depth image that
        cannot be used gives None and a warning naming the topic and field (the colour poses
        are published): another size than the colour image, other intrinsics (not registered),
        a wrong encoding, no valid pixel.
    """
    if mode not in REFINE_DEPTH_MODES:
        raise InputError(f"parameter 'refine.depth': {mode!r} is not one of {list(REFINE_DEPTH_MODES)}")
    if mode == "off":
        return None, []
    keep = "colour poses published, not refined"
    if depth_msg is None:
        return None, ([f"depth: refine.depth is 'on' but the frame came without a depth image: {keep}"] if mode == "on" else [])
    registered = ("the depth must be registered to the colour image (aligned to the colour camera: same size and K, "
                  "e.g. RealSense aligned_depth_to_color)")
    try:
        depth_m = conv.image_to_depth_m(depth_msg, "depth")
    except conv.ConversionError as e:
        return None, [f"{e}: {keep}"]
    H, W = (int(x) for x in image_hw)
    if depth_m.shape != (H, W):
        return None, [f"depth.width/height: {depth_m.shape[1]}x{depth_m.shape[0]} but the colour image is {W}x{H}: "
                      f"{registered}; {keep}"]
    if depth_info_msg is not None:
        try:
            dcam = conv.camera_info_to_model(depth_info_msg, "depth_camera_info")
        except conv.ConversionError as e:
            return None, [f"{e}: {keep}"]
        if not np.allclose(dcam.K, camera.K, rtol=0.0, atol=REGISTERED_K_TOL_PX):
            return None, [f"depth_camera_info.k differs from camera_info.k: {registered}; {keep}"]
    return depth_m, []


@dataclass
class ObjectOutputs:
    """Messages for one frame. ``poses``: object name -> PoseStamped of its best estimate
    (``poses_cov``: the same with its covariance).

    ``detections``, ``poses``, ``transforms``, ``markers``, ``debug_image`` and ``results`` hold
    the filtered poses when ``filter.enabled`` (else the per-frame ones). ``timings``: seconds per
    stage: ``convert_in_s`` (messages -> numpy), ``rois_s`` (image windows), ``estimate_s``,
    ``filter_s`` (score threshold, tracker, pose filter), ``convert_out_s`` (numpy -> messages),
    ``debug_s``.
    """

    detections: Any
    poses: dict[str, Any]
    transforms: list[Any]
    markers: Any
    debug_image: Any | None
    results: list[ObjectPose]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: Detection3DArray of the per-frame poses (before the filter; equal to ``detections`` with it off).
    detections_raw: Any = None
    #: the per-frame poses (``results`` are the filtered ones).
    raw_results: list[ObjectPose] = field(default_factory=list)
    #: object name -> PoseWithCovarianceStamped of its best estimate (the filter's covariance;
    #: all zeros when unknown)
    poses_cov: dict[str, Any] = field(default_factory=dict)
    #: moveit_msgs/CollisionObject messages of this frame (ADD / MOVE / REMOVE), with a planning scene
    collision_objects: list[Any] = field(default_factory=list)


def _best_per_object(poses: list[ObjectPose]) -> dict[str, int]:
    """Object name -> index in ``poses`` of its highest-scoring pose (the first of equals)."""
    best: dict[str, int] = {}
    for i, p in enumerate(poses):
        if p.object_name not in best or p.score > poses[best[p.object_name]].score:
            best[p.object_name] = i
    return best


class ObjectPipeline:
    """One colour (+ depth) frame -> Detection3DArray (filtered and raw), PoseStamped per object,
    TF, markers, debug image.

    Args:
        estimator: has ``estimate(image_rgb, K, boxes=None) -> list[ObjectPose]`` (and
            ``depth_m=`` for depth refinement; ``refine_model(name)``, when it has it, says which
            objects cannot be refined).
        msgs: message factory (:class:`~featmap_ros.ros.conversions.RclpyMessages` or
            :class:`~featmap_ros.ros.conversions.RosbagsMessages`).
        settings: behaviour; may be replaced between frames (dynamic parameters).
        clock: monotonic seconds, for the stage timings.
        planning_scene: builds the CollisionObject messages from the shown poses, or None (off).
    """

    def __init__(self, estimator: Any, msgs: Any, settings: ObjectSettings, clock: Callable[[], float] = time.perf_counter,
                 planning_scene: PlanningSceneObjects | None = None) -> None:
        self.estimator = estimator
        self.msgs = msgs
        self.settings = settings
        self.clock = clock
        self.planning_scene = planning_scene
        self.tracker = Tracker()
        self.pose_filter = PoseTracker(settings.filter_config)
        self.camera_info = conv.CameraInfoReader()  # the last calibration read, while it stays the same

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

    def prepare_refinement(self) -> list[str]:
        """Build the estimator's depth refinement models now (a node calls it at start-up, so the
        first depth frame is not slow) and say which objects cannot be refined (no mesh, ...)."""
        refine_model = getattr(self.estimator, "refine_model", None)
        if refine_model is None:
            return [f"refine.depth: this estimator ({type(self.estimator).__name__}) has no depth refinement: colour poses"]
        return [f"refine.depth: {m}" for m in (refine_model(n) for n in self.settings.objects) if isinstance(m, str)]

    def process(self, image_msg: Any, info_msg: Any, detections_msg: Any = None, ground_truth_msg: Any = None,
                want_debug: bool = False, depth_msg: Any = None, depth_info_msg: Any = None) -> ObjectOutputs:
        """One frame; ``depth_msg``/``depth_info_msg``: the registered depth image and its
        camera_info, or None (colour only).

        Raises ConversionError (bad colour input message, naming the field) before any estimate;
        a depth image that cannot be used is a warning instead (colour poses).
        """
        frame = self.prepare(image_msg, info_msg, detections_msg, ground_truth_msg, depth_msg, depth_info_msg)
        results: list[ObjectPose] = []
        if frame.rois is None or frame.rois:
            if frame.depth_m is None:
                results = list(self.estimator.estimate(frame.rgb, frame.camera.K, frame.rois))
            else:
                results = list(self.estimator.estimate(frame.rgb, frame.camera.K, frame.rois, depth_m=frame.depth_m))
        return self.finish(frame, results, want_debug)

    def prepare(self, image_msg: Any, info_msg: Any, detections_msg: Any = None, ground_truth_msg: Any = None,
                depth_msg: Any = None, depth_info_msg: Any = None) -> "PreparedFrame":
        """Convert the input messages and pick the image windows (before the estimator runs).

        Raises ConversionError (bad colour input message, naming the field).
        """
        s = self.settings
        t0 = self.clock()
        rgb = conv.image_to_rgb(image_msg, "image")
        camera, warnings = self.camera_info.read(info_msg, "camera_info")
        conv.check_image_matches_camera(rgb.shape[:2], camera, "image")
        depth_m, depth_warnings = registered_depth(depth_msg, depth_info_msg, rgb.shape[:2], camera, s.refine_depth)
        warnings += depth_warnings
        if depth_m is not None:
            warnings += self.prepare_refinement()
        boxes = conv.detection2d_array_to_boxes(detections_msg, "detections_2d") if detections_msg is not None else None
        gt = conv.detection3d_array_to_object_poses(ground_truth_msg, name="ground_truth/detections") if ground_truth_msg is not None else None
        if gt:
            gt = [self._with_model_box(p) for p in gt]
        stamp_s = conv.stamp_to_ns(image_msg.header.stamp) * 1e-9
        t_converted = self.clock()
        rois = select_rois(s.roi_source, s.objects, camera.K, rgb.shape[:2], stamp_s, detections=boxes, ground_truth=gt,
                           tracker=self.tracker, max_age_s=s.tracking_max_age_s, min_score=s.tracking_min_score)
        return PreparedFrame(rgb, camera, rois, depth_m, warnings, image_msg.header, stamp_s, t0, self.clock(),
                             t_converted=t_converted)

    def finish(self, frame: "PreparedFrame", results: list[ObjectPose], want_debug: bool = False,
               t_estimated: float | None = None) -> ObjectOutputs:
        """The outputs of a prepared frame from the estimator's poses (``t_estimated``: when they
        came, clock seconds; default now)."""
        s, msgs = self.settings, self.msgs
        warnings = list(frame.warnings)
        t1, t2 = frame.t_prepared, (self.clock() if t_estimated is None else t_estimated)
        if frame.depth_m is not None:  # a refusal is data, not an error: the colour pose goes out, the kind is logged once
            refine_model = getattr(self.estimator, "refine_model", None)
            warnings += sorted({f"depth: refinement of {p.object_name!r} refused ({rejection_kind(p.refine_reason)}): "
                                "colour pose published" for p in results if not p.refined and p.refine_reason
                                and refine_model is not None and not isinstance(refine_model(p.object_name), str)})
        stamp_s = frame.stamp_s
        kept = keep_poses(results, s.objects, s.min_score)
        if s.roi_source == "tracking":
            self.tracker.update(kept, stamp_s)
        if self.pose_filter.config != s.filter_config:  # constants changed (ros2 param set): start over
            self.pose_filter = PoseTracker(s.filter_config)
        shown = self.pose_filter.update(kept, stamp_s) if s.filter_enabled else kept
        t_filtered = self.clock()
        header = frame.header
        # every message of the shown poses from one builder (rotations converted once)
        shown_msgs = conv.ObjectPoseMessages(msgs, shown)
        detections = shown_msgs.detection3d_array(header)
        best = _best_per_object(shown)
        out = ObjectOutputs(
            detections=detections,
            poses={n: shown_msgs.pose_stamped(i, header) for n, i in best.items()},
            poses_cov={n: shown_msgs.pose_with_covariance_stamped(i, header) for n, i in best.items()},
            transforms=[shown_msgs.transform(i, header, s.frame_prefix) for i in best.values()] if s.publish_tf else [],
            markers=shown_msgs.markers(header, s.meshes, s.mesh_scale),
            debug_image=None, results=shown, warnings=warnings, raw_results=kept,
            detections_raw=conv.ObjectPoseMessages(msgs, kept).detection3d_array(header) if s.filter_enabled else detections,
        )
        if self.planning_scene is not None:
            out.collision_objects = self.planning_scene.update({n: shown[i] for n, i in best.items()}, header, stamp_s)
        t3 = self.clock()
        if want_debug:
            out.debug_image = conv.numpy_to_image(msgs, draw_object_debug(frame.rgb, shown, frame.camera.K, frame.rois), "rgb8", header)
        t4 = self.clock()
        # conversions (messages <-> numpy) apart from window selection and pose filtering, which are not
        t_conv = frame.t_converted or t1
        out.timings = {"convert_in_s": t_conv - frame.t0, "rois_s": t1 - t_conv, "estimate_s": t2 - t1,
                       "filter_s": t_filtered - t2, "convert_out_s": t3 - t_filtered, "debug_s": t4 - t3}
        return out


@dataclass
class PreparedFrame:
    """One object frame after conversion and window selection, before the estimator.

    ``rois``: the estimator's ``boxes`` (None = its localiser); ``depth_m``: (H, W) float32
    metres registered to ``rgb``, or None; ``t0``/``t_prepared``: clock seconds (start, end),
    ``t_converted``: when the input messages were converted, before the windows were picked.
    """

    rgb: np.ndarray
    camera: CameraModel
    rois: Any
    depth_m: np.ndarray | None
    warnings: list[str]
    header: Any
    stamp_s: float
    t0: float
    t_prepared: float
    t_converted: float = 0.0


def process_object_batch(frames: Sequence[tuple[ObjectPipeline, dict[str, Any], bool]]) -> list[ObjectOutputs | Exception]:
    """Several cameras' frames through ONE estimator call over all their image windows.

    Args:
        frames: [(the camera's pipeline, keyword arguments of :meth:`ObjectPipeline.prepare`,
            want_debug)]; every pipeline holds the same estimator, which has
            ``estimate_images`` (:meth:`featmap_ros.estimators.ObjectPoseEstimator.estimate_images`).

    Returns:
        Per frame, its outputs, or the exception its input raised (a bad message of one camera
        does not cost the others their frame). Depth refinement runs per frame after the call.
    """
    prepared: list[PreparedFrame | Exception] = []
    for pipe, kwargs, _ in frames:
        try:
            prepared.append(pipe.prepare(**kwargs))
        except InputError as e:
            prepared.append(e)
    todo = [n for n, f in enumerate(prepared) if isinstance(f, PreparedFrame) and (f.rois is None or f.rois)]
    results: dict[int, list[ObjectPose]] = {}
    if todo:
        estimator = frames[todo[0]][0].estimator
        batch = estimator.estimate_images([(prepared[n].rgb, prepared[n].camera.K, prepared[n].rois) for n in todo])
        for n, poses in zip(todo, batch):
            f = prepared[n]
            results[n] = list(poses) if f.depth_m is None else list(estimator.refine_with_depth(poses, f.depth_m, f.camera.K))
    out: list[ObjectOutputs | Exception] = []
    for n, (pipe, _, want_debug) in enumerate(frames):
        f = prepared[n]
        out.append(f if isinstance(f, Exception) else pipe.finish(f, results.get(n, []), want_debug))
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
        self.camera_info = conv.CameraInfoReader()  # the last calibration read, while it stays the same

    def process(self, depth_msg: Any, info_msg: Any, want_debug: bool = False) -> HandOutputs:
        """Raises ConversionError (bad input message, naming the field) before any estimate."""
        s, msgs = self.settings, self.msgs
        t0 = self.clock()
        depth_m = conv.image_to_depth_m(depth_msg, "depth", s.depth_scale_m)
        camera, warnings = self.camera_info.read(info_msg, "camera_info")
        conv.check_image_matches_camera(depth_m.shape, camera, "depth")
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
