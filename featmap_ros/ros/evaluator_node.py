"""evaluator_node: estimates vs ground truth, matched by exact stamp, scored while a replay runs.

In: ``estimates`` and ``ground_truth`` (Detection3DArray for ``task:=object``, featmap_ros/HandPose
for ``task:=hand``; remap them), and ``camera_info_topic`` (objects: K for the 2D projection
error). Out: ``~/summary`` (std_msgs/String, JSON running summary), ``/diagnostics``, a log line
per ``summary_period_s``, and at shutdown (and every ``write_period_s``) ``<output_dir>/``
``object_metrics.json``/``hand_metrics.json`` + per-frame CSV + PNG curves, written atomically.
A ground-truth frame without an estimate counts as a failure. The logic is
:class:`featmap_ros.ros.online_eval.MessageEvaluator`.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import String

from featmap_ros.data import player
from featmap_ros.errors import InputError
from featmap_ros.ros import conversions as conv, online_eval
from featmap_ros.ros.diagnostics import diagnostic_array
from featmap_ros.ros.node_common import ThrottledLog, declare_params, run_node
from featmap_ros.ros.params import EVALUATOR_NODE_PARAMS

NAME = "evaluator_node"


class EvaluatorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NAME, **kwargs)
        v = self.values = declare_params(self, EVALUATOR_NODE_PARAMS)
        task = v["task"]
        root, dataset = v["dataset_root"], v["dataset"]
        if not root and task == "object":  # the embedded sample: the project's toy object
            root, dataset = str(player.embedded_sample("lm")), "toy"
        objects = [o.strip() for o in v["objects"].split(",") if o.strip()]
        self.core = online_eval.make_evaluator(task, dataset, root, objects, v["max_pending"], int(v["max_lag_s"] * 1e9))
        self.lock = threading.Lock()
        self.log = ThrottledLog(self, 5.0)
        self.out_dir = output_dir(v["output_dir"])
        self.msgs = conv.RclpyMessages()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=v["qos.depth"], durability=DurabilityPolicy.VOLATILE,
                         reliability=ReliabilityPolicy.RELIABLE if v["qos.reliability"] == "reliable" else ReliabilityPolicy.BEST_EFFORT)
        if task == "hand":
            from featmap_ros.msg import HandPose as MsgType
        else:
            from vision_msgs.msg import Detection3DArray as MsgType
            self.create_subscription(CameraInfo, v["camera_info_topic"], self._on_info, qos)
        self.create_subscription(MsgType, "ground_truth", self._on_gt, qos)
        self.create_subscription(MsgType, "estimates", self._on_est, qos)
        self.pub_summary = self.create_publisher(String, "~/summary", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(v["summary_period_s"], self._on_summary)
        if v["write_period_s"] > 0:
            self.create_timer(v["write_period_s"], self._write)
        self.get_logger().info(f"evaluating {task} estimates on {self.resolve_topic_name('estimates')} against "
                               f"{self.resolve_topic_name('ground_truth')}; results to {self.out_dir}/ at shutdown")

    def _handle(self, fn, msg, topic: str) -> None:
        with self.lock:
            reason = fn(msg, topic)
        if reason:
            self.log.warn("reject:" + topic, f"rejected a message: {reason}")

    def _on_info(self, msg) -> None:
        self._handle(self.core.on_camera_info, msg, "camera_info")

    def _on_gt(self, msg) -> None:
        self._handle(self.core.on_ground_truth, msg, "ground_truth")

    def _on_est(self, msg) -> None:
        self._handle(self.core.on_estimate, msg, "estimates")

    def _on_summary(self) -> None:
        with self.lock:
            s = self.core.summary()
        self.pub_summary.publish(String(data=json.dumps(s)))
        keys = ("frames", "frames_missed", "instances", "proj2d_5px", "add_10", "mean_mm", "within_20mm", "pending")
        self.get_logger().info("  ".join(f"{k} {s[k]:.3f}" if isinstance(s[k], float) else f"{k} {s[k]}" for k in keys if k in s))
        header = conv.make_header(self.msgs, self.get_clock().now().nanoseconds, "")
        level = "WARN" if s.get("rejected") else "OK"
        flat = {k: val for k, val in s.items() if isinstance(val, (int, float, str))}
        self.pub_diag.publish(diagnostic_array(self.msgs, header, f"{NAME}: {self.get_fully_qualified_name()}", NAME, level,
                                               "rejected messages" if s.get("rejected") else "ok", flat))

    def _write(self) -> None:
        """Write the results so far (frames still waiting are not settled)."""
        with self.lock:
            try:
                self.core.evaluator.write(self.out_dir, {"node": self.get_fully_qualified_name(), "final": False})
            except InputError as e:
                self.log.warn("write", f"no results to write yet: {e}")

    def close(self) -> None:
        with self.lock:
            self.core.finish()
            try:
                paths = self.core.evaluator.write(self.out_dir, {"node": NAME, "final": True, "parameters": self.values})
                self.get_logger().info(f"wrote {', '.join(str(p) for p in paths)}")
            except InputError as e:
                self.get_logger().warning(f"nothing written: {e}")


def output_dir(value: str) -> Path:
    """``output_dir`` as given when absolute; a relative one lands under ``$ROS_HOME`` (``~/.ros``),
    as ROS logs do, not in whatever folder the launch was started from."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(os.environ.get("ROS_HOME", Path.home() / ".ros")).expanduser() / p


def main(args=None) -> int:
    return run_node(EvaluatorNode, NAME, args)
