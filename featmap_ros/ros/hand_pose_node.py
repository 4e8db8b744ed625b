"""hand_pose_node: 3D hand joints from a depth image (Feature Mapping, DeepPrior-style crops).

In: ``depth`` (16UC1 millimetres or 32FC1 metres) and ``camera_info``, synchronised by
message_filters. Out: ``~/hand_pose`` (featmap_ros/HandPose, one per processed frame; no joints
when no hand was found), ``~/markers`` (skeleton), TF
``<frame_prefix>hand`` at the palm, ``~/debug_image`` (built only when subscribed), ``/diagnostics``.
"""
from __future__ import annotations

from dataclasses import replace

from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import MarkerArray

from featmap_ros.msg import HandPose
from featmap_ros.ros.lifecycle import managed
from featmap_ros.ros.node_base import PoseNode, load_estimator, runtime_fallbacks
from featmap_ros.ros.node_common import latched_qos, run_node
from featmap_ros.ros.params import HAND_NODE_PARAMS
from featmap_ros.ros.pipeline import HandPipeline, HandSettings
from featmap_ros.ros.requests import hand_response_fields

NAME = "hand_pose_node"


class HandPoseNode(PoseNode):
    SERVICE_TYPE = "EstimateHand"

    def __init__(self, **kwargs) -> None:
        super().__init__(NAME, HAND_NODE_PARAMS, **kwargs)

    def setup(self):
        """Load the estimator, build the pipeline and the publishers; return the input stream."""
        estimator = load_estimator(self.values, "hand")
        for why in runtime_fallbacks(estimator):
            self.get_logger().warning(why)
        self.pipeline = HandPipeline(estimator, self.msgs, HandSettings.from_params(self.values))
        self.pub_hand = self.publisher(HandPose, "~/hand_pose", 10)
        self.pub_markers = self.publisher(MarkerArray, "~/markers", latched_qos())
        return {"": ([("depth", Image), ("camera_info", CameraInfo)], [])}

    def teardown(self) -> None:
        self.pipeline = None

    def handle_frame(self, msgs, stream=""):
        """One synchronised frame (worker thread): estimate, then publish every output."""
        depth, info = msgs
        out = self.pipeline.process(depth, info, want_debug=self.debug_wanted)
        self.pub_hand.publish(out.hand_pose)  # no joints = no hand found in this frame
        if out.transform is not None:
            self.tf.sendTransform(out.transform)
        self.pub_markers.publish(out.markers)
        if out.debug_image is not None:
            self.pub_debug.publish(out.debug_image)
        return out

    def response_fields(self, answer, stream):
        return hand_response_fields(answer)

    def apply_params(self, changed) -> None:
        s = self.pipeline.settings
        self.pipeline.settings = replace(
            s, min_score=changed.get("min_score", s.min_score), frame_prefix=changed.get("frame_prefix", s.frame_prefix),
            publish_tf=changed.get("publish_tf", s.publish_tf), palm_joint=changed.get("palm_joint", s.palm_joint))


def main(args=None) -> int:
    return run_node(HandPoseNode, NAME, args)


def main_lifecycle(args=None) -> int:
    """The managed variant (``hand_pose_lifecycle_node``): starts unconfigured."""
    return run_node(managed(HandPoseNode), NAME, args)
