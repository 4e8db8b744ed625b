"""Several cameras on a real ROS 2: one object_pose_node with ``cameras`` against N node processes.

    source install/setup.bash
    python -m featmap_ros.ros.camera_bench --cameras 1,2,4 --seconds 20 --rate 30

For each N it starts (``ros2 run``) first one ``object_pose_node`` with ``cameras:=[cam0, ...]``,
then N single-camera ``object_pose_node`` processes (``cam<k>/image`` ... remapped), publishes
the same real-like frame with ground-truth windows on every camera at ``--rate`` Hz, and counts
the distinct frames answered per second over all cameras (after a warm-up), DDS included. Figures
go to stdout (and ``--json``); nothing here is a test. ``featmap bench node --cameras`` measures
the same without ROS (in-process pipelines).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import rclpy
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection3DArray

from featmap_ros.geometry import CameraModel, look_at_R_m2c
from featmap_ros.results import ObjectPose
from featmap_ros.ros import conversions as conv


def _frame(msgs, camera: CameraModel, stamp_ns: int, frame_id: str):
    rng = np.random.default_rng(0)
    h = conv.make_header(msgs, stamp_ns, frame_id)
    img = conv.numpy_to_image(msgs, rng.integers(0, 255, (camera.height, camera.width, 3), dtype=np.uint8), "rgb8", h)
    gt = ObjectPose(object_name="toy", obj_id=1, R_m2c=look_at_R_m2c(np.array([0.2, -0.5, 0.8])),
                    t_m2c_m=np.array([0.02, -0.01, 0.8]), score=1.0, extents_m=np.array([0.08, 0.08, 0.1]), center_m=np.zeros(3))
    return img, conv.camera_model_to_info(msgs, camera, h), conv.object_poses_to_detection3d_array(msgs, [gt], h)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(["ros2", "run", "featmap_ros", "object_pose_node", "--ros-args", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def _measure(node, cams: list[str], outputs: list[str], rate_hz: float, warmup_s: float, seconds: float) -> float:
    """Publish frames on every camera at ``rate_hz``; frames/s answered over all cameras."""
    msgs = conv.RclpyMessages()
    camera = CameraModel.from_fxfycxcy(572.4, 572.4, 320.0, 240.0, 640, 480)
    pubs = {c: (node.create_publisher(Image, f"/{c}/image", 5), node.create_publisher(CameraInfo, f"/{c}/camera_info", 5),
                node.create_publisher(Detection3DArray, f"/{c}/ground_truth/detections", 5)) for c in cams}
    answered: list[set] = [set() for _ in outputs]
    subs = [node.create_subscription(Detection3DArray, t, lambda m, k=k: answered[k].add(conv.stamp_to_ns(m.header.stamp)), 50)
            for k, t in enumerate(outputs)]
    end_wait = time.monotonic() + 180.0  # the nodes load their networks
    while time.monotonic() < end_wait and not all(p[0].get_subscription_count() > 0 for p in pubs.values()):
        rclpy.spin_once(node, timeout_sec=0.2)
    k, t_next, t_start = 0, time.monotonic(), time.monotonic()
    counted_from, n_before = None, 0
    while True:
        now = time.monotonic()
        if counted_from is None and now - t_start >= warmup_s:
            counted_from, n_before = now, sum(len(a) for a in answered)
        if counted_from is not None and now - counted_from >= seconds:
            break
        if now >= t_next:
            stamp = 1_000_000_000 + k * int(1e9 / rate_hz)
            for c, (pi, pc, pg) in pubs.items():
                img, info, gt = _frame(msgs, camera, stamp, f"{c}_optical")
                pi.publish(img), pc.publish(info), pg.publish(gt)
            k += 1
            t_next += 1.0 / rate_hz
        rclpy.spin_once(node, timeout_sec=max(0.0, min(t_next - time.monotonic(), 0.01)))
    fps = (sum(len(a) for a in answered) - n_before) / seconds
    for s in subs:
        node.destroy_subscription(s)
    for p in pubs.values():
        for q in p:
            node.destroy_publisher(q)
    return fps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", default="1,2,4")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=30.0, help="frames per second per camera")
    ap.add_argument("--weights", default="", help="object checkpoint; empty = bundled demo weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    counts = [int(v) for v in a.cameras.split(",") if v.strip()]
    common = ["-p", f"device:={a.device}", "-p", "roi_source:=ground_truth", "-p", "qos.reliability:=reliable",
              "-p", "filter.enabled:=false", "-p", 'markers.mesh_resource:=""'] + (["-p", f"weights:={a.weights}"] if a.weights else [])
    rclpy.init()
    node = rclpy.create_node("featmap_camera_bench")
    rows = []
    try:
        for n in counts:
            cams = [f"cam{k}" for k in range(n)]
            procs = [_start([*common, "-p", f"cameras:=[{', '.join(cams)}]"])]
            try:
                one = _measure(node, cams, [f"/object_pose_node/{c}/detections" for c in cams], a.rate, a.warmup, a.seconds)
            finally:
                _stop(procs)
            procs = [_start([*common, "-r", f"__node:=object_pose_node_{c}", "-r", f"image:=/{c}/image",
                             "-r", f"camera_info:=/{c}/camera_info", "-r", f"ground_truth/detections:=/{c}/ground_truth/detections"])
                     for c in cams]
            try:
                sep = _measure(node, cams, [f"/object_pose_node_{c}/detections" for c in cams], a.rate, a.warmup, a.seconds)
            finally:
                _stop(procs)
            rows.append({"cameras": n, "one_node_fps": one, "separate_nodes_fps": sep})
            print(f"{n} camera(s): one node {one:.1f} frames/s, {n} node processes {sep:.1f} frames/s", flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    load = os.getloadavg()[0]
    print(f"(real ROS 2, DDS, {a.rate:g} Hz per camera offered, 640x480, device {a.device}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
