"""object_pose_node: 6D object poses from a colour image (Feature Mapping, BB8 + PnP).

In: ``image`` (rgb8/bgr8/mono8), ``camera_info``, and per ``roi_source`` ``detections_2d``
(vision_msgs/Detection2DArray) or ``ground_truth/detections`` (Detection3DArray), synchronised
by message_filters. Out: ``~/detections``, ``~/<object>/pose``, TF ``<frame_prefix><object>``,
``~/markers``, ``~/debug_image`` (built only when subscribed), ``/diagnostics``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import message_filters
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from tf2_ros import TransformBroadcaster
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

from featmap_ros.errors import InputError
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.diagnostics import InputWatchdog, RateLatencyStats, diagnostic_array
from featmap_ros.ros.node_common import (ThrottledLog, declare_params, input_qos, make_set_parameters_callback,
                                         report_frame_error, run_node)
from featmap_ros.ros.params import OBJECT_NODE_PARAMS, resolve_weights
from featmap_ros.ros.pipeline import ObjectPipeline, ObjectSettings, mesh_uris, uri_exists
from featmap_ros.ros.roi import check_roi_source
from featmap_ros.ros.worker import FrameWorker

NAME = "object_pose_node"


def load_estimator(values: dict):
    """The estimator a node's ``weights``/``device``/``warmup`` parameters ask for."""
    from featmap_ros.estimators import ObjectPoseEstimator

    path = resolve_weights(values["weights"], "object")
    try:
        est = ObjectPoseEstimator.from_checkpoint(path, device=values["device"])
    except InputError as e:
        raise InputError(f"parameter 'weights': {e}") from None
    except Exception as e:  # noqa: BLE001 - any load failure is a configuration error here
        raise InputError(f"parameter 'weights': cannot load {path}: {e}") from None
    if values["warmup"]:
        est.warmup()
    return est


class ObjectPoseNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NAME, **kwargs)
        self.values = declare_params(self, OBJECT_NODE_PARAMS)
        estimator = load_estimator(self.values)
        check_roi_source(self.values["roi_source"], getattr(estimator, "localiser", None) is not None)
        self.obj_ids = dict(zip(estimator.object_names, getattr(estimator, "obj_ids", [])))
        settings = ObjectSettings.from_params(self.values, estimator.object_names, self.obj_ids, self._mesh_exists)
        self._report_missing_meshes(self.values["markers.mesh_resource"], settings.objects)
        self.pipeline = ObjectPipeline(estimator, conv.RclpyMessages(), settings)
        self.log = ThrottledLog(self, self.values["log_throttle_s"])
        self.stats = RateLatencyStats()
        self.stats_lock = threading.Lock()
        self._warned: set[str] = set()

        self.pub_detections = self.create_publisher(Detection3DArray, "~/detections", 10)
        self.pub_poses = {n: self.create_publisher(PoseStamped, f"~/{n}/pose", 10) for n in settings.objects}
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", 10)
        self.pub_debug = self.create_publisher(Image, "~/debug_image", 1)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf = TransformBroadcaster(self)

        qos = input_qos(self.values)
        inputs = [("image", Image), ("camera_info", CameraInfo)]
        if settings.roi_source == "detections":
            inputs.append(("detections_2d", Detection2DArray))
        elif settings.roi_source == "ground_truth":
            inputs.append(("ground_truth/detections", Detection3DArray))
        self.watchdog = InputWatchdog([t for t, _ in inputs], 5.0 * self.values["diagnostics.period_s"],
                                      self.values["sync.slop_s"])
        self.subs = []
        for topic, msg_type in inputs:
            sub = message_filters.Subscriber(self, msg_type, topic, qos_profile=qos)
            sub.registerCallback(self._on_input, topic)
            self.subs.append(sub)
        self.sync = message_filters.ApproximateTimeSynchronizer(
            self.subs, self.values["sync.queue_size"], self.values["sync.slop_s"])
        self.sync.registerCallback(self._on_frame)
        self.worker = FrameWorker(self._process, lambda _frame, err: report_frame_error(self.log, err), name=NAME)
        self.timer = self.create_timer(self.values["diagnostics.period_s"], self._on_timer)
        self.add_on_set_parameters_callback(make_set_parameters_callback(OBJECT_NODE_PARAMS, self._apply_params))
        self.get_logger().info(
            f"estimating {list(settings.objects)} with windows from {settings.roi_source}; "
            f"inputs {[self.resolve_topic_name(t) for t, _ in inputs]}")

    # executor thread --------------------------------------------------------------------
    def _on_input(self, _msg, topic: str) -> None:
        self.watchdog.saw(topic, time.monotonic())

    def _on_frame(self, *msgs) -> None:
        self.watchdog.synced(time.monotonic())
        self.worker.offer((time.monotonic(), msgs))

    def _on_timer(self) -> None:
        problem = self.watchdog.check(time.monotonic())
        if problem:
            self.log.warn("watchdog", problem)
        with self.stats_lock:
            summary = self.stats.summary(time.monotonic())
        values = {**summary, "frames_published": self.stats.total, "frames_accepted": self.worker.accepted,
                  "frames_dropped_busy": self.worker.dropped, "frames_failed": self.worker.failed,
                  "roi_source": self.pipeline.settings.roi_source}
        level = "WARN" if problem else "OK"
        header = conv.make_header(self.pipeline.msgs, self.get_clock().now().nanoseconds, "")
        self.pub_diag.publish(diagnostic_array(self.pipeline.msgs, header, f"{NAME}: {self.get_fully_qualified_name()}",
                                               NAME, level, problem or "ok", values))

    @staticmethod
    def _mesh_exists(uri: str) -> bool:
        def share_dir_of(pkg: str):
            try:
                return get_package_share_directory(pkg)
            except PackageNotFoundError:
                return None

        return uri_exists(uri, share_dir_of)

    def _report_missing_meshes(self, template: str, objects) -> None:
        _, missing = mesh_uris(template, objects, self.obj_ids, self._mesh_exists)
        if missing:
            self.get_logger().info(f"no mesh file for {missing}: those objects are drawn as boxes only "
                                   "(parameter markers.mesh_resource)")

    def _apply_params(self, changed: dict) -> None:
        s = self.pipeline.settings
        if "markers.mesh_resource" in changed:
            meshes = mesh_uris(changed["markers.mesh_resource"], s.objects, self.obj_ids, self._mesh_exists)[0]
            self._report_missing_meshes(changed["markers.mesh_resource"], s.objects)
        else:
            meshes = s.meshes
        new = dict(min_score=changed.get("min_score", s.min_score), frame_prefix=changed.get("frame_prefix", s.frame_prefix),
                   publish_tf=changed.get("publish_tf", s.publish_tf),
                   tracking_max_age_s=changed.get("tracking.max_age_s", s.tracking_max_age_s),
                   tracking_min_score=changed.get("tracking.min_score", s.tracking_min_score),
                   meshes=meshes,
                   mesh_scale=changed.get("markers.mesh_scale", s.mesh_scale))
        self.pipeline.settings = replace(s, **new)
        if "log_throttle_s" in changed:
            self.log.set_period(changed["log_throttle_s"])

    # worker thread ----------------------------------------------------------------------
    def _process(self, frame) -> None:
        t_in, msgs = frame
        image, info = msgs[0], msgs[1]
        extra = msgs[2] if len(msgs) > 2 else None
        roi = self.pipeline.settings.roi_source
        out = self.pipeline.process(image, info, detections_msg=extra if roi == "detections" else None,
                                    ground_truth_msg=extra if roi == "ground_truth" else None,
                                    want_debug=self.pub_debug.get_subscription_count() > 0)
        for w in out.warnings:
            if w not in self._warned:
                self._warned.add(w)
                self.get_logger().warning(w)
        self.pub_detections.publish(out.detections)
        for name, pose in out.poses.items():
            pub = self.pub_poses.get(name)
            if pub is not None:
                pub.publish(pose)
        if out.transforms:
            self.tf.sendTransform(out.transforms)
        self.pub_markers.publish(out.markers)
        if out.debug_image is not None:
            self.pub_debug.publish(out.debug_image)
        now = time.monotonic()
        latency_s = (self.get_clock().now().nanoseconds - conv.stamp_to_ns(image.header.stamp)) * 1e-9
        t = out.timings
        with self.stats_lock:
            self.stats.record(now, latency_s, now - t_in, t["convert_in_s"] + t["convert_out_s"])

    def close(self) -> None:
        self.worker.stop()


def main(args=None) -> int:
    return run_node(ObjectPoseNode, NAME, args)
