"""object_pose_node: 6D object poses from a colour image (Feature Mapping, BB8 + PnP).

In: ``image`` (rgb8/bgr8/mono8), ``camera_info``, and per ``roi_source`` ``detections_2d``
(vision_msgs/Detection2DArray) or ``ground_truth/detections`` (Detection3DArray), synchronised
by message_filters; with ``refine.depth`` auto/on also ``depth`` (16UC1 mm or 32FC1 m, registered
to the colour image) and ``depth_camera_info`` (auto: used when they arrive). Out:
``~/detections`` (filtered over time with ``filter.enabled``), ``~/detections_raw`` (per frame),
``~/<object>/pose``, TF ``<frame_prefix><object>``, ``~/markers``, ``~/debug_image`` (built only
when subscribed), ``/diagnostics``.
"""
from __future__ import annotations

from dataclasses import replace

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

from featmap_ros.ros.lifecycle import managed
from featmap_ros.ros.node_base import PoseNode, load_estimator
from featmap_ros.ros.node_common import latched_qos, run_node
from featmap_ros.ros.params import OBJECT_NODE_PARAMS
from featmap_ros.ros.requests import object_response_fields, pick_camera
from featmap_ros.ros.pipeline import ObjectPipeline, ObjectSettings, filter_config_from_params, mesh_uris, uri_exists
from featmap_ros.ros.roi import check_roi_source

NAME = "object_pose_node"


def _share_dir(pkg: str) -> str | None:
    try:
        return get_package_share_directory(pkg)
    except PackageNotFoundError:
        return None


def mesh_exists(uri: str) -> bool:
    return uri_exists(uri, _share_dir)


class ObjectPoseNode(PoseNode):
    SERVICE_TYPE = "Estimate"

    def __init__(self, **kwargs) -> None:
        super().__init__(NAME, OBJECT_NODE_PARAMS, **kwargs)

    def setup(self):
        """Load the estimator, build the pipeline and the publishers; return the input streams."""
        estimator = load_estimator(self.values, "object")
        check_roi_source(self.values["roi_source"], getattr(estimator, "localiser", None) is not None)
        self.obj_ids = dict(zip(estimator.object_names, getattr(estimator, "obj_ids", [])))
        settings = ObjectSettings.from_params(self.values, estimator.object_names, self.obj_ids, mesh_exists)
        self._meshes_for(self.values["markers.mesh_resource"], settings.objects)
        self.pipeline = ObjectPipeline(estimator, self.msgs, settings)

        self.pub_detections = self.publisher(Detection3DArray, "~/detections", 10)
        self.pub_detections_raw = self.publisher(Detection3DArray, "~/detections_raw", 10)
        self.pub_poses = {n: self.publisher(PoseStamped, f"~/{n}/pose", 10) for n in settings.objects}
        self.pub_markers = self.publisher(MarkerArray, "~/markers", latched_qos())
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
                               f"depth refinement {settings.refine_depth}, mode {self.values['mode']}")
        if settings.refine_depth == "on":
            return {"": (inputs + depth, [])}
        return {"": (inputs, depth if settings.refine_depth == "auto" else [])}

    def teardown(self) -> None:
        self.pipeline = None

    def handle_frame(self, msgs, stream=""):
        """One synchronised frame (worker thread): estimate, then publish every output."""
        n = self.n_colour_inputs
        image, info, extra = msgs[0], msgs[1], (msgs[2] if n > 2 else None)
        depth, depth_info = (msgs[n], msgs[n + 1]) if len(msgs) > n else (None, None)
        roi = self.pipeline.settings.roi_source
        out = self.pipeline.process(image, info, detections_msg=extra if roi == "detections" else None,
                                    ground_truth_msg=extra if roi == "ground_truth" else None,
                                    want_debug=self.debug_wanted, depth_msg=depth, depth_info_msg=depth_info)
        self.pub_detections.publish(out.detections)
        self.pub_detections_raw.publish(out.detections_raw)
        for name, pose in out.poses.items():
            self.pub_poses[name].publish(pose)
        if out.transforms:
            self.tf.sendTransform(out.transforms)
        self.pub_markers.publish(out.markers)
        if out.debug_image is not None:
            self.pub_debug.publish(out.debug_image)
        return out

    def request_stream(self, request):
        return pick_camera(request.camera, list(self.streams) or [""])

    def response_fields(self, answer, stream):
        return object_response_fields(answer, stream)

    def _meshes_for(self, template: str, objects) -> dict[str, str]:
        meshes, missing = mesh_uris(template, objects, self.obj_ids, mesh_exists)
        if missing:
            self.get_logger().info(f"no mesh file for {missing}: drawn as boxes only (parameter markers.mesh_resource)")
        return meshes

    def apply_params(self, changed) -> None:
        s = self.pipeline.settings
        meshes = self._meshes_for(changed["markers.mesh_resource"], s.objects) if "markers.mesh_resource" in changed else s.meshes
        self.pipeline.settings = replace(
            s, meshes=meshes, min_score=changed.get("min_score", s.min_score),
            frame_prefix=changed.get("frame_prefix", s.frame_prefix), publish_tf=changed.get("publish_tf", s.publish_tf),
            tracking_max_age_s=changed.get("tracking.max_age_s", s.tracking_max_age_s),
            tracking_min_score=changed.get("tracking.min_score", s.tracking_min_score),
            mesh_scale=changed.get("markers.mesh_scale", s.mesh_scale),
            filter_enabled=changed.get("filter.enabled", s.filter_enabled),
            filter_config=filter_config_from_params({**self.values, **changed}))
        self.values.update({k: v for k, v in changed.items() if k.startswith("filter.")})

    def diagnostic_values(self):
        s = self.pipeline.settings
        return {"roi_source": s.roi_source, "refine_depth": s.refine_depth, "filter_enabled": s.filter_enabled}


def main(args=None) -> int:
    return run_node(ObjectPoseNode, NAME, args)


def main_lifecycle(args=None) -> int:
    """The managed variant (``object_pose_lifecycle_node``): starts unconfigured."""
    return run_node(managed(ObjectPoseNode), NAME, args)
