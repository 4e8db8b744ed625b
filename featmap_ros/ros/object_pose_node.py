"""object_pose_node: 6D object poses from a colour image (Feature Mapping, BB8 + PnP).

In: ``image`` (rgb8/bgr8/mono8), ``camera_info``, and per ``roi_source`` ``detections_2d``
(vision_msgs/Detection2DArray) or ``ground_truth/detections`` (Detection3DArray), synchronised
by message_filters; with ``refine.depth`` auto/on also ``depth`` (16UC1 mm or 32FC1 m, registered
to the colour image) and ``depth_camera_info`` (auto: used when they arrive). Out:
``~/detections`` (filtered over time with ``filter.enabled``, with covariances), ``~/detections_raw``
(per frame), ``~/<object>/pose``, ``~/<object>/poses_cov`` (PoseWithCovarianceStamped), TF
``<frame_prefix><object>``, ``~/markers``, ``~/debug_image`` (built only when subscribed),
``~/collision_objects`` (moveit_msgs/CollisionObject, with ``planning_scene.enabled``),
``/diagnostics``; ``~/estimate`` (featmap_ros/srv/Estimate) answers with the poses of the next frame.

With ``cameras: [cam_left, cam_right]`` the inputs are each camera's ``<cam>/image``,
``<cam>/camera_info``, ... and the outputs ``~/<cam>/detections``, ``~/<cam>/markers``, ...,
TF ``<frame_prefix><cam>/<object>``; the frames of the cameras within ``batch.window_s`` go
through the network in one call.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

from featmap_ros.errors import InputError
from featmap_ros.estimators import TOY_MESH
from featmap_ros.ros.lifecycle import managed
from featmap_ros.ros.multicam import CameraBatcher
from featmap_ros.ros.node_base import PoseNode, load_estimator, runtime_fallbacks
from featmap_ros.ros.node_common import latched_qos, report_frame_error, run_node
from featmap_ros.ros.params import OBJECT_NODE_PARAMS, parse_cameras
from featmap_ros.ros.pipeline import (ObjectPipeline, ObjectSettings, filter_config_from_params, mesh_uris,
                                      process_object_batch, uri_exists)
from featmap_ros.ros.planning_scene import PlanningSceneObjects, collision_shapes, moveit_available
from featmap_ros.ros.requests import object_response_fields, pick_camera
from featmap_ros.ros.roi import check_roi_source

NAME = "object_pose_node"


def _share_dir(pkg: str) -> str | None:
    try:
        return get_package_share_directory(pkg)
    except PackageNotFoundError:
        return None


def mesh_exists(uri: str) -> bool:
    return uri_exists(uri, _share_dir)


@dataclass
class CameraOutputs:
    """One camera's publishers (``~/`` for the single camera, ``~/<cam>/`` with ``cameras``)."""

    detections: Any
    detections_raw: Any
    poses: dict[str, Any]
    poses_cov: dict[str, Any]
    markers: Any
    debug: Any


class ObjectPoseNode(PoseNode):
    SERVICE_TYPE = "Estimate"

    def __init__(self, **kwargs) -> None:
        super().__init__(NAME, OBJECT_NODE_PARAMS, **kwargs)

    def setup(self):
        """Load the estimator, build a pipeline and publishers per camera; return the input streams."""
        cameras = parse_cameras(self.values["cameras"])
        estimator = load_estimator(self.values, "object")
        for why in runtime_fallbacks(estimator):
            self.get_logger().warning(why)
        check_roi_source(self.values["roi_source"], getattr(estimator, "localiser", None) is not None)
        if len(cameras) > 1 and not hasattr(estimator, "estimate_images"):
            raise InputError(f"parameter 'cameras': {type(estimator).__name__} cannot estimate several images at once")
        self.obj_ids = dict(zip(estimator.object_names, getattr(estimator, "obj_ids", [])))
        # the estimator's mesh files (refine.mesh_root: a BOP models/ folder) draw the markers the template has no file for
        self.mesh_files = {n: s for n, s in zip(estimator.object_names, getattr(estimator, "mesh_sources", ()))
                           if s and s != TOY_MESH}
        settings = ObjectSettings.from_params(self.values, estimator.object_names, self.obj_ids, mesh_exists, self.mesh_files)
        self._meshes_for(self.values["markers.mesh_resource"], settings.objects)
        shapes = self._collision_shapes(estimator, settings.objects)
        # one pipeline per camera (its own tracks, filter and scene objects), one estimator; TF frames per camera
        streams = list(cameras) or [""]
        self.pipelines = {
            cam: ObjectPipeline(estimator, self.msgs, replace(settings, frame_prefix=self._prefix(cam)),
                                planning_scene=None if shapes is None else PlanningSceneObjects(
                                    self.msgs, shapes, self._prefix(cam), settings.filter_config.max_gap_s))
            for cam in streams}
        self.pipeline = self.pipelines[streams[0]]
        self.batcher = CameraBatcher(streams, self.values["batch.window_s"]) if cameras else None
        self.outputs = {}
        for cam in streams:
            ns = f"~/{cam}/" if cam else "~/"
            self.outputs[cam] = CameraOutputs(
                detections=self.publisher(Detection3DArray, f"{ns}detections", 10),
                detections_raw=self.publisher(Detection3DArray, f"{ns}detections_raw", 10),
                poses={n: self.publisher(PoseStamped, f"{ns}{n}/pose", 10) for n in settings.objects},
                poses_cov={n: self.publisher(PoseWithCovarianceStamped, f"{ns}{n}/poses_cov", 10) for n in settings.objects},
                markers=self.publisher(MarkerArray, f"{ns}markers", latched_qos()),
                debug=self.pub_debug if not cam else self.publisher(Image, f"{ns}debug_image", latched_qos()))
        self.batch_timer = (self.create_timer(max(self.values["batch.window_s"] / 2.0, 0.005), self._on_batch_timer)
                            if cameras else None)
        inputs = [("image", Image), ("camera_info", CameraInfo)]
        if settings.roi_source == "detections":
            inputs.append(("detections_2d", Detection2DArray))
        elif settings.roi_source == "ground_truth":
            inputs.append(("ground_truth/detections", Detection3DArray))
        self.n_colour_inputs = len(inputs)
        depth = [("depth", Image), ("depth_camera_info", CameraInfo)] if settings.refine_depth != "off" else []
        for w in self.pipeline.prepare_refinement() if depth else []:
            self.get_logger().warning(w)
        self.get_logger().info(f"estimating {list(settings.objects)}, image windows from {settings.roi_source}, "
                               f"depth refinement {settings.refine_depth}, mode {self.values['mode']}"
                               + (f", cameras {list(cameras)} (batch window {self.values['batch.window_s']:g} s)" if cameras else ""))

        def topics(cam, pairs):
            return [(f"{cam}/{t}" if cam else t, msg_type) for t, msg_type in pairs]

        if settings.refine_depth == "on":
            return {cam: (topics(cam, inputs + depth), []) for cam in streams}
        return {cam: (topics(cam, inputs), topics(cam, depth) if settings.refine_depth == "auto" else []) for cam in streams}

    def _collision_shapes(self, estimator, objects):
        """The objects' collision shapes when ``planning_scene.enabled`` and moveit_msgs is
        installed (the ``~/collision_objects`` publisher made); None otherwise (logged once)."""
        self.pub_collision = None
        if not self.values["planning_scene.enabled"]:
            return None
        why = moveit_available()
        if why:
            self.get_logger().info(why)
            return None
        from moveit_msgs.msg import CollisionObject  # an optional ROS package: imported only when asked for

        names = list(estimator.object_names)
        mesh_of = getattr(estimator, "object_mesh", lambda n: f"{type(estimator).__name__} has no meshes")
        shapes = collision_shapes(objects, mesh_of, dict(zip(names, estimator.extents_m)),
                                  dict(zip(names, estimator.center_m)), self.values["planning_scene.max_triangles"])
        for name, shape in shapes.items():
            self.get_logger().info(f"planning scene: {name}: {shape.note}")
        # reliable, and deep enough that an ADD (the mesh) is not dropped behind the MOVEs
        self.pub_collision = self.publisher(CollisionObject, "~/collision_objects", 100)
        return shapes

    def teardown(self) -> None:
        timer = getattr(self, "batch_timer", None)
        if timer is not None:
            self.destroy_timer(timer)
        self.batch_timer = None
        self.pipelines, self.pipeline, self.batcher, self.outputs = {}, None, None, {}

    def _prefix(self, cam: str) -> str:
        return f"{self.values['frame_prefix']}{cam}/" if cam else self.values["frame_prefix"]

    # executor thread: the cameras' frames are gathered, then offered as one job
    def offer_frame(self, stream, msgs, now):
        if self.batcher is None:
            return super().offer_frame(stream, msgs, now)
        batch = self.batcher.add(stream, msgs, now)
        if batch:
            self.offer_batch(batch, now)

    def _on_batch_timer(self) -> None:
        batcher = self.batcher
        batch = batcher.due(time.monotonic()) if batcher is not None else None
        if batch:
            self.offer_batch(batch, time.monotonic())

    # worker thread
    def _kwargs(self, msgs):
        n = self.n_colour_inputs
        extra = msgs[2] if n > 2 else None
        roi = self.pipeline.settings.roi_source
        depth, depth_info = (msgs[n], msgs[n + 1]) if len(msgs) > n else (None, None)
        return {"image_msg": msgs[0], "info_msg": msgs[1], "detections_msg": extra if roi == "detections" else None,
                "ground_truth_msg": extra if roi == "ground_truth" else None, "depth_msg": depth, "depth_info_msg": depth_info}

    def handle_frame(self, msgs, stream=""):
        """One synchronised frame (worker thread): estimate, then publish every output."""
        out = self.pipelines[stream].process(**self._kwargs(msgs), want_debug=self._debug_wanted(stream))
        self._publish(stream, out)
        return out

    def handle_batch(self, frames):
        """Several cameras' frames: one estimator call over all their windows, outputs per camera.
        A camera whose input is bad is reported (throttled) and left out; if all are, the job fails."""
        if self.batcher is None:
            return super().handle_batch(frames)
        results = process_object_batch([(self.pipelines[cam], self._kwargs(msgs), self._debug_wanted(cam))
                                        for cam, msgs in frames])
        outputs, errors = {}, []
        for (cam, _), out in zip(frames, results):
            if isinstance(out, Exception):
                errors.append(out)
                report_frame_error(self.log, InputError(f"{cam}/{out}"))
                continue
            self._publish(cam, out)
            outputs[cam] = out
        if not outputs and errors:
            raise errors[0]
        return outputs

    def _debug_wanted(self, stream: str) -> bool:
        return self.outputs[stream].debug.get_subscription_count() > 0

    def _publish(self, stream: str, out) -> None:
        pubs = self.outputs[stream]
        pubs.detections.publish(out.detections)
        pubs.detections_raw.publish(out.detections_raw)
        for name, pose in out.poses.items():
            pubs.poses[name].publish(pose)
        for name, pose in out.poses_cov.items():
            pubs.poses_cov[name].publish(pose)
        if out.transforms:
            self.tf.sendTransform(out.transforms)
        pubs.markers.publish(out.markers)
        if self.pub_collision is not None:
            for co in out.collision_objects:
                self.pub_collision.publish(co)
        if out.debug_image is not None:
            pubs.debug.publish(out.debug_image)

    def request_stream(self, request):
        return pick_camera(request.camera, list(self.streams) or [""])

    def response_fields(self, answer, stream):
        return object_response_fields(answer, stream)

    def _meshes_for(self, template: str, objects) -> dict[str, str]:
        meshes, missing = mesh_uris(template, objects, self.obj_ids, mesh_exists, self.mesh_files)
        if missing:
            self.get_logger().info(f"no mesh file for {missing} (nor under refine.mesh_root): drawn as boxes only "
                                   "(parameters markers.mesh_resource, refine.mesh_root)")
        return meshes

    def apply_params(self, changed) -> None:
        s = self.pipeline.settings
        meshes = self._meshes_for(changed["markers.mesh_resource"], s.objects) if "markers.mesh_resource" in changed else s.meshes
        prefix = changed.get("frame_prefix", self.values["frame_prefix"])
        for cam, pipe in self.pipelines.items():
            pipe.settings = replace(
                pipe.settings, meshes=meshes, min_score=changed.get("min_score", s.min_score),
                frame_prefix=f"{prefix}{cam}/" if cam else prefix, publish_tf=changed.get("publish_tf", s.publish_tf),
                tracking_max_age_s=changed.get("tracking.max_age_s", s.tracking_max_age_s),
                tracking_min_score=changed.get("tracking.min_score", s.tracking_min_score),
                mesh_scale=changed.get("markers.mesh_scale", s.mesh_scale),
                filter_enabled=changed.get("filter.enabled", s.filter_enabled),
                filter_config=filter_config_from_params({**self.values, **changed}))

    def diagnostic_values(self):
        s = self.pipeline.settings
        return {"roi_source": s.roi_source, "refine_depth": s.refine_depth, "filter_enabled": s.filter_enabled,
                "cameras": ",".join(c for c in self.pipelines if c)}


def main(args=None) -> int:
    return run_node(ObjectPoseNode, NAME, args)


def main_lifecycle(args=None) -> int:
    """The managed variant (``object_pose_lifecycle_node``): starts unconfigured."""
    return run_node(managed(ObjectPoseNode), NAME, args)
