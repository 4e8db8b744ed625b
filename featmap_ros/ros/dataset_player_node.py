"""dataset_player_node: a BOP/LINEMOD or NYU folder published live, with /clock and ground truth.

Out (DESIGN §5): ``/camera/color/image_raw`` + ``camera_info`` (BOP), ``/camera/depth/image_raw`` +
``camera_info`` (BOP depth, NYU), ``/ground_truth/detections`` (Detection3DArray) or
``/ground_truth/hand_pose`` (featmap_ros/HandPose), ``/tf_static``, ``/clock``. Every message of a
frame has the same stamp; that stamp is published on /clock first, so nodes with
``use_sim_time`` see the dataset's time. Publishing never blocks (keep-last QoS); with
``wait_for_ack`` the next frame waits for the estimator's output of the last one (or a timeout).
The frame logic lives in :mod:`featmap_ros.data.player`, the messages in :mod:`featmap_ros.ros.bag`.
"""
from __future__ import annotations

import time

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from tf2_msgs.msg import TFMessage

from featmap_ros.data import player
from featmap_ros.errors import InputError
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.bag import frame_messages, tf_static_message

_SETTLE_S = 1.0  # lossless replay: seconds the topics' matched subscriber counts must be stable before the first frame
from featmap_ros.ros.node_common import ThrottledLog, declare_params, run_node
from featmap_ros.ros.params import PLAYER_NODE_PARAMS

NAME = "dataset_player_node"


def _ids(text: str) -> list[int] | None:
    ids = [int(x) for x in text.replace(" ", "").split(",") if x]
    return ids or None


class DatasetPlayerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NAME, **kwargs)
        v = self.values = declare_params(self, PLAYER_NODE_PARAMS)
        kind, root = v["dataset"], v["dataset_root"]
        if not root:  # the embedded sample: the project's toy object, or generated hands
            root = str(player.embedded_sample("nyu" if kind == "nyu" else "lm"))
            kind = "nyu" if kind == "nyu" else "toy"
        self.source = player.open_source(kind, root, v["split"], _ids(v["scenes"]), _ids(v["objects"]),
                                         synthetic=v["synthetic"])
        self.frames = player.parse_range(v["range"], len(self.source), "parameter 'range'")
        self.order = player.schedule(self.frames, v["loop"])
        self.step_ns = player.period_ns(v["rate"])
        self.start_ns = int(round(v["start_time_s"] * 1e9))
        self.pacer = player.Pacer(v["rate"], v["wait_for_ack"], v["ack_timeout_s"])
        self.msgs = conv.RclpyMessages()
        self.log = ThrottledLog(self, 5.0)
        self.k = 0
        self.pending = None  # frame index taken from the schedule but not published yet
        self.done = False
        self.t0 = time.monotonic() + v["start_delay_s"]
        self._counts: tuple = ()
        self._counts_since = 0.0

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=v["qos.depth"], durability=DurabilityPolicy.VOLATILE,
                         reliability=ReliabilityPolicy.RELIABLE if v["qos.reliability"] == "reliable" else ReliabilityPolicy.BEST_EFFORT)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.pubs: dict = {}
        self.qos = qos
        self.pub_clock = self.create_publisher(Clock, player.TOPICS["clock"], 10) if v["publish_clock"] else None
        self.pub_tf_static = self.create_publisher(TFMessage, player.TOPICS["tf_static"], latched)
        if v["wait_for_ack"]:
            hand = kind == "nyu"
            topic = v["ack_topic"] or ("/hand_pose_node/hand_pose" if hand else "/object_pose_node/detections")
            if hand:
                from featmap_ros.msg import HandPose as AckType
            else:
                from vision_msgs.msg import Detection3DArray as AckType
            self.ack_sub = self.create_subscription(AckType, topic, self._on_ack, qos)
        period = 1.0 / v["rate"] if v["rate"] > 0 and not v["wait_for_ack"] else 0.001
        self.timer = self.create_timer(period, self._on_timer)
        self.get_logger().info(f"playing {len(self.frames)} frames of {root} ({kind}, {v['split']}) at "
                               f"{v['rate'] or 'max'} Hz{' waiting for acks' if v['wait_for_ack'] else ''}"
                               f"{', looping' if v['loop'] else ''}")

    def _publisher(self, topic: str, msg):
        pub = self.pubs.get(topic)
        if pub is None:
            pub = self.pubs[topic] = self.create_publisher(type(msg), topic, self.qos)
        return pub

    def _on_ack(self, msg) -> None:
        self.pacer.on_ack(conv.stamp_to_ns(msg.header.stamp))

    def _on_timer(self) -> None:
        now = time.monotonic()
        if self.done or now < self.t0 or not self.pacer.due(now):
            return
        if self.pending is None:
            self.pending = next(self.order, None)
            if self.pending is None:
                self._finish()
                return
        i = self.pending
        stamp = player.stamp_ns(self.k, self.start_ns, self.step_ns)
        try:
            frame = self.source.frame(i)
            out = frame_messages(self.msgs, frame, stamp)
        except InputError as e:  # a corrupt file: say which, skip the frame, keep playing
            self.pending = None
            self.log.warn("frame:" + str(e).split(":", 1)[0], f"skipped frame {i}: {e}")
            return
        if not self._consumers_ready(out, now):
            return
        self.pending = None
        if self.k == 0:
            self.pub_tf_static.publish(tf_static_message(self.msgs, [frame.frame_id], stamp))
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=conv.ns_to_time(self.msgs, stamp)))
        for topic, msg in out:
            self._publisher(topic, msg).publish(msg)
        self.pacer.on_published(stamp, now)
        self.k += 1

    def _consumers_ready(self, out, now: float) -> bool:
        """Lossless replay holds the first frame until an image stream has a subscriber and the ack
        topic a publisher (the estimator node may start after the player and load its networks), at
        most ``startup_timeout_s``; otherwise it would be lost."""
        if self.k > 0 or not self.values["wait_for_ack"]:
            return True
        if now - self.t0 > self.values["startup_timeout_s"]:
            return True
        # Ready when an image stream has a subscriber (the estimator reads one: colour for objects, depth
        # for hands), the ack topic has a publisher (the estimate of the first frame must reach us and the
        # evaluator), and the matched subscriber counts of every topic of the frame have not changed for
        # _SETTLE_S (the estimator's other inputs, camera_info and boxes, are matched moments later; a
        # first frame sent before that is dropped by its synchroniser).
        counts = tuple(self._publisher(topic, msg).get_subscription_count() for topic, msg in out)
        counts += (self.ack_sub.get_publisher_count(),)
        if counts != self._counts:
            self._counts, self._counts_since = counts, now
        image_read = any(n > 0 for (topic, _), n in zip(out, counts) if "image" in topic)
        if image_read and counts[-1] > 0 and now - self._counts_since >= _SETTLE_S:
            return True
        self.get_logger().info("waiting for a subscriber to the images before the first frame",
                               throttle_duration_sec=5.0)
        return False

    def _finish(self) -> None:
        self.done = True
        self.get_logger().info(f"published {self.k} frames; {self.pacer.acked} acknowledged, "
                               f"{self.pacer.timeouts} ack timeouts")
        if self.values["shutdown_when_done"]:
            raise SystemExit(0)


def main(args=None) -> int:
    try:
        return run_node(DatasetPlayerNode, NAME, args)
    except SystemExit as e:  # shutdown_when_done
        return int(e.code or 0)
