"""``featmap bench ros``: latency through a real DDS (the rclpy side; the arithmetic is in
:mod:`featmap_ros.evaluation.dds_latency`).

For each node (``object_pose_node``, ``hand_pose_node``) and each input QoS (``default``:
reliable, depth 10, as rclpy's default; ``sensor``: best effort, depth 5, as
``qos_profile_sensor_data``), :func:`run` starts the node as its own process (the installed
node executable under this Python), a listener process on its output topic, and, per rate, a
publisher process sending 640x480 frames + camera_info stamped with the wall clock. The listener
notes when each answer arrives; the node's CPU time is read from ``/proc`` over each measured
window. Right before and after each run, the same node work runs in-process (``featmap bench
node``'s pipeline, same frame, same settings, frames paced at the same rate; the mean of the two
p50s) for the figure the DDS hop is compared with: on a shared machine the load changes from
minute to minute, and the scheduler treats a loop that never sleeps worse than a node that does.

    source /opt/ros/jazzy/setup.bash && source install/setup.bash   # a workspace with featmap_ros built
    featmap bench ros --rates 30,60,100 --seconds 10

The publisher and listener are this module run as scripts (``python -m featmap_ros.ros.dds_bench
publish|listen``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from featmap_ros.data.nyu import nyu_K
from featmap_ros.evaluation import dds_latency
from featmap_ros.geometry import CameraModel
from featmap_ros.render.depth_sensor import sample_pair
from featmap_ros.ros import conversions as conv

#: node -> (output topic, its message type module path, input topics)
NODES = {
    "object_pose_node": ("/object_pose_node/detections", "vision_msgs.msg.Detection3DArray", ("/image", "/camera_info")),
    "hand_pose_node": ("/hand_pose_node/hand_pose", "featmap_ros.msg.HandPose", ("/depth", "/camera_info")),
}
#: input QoS -> (node parameters qos.reliability, qos.depth)
QOS = {"default": ("reliable", 10), "sensor": ("best_effort", 5)}


def _qos(name: str) -> QoSProfile:
    if name == "sensor":
        return qos_profile_sensor_data
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def object_frame_rgb(seed: int = 0) -> np.ndarray:
    """(480, 640, 3) uint8: the frame of ``featmap bench node`` (random texture)."""
    return np.random.default_rng(seed).integers(0, 255, (480, 640, 3), dtype=np.uint8)


def hand_frame_depth_m(seed: int = 1) -> np.ndarray:
    """(480, 640) float32 metres: one real-like hand frame (``sample_pair``), NaN = invalid."""
    return sample_pair(np.random.default_rng(seed), nyu_K())[2].astype(np.float32)


def bench_camera(node: str) -> CameraModel:
    """The camera of the frames (LINEMOD-like for objects, NYU's for hands)."""
    if node == "hand_pose_node":
        return CameraModel(nyu_K(), 640, 480)
    return CameraModel.from_fxfycxcy(572.4114, 572.4114, 320.0, 240.0, 640, 480)


def _frame_msgs(msgs, node: str, stamp_ns: int):
    cam = bench_camera(node)
    frame_id = "camera_optical_frame"
    h = conv.make_header(msgs, stamp_ns, frame_id)
    if node == "hand_pose_node":
        depth_mm = np.nan_to_num(hand_frame_depth_m() * 1000.0, nan=0.0).round().astype(np.uint16)
        img = conv.numpy_to_image(msgs, depth_mm, "16UC1", h)
    else:
        img = conv.numpy_to_image(msgs, object_frame_rgb(), "rgb8", h)
    return img, conv.camera_model_to_info(msgs, cam, h)


# ----------------------------------------------------------------------------- processes


def publish_main(argv: list[str]) -> int:
    """Publisher process: ``--warmup`` s of frames, then ``--seconds`` s measured; prints
    ``MEASURE_START`` / ``MEASURE_END`` lines and writes the measured stamps to ``--out``."""
    p = argparse.ArgumentParser()
    p.add_argument("--node", choices=tuple(NODES), required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--qos", choices=tuple(QOS), required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    rclpy.init()
    node = rclpy.create_node("featmap_bench_publisher")
    msgs = conv.RclpyMessages()
    topic_img, topic_info = NODES[a.node][2]
    pub_img = node.create_publisher(Image, topic_img, _qos(a.qos))
    pub_info = node.create_publisher(CameraInfo, topic_info, _qos(a.qos))
    img, info = _frame_msgs(msgs, a.node, 0)
    end_wait = time.monotonic() + 120.0
    while time.monotonic() < end_wait and pub_img.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.1)
    if pub_img.get_subscription_count() == 0:
        print(f"no subscriber on {topic_img} after 120 s", file=sys.stderr)
        return 2
    times = dds_latency.publish_times_s(a.rate, a.warmup + a.seconds)
    sent = []
    t0 = time.monotonic()
    measuring = False
    for t in times:
        while time.monotonic() - t0 < t:
            time.sleep(min(0.001, max(t - (time.monotonic() - t0), 0.0)))
        if not measuring and t >= a.warmup:
            measuring = True
            print("MEASURE_START", flush=True)
        stamp = time.time_ns()
        sec, nsec = divmod(stamp, 1_000_000_000)
        for m in (img, info):
            m.header.stamp.sec, m.header.stamp.nanosec = int(sec), int(nsec)
        pub_img.publish(img)
        pub_info.publish(info)
        if measuring:
            sent.append(stamp)
    print("MEASURE_END", flush=True)
    late = float(np.percentile(np.diff(np.array(sent)) / 1e6, 95)) if len(sent) > 1 else float("nan")
    Path(a.out).write_text(json.dumps({"sent_ns": sent, "rate_hz": a.rate, "interval_p95_ms": late}))
    node.destroy_node()
    rclpy.shutdown()
    return 0


def listen_main(argv: list[str]) -> int:
    """Listener process: notes (input stamp -> receive time) of every answer on the node's output
    until SIGINT/SIGTERM, then writes them to ``--out``."""
    p = argparse.ArgumentParser()
    p.add_argument("--node", choices=tuple(NODES), required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    topic, type_path, _ = NODES[a.node]
    module, name = type_path.rsplit(".", 1)
    msg_type = getattr(__import__(module, fromlist=[name]), name)
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    node = rclpy.create_node("featmap_bench_listener")
    received: dict[int, int] = {}

    def on_answer(m) -> None:
        now = time.time_ns()
        received.setdefault(conv.stamp_to_ns(m.header.stamp), now)

    node.create_subscription(msg_type, topic, on_answer, QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                                                      reliability=ReliabilityPolicy.RELIABLE))
    print("LISTENING", flush=True)
    while not stop["now"] and rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.05)
    Path(a.out).write_text(json.dumps({str(k): v for k, v in received.items()}))
    node.destroy_node()
    rclpy.shutdown()
    return 0


# ----------------------------------------------------------------------------- orchestration


def _node_executable(node: str) -> Path:
    """The installed node script (``<prefix>/lib/featmap_ros/<node>``) of the sourced workspace."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        prefix = Path(get_package_prefix("featmap_ros"))
    except PackageNotFoundError:
        raise RuntimeError("featmap_ros is not in the sourced ROS workspace: colcon build it and source install/setup.bash") from None
    exe = prefix / "lib" / "featmap_ros" / node
    if not exe.is_file():
        raise RuntimeError(f"{exe}: node executable missing (colcon build featmap_ros)")
    return exe


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_line(proc: subprocess.Popen, want: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            return False
        if line.strip() == want:
            return True
    return False


class InProcess:
    """The same node work in-process (``featmap bench node``'s pipeline, rosbags messages, the
    frame and settings the DDS runs use), to time next to each DDS run."""

    def __init__(self, node: str) -> None:
        from featmap_ros.checkpoint import bundled_weights
        from featmap_ros.estimators import HandPoseEstimator, ObjectPoseEstimator
        from featmap_ros.ros.msg_defs import featmap_typestore
        from featmap_ros.ros.params import HAND_NODE_PARAMS, OBJECT_NODE_PARAMS, validate_params
        from featmap_ros.ros.pipeline import HandPipeline, HandSettings, ObjectPipeline, ObjectSettings

        msgs = conv.RosbagsMessages(featmap_typestore())
        self.img, self.info = _frame_msgs(msgs, node, 1_700_000_000_000_000_000)
        if node == "hand_pose_node":
            est = HandPoseEstimator.from_checkpoint(bundled_weights("hand"), device="cpu")
            self.pipe = HandPipeline(est, msgs, HandSettings.from_params(validate_params(HAND_NODE_PARAMS, {})))
        else:
            est = ObjectPoseEstimator.from_checkpoint(bundled_weights("object"), device="cpu")
            self.pipe = ObjectPipeline(est, msgs, ObjectSettings.from_params(validate_params(OBJECT_NODE_PARAMS, {}), est.object_names))
        est.warmup()
        self.k = 0

    def p50_ms(self, rate_hz: float, frames: int = 30) -> float:
        """p50 ms per frame over ``frames`` frames (after 3 untimed), one every 1 / ``rate_hz`` s
        as the node gets them: on a busy machine the scheduler favours a process that sleeps
        between frames over one that never does, so an unpaced loop would be slower than the node."""
        t = []
        start = time.monotonic()
        for i in range(frames + 3):
            time.sleep(max(start + i / rate_hz - time.monotonic(), 0.0))
            self.k += 1
            self.img.header.stamp.nanosec = self.info.header.stamp.nanosec = self.k * 1000
            t0 = time.perf_counter()
            self.pipe.process(self.img, self.info)
            if i >= 3:
                t.append((time.perf_counter() - t0) * 1e3)
        return float(np.median(t))


def run(rates: list[float], seconds: float, warmup: float, nodes: list[str], qos_names: list[str], work: Path,
        grace_s: float = 2.0, log=print) -> list[dds_latency.RunResult]:
    """Every (node, QoS, rate) run (see the module docstring); processes are started here and stopped."""
    work.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, "-m", "featmap_ros.ros.dds_bench"]
    results = []
    for node in nodes:
        inproc = InProcess(node)
        for q in qos_names:
            reliability, depth = QOS[q]
            params = ["-p", "device:=cpu", "-p", f"qos.reliability:={reliability}", "-p", f"qos.depth:={depth}"]
            node_log = open(work / f"{node}_{q}.log", "w")
            proc = subprocess.Popen([sys.executable, str(_node_executable(node)), "--ros-args", *params],
                                    stdout=node_log, stderr=subprocess.STDOUT, start_new_session=True)
            answers = work / f"{node}_{q}_answers.json"
            listener = subprocess.Popen([*me, "listen", "--node", node, "--out", str(answers)], stdout=subprocess.PIPE,
                                        text=True, start_new_session=True)
            try:
                if not _wait_line(listener, "LISTENING", 120):
                    raise RuntimeError(f"listener for {node} did not start")
                runs = []
                for rate in rates:
                    ref_ms = inproc.p50_ms(rate)  # right before the run: the machine as it is now
                    sent_file = work / f"{node}_{q}_{rate:g}Hz_sent.json"
                    pub = subprocess.Popen([*me, "publish", "--node", node, "--rate", str(rate), "--seconds", str(seconds),
                                            "--warmup", str(warmup), "--qos", q, "--out", str(sent_file)],
                                           stdout=subprocess.PIPE, text=True, start_new_session=True)
                    if not _wait_line(pub, "MEASURE_START", 300):
                        _stop(pub)
                        raise RuntimeError(f"{node} ({q}, {rate:g} Hz): the publisher never started measuring "
                                           f"(node log: {work / f'{node}_{q}.log'})")
                    cpu0, t0 = dds_latency.proc_cpu_seconds(proc.pid), time.monotonic()
                    _wait_line(pub, "MEASURE_END", seconds + 60)
                    cpu1, t1 = dds_latency.proc_cpu_seconds(proc.pid), time.monotonic()
                    pub.wait(timeout=60)
                    time.sleep(grace_s)  # the last frames' answers
                    ref_ms = float(np.median([ref_ms, inproc.p50_ms(rate)]))  # and right after it
                    runs.append((rate, sent_file, dds_latency.cpu_load(cpu0, cpu1, t1 - t0), ref_ms))
            finally:
                _stop(listener)
                _stop(proc)
                node_log.close()
            received = {int(k): int(v) for k, v in json.loads(answers.read_text()).items()}
            for rate, sent_file, load, ref_ms in runs:
                sent = json.loads(sent_file.read_text())["sent_ns"]
                r = dds_latency.RunResult(node, rate, q, dds_latency.latency_stats(sent, received), load, ref_ms)
                log(dds_latency.format_table([r]).splitlines()[1])
                results.append(r)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "publish":
        return publish_main(argv[1:])
    if argv and argv[0] == "listen":
        return listen_main(argv[1:])
    print("usage: python -m featmap_ros.ros.dds_bench publish|listen ... (featmap bench ros runs both)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
