"""featmap bench ros's arithmetic (schedule, latency, drops, CPU load, report) without ROS, and
the command's refusal without rclpy."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from featmap_ros.errors import InputError
from featmap_ros.evaluation import dds_latency as dl


def test_publish_times():
    np.testing.assert_allclose(dl.publish_times_s(30, 1.0), np.arange(30) / 30)
    assert len(dl.publish_times_s(100, 10)) == 1000 and len(dl.publish_times_s(60, 0.5)) == 30
    assert len(dl.publish_times_s(30, 0.01)) == 1  # the first frame goes at 0
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(InputError, match="rate_hz"):
            dl.publish_times_s(bad, 1.0)
    with pytest.raises(InputError, match="seconds"):
        dl.publish_times_s(30, 0)


def test_latency_stats_known_values():
    sent = [1_000_000_000 + k * 10_000_000 for k in range(5)]  # 5 frames, 10 ms apart
    received = {sent[0]: sent[0] + 2_000_000, sent[1]: sent[1] + 4_000_000, sent[3]: sent[3] + 6_000_000,
                sent[4]: sent[4] + 8_000_000, 7: 9}  # frame 2 dropped; an answer to a frame not sent
    s = dl.latency_stats(sent, received)
    assert (s["sent"], s["answered"], s["dropped"]) == (5, 4, 1)
    assert s["drop_fraction"] == pytest.approx(0.2)
    assert s["p50_ms"] == pytest.approx(5.0) and s["mean_ms"] == pytest.approx(5.0) and s["max_ms"] == pytest.approx(8.0)
    assert s["p95_ms"] == pytest.approx(np.percentile([2, 4, 6, 8], 95))
    none = dl.latency_stats(sent, {})
    assert none["dropped"] == 5 and np.isnan(none["p50_ms"])
    with pytest.raises(InputError, match="clock"):
        dl.latency_stats(sent, {sent[0]: sent[0] - 1})


def test_cpu_load_from_proc():
    a = dl.proc_cpu_seconds(os.getpid())
    x = 0.0
    for i in range(2_000_000):  # some CPU work in this process
        x += i * 0.5
    b = dl.proc_cpu_seconds(os.getpid())
    assert b > a >= 0.0
    assert dl.cpu_load(1.0, 2.5, 3.0) == pytest.approx(0.5)
    assert dl.cpu_load(2.0, 1.0, 1.0) == 0.0  # never negative
    with pytest.raises(InputError, match="wall_s"):
        dl.cpu_load(0, 1, 0)
    with pytest.raises(InputError, match="cannot read"):
        dl.proc_cpu_seconds(2**22 + 12345)


def test_proc_stat_with_a_spaced_command_name(tmp_path):
    (tmp_path / "42").mkdir()
    fields = ["S"] + ["0"] * 10 + ["100", "50", "20", "30"] + ["0"] * 30  # utime stime cutime cstime = 100 50 20 30
    (tmp_path / "42" / "stat").write_text("42 (python3 (a b)) " + " ".join(fields) + "\n")
    assert dl.proc_cpu_seconds(42, tmp_path) == pytest.approx(200 / os.sysconf("SC_CLK_TCK"))


def test_report_and_overhead():
    stats = dl.latency_stats([10, 20], {10: 10 + 12_000_000, 20: 20 + 14_000_000})
    r = dl.RunResult("object_pose_node", 30.0, "sensor", stats, 0.85, 10.0)
    d = r.as_dict()
    assert d["dds_overhead_p50_ms"] == pytest.approx(3.0) and d["cpu_load"] == 0.85 and d["qos"] == "sensor"
    table = dl.format_table([r])
    lines = table.splitlines()
    assert len(lines) == 2 and "object_pose_node" in lines[1] and "+3.0" in lines[1] and "85%" in lines[1]
    assert dl.parse_rates("30, 60,100") == [30.0, 60.0, 100.0]
    for bad in ("", "0", "a,b", "30,2000"):
        with pytest.raises(InputError, match="--rates"):
            dl.parse_rates(bad)


@pytest.mark.skipif(importlib.util.find_spec("rclpy") is not None, reason="rclpy is importable here")
def test_bench_ros_without_ros_says_what_it_needs():
    r = subprocess.run([sys.executable, "-m", "featmap_ros.cli", "bench", "ros", "--task", "object"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2
    assert "needs ROS 2" in r.stderr and "setup.bash" in r.stderr
