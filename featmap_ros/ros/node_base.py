"""The skeleton both pose nodes share: parameters, synchronised inputs, a worker that drops
frames while busy, throttled warnings, diagnostics. A node adds its estimator, its publishers
and ``handle_frame`` (one frame: run its pipeline, publish)."""
from __future__ import annotations

import threading
import time
from typing import Any

import message_filters
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from tf2_ros import TransformBroadcaster

from featmap_ros import estimators
from featmap_ros.errors import InputError
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.diagnostics import InputWatchdog, RateLatencyStats, diagnostic_array
from featmap_ros.ros.node_common import ThrottledLog, declare_params, input_qos, make_set_parameters_callback, report_frame_error
from featmap_ros.ros.params import ParamSpec, resolve_weights
from featmap_ros.ros.worker import FrameWorker

#: Optional inputs (depth) count as flowing while a frame with them was synchronised this recently,
#: seconds; then the frames without them are skipped (the synchroniser with them has those frames).
OPTIONAL_INPUT_TIMEOUT_S = 1.0


def load_estimator(values: dict[str, Any], kind: str):
    """The ``ObjectPoseEstimator`` / ``HandPoseEstimator`` the ``weights``, ``device``, ``runtime``
    and ``warmup`` parameters (and ``refine.mesh_root`` for objects) ask for.

    Raises:
        InputError: ``parameter 'weights': ...`` (missing file, wrong task, unreadable).
    """

    cls = estimators.ObjectPoseEstimator if kind == "object" else estimators.HandPoseEstimator
    path = resolve_weights(values["weights"], kind)
    extra = {"mesh_root": values["refine.mesh_root"] or None} if kind == "object" else {}
    try:
        est = cls.from_checkpoint(path, device=values["device"], runtime=values["runtime"], **extra)
    except InputError as e:
        where = "runtime" if str(e).startswith("runtime:") else "weights"
        raise InputError(f"parameter '{where}': {e}") from None
    except Exception as e:  # noqa: BLE001 - any load failure is a configuration error here
        raise InputError(f"parameter 'weights': cannot load {path}: {e}") from None
    if values["warmup"]:
        est.warmup()
    return est


class PoseNode(Node):
    """Base of object_pose_node and hand_pose_node.

    Subclasses call :meth:`start` with their inputs once their publishers exist, implement
    :meth:`handle_frame` (called in the worker thread with the synchronised messages; returns the
    pipeline's stage timings and warnings) and may override :meth:`apply_params` and
    :meth:`diagnostic_values`.
    """

    def __init__(self, name: str, specs: tuple[ParamSpec, ...], **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.specs = specs
        self.values = declare_params(self, specs)
        self.msgs = conv.RclpyMessages()
        self.log = ThrottledLog(self, self.values["log_throttle_s"])
        self.stats = RateLatencyStats()
        self.stats_lock = threading.Lock()
        self.warned: set[str] = set()
        self.pub_debug = self.create_publisher(Image, "~/debug_image", 1)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf = TransformBroadcaster(self)
        self.worker: FrameWorker | None = None

    def start(self, inputs: list[tuple[str, type]], optional: list[tuple[str, type]] = ()) -> None:
        """Subscribe to ``inputs`` (relative topic, type), synchronised, and start the worker.

        ``optional`` inputs (depth) get a second synchroniser over ``inputs + optional``. While its
        frames come (within :data:`OPTIONAL_INPUT_TIMEOUT_S`) they are processed and the frames of
        ``inputs`` alone are skipped; otherwise those are processed, with None for each optional
        message: a camera without the optional topics still gets answers.
        """
        qos = input_qos(self.values)
        self.watchdog = InputWatchdog([t for t, _ in inputs], 5.0 * self.values["diagnostics.period_s"],
                                      self.values["sync.slop_s"])
        self.subs = []
        for topic, msg_type in [*inputs, *optional]:
            sub = message_filters.Subscriber(self, msg_type, topic, qos_profile=qos)
            sub.registerCallback(self._on_input, topic)
            self.subs.append(sub)
        self.n_optional = len(optional)
        self._optional_synced_s: float | None = None
        self.sync = message_filters.ApproximateTimeSynchronizer(
            self.subs[:len(inputs)], self.values["sync.queue_size"], self.values["sync.slop_s"])
        self.sync.registerCallback(self._on_frame)
        if optional:
            self.sync_optional = message_filters.ApproximateTimeSynchronizer(
                self.subs, self.values["sync.queue_size"], self.values["sync.slop_s"])
            self.sync_optional.registerCallback(self._on_frame_with_optional)
        self.worker = FrameWorker(self._process, lambda _frame, err: report_frame_error(self.log, err), name=self.get_name())
        self.timer = self.create_timer(self.values["diagnostics.period_s"], self._on_timer)
        self.add_on_set_parameters_callback(make_set_parameters_callback(self.specs, self._apply_params))
        self.get_logger().info(f"inputs {[self.resolve_topic_name(t) for t, _ in inputs]}"
                               + (f", optional {[self.resolve_topic_name(t) for t, _ in optional]}" if optional else ""))

    # to override ------------------------------------------------------------------------
    def handle_frame(self, msgs: tuple) -> tuple[dict[str, float], list[str]]:
        raise NotImplementedError

    def apply_params(self, changed: dict[str, Any]) -> None:
        """Apply run-time parameter changes (already validated)."""

    def diagnostic_values(self) -> dict[str, Any]:
        return {}

    @property
    def debug_wanted(self) -> bool:
        """True while someone subscribes to ``~/debug_image``."""
        return self.pub_debug.get_subscription_count() > 0

    # executor thread --------------------------------------------------------------------
    def _on_input(self, _msg, topic: str) -> None:
        self.watchdog.saw(topic, time.monotonic())

    def _on_frame(self, *msgs) -> None:
        # Called under message_filters' lock: only hand the frame over (dropped if busy).
        now = time.monotonic()
        if self._optional_synced_s is not None and now - self._optional_synced_s < OPTIONAL_INPUT_TIMEOUT_S:
            return  # the optional inputs flow: this frame comes (or came) from sync_optional
        self.watchdog.synced(now)
        self.worker.offer((now, msgs + (None,) * self.n_optional))

    def _on_frame_with_optional(self, *msgs) -> None:
        now = time.monotonic()
        self._optional_synced_s = now
        self.watchdog.synced(now)
        self.worker.offer((now, msgs))

    def _on_timer(self) -> None:
        problem = self.watchdog.check(time.monotonic())
        if problem:
            self.log.warn("watchdog", problem)
        with self.stats_lock:
            summary = self.stats.summary(time.monotonic())
            total = self.stats.total
        values = {**summary, "frames_published": total, "frames_accepted": self.worker.accepted,
                  "frames_dropped_busy": self.worker.dropped, "frames_failed": self.worker.failed,
                  **self.diagnostic_values()}
        header = conv.make_header(self.msgs, self.get_clock().now().nanoseconds, "")
        self.pub_diag.publish(diagnostic_array(self.msgs, header, f"{self.get_name()}: {self.get_fully_qualified_name()}",
                                               self.get_name(), "WARN" if problem else "OK", problem or "ok", values))

    def _apply_params(self, changed: dict[str, Any]) -> None:
        self.apply_params(changed)
        if "log_throttle_s" in changed:
            self.log.set_period(changed["log_throttle_s"])

    # worker thread ----------------------------------------------------------------------
    def _process(self, frame) -> None:
        t_in, msgs = frame
        timings, warnings = self.handle_frame(msgs)
        for w in warnings:
            if w not in self.warned:
                self.warned.add(w)
                self.get_logger().warning(w)
        now = time.monotonic()
        latency_s = (self.get_clock().now().nanoseconds - conv.stamp_to_ns(msgs[0].header.stamp)) * 1e-9
        with self.stats_lock:
            self.stats.record(now, latency_s, now - t_in, timings["convert_in_s"] + timings["convert_out_s"])

    def close(self) -> None:
        """Stop the worker (the running frame finishes)."""
        if self.worker is not None:
            self.worker.stop()
