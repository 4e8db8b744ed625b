"""Inference off the executor thread: one job at a time, frames offered while busy are dropped.

A subscription callback calls :meth:`FrameWorker.offer` and returns at once; the worker thread
runs the job (convert, estimate, publish). Nothing queues up behind a slow network, so the
output always describes a recent frame. No rclpy here; the nodes and the tests share it.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class FrameWorker:
    """A single background thread that processes the latest accepted frame.

    Args:
        process: called in the worker thread with each accepted item.
        on_error: called in the worker thread with (item, exception) when ``process`` raises;
            the worker keeps running.
        name: thread name.
    """

    def __init__(self, process: Callable[[Any], None], on_error: Callable[[Any, BaseException], None],
                 name: str = "featmap_worker") -> None:
        self._process = process
        self._on_error = on_error
        self._cond = threading.Condition()
        self._item: Any = None
        self._has_item = False
        self._busy = False
        self._stopping = False
        self.accepted = 0
        self.dropped = 0
        self.processed = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a job is pending or running."""
        with self._cond:
            return self._busy or self._has_item

    def offer(self, item: Any) -> bool:
        """Hand a frame to the worker unless it is busy.

        Returns:
            True if accepted; False if dropped (a job is pending or running, or stopping).
        """
        with self._cond:
            if self._stopping or self._busy or self._has_item:
                self.dropped += 1
                return False
            self._item, self._has_item = item, True
            self.accepted += 1
            self._cond.notify()
            return True

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until no job is pending or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._busy or self._has_item), timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the running job, discard a pending one, and end the thread."""
        with self._cond:
            self._stopping = True
            self._has_item = False
            self._item = None
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_item or self._stopping)
                if self._stopping:
                    self._cond.notify_all()
                    return
                item, self._item, self._has_item, self._busy = self._item, None, False, True
            try:
                self._process(item)
                ok = True
            except Exception as e:  # noqa: BLE001 - a bad frame must not end the node
                ok = False
                try:
                    self._on_error(item, e)
                except Exception:  # noqa: BLE001
                    pass
            with self._cond:
                self._busy = False
                if ok:
                    self.processed += 1
                else:
                    self.failed += 1
                self._cond.notify_all()
