"""Rate, latency, throttled warnings and missing-input checks for the nodes (no rclpy).

Times are plain floats in seconds from a clock the caller chooses (``time.monotonic`` for
rates and processing time; ROS time for latency from the input stamp).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class RateLatencyStats:
    """Sliding-window statistics of published frames.

    Args:
        window_s: frames older than this (by publication time) are forgotten.
    """

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = float(window_s)
        self._events: deque[tuple[float, float, float, float]] = deque()
        self.total = 0

    def record(self, t_s: float, latency_s: float, processing_s: float, conversion_s: float = 0.0) -> None:
        """One published frame.

        Args:
            t_s: publication time (monotonic seconds).
            latency_s: publication ROS time minus the input stamp.
            processing_s: time from the worker taking the frame to publication.
            conversion_s: part of ``processing_s`` spent converting messages.
        """
        self._events.append((float(t_s), float(latency_s), float(processing_s), float(conversion_s)))
        self.total += 1
        self._trim(t_s)

    def _trim(self, now_s: float) -> None:
        while self._events and self._events[0][0] < now_s - self.window_s:
            self._events.popleft()

    def summary(self, now_s: float) -> dict[str, float]:
        """rate_hz, latency_ms_mean/max, processing_ms_mean, conversion_share, frames_in_window."""
        self._trim(now_s)
        ev = np.array(self._events, dtype=np.float64).reshape(-1, 4)
        n = ev.shape[0]
        if n == 0:
            return {"rate_hz": 0.0, "latency_ms_mean": float("nan"), "latency_ms_max": float("nan"),
                    "processing_ms_mean": float("nan"), "conversion_share": float("nan"), "frames_in_window": 0}
        dt = ev[-1, 0] - ev[0, 0]
        rate = (n - 1) / dt if n > 1 and dt > 0 else 0.0
        proc = ev[:, 2].sum()
        return {
            "rate_hz": float(rate),
            "latency_ms_mean": float(ev[:, 1].mean() * 1e3),
            "latency_ms_max": float(ev[:, 1].max() * 1e3),
            "processing_ms_mean": float(ev[:, 2].mean() * 1e3),
            "conversion_share": float(ev[:, 3].sum() / proc) if proc > 0 else float("nan"),
            "frames_in_window": n,
        }


class ErrorThrottle:
    """Log each kind of problem at most once per period, counting what was held back.

    Args:
        period_s: seconds between two messages of the same key.
    """

    def __init__(self, period_s: float) -> None:
        self.period_s = float(period_s)
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def should_log(self, key: str, now_s: float) -> tuple[bool, int]:
        """Returns (log it now?, how many of this key were held back since the last one)."""
        last = self._last.get(key)
        if last is None or now_s - last >= self.period_s:
            held = self._held.pop(key, 0)
            self._last[key] = now_s
            return True, held
        self._held[key] = self._held.get(key, 0) + 1
        return False, 0


class InputWatchdog:
    """Says why no synchronised frame arrives (missing camera_info, stamps that never match).

    Args:
        inputs: topic names of the synchronised inputs, e.g. ("image", "camera_info").
        timeout_s: how long without a synchronised frame before complaining.
        slop_s: the synchroniser's slop, quoted in the message.
    """

    def __init__(self, inputs: Sequence[str], timeout_s: float, slop_s: float) -> None:
        self.inputs = tuple(inputs)
        self.timeout_s = float(timeout_s)
        self.slop_s = float(slop_s)
        self._seen: dict[str, float] = {}
        self._synced: float | None = None
        self._start: float | None = None

    def saw(self, topic: str, now_s: float) -> None:
        self._seen[topic] = now_s

    def synced(self, now_s: float) -> None:
        self._synced = now_s

    def check(self, now_s: float) -> str | None:
        """A warning, or None when frames flow (or nothing at all has arrived yet)."""
        if self._start is None:
            self._start = now_s
        if self._synced is not None and now_s - self._synced < self.timeout_s:
            return None
        recent = [t for t in self.inputs if t in self._seen and now_s - self._seen[t] < self.timeout_s]
        if not recent:
            return None  # nothing arrives: idle, not an error (the player may not have started)
        missing = [t for t in self.inputs if t not in recent]
        if missing:
            return (f"receiving {recent} but nothing on {missing} for {self.timeout_s:g} s: "
                    f"no frame can be processed (check the topic names and QoS)")
        return (f"receiving {list(self.inputs)} but their header stamps never agree within "
                f"sync.slop_s = {self.slop_s:g} s: no frame can be processed")


def diagnostic_array(msgs: Any, header: Any, name: str, hardware_id: str, level: str, message: str,
                     values: Mapping[str, Any]) -> Any:
    """diagnostic_msgs/DiagnosticArray with one status.

    Args:
        msgs: message factory (see :mod:`featmap_ros.ros.conversions`).
        level: ``OK``, ``WARN``, ``ERROR`` or ``STALE``.
        values: key -> value, written with ``str`` (floats with 3 decimals).
    """
    S = msgs.cls("diagnostic_msgs/msg/DiagnosticStatus")
    kv = [msgs.new("diagnostic_msgs/msg/KeyValue", key=str(k), value=f"{v:.3f}" if isinstance(v, float) else str(v))
          for k, v in values.items()]
    lvl = getattr(S, level)  # bytes b'\x00' on rclpy (a ``byte`` field), int on rosbags
    status = msgs.new("diagnostic_msgs/msg/DiagnosticStatus", level=lvl, name=str(name), message=str(message),
                      hardware_id=str(hardware_id), values=kv)
    return msgs.new("diagnostic_msgs/msg/DiagnosticArray", header=header, status=[status])
