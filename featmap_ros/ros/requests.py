"""Poses on request (the nodes' ``~/estimate`` service and ``mode`` parameter), without rclpy.

A grasp pipeline asks "where is the object now?" and wants the poses of a frame taken *after* it
asked. :class:`RequestGate` decides which synchronised frames go to the worker and hands each
frame's outputs to the requests that were waiting when the frame was accepted:

- ``continuous``: every synchronised frame is offered to the worker (topics flow as usual); a
  request gets the first frame accepted after it arrived (the frame in flight at that moment
  started before the request, so it does not count).
- ``on_request``: a frame is offered only while a request waits for one, so between requests
  nothing is inferred and the GPU is free.

A frame that fails (bad input) leaves its requests waiting for the next frame; the failure is
named in the answer if the request then times out. The node's service callback blocks in
:meth:`RequestGate.ask`, so it must run in its own (reentrant) callback group of a
multi-threaded executor: the executor threads that deliver the images stay free.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

from featmap_ros.errors import InputError

#: ``mode`` parameter values.
MODES = ("continuous", "on_request")
#: Longest wait a request may ask for, seconds.
MAX_TIMEOUT_S = 3600.0


@dataclass
class Answer:
    """The answer to one request.

    Attributes:
        success: True when a frame was processed for it.
        message: why not (timeout, node inactive, shutting down), or ``ok``.
        outputs: the pipeline outputs of that frame (``ObjectOutputs`` / ``HandOutputs``), or None.
    """

    success: bool
    message: str
    outputs: Any = None


@dataclass(eq=False)
class _Ticket:
    assigned: bool = False
    answer: Answer | None = None


@dataclass(eq=False)
class FrameToken:
    """The requests a frame answers (handed to the worker with the frame)."""

    tickets: list[_Ticket] = field(default_factory=list)


def check_timeout(timeout_s: float, default_s: float) -> float:
    """A request's ``timeout_s`` (0 = ``default_s``), seconds.

    Raises:
        InputError: ``timeout_s: ...`` for a negative, NaN or too large value.
    """
    t = float(timeout_s)
    if math.isnan(t) or t < 0.0 or t > MAX_TIMEOUT_S:
        raise InputError(f"timeout_s: {timeout_s} is not in [0, {MAX_TIMEOUT_S}] seconds (0 = the node's request.timeout_s)")
    return float(default_s) if t == 0.0 else t


class RequestGate:
    """Which frames are inferred, and who waits for them. Thread-safe.

    Args:
        mode: ``continuous`` or ``on_request``.
    """

    def __init__(self, mode: str = "continuous") -> None:
        self._cond = threading.Condition()
        self._waiting: list[_Ticket] = []
        self._closed: str | None = None
        self._last_error = ""
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise InputError(f"parameter 'mode': {value!r} is not one of {list(MODES)}")
        self._mode = value

    @property
    def n_waiting(self) -> int:
        """Requests waiting for a frame (assigned to one in flight or not)."""
        with self._cond:
            return len(self._waiting)

    # frame side (executor thread, then worker thread) -------------------------------------
    def wants_frame(self) -> bool:
        """Whether a synchronised frame should be offered to the worker now."""
        with self._cond:
            return self._mode == "continuous" or any(not t.assigned for t in self._waiting)

    def claim(self) -> FrameToken:
        """Called when a frame is about to be offered: it will answer the requests waiting now."""
        with self._cond:
            tickets = [t for t in self._waiting if not t.assigned]
            for t in tickets:
                t.assigned = True
            return FrameToken(tickets)

    def release(self, token: FrameToken) -> None:
        """The frame was not accepted (worker busy): its requests wait for the next one."""
        with self._cond:
            for t in token.tickets:
                t.assigned = False

    def frame_done(self, token: FrameToken, outputs: Any) -> None:
        """The frame was processed: answer its requests with ``outputs``."""
        with self._cond:
            for t in token.tickets:
                if t in self._waiting:
                    t.answer = Answer(True, "ok", outputs)
                    self._waiting.remove(t)
            self._last_error = ""
            self._cond.notify_all()

    def frame_failed(self, token: FrameToken, error: str) -> None:
        """The frame failed: its requests wait for the next frame; ``error`` is kept for a timeout's answer."""
        with self._cond:
            for t in token.tickets:
                t.assigned = False
            self._last_error = str(error)
            self._cond.notify_all()

    # request side (service thread) -----------------------------------------------------------
    def ask(self, timeout_s: float, why_late: Any = None) -> Answer:
        """Wait for the next frame accepted after this call and return its outputs.

        Args:
            timeout_s: longest wait, seconds (> 0).
            why_late: optional callable returning a reason (e.g. the inputs' watchdog) added to a
                timeout's message, or None.

        Returns:
            :class:`Answer`; ``success`` False with the reason on timeout or shutdown.
        """
        ticket = _Ticket()
        with self._cond:
            if self._closed is not None:
                return Answer(False, self._closed)
            self._waiting.append(ticket)
            self._cond.notify_all()
            self._cond.wait_for(lambda: ticket.answer is not None or self._closed is not None, timeout_s)
            if ticket.answer is not None:
                return ticket.answer
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            if self._closed is not None:
                return Answer(False, self._closed)
            last_error = self._last_error
        reason = why_late() if why_late is not None else ""
        text = f"no synchronised frame processed within {timeout_s:g} s"
        if last_error:
            text += f"; the last frame failed: {last_error}"
        if reason:
            text += f"; {reason}"
        return Answer(False, text)

    def close(self, reason: str = "the node is shutting down") -> None:
        """Answer every waiting request with ``reason`` and refuse new ones until :meth:`open`."""
        with self._cond:
            self._closed = reason
            self._waiting.clear()
            self._cond.notify_all()

    def open(self) -> None:
        """Accept requests again (a lifecycle node activated)."""
        with self._cond:
            self._closed = None
            self._last_error = ""


def offer_job(gate: RequestGate, worker: Any, frames: Any, now_s: float) -> bool:
    """Offer a job ``(now_s, frames, token)`` to a :class:`~featmap_ros.ros.worker.FrameWorker`
    when the gate wants a frame; the requests waiting now are answered by it (the worker's
    process calls :meth:`RequestGate.frame_done` / its error handler :meth:`RequestGate.frame_failed`
    with the token, the job's last item).

    Returns:
        True if the worker took the job.
    """
    if worker is None or not gate.wants_frame():
        return False
    token = gate.claim()
    if not worker.offer((now_s, frames, token)):
        gate.release(token)
        return False
    return True


def pick_camera(camera: str, cameras: list[str] | tuple[str, ...]) -> str:
    """The stream a request's ``camera`` names: ``""`` = the first (the single camera's stream is ``""``).

    Raises:
        InputError: ``camera: ...`` naming the valid cameras.
    """
    if camera == "" or camera in cameras:
        return camera or cameras[0]
    if list(cameras) == [""]:
        raise InputError(f"camera: {camera!r}, but this node has one camera (parameter 'cameras' empty): leave camera empty")
    raise InputError(f"camera: {camera!r} is not one of this node's cameras {list(cameras)}")


def object_response_fields(answer: Answer, stream: str) -> dict[str, Any]:
    """``featmap_ros/srv/Estimate`` response fields from an answer: ``detections`` = the
    ``~/detections`` message of ``stream`` in the answered frame (left at its default on failure).

    Args:
        answer: the gate's answer; ``outputs`` maps stream -> ``ObjectOutputs``.
        stream: the camera (``""``: the single camera).
    """
    out: dict[str, Any] = {"success": answer.success, "message": answer.message}
    if answer.success:
        if stream not in answer.outputs:
            return {"success": False, "message": f"camera {stream!r}: no frame from it in the answered batch "
                                                 f"(cameras {sorted(answer.outputs)})"}
        out["detections"] = answer.outputs[stream].detections
    return out


def hand_response_fields(answer: Answer) -> dict[str, Any]:
    """``featmap_ros/srv/EstimateHand`` response fields (``hand_pose``: the frame's ``~/hand_pose``)."""
    out: dict[str, Any] = {"success": answer.success, "message": answer.message}
    if answer.success:
        out["hand_pose"] = answer.outputs[""].hand_pose
    return out
