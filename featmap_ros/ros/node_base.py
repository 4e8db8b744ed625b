"""The skeleton both pose nodes share: parameters, synchronised inputs, a worker that drops
frames while busy, poses on request (``~/estimate``, ``mode``), throttled warnings, diagnostics,
and the phases a lifecycle node needs. A node adds its estimator, its publishers and
``handle_frame`` (one frame: run its pipeline, publish)."""
from __future__ import annotations

import gc
import importlib
import sys
import threading
import time
from typing import Any

import message_filters
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image
from tf2_ros import TransformBroadcaster

from featmap_ros import estimators
from featmap_ros.errors import InputError
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.diagnostics import InputWatchdog, RateLatencyStats, diagnostic_array
from featmap_ros.ros.node_common import (ThrottledLog, declare_params, input_qos, latched_qos, make_set_parameters_callback,
                                         report_frame_error)
from featmap_ros.ros.params import ParamSpec, resolve_weights
from featmap_ros.ros.requests import Answer, RequestGate, check_timeout, offer_job
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
    extra = {}
    if kind == "object":
        extra = {"mesh_root": values["refine.mesh_root"] or None, "zoom_in": None if values["zoom_in"] < 0 else values["zoom_in"]}
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


def runtime_fallbacks(estimator: Any) -> list[str]:
    """Why parts of an estimator asked to run in ONNX Runtime run in torch (its network's and its
    hand-centre refiner's reasons; empty when none fell back): a node logs them once at start-up."""
    parts = [estimator, getattr(estimator, "centre_refiner", None)]
    return [f"parameter 'runtime': {why}" for why in (getattr(x, "runtime_fallback", "") for x in parts if x is not None) if why]


def free_inference_memory() -> None:
    """Return freed tensors' memory: garbage-collect, and empty torch's CUDA cache when torch is
    loaded and CUDA in use (a lifecycle node's cleanup, so the GPU is free for others)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class PoseNode(Node):
    """Base of object_pose_node and hand_pose_node.

    The node runs in phases, so that the lifecycle variant (:mod:`featmap_ros.ros.lifecycle`) is a
    thin layer over the same code; a plain node runs the first two in its constructor:

    - :meth:`configure_node`: re-check the parameters, load the estimator, create the publishers
      (the subclass's :meth:`setup`, which returns its input streams);
    - :meth:`activate_node`: subscribe, start the worker, accept ``~/estimate`` requests;
    - :meth:`deactivate_node`: unsubscribe, stop the worker (no inference), refuse requests;
    - :meth:`cleanup_node`: destroy the publishers, free the estimator (and CUDA's cache).

    Subclasses implement :meth:`setup`, :meth:`teardown` and :meth:`handle_frame` (called in the
    worker thread with the synchronised messages of one stream; returns the pipeline's outputs,
    which carry ``timings`` and ``warnings``) and may override :meth:`apply_params`,
    :meth:`diagnostic_values`, :meth:`handle_batch` and :meth:`offer_frame`.

    A stream is one camera's synchronised inputs: ``""`` for the single camera on relative
    topics, else the camera's namespace (object_pose_node's ``cameras``).
    """

    #: featmap_ros/srv type of ``~/estimate``.
    SERVICE_TYPE = "Estimate"

    def __init__(self, name: str, specs: tuple[ParamSpec, ...], *, managed: bool = False, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.specs = specs
        self.values = declare_params(self, specs)
        self.msgs = conv.RclpyMessages()
        self.log = ThrottledLog(self, self.values["log_throttle_s"])
        self.stats = RateLatencyStats()
        self.stats_lock = threading.Lock()
        self.warned: set[str] = set()
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf = TransformBroadcaster(self)
        self.worker: FrameWorker | None = None
        self.pipeline = None
        self.streams: dict[str, tuple[list, list]] = {}
        self.subs: list = []
        self.timer = None
        self._own_publishers: list = []
        self.requests = RequestGate(self.values["mode"])
        self.requests.close("the node is not active (lifecycle: configure and activate it)")
        self.add_on_set_parameters_callback(make_set_parameters_callback(self.specs, self._apply_params))
        self.srv_estimate = self._create_estimate_service()
        if not managed:
            self.configure_node()
            self.activate_node()

    # phases -----------------------------------------------------------------------------
    def configure_node(self) -> None:
        """Check the parameters, load the estimator, create the publishers.

        Raises:
            InputError: a bad parameter, naming it (nothing is left half-built).
        """
        try:
            self.values = {s.name: s.check(self.get_parameter(s.name).value) for s in self.specs}
            self.requests.mode = self.values["mode"]
            self.pub_debug = self.publisher(Image, "~/debug_image", latched_qos())
            self.streams = self.setup()
        except Exception:
            self.cleanup_node()
            raise

    def activate_node(self) -> None:
        """Subscribe to every stream's inputs (synchronised), start the worker, accept requests.

        A stream's ``optional`` inputs (depth) get a second synchroniser over ``inputs + optional``.
        While its frames come (within :data:`OPTIONAL_INPUT_TIMEOUT_S`) they are processed and the
        frames of ``inputs`` alone are skipped; otherwise those are processed, with None for each
        optional message: a camera without the optional topics still gets answers.
        """
        qos = input_qos(self.values)
        topics = [t for inputs, _ in self.streams.values() for t, _ in inputs]
        self.watchdog = InputWatchdog(topics, 5.0 * self.values["diagnostics.period_s"], self.values["sync.slop_s"])
        self.subs, self.syncs = [], []
        self._optional_synced_s: dict[str, float] = {}
        n_optional = {}
        for stream, (inputs, optional) in self.streams.items():
            subs = []
            for topic, msg_type in [*inputs, *optional]:
                sub = message_filters.Subscriber(self, msg_type, topic, qos_profile=qos)
                sub.registerCallback(self._on_input, topic)
                subs.append(sub)
            self.subs += subs
            n_optional[stream] = len(optional)
            sync = message_filters.ApproximateTimeSynchronizer(
                subs[:len(inputs)], self.values["sync.queue_size"], self.values["sync.slop_s"])
            sync.registerCallback(self._on_frame, stream)
            self.syncs.append(sync)
            if optional:
                sync_optional = message_filters.ApproximateTimeSynchronizer(
                    subs, self.values["sync.queue_size"], self.values["sync.slop_s"])
                sync_optional.registerCallback(self._on_frame_with_optional, stream)
                self.syncs.append(sync_optional)
        self.n_optional = n_optional
        self.worker = FrameWorker(self._process, self._on_frame_error, name=self.get_name())
        self.timer = self.create_timer(self.values["diagnostics.period_s"], self._on_timer)
        self.requests.open()
        for stream, (inputs, optional) in self.streams.items():
            self.get_logger().info(f"inputs {[self.resolve_topic_name(t) for t, _ in inputs]}"
                                   + (f", optional {[self.resolve_topic_name(t) for t, _ in optional]}" if optional else ""))

    def deactivate_node(self) -> None:
        """Unsubscribe and stop the worker (the running frame finishes): no inference until activated."""
        self.requests.close("the node is not active (deactivated)")
        for sub in self.subs:
            self.destroy_subscription(sub.sub)
        self.subs, self.syncs = [], []
        if self.timer is not None:
            self.destroy_timer(self.timer)
            self.timer = None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def cleanup_node(self) -> None:
        """Destroy the publishers and free the estimator (CUDA memory included)."""
        for pub in self._own_publishers:
            self.destroy_publisher(pub)
        self._own_publishers = []
        self.teardown()
        self.pipeline = None
        self.streams = {}
        free_inference_memory()

    def publisher(self, msg_type: type, topic: str, qos: Any = 10):
        """A publisher that :meth:`cleanup_node` destroys."""
        pub = self.create_publisher(msg_type, topic, qos)
        self._own_publishers.append(pub)
        return pub

    # to override ------------------------------------------------------------------------
    def setup(self) -> dict[str, tuple[list, list]]:
        """Load the estimator, build the pipeline, create the publishers (:meth:`publisher`).

        Returns:
            stream -> (inputs, optional inputs), each a list of (relative topic, message type).
        """
        raise NotImplementedError

    def teardown(self) -> None:
        """Drop what :meth:`setup` built (the estimator, the pipeline)."""

    def handle_frame(self, msgs: tuple, stream: str = "") -> Any:
        """One stream's synchronised frame (worker thread): run the pipeline, publish, return its outputs."""
        raise NotImplementedError

    def handle_batch(self, frames: list[tuple[str, tuple]]) -> dict[str, Any]:
        """The frames of one worker job, ``[(stream, msgs)]`` -> stream -> outputs."""
        return {stream: self.handle_frame(msgs, stream) for stream, msgs in frames}

    def offer_frame(self, stream: str, msgs: tuple, now: float) -> None:
        """Hand one stream's frame to the worker (dropped if busy); object_pose_node batches cameras."""
        self.offer_batch([(stream, msgs)], now)

    def apply_params(self, changed: dict[str, Any]) -> None:
        """Apply run-time parameter changes (already validated) to the pipeline."""

    def diagnostic_values(self) -> dict[str, Any]:
        return {}

    def request_stream(self, request: Any) -> str:
        """The stream a ``~/estimate`` request asks about (raises InputError naming the field)."""
        return ""

    def response_fields(self, answer: Answer, stream: str) -> dict[str, Any]:
        """``~/estimate`` response fields for an answer."""
        raise NotImplementedError

    @property
    def debug_wanted(self) -> bool:
        """True while someone subscribes to ``~/debug_image``."""
        return self.pub_debug.get_subscription_count() > 0

    # executor thread --------------------------------------------------------------------
    def offer_batch(self, frames: list[tuple[str, tuple]], now: float) -> bool:
        """Offer a job to the worker when the request gate wants one (see :func:`offer_job`)."""
        return offer_job(self.requests, self.worker, frames, now)

    def _on_input(self, _msg, topic: str) -> None:
        self.watchdog.saw(topic, time.monotonic())

    def _on_frame(self, *args) -> None:
        # Called under message_filters' lock: only hand the frame over (dropped if busy).
        *msgs, stream = args
        now = time.monotonic()
        synced = self._optional_synced_s.get(stream)
        if synced is not None and now - synced < OPTIONAL_INPUT_TIMEOUT_S:
            return  # the optional inputs flow: this frame comes (or came) from the synchroniser with them
        self.watchdog.synced(now)
        self.offer_frame(stream, tuple(msgs) + (None,) * self.n_optional[stream], now)

    def _on_frame_with_optional(self, *args) -> None:
        *msgs, stream = args
        now = time.monotonic()
        self._optional_synced_s[stream] = now
        self.watchdog.synced(now)
        self.offer_frame(stream, tuple(msgs), now)

    def _on_timer(self) -> None:
        problem = self.watchdog.check(time.monotonic())
        if problem:
            self.log.warn("watchdog", problem)
        with self.stats_lock:
            summary = self.stats.summary(time.monotonic())
            total = self.stats.total
        worker = self.worker
        if worker is None:
            return
        values = {**summary, "frames_published": total, "frames_accepted": worker.accepted,
                  "frames_dropped_busy": worker.dropped, "frames_failed": worker.failed, "mode": self.requests.mode,
                  "requests_waiting": self.requests.n_waiting, **self.diagnostic_values()}
        header = conv.make_header(self.msgs, self.get_clock().now().nanoseconds, "")
        self.pub_diag.publish(diagnostic_array(self.msgs, header, f"{self.get_name()}: {self.get_fully_qualified_name()}",
                                               self.get_name(), "WARN" if problem else "OK", problem or "ok", values))

    def _apply_params(self, changed: dict[str, Any]) -> None:
        if "mode" in changed:
            self.requests.mode = changed["mode"]
        if self.pipeline is not None:
            self.apply_params(changed)
        self.values.update(changed)
        if "log_throttle_s" in changed:
            self.log.set_period(changed["log_throttle_s"])

    # ~/estimate (its own reentrant callback group: it waits while the executor delivers images)
    def _create_estimate_service(self):
        try:
            srv_type = getattr(importlib.import_module("featmap_ros.srv"), self.SERVICE_TYPE)
        except (ImportError, AttributeError) as e:
            self.get_logger().warning(f"~/estimate is not offered: the featmap_ros services are not built ({e}); "
                                      "colcon build the package and source its install")
            return None
        return self.create_service(srv_type, "~/estimate", self._on_estimate, callback_group=ReentrantCallbackGroup())

    def _on_estimate(self, request, response):
        stream = ""
        try:
            timeout_s = check_timeout(request.timeout_s, self.values["request.timeout_s"])
            stream = self.request_stream(request)
        except InputError as e:
            answer = Answer(False, str(e))
        else:
            answer = self.requests.ask(timeout_s, self._why_no_frame)
        for key, value in self.response_fields(answer, stream).items():
            setattr(response, key, value)
        return response

    def _why_no_frame(self) -> str:
        problem = self.watchdog.check(time.monotonic()) if self.worker is not None else None
        topics = [self.resolve_topic_name(t) for inputs, _ in self.streams.values() for t, _ in inputs]
        return problem or f"waiting for synchronised messages on {topics}"

    # worker thread ----------------------------------------------------------------------
    def _process(self, job) -> None:
        t_in, frames, token = job
        outputs = self.handle_batch(frames)
        self.requests.frame_done(token, outputs)
        now = time.monotonic()
        for stream, msgs in frames:
            out = outputs.get(stream)
            if out is None:  # this camera's frame failed (reported); the others were published
                continue
            for w in out.warnings:
                if w not in self.warned:
                    self.warned.add(w)
                    self.get_logger().warning(w)
            latency_s = (self.get_clock().now().nanoseconds - conv.stamp_to_ns(msgs[0].header.stamp)) * 1e-9
            with self.stats_lock:
                self.stats.record(now, latency_s, now - t_in, out.timings["convert_in_s"] + out.timings["convert_out_s"])

    def _on_frame_error(self, job, err: BaseException) -> None:
        self.requests.frame_failed(job[2], str(err))
        report_frame_error(self.log, err)

    def close(self) -> None:
        """Refuse requests and stop the worker (the running frame finishes)."""
        self.requests.close()
        if self.worker is not None:
            self.worker.stop()
