"""The robot-cell features on a real ROS 2 (skipped without rclpy): ``~/estimate`` in both modes,
the lifecycle variant driven through its services, several cameras in one node, and the launch
files with ``lifecycle:=true``.

In-process nodes use the tiny random checkpoints of test_ros_launch.py; what is checked is the
plumbing (which frame answers, what is inferred when, which topics exist in which state), not
the poses' accuracy (test_ros_launch.py does that).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))  # as test_ros_launch.py: a domain of this run's own

rclpy = pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not sourced")
pytest.importorskip("message_filters", reason="ROS 2 message_filters missing")
pytest.importorskip("vision_msgs", reason="ROS 2 vision_msgs missing")
pytest.importorskip("tf2_ros", reason="ROS 2 tf2_ros missing")
pytest.importorskip("torch")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from featmap_ros.geometry import CameraModel  # noqa: E402
from featmap_ros.ros import conversions as conv  # noqa: E402

from test_ros_launch import _installed_share, spin_until, tiny_checkpoint  # noqa: E402  (pytest puts test/ on sys.path)

K = np.array([[500.0, 0.0, 32.0], [0.0, 500.0, 24.0], [0.0, 0.0, 1.0]])


def srv_module():
    return pytest.importorskip("featmap_ros.srv", reason="featmap_ros services not built (colcon build, then source it)")


@pytest.fixture()
def ros_context():
    rclpy.init()
    yield
    rclpy.try_shutdown()


class Camera:
    """Publishes small frames on ``<ns>image`` / ``<ns>camera_info`` / ``<ns>detections_2d``."""

    def __init__(self, io, ns: str = "") -> None:
        from sensor_msgs.msg import CameraInfo, Image
        from vision_msgs.msg import Detection2DArray

        self.msgs = conv.RclpyMessages()
        self.pub_img = io.create_publisher(Image, f"{ns}image", 10)
        self.pub_info = io.create_publisher(CameraInfo, f"{ns}camera_info", 10)
        self.pub_det = io.create_publisher(Detection2DArray, f"{ns}detections_2d", 10)
        self.frame_id = (ns.strip("/") or "camera") + "_optical"
        self.k = 0

    def send(self) -> int:
        """One frame (stamps 1 s + k * 10 ms); returns its stamp in nanoseconds."""
        stamp = 1_000_000_000 + self.k * 10_000_000
        self.k += 1
        h = conv.make_header(self.msgs, stamp, self.frame_id)
        self.pub_img.publish(conv.numpy_to_image(self.msgs, np.full((48, 64, 3), 90, np.uint8), "rgb8", h))
        self.pub_info.publish(conv.camera_model_to_info(self.msgs, CameraModel(K, 64, 48), h))
        self.pub_det.publish(conv.boxes_to_detection2d_array(self.msgs, [("ape", np.array([16.0, 8, 32, 32]), 0.9)], h))
        return stamp


def object_node(tmp_path, managed=False, **params):
    from featmap_ros.ros.lifecycle import managed as managed_variant
    from featmap_ros.ros.object_pose_node import ObjectPoseNode

    ck = tiny_checkpoint(tmp_path / "object.pt", "object")
    overrides = [Parameter("weights", value=str(ck)), Parameter("device", value="cpu"),
                 Parameter("roi_source", value="detections"), Parameter("qos.reliability", value="reliable"),
                 Parameter("markers.mesh_resource", value=""), Parameter("filter.enabled", value=False)]
    overrides += [Parameter(k.replace("__", "."), value=v) for k, v in params.items()]
    cls = managed_variant(ObjectPoseNode) if managed else ObjectPoseNode
    return cls(parameter_overrides=overrides)


def call(ex, client, request, timeout_s=30.0):
    assert spin_until(ex, lambda: client.service_is_ready(), 10.0), f"{client.srv_name} not offered"
    future = client.call_async(request)
    assert spin_until(ex, future.done, timeout_s), f"{client.srv_name}: no response"
    return future.result()


def test_estimate_service_on_request_answers_with_a_new_frame_and_infers_nothing_between(tmp_path, ros_context):
    srv = srv_module()
    from vision_msgs.msg import Detection3DArray

    node = object_node(tmp_path, mode="on_request")
    io = rclpy.create_node("featmap_test_estimate_io")
    cam = Camera(io)
    published = []
    io.create_subscription(Detection3DArray, "/object_pose_node/detections", published.append, 10)
    client = io.create_client(srv.Estimate, "/object_pose_node/estimate")
    ex = MultiThreadedExecutor(num_threads=4)
    ex.add_node(node)
    ex.add_node(io)
    stop = threading.Event()

    def stream():  # a camera at ~100 Hz, from its own thread (publishing is thread-safe)
        while not stop.is_set():
            cam.send()
            stop.wait(0.01)

    try:
        assert spin_until(ex, lambda: cam.pub_img.get_subscription_count() > 0)
        th = threading.Thread(target=stream)
        th.start()
        spin_until(ex, lambda: False, 1.0)
        assert node.worker.accepted == 0 and published == []  # frames flow, nothing requested: no inference
        sent_before = cam.k
        r = call(ex, client, srv.Estimate.Request(timeout_s=10.0))
        assert r.success, r.message
        assert r.detections.header.frame_id == "camera_optical"
        assert conv.stamp_to_ns(r.detections.header.stamp) >= 1_000_000_000 + sent_before * 10_000_000 - 20_000_000
        assert [d.results[0].hypothesis.class_id for d in r.detections.detections] == ["ape"]
        spin_until(ex, lambda: False, 0.5)
        assert node.worker.accepted == 1  # one request, one inference
        r2 = call(ex, client, srv.Estimate.Request(timeout_s=10.0))
        assert r2.success and conv.stamp_to_ns(r2.detections.header.stamp) > conv.stamp_to_ns(r.detections.header.stamp)
        bad = call(ex, client, srv.Estimate.Request(timeout_s=1.0, camera="cam_left"))
        assert not bad.success and "camera: 'cam_left', but this node has one camera" in bad.message
        stop.set()
        th.join(5)
        late = call(ex, client, srv.Estimate.Request(timeout_s=0.5))
        assert not late.success and "no synchronised frame processed within 0.5 s" in late.message
    finally:
        stop.set()
        node.close()
        ex.shutdown()
        node.destroy_node()
        io.destroy_node()


def test_lifecycle_node_loads_on_configure_subscribes_on_activate_frees_on_cleanup(tmp_path, ros_context):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    node = object_node(tmp_path, managed=True)
    io = rclpy.create_node("featmap_test_lifecycle_io")
    cam = Camera(io)
    change = io.create_client(ChangeState, "/object_pose_node/change_state")
    get = io.create_client(GetState, "/object_pose_node/get_state")
    ex = MultiThreadedExecutor(num_threads=4)
    ex.add_node(node)
    ex.add_node(io)

    def state():
        return call(ex, get, GetState.Request()).current_state.id

    def transition(tid):
        return call(ex, change, ChangeState.Request(transition=Transition(id=tid))).success

    def image_subscribers():
        return len(io.get_subscriptions_info_by_topic("/image"))

    try:
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.pipeline is None and image_subscribers() == 0
        assert transition(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        assert node.pipeline is not None and image_subscribers() == 0  # model loaded, not subscribed
        assert transition(Transition.TRANSITION_ACTIVATE)
        assert state() == State.PRIMARY_STATE_ACTIVE
        assert spin_until(ex, lambda: image_subscribers() == 1)
        assert spin_until(ex, lambda: cam.send() and node.worker is not None and node.worker.processed > 0, 30.0)
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert state() == State.PRIMARY_STATE_INACTIVE and node.worker is None
        assert spin_until(ex, lambda: image_subscribers() == 0)
        assert transition(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED and node.pipeline is None
        assert "/object_pose_node/detections" not in dict(io.get_topic_names_and_types()) or spin_until(
            ex, lambda: "/object_pose_node/detections" not in dict(io.get_topic_names_and_types()), 5.0)
        assert transition(Transition.TRANSITION_CONFIGURE) and transition(Transition.TRANSITION_ACTIVATE)  # again
        assert state() == State.PRIMARY_STATE_ACTIVE
    finally:
        node.close()
        ex.shutdown()
        node.destroy_node()
        io.destroy_node()


def test_lifecycle_configure_fails_naming_the_parameter(tmp_path, ros_context):
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import TransitionCallbackReturn

    from featmap_ros.ros.lifecycle import managed
    from featmap_ros.ros.object_pose_node import ObjectPoseNode

    node = managed(ObjectPoseNode)(parameter_overrides=[Parameter("weights", value="/nonexistent/object.pt")])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert node.pipeline is None
    finally:
        node.close()
        node.destroy_node()


def test_two_cameras_one_node_one_batched_call_per_camera_outputs(tmp_path, ros_context):
    from vision_msgs.msg import Detection3DArray

    node = object_node(tmp_path, cameras=["cam_left", "cam_right"], **{"batch__window_s": 0.2})
    calls = []
    estimate_images = node.pipeline.estimator.estimate_images
    node.pipeline.estimator.estimate_images = lambda items, **kw: calls.append(len(items)) or estimate_images(items, **kw)
    io = rclpy.create_node("featmap_test_multicam_io")
    left, right = Camera(io, "cam_left/"), Camera(io, "cam_right/")
    got = {"cam_left": [], "cam_right": []}
    for cam in got:
        io.create_subscription(Detection3DArray, f"/object_pose_node/{cam}/detections", got[cam].append, 10)
    ex = MultiThreadedExecutor(num_threads=4)
    ex.add_node(node)
    ex.add_node(io)
    try:
        assert spin_until(ex, lambda: left.pub_img.get_subscription_count() > 0 and right.pub_img.get_subscription_count() > 0)
        assert spin_until(ex, lambda: (left.send(), right.send()) and all(got.values()), 30.0)
        assert got["cam_left"][0].header.frame_id == "cam_left_optical"
        assert got["cam_right"][0].header.frame_id == "cam_right_optical"
        assert 2 in calls  # both cameras' windows in one estimator call
    finally:
        node.close()
        ex.shutdown()
        node.destroy_node()
        io.destroy_node()


def test_launch_with_lifecycle_true_configures_activates_and_exits_0(tmp_path):
    """ros2 launch camera_object.launch.py lifecycle:=true: the node ends up active by itself;
    ros2 lifecycle set deactivates it; Ctrl-C exits 0."""
    share = _installed_share()
    if share is None or shutil.which("ros2") is None:
        pytest.skip("featmap_ros is not installed in the sourced workspace (colcon build)")
    ck = tiny_checkpoint(tmp_path / "object.pt", "object")
    # a domain of its own: the in-process /object_pose_node of the tests before may still be
    # discovered, and launch_ros would send its one configure request to that dead service
    env = dict(os.environ, ROS_DOMAIN_ID=str((int(os.environ["ROS_DOMAIN_ID"]) + 50) % 100 + 1))
    proc = subprocess.Popen(["ros2", "launch", "featmap_ros", "camera_object.launch.py", f"weights:={ck}", "device:=cpu",
                             "roi_source:=detections", "lifecycle:=true"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path, start_new_session=True, env=env)

    def lifecycle(verb, *args):
        # no daemon: a daemon for this run's fresh DDS domain may take long to come up
        try:
            return subprocess.run(["ros2", "lifecycle", verb, "--no-daemon", "--spin-time", "3", *args],
                                  capture_output=True, text=True, timeout=60, env=env).stdout
        except subprocess.TimeoutExpired:
            return ""

    try:
        end = time.monotonic() + 180  # a loaded machine: the node loads torch, the CLI takes seconds per call
        state = ""
        while time.monotonic() < end and proc.poll() is None:
            state = lifecycle("get", "/object_pose_node")
            if state.startswith("active"):
                break
            time.sleep(1.0)
        assert state.startswith("active"), f"state {state!r}"
        r = lifecycle("set", "/object_pose_node", "deactivate")
        assert "successful" in r.lower(), r
        assert lifecycle("get", "/object_pose_node").startswith("inactive")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "process has died" not in out and "Traceback" not in out, out
