"""``featmap bench ros``: latency through a real DDS (needs a sourced ROS 2 with featmap_ros built).

A publisher process sends 640x480 frames + camera_info at each ``--rates`` rate to the node
(started as its own process), a listener process takes its answers: p50/p95 from input stamp to
answer received, frames dropped while the node was busy, the node's CPU load, with the default and
the sensor-data input QoS; and what the DDS hop adds to the same work in-process (``featmap bench
node``'s pipeline). The arithmetic is :mod:`featmap_ros.evaluation.dds_latency`, the ROS side
:mod:`featmap_ros.ros.dds_bench`.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from featmap_ros import atomic
from featmap_ros.evaluation.dds_latency import format_table, parse_rates

NODE_NAMES = {"object": "object_pose_node", "hand": "hand_pose_node"}


def register(sub) -> None:
    p = sub.add_parser("ros", help="latency through a real DDS: publisher -> node process -> listener, p50/p95, drops, CPU (needs ROS 2)")
    p.add_argument("--rates", default="30,60,100", help="publishing rates, Hz, comma-separated")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate (after --warmup)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of frames sent before measuring")
    p.add_argument("--task", choices=("object", "hand", "both"), default="both")
    p.add_argument("--qos", nargs="+", choices=("default", "sensor"), default=["default", "sensor"],
                   help="input QoS: default = reliable depth 10 (rclpy's default), sensor = best effort depth 5 (sensor data)")
    p.add_argument("--work", type=Path, default=Path("featmap_out/bench_ros"), help="logs and raw stamps")
    p.add_argument("--json", type=Path, default=Path("featmap_out/bench_ros.json"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rates = parse_rates(args.rates)  # bad input is refused before anything starts
    try:
        from featmap_ros.ros import dds_bench  # rclpy: a sourced ROS 2 install
    except ImportError as e:
        print(f"featmap bench ros needs ROS 2 (rclpy, sensor_msgs, vision_msgs) and featmap_ros built in a sourced workspace: "
              f"source /opt/ros/<distro>/setup.bash and <ws>/install/setup.bash, then run it again ({e})", file=sys.stderr)
        return 2
    nodes = list(NODE_NAMES.values()) if args.task == "both" else [NODE_NAMES[args.task]]
    try:
        results = dds_bench.run(rates, args.seconds, args.warmup, nodes, list(args.qos), args.work)
    except RuntimeError as e:
        print(f"featmap bench ros: {e}", file=sys.stderr)
        return 1
    print("\n" + format_table(results))
    print(f"(wall-clock stamps, one machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"RMW {os.environ.get('RMW_IMPLEMENTATION', 'default')}; CPU = node process, 100 % = one core)")
    atomic.write_json(args.json, {"machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                              "rmw": os.environ.get("RMW_IMPLEMENTATION", ""), "ros_distro": os.environ.get("ROS_DISTRO", "")},
                                  "rates_hz": rates, "seconds": args.seconds, "warmup_s": args.warmup,
                                  "runs": [r.as_dict() for r in results]})
    print(f"wrote {args.json}")
    return 0
