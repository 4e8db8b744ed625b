"""The arithmetic of ``featmap bench ros`` (latency through a real DDS), without rclpy.

The ROS part (:mod:`featmap_ros.ros.dds_bench`) publishes frames stamped with the wall clock at a
fixed rate, receives the node's answers (their headers carry the input stamp), and samples the
node process's CPU time from ``/proc``. Everything it then computes is here, as plain functions
of numbers: the publishing schedule, latency percentiles, frames the node dropped while busy,
the node's CPU load, what the DDS hop adds over the in-process figure, and the report table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from featmap_ros.errors import InputError


def publish_times_s(rate_hz: float, seconds: float) -> np.ndarray:
    """(N,) float64 send times, seconds from the start: k / rate_hz for every k with
    k / rate_hz < seconds (N = ceil(seconds * rate_hz))."""
    if not (np.isfinite(rate_hz) and rate_hz > 0):
        raise InputError(f"rate_hz: expected a positive rate, got {rate_hz!r}")
    if not (np.isfinite(seconds) and seconds > 0):
        raise InputError(f"seconds: expected a positive duration, got {seconds!r}")
    n = int(np.ceil(seconds * rate_hz - 1e-9))
    return np.arange(n, dtype=np.float64) / float(rate_hz)


def latency_stats(sent_ns: Iterable[int], received_ns: Mapping[int, int]) -> dict:
    """Latency from input stamp to answer received, and the frames left unanswered.

    Args:
        sent_ns: stamps (ns, wall clock) of the frames sent in the measured window.
        received_ns: input stamp (ns) -> when its answer was received (ns, the same clock);
            answers to frames outside ``sent_ns`` are ignored.

    Returns:
        dict: ``sent``, ``answered``, ``dropped`` (sent without an answer: the node was busy, or
        the transport lost them), ``drop_fraction``, and over the answered frames
        ``p50_ms``/``p95_ms``/``mean_ms``/``max_ms`` (NaN when none was answered).

    Raises:
        InputError: an answer received before its frame was stamped (clocks disagree).
    """
    sent = sorted(set(int(s) for s in sent_ns))
    lat = []
    for s in sent:
        r = received_ns.get(s)
        if r is None:
            continue
        if int(r) < s:
            raise InputError(f"received_ns[{s}]: answer received {(s - int(r)) / 1e6:.3f} ms before the frame was stamped "
                             "(publisher and subscriber must share one clock)")
        lat.append((int(r) - s) / 1e6)
    ms = np.asarray(lat, dtype=np.float64)
    n, k = len(sent), len(lat)
    pct = (lambda q: float(np.percentile(ms, q))) if k else (lambda q: float("nan"))
    return {"sent": n, "answered": k, "dropped": n - k, "drop_fraction": (n - k) / n if n else float("nan"),
            "p50_ms": pct(50), "p95_ms": pct(95), "mean_ms": float(ms.mean()) if k else float("nan"),
            "max_ms": float(ms.max()) if k else float("nan")}


def proc_cpu_seconds(pid: int, proc: str | Path = "/proc") -> float:
    """CPU time (user + system, all threads, its waited-for children included) of process ``pid``
    so far, seconds, from ``/proc/<pid>/stat``.

    Raises:
        InputError: no such process (or no /proc).
    """
    path = Path(proc) / str(int(pid)) / "stat"
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read the process's CPU time ({e.strerror})") from None
    # the command name (field 2) is in parentheses and may hold spaces: count after its ')'
    fields = text[text.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))  # stat fields 14-17
    return (utime + stime + cutime + cstime) / float(os.sysconf("SC_CLK_TCK"))


def cpu_load(cpu_s_before: float, cpu_s_after: float, wall_s: float) -> float:
    """CPU load over a window: CPU seconds used / wall seconds (1.0 = one core busy all along)."""
    if not wall_s > 0:
        raise InputError(f"wall_s: expected a positive duration, got {wall_s!r}")
    return max(cpu_s_after - cpu_s_before, 0.0) / wall_s


@dataclass(frozen=True)
class RunResult:
    """One (node, rate, QoS) run: its latency stats, the node's CPU load, and the in-process
    per-frame time of the same node work on the same machine (``featmap bench node``'s total)."""

    node: str
    rate_hz: float
    qos: str
    stats: dict
    cpu_load: float
    inprocess_p50_ms: float

    def as_dict(self) -> dict:
        return {"node": self.node, "rate_hz": self.rate_hz, "qos": self.qos, **self.stats, "cpu_load": self.cpu_load,
                "inprocess_p50_ms": self.inprocess_p50_ms, "dds_overhead_p50_ms": dds_overhead_ms(self.stats, self.inprocess_p50_ms)}


def dds_overhead_ms(stats: Mapping[str, float], inprocess_p50_ms: float) -> float:
    """What the trip through DDS (serialisation, transport, synchroniser, executor, worker hand-off)
    adds to the node's in-process work at the median: p50 through DDS - p50 in-process, ms."""
    return float(stats["p50_ms"]) - float(inprocess_p50_ms)


def format_table(results: Sequence[RunResult]) -> str:
    """The report: one line per run."""
    head = (f"{'node':18s}{'rate':>6s} {'qos':12s}{'sent':>6s}{'dropped':>9s}{'p50 ms':>9s}{'p95 ms':>9s}"
            f"{'in-proc':>9s}{'DDS +ms':>9s}{'CPU':>7s}")
    lines = [head]
    for r in results:
        s = r.stats
        lines.append(f"{r.node:18s}{r.rate_hz:>6.0f} {r.qos:12s}{s['sent']:>6d}{s['dropped']:>5d} ({100 * s['drop_fraction']:>2.0f}%)"
                     f"{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{r.inprocess_p50_ms:>9.1f}"
                     f"{dds_overhead_ms(s, r.inprocess_p50_ms):>+9.1f}{100 * r.cpu_load:>6.0f}%")
    return "\n".join(lines)


def parse_rates(text: str) -> list[float]:
    """``"30,60,100"`` -> [30.0, 60.0, 100.0]; each in (0, 1000] Hz."""
    try:
        rates = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        rates = []
    if not rates or any(not (0 < r <= 1000) for r in rates):
        raise InputError(f"--rates: comma-separated rates in (0, 1000] Hz, got {text!r}")
    return rates
