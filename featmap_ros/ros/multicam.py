"""Several cameras in one node, without rclpy: which frames are estimated together.

object_pose_node with ``cameras: [cam_left, cam_right]`` synchronises each camera's inputs on its
own; :class:`CameraBatcher` then gathers one frame per camera into a batch, which the worker
sends through the network in one call (:func:`featmap_ros.ros.pipeline.process_object_batch`).
A batch closes when every camera has a frame in it, or ``window_s`` after its first frame (a
camera that stalls does not hold the others back). A camera whose second frame arrives before
the batch closed replaces its first one: the batch always holds each camera's newest frame.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from featmap_ros.errors import InputError


class CameraBatcher:
    """Thread-safe gathering of the cameras' frames.

    Args:
        cameras: the camera names (streams), in the order batches list them.
        window_s: longest wait after a batch's first frame, seconds (>= 0; 0 = no waiting for others).
    """

    def __init__(self, cameras: Sequence[str], window_s: float) -> None:
        if not cameras:
            raise InputError("cameras: at least one camera")
        if not window_s >= 0.0:
            raise InputError(f"parameter 'batch.window_s': {window_s} must be >= 0 seconds")
        self.cameras = tuple(cameras)
        self.window_s = float(window_s)
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._first_s: float | None = None

    def add(self, camera: str, frame: Any, now_s: float) -> list[tuple[str, Any]] | None:
        """A camera's synchronised frame arrived at ``now_s`` (monotonic seconds).

        Returns:
            The batch ``[(camera, frame)]`` (cameras in order) when it closed now, else None.
        """
        if camera not in self.cameras:
            raise InputError(f"camera {camera!r} is not one of {list(self.cameras)}")
        with self._lock:
            if self._first_s is not None and now_s - self._first_s > self.window_s:
                late = self._take()  # the window passed before this frame: it starts the next batch
                self._pending, self._first_s = {camera: frame}, now_s
                return late
            if self._first_s is None:
                self._first_s = now_s
            self._pending[camera] = frame
            if len(self._pending) == len(self.cameras) or self.window_s == 0.0:
                return self._take()
            return None

    def due(self, now_s: float) -> list[tuple[str, Any]] | None:
        """The open batch if its window has passed (a timer calls this), else None."""
        with self._lock:
            if self._first_s is not None and now_s - self._first_s >= self.window_s:
                return self._take()
            return None

    def _take(self) -> list[tuple[str, Any]]:
        batch = [(c, self._pending[c]) for c in self.cameras if c in self._pending]
        self._pending, self._first_s = {}, None
        return batch
