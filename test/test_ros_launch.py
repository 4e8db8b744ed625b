"""The nodes on a real ROS 2 (rclpy, message_filters, tf2_ros, vision_msgs): skipped without one.

Run where a ROS 2 Humble/Jazzy is sourced (``scripts/run_tests.sh`` does it when it finds one):
in-process nodes with tiny random checkpoints, real DDS topics; a wrong parameter exits non-zero;
the launch files build their descriptions once the package is installed (colcon).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not sourced")
pytest.importorskip("message_filters", reason="ROS 2 message_filters missing")
pytest.importorskip("vision_msgs", reason="ROS 2 vision_msgs missing")
pytest.importorskip("tf2_ros", reason="ROS 2 tf2_ros missing")
torch = pytest.importorskip("torch")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from featmap_ros.geometry import CameraModel, box_corners, look_at_R_m2c  # noqa: E402
from featmap_ros.results import ObjectPose  # noqa: E402
from featmap_ros.ros import conversions as conv  # noqa: E402

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def tiny_checkpoint(path: Path, task: str) -> Path:
    """A randomly initialised checkpoint in the format featmap train writes (small nets)."""
    from featmap_ros.config import to_dict
    from featmap_ros.nets import ModelConfig, build_model
    from featmap_ros.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    torch.manual_seed(0)
    if task == "object":
        cfg = ModelConfig(task="object", backbone="small", input_size=32, feature_dim=16, small_channels=[4, 8],
                          n_objects=1, pretrained=False)
        meta = {"object_names": ["ape"], "obj_ids": [1],
                "corners_m": box_corners(np.array([-0.04, -0.04, -0.05]), np.array([0.08, 0.08, 0.1]))[None].tolist()}
    else:
        cfg = ModelConfig(task="hand", backbone="small", input_size=32, feature_dim=16, small_channels=[4, 8],
                          n_joints=14, pretrained=False)
        meta = {"joint_names": [f"j{i}" for i in range(13)] + ["palm_center"], "cube_mm": 300.0}
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "task": task, "model_config": to_dict(cfg), "config": {},
                           "model": build_model(cfg).state_dict(), "meta": meta})
    return path


@pytest.fixture()
def ros_context():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def spin_until(executor, pred, timeout_s=20.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not pred():
        executor.spin_once(timeout_sec=0.05)
    return pred()


def test_object_node_publishes_stamped_outputs_and_survives_bad_input(tmp_path, ros_context):
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    from featmap_ros.ros.object_pose_node import ObjectPoseNode

    ck = tiny_checkpoint(tmp_path / "object.pt", "object")
    node = ObjectPoseNode(parameter_overrides=[
        Parameter("weights", value=str(ck)), Parameter("device", value="cpu"),
        Parameter("roi_source", value="ground_truth"), Parameter("qos.reliability", value="reliable")])
    io = rclpy.create_node("featmap_test_io")
    msgs = conv.RclpyMessages()
    pub_img = io.create_publisher(Image, "image", 10)
    pub_info = io.create_publisher(CameraInfo, "camera_info", 10)
    pub_gt = io.create_publisher(Detection3DArray, "ground_truth/detections", 10)
    got, tfs = [], []
    io.create_subscription(Detection3DArray, "/object_pose_node/detections", got.append, 10)
    io.create_subscription(TFMessage, "/tf", tfs.append, 100)
    ex = MultiThreadedExecutor()
    ex.add_node(node)
    ex.add_node(io)
    try:
        assert spin_until(ex, lambda: pub_img.get_subscription_count() > 0 and pub_gt.get_subscription_count() > 0)

        def send(encoding="rgb8", stamp_ns=1_000_000_000):
            h = conv.make_header(msgs, stamp_ns, "camera_color_optical_frame")
            arr = np.zeros((480, 640, 3), np.uint8) if encoding == "rgb8" else np.zeros((480, 640), np.uint16)
            gt = ObjectPose("ape", 1, look_at_R_m2c(np.array([0.1, -0.4, 0.9])), np.array([0.0, 0.0, 0.8]), 1.0,
                            extents_m=np.array([0.08, 0.08, 0.1]))
            pub_img.publish(conv.numpy_to_image(msgs, arr, encoding, h))
            pub_info.publish(conv.camera_model_to_info(msgs, CameraModel(K, 640, 480), h))
            pub_gt.publish(conv.object_poses_to_detection3d_array(msgs, [gt], h))

        send(encoding="16UC1", stamp_ns=900_000_000)  # wrong encoding: warned about, node keeps going
        spin_until(ex, lambda: node.worker.failed > 0, 5.0)
        assert node.worker.failed == 1
        stamp = 1_000_000_000
        assert spin_until(ex, lambda: (send(stamp_ns=stamp) or True) and len(got) > 0, 30.0)
        det = got[-1]
        assert det.header.frame_id == "camera_color_optical_frame"
        assert conv.stamp_to_ns(det.header.stamp) == stamp
        if det.detections:
            assert det.detections[0].results[0].hypothesis.class_id == "ape"
            assert spin_until(ex, lambda: any(t.child_frame_id == "featmap/ape" for m in tfs for t in m.transforms), 5.0)
    finally:
        node.close()
        ex.shutdown()
        node.destroy_node()
        io.destroy_node()


def test_hand_node_publishes_hand_pose(tmp_path, ros_context):
    from sensor_msgs.msg import CameraInfo, Image

    HandPose = pytest.importorskip("featmap_ros.msg", reason="featmap_ros messages not built (colcon build)").HandPose
    from featmap_ros.ros.hand_pose_node import HandPoseNode

    ck = tiny_checkpoint(tmp_path / "hand.pt", "hand")
    node = HandPoseNode(parameter_overrides=[
        Parameter("weights", value=str(ck)), Parameter("device", value="cpu"), Parameter("qos.reliability", value="reliable")])
    io = rclpy.create_node("featmap_test_hand_io")
    msgs = conv.RclpyMessages()
    pub_d = io.create_publisher(Image, "depth", 10)
    pub_i = io.create_publisher(CameraInfo, "camera_info", 10)
    got = []
    io.create_subscription(HandPose, "/hand_pose_node/hand_pose", got.append, 10)
    ex = MultiThreadedExecutor()
    ex.add_node(node)
    ex.add_node(io)
    v, u = np.mgrid[0:480, 0:640]
    depth_mm = np.full((480, 640), 1500, np.uint16)
    depth_mm[((u - 320) / 70.0) ** 2 + ((v - 240) / 90.0) ** 2 < 1] = 500
    try:
        assert spin_until(ex, lambda: pub_d.get_subscription_count() > 0)

        def send():
            h = conv.make_header(msgs, 2_000_000_000, "camera_depth_optical_frame")
            pub_d.publish(conv.numpy_to_image(msgs, depth_mm, "16UC1", h))
            pub_i.publish(conv.camera_model_to_info(msgs, CameraModel(K, 640, 480), h))

        assert spin_until(ex, lambda: (send() or True) and len(got) > 0, 30.0)  # one message per frame, hand or not
        assert got[-1].header.frame_id == "camera_depth_optical_frame"
        assert conv.stamp_to_ns(got[-1].header.stamp) == 2_000_000_000
        assert len(got[-1].joints) in (0, 14)
    finally:
        node.close()
        ex.shutdown()
        node.destroy_node()
        io.destroy_node()


@pytest.mark.parametrize("module,arg,name", [
    ("object_pose_node", "min_score:=2.0", "min_score"),
    ("object_pose_node", "roi_source:=psychic", "roi_source"),
    ("hand_pose_node", "weights:=/nonexistent/hand.pt", "weights"),
])
def test_wrong_parameter_exits_non_zero_naming_it(module, arg, name, tmp_path):
    if module == "hand_pose_node":
        pytest.importorskip("featmap_ros.msg", reason="featmap_ros messages not built (colcon build, then source it)")
    code = f"import sys; from featmap_ros.ros.{module} import main; sys.exit(main())"
    # cwd away from the checkout, so a sourced colcon install (with featmap_ros.msg) is what gets imported
    r = subprocess.run([sys.executable, "-c", code, "--ros-args", "-p", arg], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode != 0
    assert name in r.stdout + r.stderr


def _installed_share():
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory("featmap_ros"))
    except PackageNotFoundError:
        return None


@pytest.mark.parametrize("launch_file", ["linemod.launch.py", "nyu.launch.py", "camera_object.launch.py", "camera_hand.launch.py"])
def test_launch_files_build_their_description(launch_file):
    share = _installed_share()
    if share is None:
        pytest.skip("featmap_ros is not installed in the sourced workspace (colcon build)")
    from launch import LaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    ld = PythonLaunchDescriptionSource(str(share / "launch" / launch_file)).try_get_launch_description_without_context()
    assert isinstance(ld, LaunchDescription)
    names = [a.name for a in ld.get_launch_arguments()]
    assert "rviz" in names


def test_camera_launch_runs_and_exits_cleanly_on_sigint(tmp_path):
    """As a user would: ros2 launch, the node's topics appear, Ctrl-C, exit code 0."""
    import shutil
    import signal

    share = _installed_share()
    if share is None or shutil.which("ros2") is None:
        pytest.skip("featmap_ros is not installed in the sourced workspace (colcon build)")
    ck = tiny_checkpoint(tmp_path / "object.pt", "object")
    proc = subprocess.Popen(["ros2", "launch", "featmap_ros", "camera_object.launch.py", f"weights:={ck}", "device:=cpu",
                             "roi_source:=detections"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path, start_new_session=True)
    rclpy.init()
    probe = rclpy.create_node("featmap_launch_probe")
    try:
        want = {"/object_pose_node/detections", "/object_pose_node/markers", "/object_pose_node/debug_image"}
        end = time.monotonic() + 60
        names = set()
        while time.monotonic() < end and not want <= names and proc.poll() is None:
            rclpy.spin_once(probe, timeout_sec=0.2)
            names = {n for n, _ in probe.get_topic_names_and_types()}
        assert want <= names, f"topics missing: {want - names}"
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "process has died" not in out, out
