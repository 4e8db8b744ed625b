"""Poses on request without rclpy: the request gate (``mode``, ``~/estimate``), with the node's
worker and pipeline on real ROS message types (rosbags), and the service definitions."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags (pip) provides the ROS message types these tests build")

from featmap_ros.errors import InputError
from featmap_ros.results import ObjectPose
from featmap_ros.ros import conversions as conv
from featmap_ros.ros import params as P
from featmap_ros.ros.msg_defs import FEATMAP_SRVS, featmap_typestore, srv_halves
from featmap_ros.ros.pipeline import ObjectPipeline, ObjectSettings
from featmap_ros.ros.requests import (Answer, RequestGate, check_timeout, hand_response_fields, object_response_fields,
                                      offer_job)
from featmap_ros.ros.worker import FrameWorker
from featmap_ros.geometry import CameraModel

REPO = Path(__file__).resolve().parents[1]
K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
WAIT_S = 10.0  # generous: a wait that ends early is the normal case, this only bounds a failure


@pytest.fixture(scope="module")
def store():
    return featmap_typestore("humble")


@pytest.fixture(scope="module")
def msgs(store):
    return conv.RosbagsMessages(store)


def ask_in_thread(gate, timeout_s, why_late=None):
    """Start a request in a thread (as the service's callback thread); returns (thread, result list)."""
    out = []
    th = threading.Thread(target=lambda: out.append(gate.ask(timeout_s, why_late)))
    th.start()
    return th, out


def wait_until(pred, timeout_s=WAIT_S):
    end = time.monotonic() + timeout_s
    while not pred() and time.monotonic() < end:
        time.sleep(0.005)
    return pred()


def test_continuous_a_request_gets_the_first_frame_accepted_after_it():
    gate = RequestGate("continuous")
    gate.open()
    assert gate.wants_frame()
    in_flight = gate.claim()  # a frame accepted before the request: not its answer
    assert in_flight.tickets == []
    th, out = ask_in_thread(gate, WAIT_S)
    assert wait_until(lambda: gate.n_waiting == 1)
    gate.frame_done(in_flight, "old frame")
    assert not out and gate.n_waiting == 1
    token = gate.claim()
    assert len(token.tickets) == 1
    gate.frame_done(token, "new frame")
    th.join(WAIT_S)
    assert out == [Answer(True, "ok", "new frame")]
    assert gate.n_waiting == 0


def test_on_request_no_frame_is_wanted_between_requests():
    gate = RequestGate("on_request")
    gate.open()
    assert not gate.wants_frame()
    th, out = ask_in_thread(gate, WAIT_S)
    assert wait_until(gate.wants_frame)
    token = gate.claim()
    assert not gate.wants_frame()  # its frame is in flight: no second inference for it
    gate.release(token)  # the worker was busy: the next frame answers it
    assert gate.wants_frame()
    token = gate.claim()
    gate.frame_done(token, {"": "outputs"})
    th.join(WAIT_S)
    assert out[0].success and out[0].outputs == {"": "outputs"}
    assert not gate.wants_frame()


def test_two_requests_waiting_share_one_frame():
    gate = RequestGate("on_request")
    gate.open()
    (t1, o1), (t2, o2) = ask_in_thread(gate, WAIT_S), ask_in_thread(gate, WAIT_S)
    assert wait_until(lambda: gate.n_waiting == 2)
    token = gate.claim()
    assert len(token.tickets) == 2
    gate.frame_done(token, "x")
    t1.join(WAIT_S), t2.join(WAIT_S)
    assert o1[0].outputs == o2[0].outputs == "x"


def test_timeout_names_the_failed_frame_and_the_inputs():
    gate = RequestGate("on_request")
    gate.open()
    th, out = ask_in_thread(gate, 0.3, why_late=lambda: "receiving ['/cam/image'] but nothing on ['/cam/camera_info']")
    assert wait_until(gate.wants_frame)
    token = gate.claim()
    gate.frame_failed(token, "image.encoding: '16UC1' is not a colour encoding")
    assert gate.wants_frame()  # the request waits for the next frame
    th.join(WAIT_S)
    a = out[0]
    assert not a.success and a.outputs is None
    assert "no synchronised frame processed within 0.3 s" in a.message
    assert "image.encoding" in a.message and "nothing on ['/cam/camera_info']" in a.message
    assert gate.n_waiting == 0 and not gate.wants_frame()
    gate.frame_done(token, "late")  # a frame finishing after the timeout answers nobody
    assert gate.n_waiting == 0


def test_close_answers_waiting_requests_and_refuses_new_ones_until_opened():
    gate = RequestGate()
    gate.close("the node is not active (deactivated)")
    assert gate.ask(WAIT_S).message == "the node is not active (deactivated)"
    gate.open()
    th, out = ask_in_thread(gate, WAIT_S)
    assert wait_until(lambda: gate.n_waiting == 1)
    gate.close()
    th.join(WAIT_S)
    assert out == [Answer(False, "the node is shutting down")]


def test_pick_camera_names_the_valid_cameras():
    from featmap_ros.ros.requests import pick_camera

    assert pick_camera("", [""]) == "" and pick_camera("", ["l", "r"]) == "l" and pick_camera("r", ["l", "r"]) == "r"
    with pytest.raises(InputError, match="camera: 'left', but this node has one camera"):
        pick_camera("left", [""])
    with pytest.raises(InputError, match=r"camera: 'top' is not one of this node's cameras \['l', 'r'\]"):
        pick_camera("top", ["l", "r"])


def test_mode_and_timeout_are_checked():
    with pytest.raises(InputError, match=r"parameter 'mode': 'sometimes' is not one of"):
        RequestGate("sometimes")
    assert check_timeout(0.0, 5.0) == 5.0 and check_timeout(2.5, 5.0) == 2.5
    for bad in (-1.0, float("nan"), 1e9):
        with pytest.raises(InputError, match="timeout_s"):
            check_timeout(bad, 5.0)
    assert {s.name for s in P.OBJECT_NODE_PARAMS} >= {"mode", "request.timeout_s"}
    assert {s.name for s in P.HAND_NODE_PARAMS} >= {"mode", "request.timeout_s"}
    with pytest.raises(InputError, match="parameter 'mode'"):
        P.validate_params(P.OBJECT_NODE_PARAMS, {"mode": "lazy"})


class CountingEstimator:
    """Test double with the estimator's interface; counts its calls (inferences)."""

    object_names = ["ape"]
    extents_m = np.array([[0.08, 0.08, 0.1]])
    center_m = np.zeros((1, 3))

    def __init__(self):
        self.calls = 0

    def estimate(self, image_rgb, K, boxes=None):
        self.calls += 1
        R = np.eye(3)
        return [ObjectPose("ape", 0, R, np.array([0.0, 0.0, 0.8]), 0.9, np.array([0.08, 0.08, 0.1]), np.zeros(3))]


def test_on_request_with_the_worker_and_pipeline_infers_once_per_request(msgs, store):
    """The node's path without rclpy: a camera streaming frames, the gate deciding, the worker
    running the object pipeline; only requested frames are inferred, and the answer is the
    frame's Detection3DArray, which fills a real Estimate response."""
    est = CountingEstimator()
    values = P.validate_params(P.OBJECT_NODE_PARAMS, {"mode": "on_request"})
    pipe = ObjectPipeline(est, msgs, ObjectSettings.from_params(values, est.object_names))
    gate = RequestGate(values["mode"])
    gate.open()

    def process(job):
        _, frames, token = job
        gate.frame_done(token, {stream: pipe.process(*m) for stream, m in frames})

    worker = FrameWorker(process, lambda job, err: gate.frame_failed(job[2], str(err)))
    stop = threading.Event()
    sent = []

    def camera():
        k = 0
        while not stop.is_set():
            h = conv.make_header(msgs, 1_000_000_000 + k * 33_000_000, "cam_optical")
            img = conv.numpy_to_image(msgs, np.zeros((48, 64, 3), np.uint8), "rgb8", h)
            info = conv.camera_model_to_info(msgs, CameraModel(np.array([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]), 64, 48), h)
            sent.append(k)
            offer_job(gate, worker, [("", (img, info))], 0.0)
            k += 1
            stop.wait(0.002)

    cam = threading.Thread(target=camera)
    cam.start()
    try:
        assert wait_until(lambda: len(sent) > 20)
        assert est.calls == 0  # frames flow, nothing requested: no inference
        answers = [gate.ask(WAIT_S) for _ in range(3)]
    finally:
        stop.set()
        cam.join(WAIT_S)
        worker.stop()
    assert all(a.success for a in answers), [a.message for a in answers]
    assert est.calls == 3
    stamps = [conv.stamp_to_ns(a.outputs[""].detections.header.stamp) for a in answers]
    assert stamps == sorted(set(stamps))  # three different, newer frames
    fields = object_response_fields(answers[0], "")
    resp = msgs.new("featmap_ros/msg/Estimate_Response", **fields)
    assert resp.success and resp.message == "ok"
    assert resp.detections.detections[0].results[0].hypothesis.class_id == "ape"
    back = store.deserialize_cdr(store.serialize_cdr(resp, resp.__msgtype__), resp.__msgtype__)
    assert back.detections.header.frame_id == "cam_optical"


def test_failed_answers_fill_the_responses_with_defaults(msgs):
    a = Answer(False, "no synchronised frame processed within 1 s")
    r = msgs.new("featmap_ros/msg/Estimate_Response", **object_response_fields(a, ""))
    assert not r.success and r.message.startswith("no synchronised") and r.detections.detections == []
    h = msgs.new("featmap_ros/msg/EstimateHand_Response", **hand_response_fields(a))
    assert not h.success and len(h.hand_pose.joints) == 0


@pytest.mark.parametrize("name", sorted(FEATMAP_SRVS))
def test_service_definitions_match_the_srv_files(name):
    assert (REPO / "srv" / f"{name}.srv").read_text() == FEATMAP_SRVS[name]
    halves = srv_halves(name, FEATMAP_SRVS[name])
    assert "timeout_s" in halves[f"featmap_ros/msg/{name}_Request"]
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert f'"srv/{name}.srv"' in cmake
    with pytest.raises(InputError, match="no '---'"):
        srv_halves(name, "float64 x\n")
