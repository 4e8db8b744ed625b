"""rclpy glue shared by the nodes: parameter declaration, input QoS, throttled logs, ``main``.

The decisions live in rclpy-free modules (params, roi, worker, diagnostics, pipeline); this
module only connects them to rclpy.
"""
from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from featmap_ros.errors import InputError
from featmap_ros.ros.diagnostics import ErrorThrottle
from featmap_ros.ros.params import ParamSpec, spec_table

#: Parameters rclpy itself declares or reads; not reported as unknown.
_RCLPY_PARAMS = ("use_sim_time", "start_type_description_service", "qos_overrides.")


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    """ParameterDescriptor with description, read-only flag and range of a spec."""
    d = ParameterDescriptor(description=spec.describe(), read_only=spec.read_only, dynamic_typing=spec.list_ok)
    if spec.type is float and spec.min is not None and spec.max is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    if spec.type is int and spec.min is not None and spec.max is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=1)]
    return d


def declare_params(node: Node, specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Declare every parameter once and return the validated values.

    Raises:
        InputError: ``parameter '<name>': ...`` for a value of the wrong type, out of range, or
            not among the allowed choices.
    """
    values = {}
    for spec in specs:
        try:
            param = node.declare_parameter(spec.name, spec.default, descriptor_for(spec))
        except (ParameterException, TypeError, ValueError) as e:
            raise InputError(f"parameter '{spec.name}': {e}") from None
        values[spec.name] = spec.check(param.value)
    known = spec_table(specs)
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps no public list of them
    for name in sorted(overrides):
        if name not in known and not name.startswith(_RCLPY_PARAMS):
            node.get_logger().warning(f"parameter '{name}' is not used by {node.get_name()} (valid: {sorted(known)})")
    return values


def make_set_parameters_callback(specs: tuple[ParamSpec, ...], apply: Callable[[dict[str, Any]], None]) -> Callable:
    """An ``add_on_set_parameters_callback`` callback that validates with the specs, then applies."""
    table = spec_table(specs)

    def callback(params: list) -> SetParametersResult:
        changed = {}
        for p in params:
            spec = table.get(p.name)
            if spec is None:
                continue
            try:
                changed[p.name] = spec.check(p.value)
            except InputError as e:
                return SetParametersResult(successful=False, reason=str(e))
        try:
            apply(changed)
        except InputError as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    return callback


def input_qos(values: dict[str, Any]) -> QoSProfile:
    """The input subscriptions' QoS: sensor-data style (best effort, keep last) unless overridden."""
    reliability = ReliabilityPolicy.BEST_EFFORT if values["qos.reliability"] == "best_effort" else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(values["qos.depth"]), reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Outputs a late subscriber still gets (markers, debug image): reliable, transient local, the
    latest message only. An RViz opened after a replay ended shows the last estimate (its display
    must ask for Transient Local durability; a volatile subscriber gets only new messages)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


#: Executor threads: the input callbacks (one mutually exclusive group), the lifecycle services,
#: and ``~/estimate`` requests, each of which blocks one thread while it waits for its frame.
EXECUTOR_THREADS = 4


class ThrottledLog:
    """Warnings about bad input, each kind at most once per period, from any thread."""

    def __init__(self, node: Node, period_s: float) -> None:
        self._node = node
        self._throttle = ErrorThrottle(period_s)
        self._lock = threading.Lock()

    def set_period(self, period_s: float) -> None:
        with self._lock:
            self._throttle.period_s = float(period_s)

    def warn(self, key: str, text: str) -> None:
        with self._lock:
            ok, held = self._throttle.should_log(key, time.monotonic())
        if ok:
            self._node.get_logger().warning(text + (f" ({held} more like this since the last report)" if held else ""))

    def error(self, key: str, text: str) -> None:
        with self._lock:
            ok, held = self._throttle.should_log(key, time.monotonic())
        if ok:
            self._node.get_logger().error(text + (f" ({held} more like this since the last report)" if held else ""))


def report_frame_error(log: ThrottledLog, err: BaseException) -> None:
    """Bad input -> throttled warning naming the field; anything else -> throttled error with traceback.

    Errors of a frame still in flight while ROS shuts down are not reported.
    """
    if not rclpy.ok():
        return
    if isinstance(err, InputError):
        text = str(err)
        log.warn("input:" + text.split(":", 1)[0], f"dropped a frame: {text}")
    else:
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        log.error("internal:" + type(err).__name__, f"frame failed: {err!r}\n{tb}")


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """``rclpy.init`` -> build -> spin -> clean exit 0 on SIGINT/SIGTERM; a configuration error exits 2 naming it.

    rclpy's own signal handler shuts the context down from inside the signal, which races with
    the executor building its next wait set (``RCLError: failed to initialize wait set: the given
    context is not valid``, a traceback and exit code 1, seen under ``ros2 launch``). Here the
    signal only sets a flag: the spin loop ends, the node closes (the evaluator writes its files
    and can still log to /rosout; a pose node answers waiting ``~/estimate`` requests), is
    destroyed, and only then is the context shut down.

    The executor is multi-threaded (:data:`EXECUTOR_THREADS`): a ``~/estimate`` request waits for
    a frame in its own reentrant callback group while other threads deliver the images.
    """
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    node = None
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    rc = 0
    try:
        node = make_node()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except InputError as e:
        get_logger(name).fatal(f"{e}")
        rc = 2
    finally:
        if in_main:  # a second Ctrl-C (ros2 launch forwards one more) must not interrupt the cleanup
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return rc
