"""The nodes' decisions without rclpy: parameters, frame dropping, image windows, diagnostics,
and the per-frame pipelines on real ROS message types (rosbags) with a test double estimator."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags (pip) provides the ROS message types these tests build")

from featmap_ros.errors import InputError
from featmap_ros.geometry import look_at_R_m2c, project_points
from featmap_ros.results import HandPose, ObjectPose
from featmap_ros.ros import conversions as conv
from featmap_ros.ros import params as P
from featmap_ros.ros.diagnostics import ErrorThrottle, InputWatchdog, RateLatencyStats, diagnostic_array
from featmap_ros.ros.msg_defs import featmap_typestore
from featmap_ros.ros.pipeline import HandPipeline, HandSettings, ObjectPipeline, ObjectSettings, mesh_uris, uri_exists
from featmap_ros.crops import Window, ground_truth_window
from featmap_ros.ros.roi import Tracker, check_roi_source, keep_poses, select_rois, window_from_pose
from featmap_ros.ros.worker import FrameWorker

REPO = Path(__file__).resolve().parents[1]
K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
HW = (480, 640)


@pytest.fixture(scope="module")
def store():
    return featmap_typestore("jazzy")


@pytest.fixture(scope="module")
def msgs(store):
    return conv.RosbagsMessages(store)


def test_no_rclpy_needed():
    """The decision logic and the conversions import without rclpy (checked in a fresh interpreter)."""
    code = ("import sys, featmap_ros.ros.pipeline, featmap_ros.ros.worker, featmap_ros.ros.diagnostics, "
            "featmap_ros.ros.params, featmap_ros.ros.roi, featmap_ros.ros.conversions; "
            "sys.exit(int(any(m.split('.')[0] in ('rclpy', 'message_filters', 'tf2_ros') for m in sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("node,specs", [("object_pose_node", P.OBJECT_NODE_PARAMS), ("hand_pose_node", P.HAND_NODE_PARAMS)])
def test_config_files_hold_every_parameter_and_validate(node, specs):
    values = P.load_param_file(REPO / "config" / f"{node}.yaml", node)
    assert set(values) == {s.name for s in specs}
    checked = P.validate_params(specs, values)
    for s in specs:  # the shipped file states the defaults
        assert checked[s.name] == s.default, s.name


def test_specs_are_declared_once_with_descriptions():
    for specs in (P.OBJECT_NODE_PARAMS, P.HAND_NODE_PARAMS):
        names = [s.name for s in specs]
        assert len(names) == len(set(names))
        for s in specs:
            assert s.description and s.type in (bool, int, float, str)
            s.check(s.default)


@pytest.mark.parametrize("values,msg", [
    ({"min_score": 1.5}, r"parameter 'min_score': 1.5 is outside \[0.0, 1.0\]"),
    ({"roi_source": "magic"}, r"parameter 'roi_source': 'magic' is not one of"),
    ({"qos.depth": 0}, r"parameter 'qos.depth': 0 is outside"),
    ({"qos.depth": 2.5}, r"parameter 'qos.depth': expected int, got float"),
    ({"publish_tf": 1}, r"parameter 'publish_tf': expected bool"),
    ({"device": "gpu"}, r"parameter 'device': 'gpu' does not match"),
    ({"min_scor": 0.1}, r"parameter 'min_scor': unknown"),
])
def test_wrong_parameters_are_named(values, msg):
    with pytest.raises(InputError, match=msg):
        P.validate_params(P.OBJECT_NODE_PARAMS, values, where="")


def test_int_is_accepted_for_float_and_yaml_errors_named(tmp_path):
    assert P.validate_params(P.OBJECT_NODE_PARAMS, {"sync.slop_s": 1})["sync.slop_s"] == 1.0
    f = tmp_path / "p.yaml"
    f.write_text("other_node:\n  ros__parameters:\n    x: 1\n")
    with pytest.raises(InputError, match="no parameters for 'object_pose_node'"):
        P.load_param_file(f, "object_pose_node")
    f.write_text("object_pose_node:\n  ros__parameters:\n    min_score: 0.5\n")
    assert P.load_param_file(f, "object_pose_node") == {"min_score": 0.5}


def test_weights_and_objects(tmp_path):
    with pytest.raises(InputError, match=r"parameter 'weights': .*nope\.pt does not exist"):
        P.resolve_weights(str(tmp_path / "nope.pt"), "object")
    ck = tmp_path / "w.pt"
    ck.write_bytes(b"x")
    assert P.resolve_weights(str(ck), "object") == ck
    assert P.parse_objects(" ape, can ,") == ("ape", "can")
    assert P.check_objects((), ["ape", "can"]) == ("ape", "can")
    with pytest.raises(InputError, match=r"parameter 'objects': \['duck'\] not in the checkpoint"):
        P.check_objects(("duck",), ["ape", "can"])


# ---------------------------------------------------------------- worker


def test_worker_drops_frames_while_busy_and_survives_errors():
    release = threading.Event()
    done, errors = [], []

    def process(item):
        if item == "bad":
            raise ValueError("boom")
        release.wait(5)
        done.append(item)

    w = FrameWorker(process, lambda item, e: errors.append((item, str(e))))
    try:
        assert w.offer(1)
        time.sleep(0.05)  # let the worker take it
        assert not w.offer(2) and not w.offer(3)  # busy: dropped, not queued
        assert w.busy
        release.set()
        assert w.wait_idle(5)
        assert done == [1] and (w.accepted, w.dropped, w.processed) == (1, 2, 1)
        assert w.offer("bad") and w.wait_idle(5)
        assert errors == [("bad", "boom")] and w.failed == 1
        assert w.offer(4) and w.wait_idle(5)  # still running after the error
        assert done == [1, 4]
    finally:
        w.stop()
    assert not w.offer(5)


# ---------------------------------------------------------------- image windows


def make_pose(name="ape", t=(0.0, 0.0, 0.8), score=0.9):
    return ObjectPose(object_name=name, obj_id=1, R_m2c=look_at_R_m2c(np.array([0.2, -0.4, 0.9])),
                      t_m2c_m=np.array(t, float), score=score, extents_m=np.array([0.08, 0.08, 0.1]),
                      center_m=np.zeros(3))


def assert_same_window(got, want, tol=1e-6):
    assert isinstance(got, Window), got
    assert (got.center_u, got.center_v, got.side) == pytest.approx((want.center_u, want.center_v, want.side), abs=tol)


def test_window_from_pose_is_the_ground_truth_window():
    p = make_pose()
    win = window_from_pose(p, K, HW)
    centre_uv = project_points(p.t_m2c_m[None], K)[0]
    x, y, side, _ = win.as_xywh()
    assert x < centre_uv[0] < x + side and y < centre_uv[1] < y + side
    # an 8-10 cm box at 0.8 m spans roughly 572 * 0.1 / 0.8 ~ 70 px; its diagonal view up to ~110 px, +10 % margin
    assert 50 < side < 145
    # the training window, exactly: the square 1.1 x the projected box corners' larger extent
    corners_m = p.box_corners_m()
    ref = ground_truth_window(corners_m, p.R_m2c, p.t_m2c_m, K)
    assert (win.center_u, win.center_v, win.side) == pytest.approx((ref.center_u, ref.center_v, ref.side), abs=1e-9)
    uv = project_points(p.box_corners_c_m(), K)
    assert win.side == pytest.approx(1.1 * max(np.ptp(uv[:, 0]), np.ptp(uv[:, 1])))
    assert window_from_pose(make_pose(t=(0, 0, -0.5)), K, HW) is None  # behind the camera
    assert window_from_pose(make_pose(t=(5.0, 0, 0.8)), K, HW) is None  # outside the image


def test_select_rois_per_source():
    objs = ("ape", "can")
    assert select_rois("localiser", objs, K, HW, 0.0) is None
    dets = [("ape", np.array([1.0, 2, 3, 4])), ("duck", np.array([5.0, 6, 7, 8]))]
    got = select_rois("detections", objs, K, HW, 0.0, detections=dets)
    assert [n for n, _ in got] == ["ape"]
    assert select_rois("detections", objs, K, HW, 0.0, detections=[]) == []
    gt = select_rois("ground_truth", objs, K, HW, 0.0, ground_truth=[make_pose(), make_pose("duck")])
    assert [n for n, _ in gt] == ["ape"]
    assert isinstance(gt[0][1], Window) and gt[0][1] == window_from_pose(make_pose(), K, HW)
    with pytest.raises(ValueError):
        select_rois("psychic", objs, K, HW, 0.0)


def test_tracking_falls_back_to_the_localiser_when_lost():
    tr = Tracker()
    objs = ("ape",)
    kw = dict(max_age_s=0.5, min_score=0.3)
    assert select_rois("tracking", objs, K, HW, 10.0, tracker=tr, **kw) is None  # never seen
    tr.update([make_pose(score=0.9)], 10.0)
    rois = select_rois("tracking", objs, K, HW, 10.2, tracker=tr, **kw)
    assert rois is not None and rois[0][0] == "ape"
    assert select_rois("tracking", objs, K, HW, 10.7, tracker=tr, **kw) is None  # too old
    assert select_rois("tracking", objs, K, HW, 9.0, tracker=tr, **kw) is None  # replay jumped back
    tr.update([make_pose(score=0.1)], 11.0)
    assert select_rois("tracking", objs, K, HW, 11.1, tracker=tr, **kw) is None  # low score
    assert select_rois("tracking", ("ape", "can"), K, HW, 11.1, tracker=tr, max_age_s=1, min_score=0) is None


def test_roi_source_needs_a_localiser_for_localiser_and_tracking():
    assert check_roi_source("ground_truth", False) == "ground_truth"
    assert check_roi_source("tracking", True) == "tracking"
    with pytest.raises(InputError, match=r"parameter 'roi_source': 'localiser' needs the built-in localiser"):
        check_roi_source("localiser", False)
    with pytest.raises(InputError, match=r"parameter 'roi_source': 'tracking' needs"):
        check_roi_source("tracking", False)


def test_keep_poses_filters():
    poses = [make_pose(score=0.2), make_pose("can", score=0.9), make_pose("duck"), make_pose(t=(np.nan, 0, 1))]
    kept = keep_poses(poses, ("ape", "can"), 0.5)
    assert [p.object_name for p in kept] == ["can"]


# ---------------------------------------------------------------- diagnostics


def test_rate_latency_stats():
    s = RateLatencyStats(window_s=10.0)
    for i in range(11):  # 10 Hz for one second
        s.record(100.0 + 0.1 * i, latency_s=0.05, processing_s=0.04, conversion_s=0.01)
    out = s.summary(101.0)
    assert out["rate_hz"] == pytest.approx(10.0)
    assert out["latency_ms_mean"] == pytest.approx(50.0)
    assert out["conversion_share"] == pytest.approx(0.25)
    assert s.summary(200.0)["frames_in_window"] == 0


def test_error_throttle_counts_held_messages():
    th = ErrorThrottle(5.0)
    assert th.should_log("image.step", 0.0) == (True, 0)
    assert th.should_log("image.step", 1.0) == (False, 0)
    assert th.should_log("image.step", 2.0) == (False, 0)
    assert th.should_log("camera_info.k", 2.0) == (True, 0)  # another kind is not held back
    assert th.should_log("image.step", 5.5) == (True, 2)


def test_watchdog_names_the_missing_input():
    wd = InputWatchdog(["image", "camera_info"], timeout_s=2.0, slop_s=0.05)
    assert wd.check(0.0) is None  # nothing yet: idle
    wd.saw("image", 1.0)
    msg = wd.check(1.5)
    assert "nothing on ['camera_info']" in msg
    wd.saw("camera_info", 1.6)
    assert "stamps never agree within sync.slop_s = 0.05" in wd.check(1.7)
    wd.synced(1.8)
    assert wd.check(2.0) is None


def test_diagnostic_array_message(store, msgs):
    arr = diagnostic_array(msgs, conv.make_header(msgs, 5, ""), "object_pose_node", "object_pose_node", "WARN", "slow",
                           {"rate_hz": 9.87654, "frames_dropped_busy": 3})
    back = store.deserialize_cdr(store.serialize_cdr(arr, arr.__msgtype__), arr.__msgtype__)
    st = back.status[0]
    assert st.level == 1 and st.message == "slow"
    assert {kv.key: kv.value for kv in st.values} == {"rate_hz": "9.877", "frames_dropped_busy": "3"}


# ---------------------------------------------------------------- pipelines


class FakeObjectEstimator:
    """Test double with the estimator's interface: a fixed pose per asked-for object."""

    object_names = ["ape", "can"]
    extents_m = np.array([[0.08, 0.08, 0.1], [0.1, 0.1, 0.15]])
    center_m = np.zeros((2, 3))

    def __init__(self):
        self.calls = []

    def estimate(self, image_rgb, K, boxes=None):
        assert image_rgb.dtype == np.uint8 and image_rgb.shape == (480, 640, 3)
        self.calls.append(boxes)
        names = self.object_names if boxes is None else [n for n, _ in boxes]
        return [make_pose(n, t=(0.05 * i, 0.0, 0.8), score=0.8) for i, n in enumerate(names)]


def frame(msgs, ns=1_000_000_123, frame_id="camera_color_optical_frame", encoding="bgr8", info_k=None, w=640):
    h = conv.make_header(msgs, ns, frame_id)
    img = conv.numpy_to_image(msgs, np.zeros((480, w, 3), np.uint8), encoding, h)
    from featmap_ros.geometry import CameraModel

    info = conv.camera_model_to_info(msgs, CameraModel(K, 640, 480), h)
    if info_k is not None:
        info.k = np.asarray(info_k, np.float64)
    return img, info


def settings(**kw):
    values = P.validate_params(P.OBJECT_NODE_PARAMS, kw)
    return ObjectSettings.from_params(values, FakeObjectEstimator.object_names)


def test_object_pipeline_outputs_are_stamped_with_the_input_header(store, msgs):
    est = FakeObjectEstimator()
    pipe = ObjectPipeline(est, msgs, settings())
    img, info = frame(msgs)
    out = pipe.process(img, info)
    assert est.calls == [None]  # localiser
    for m in [out.detections, *out.poses.values(), *out.transforms, *out.markers.markers]:
        assert m.header.frame_id == "camera_color_optical_frame"
        assert conv.stamp_to_ns(m.header.stamp) == 1_000_000_123
        store.serialize_cdr(m, m.__msgtype__)
    assert sorted(out.poses) == ["ape", "can"]
    assert [t.child_frame_id for t in out.transforms] == ["featmap/ape", "featmap/can"]
    assert out.debug_image is None
    assert set(out.timings) == {"convert_in_s", "rois_s", "estimate_s", "filter_s", "convert_out_s", "debug_s"}
    out = pipe.process(img, info, want_debug=True)
    assert out.debug_image.encoding == "rgb8" and out.debug_image.height == 480
    assert conv.image_to_rgb(out.debug_image).any()  # boxes were drawn


def test_object_pipeline_settings(msgs):
    pipe = ObjectPipeline(FakeObjectEstimator(), msgs, settings(objects="can", min_score=0.5, publish_tf=False,
                                                                 **{"markers.mesh_resource": ""}))
    out = pipe.process(*frame(msgs))
    assert list(out.poses) == ["can"] and out.transforms == []
    assert [m.ns for m in out.markers.markers] == ["", "can/box"]
    pipe.settings = settings(min_score=0.9)
    assert pipe.process(*frame(msgs)).poses == {}


def test_object_pipeline_windows_from_detections_and_tracking(msgs):
    est = FakeObjectEstimator()
    pipe = ObjectPipeline(est, msgs, settings(roi_source="detections"))
    img, info = frame(msgs)
    dets = conv.boxes_to_detection2d_array(msgs, [("can", np.array([10.0, 20, 30, 40]), 0.9)], img.header)
    out = pipe.process(img, info, detections_msg=dets)
    assert [n for n, _ in est.calls[-1]] == ["can"] and list(out.poses) == ["can"]
    empty = conv.boxes_to_detection2d_array(msgs, [], img.header)
    n_calls = len(est.calls)
    assert pipe.process(img, info, detections_msg=empty).poses == {}
    assert len(est.calls) == n_calls  # nothing to look at: the network is not run

    est = FakeObjectEstimator()
    pipe = ObjectPipeline(est, msgs, settings(roi_source="tracking"))
    pipe.process(*frame(msgs, ns=1_000_000_000))
    pipe.process(*frame(msgs, ns=1_100_000_000))
    assert est.calls[0] is None and [n for n, _ in est.calls[1]] == ["ape", "can"]


def test_object_pipeline_ground_truth_windows(msgs):
    est = FakeObjectEstimator()
    pipe = ObjectPipeline(est, msgs, settings(roi_source="ground_truth"))
    img, info = frame(msgs)
    gt = conv.object_poses_to_detection3d_array(msgs, [make_pose("ape")], img.header)
    pipe.process(img, info, ground_truth_msg=gt)
    assert_same_window(est.calls[-1][0][1], window_from_pose(make_pose("ape"), K, HW))
    # a player that leaves bbox.size at zero: the model box of the checkpoint is used
    bare = make_pose("ape")
    bare.extents_m = np.zeros(3)
    n_calls = len(est.calls)
    pipe.process(img, info, ground_truth_msg=conv.object_poses_to_detection3d_array(msgs, [bare], img.header))
    assert len(est.calls) == n_calls + 1
    assert_same_window(est.calls[-1][0][1], window_from_pose(make_pose("ape"), K, HW))


@pytest.mark.parametrize("bad,field", [
    (dict(encoding="rgb8", w=320), r"image\.width/height: 320x480 but camera_info says 640x480"),
    (dict(info_k=np.zeros(9)), r"camera_info\.k"),
])
def test_object_pipeline_bad_input_names_the_field(msgs, bad, field):
    est = FakeObjectEstimator()
    pipe = ObjectPipeline(est, msgs, settings())
    with pytest.raises(conv.ConversionError, match=field):
        pipe.process(*frame(msgs, **bad))
    assert est.calls == []  # refused before the network


def test_mesh_uris_from_the_template(tmp_path):
    (tmp_path / "meshes").mkdir()
    (tmp_path / "meshes" / "obj_000001.ply").write_text("ply")
    share = {"featmap_ros": str(tmp_path)}
    exists = lambda uri: uri_exists(uri, share.get)  # noqa: E731
    got, missing = mesh_uris("package://featmap_ros/meshes/obj_{obj_id:06d}.ply", ["ape", "can"], {"ape": 1, "can": 5}, exists)
    assert got == {"ape": "package://featmap_ros/meshes/obj_000001.ply"}
    assert missing == ["package://featmap_ros/meshes/obj_000005.ply"]
    assert mesh_uris("package://featmap_ros/meshes/{object}.ply", ["ape"]) == ({"ape": "package://featmap_ros/meshes/ape.ply"}, [])
    assert not uri_exists("package://other_pkg/x.ply", share.get)
    assert uri_exists(f"file://{tmp_path}/meshes/obj_000001.ply", share.get)
    assert mesh_uris("", ["ape"]) == ({}, [])
    with pytest.raises(InputError, match=r"parameter 'markers.mesh_resource': .* does not format"):
        mesh_uris("package://x/{name}.ply", ["ape"])


def test_marker_meshes_fall_back_to_the_mesh_root(tmp_path, msgs):
    """A BOP folder (refine.mesh_root / dataset_root): the package has no ape.ply, the models/
    folder has obj_000001.ply: the marker draws that file; can's model is missing too: a box."""
    models = tmp_path / "lmo" / "models"
    models.mkdir(parents=True)
    (models / "obj_000001.ply").write_text("ply")
    share = {"featmap_ros": str(tmp_path / "share")}
    exists = lambda uri: uri_exists(uri, share.get)  # noqa: E731
    files = {"ape": str(models / "obj_000001.ply"), "can": str(models / "obj_000005.ply")}
    got, missing = mesh_uris("package://featmap_ros/meshes/{object}.ply", ["ape", "can"], None, exists, files)
    assert got == {"ape": f"file://{models}/obj_000001.ply"} and uri_exists(got["ape"], share.get)
    assert missing == ["package://featmap_ros/meshes/can.ply"]
    values = P.validate_params(P.OBJECT_NODE_PARAMS, {})
    s = ObjectSettings.from_params(values, ["ape", "can"], {"ape": 1, "can": 5}, exists, files)
    assert s.meshes == got and s.mesh_scale == 0.001  # BOP models are in millimetres, as the package's
    # the markers carry it: a MESH_RESOURCE for ape, boxes (LINE_LIST) for both
    out = ObjectPipeline(FakeObjectEstimator(), msgs, s).process(*frame(msgs))
    M = msgs.cls("visualization_msgs/msg/Marker")
    meshes = {m.ns: m.mesh_resource for m in out.markers.markers if m.type == M.MESH_RESOURCE}
    assert meshes == {"ape/mesh": got["ape"]}
    assert {m.ns for m in out.markers.markers if m.type == M.LINE_LIST} == {"ape/box", "can/box"}


class FakeHandEstimator:
    def __init__(self, hand):
        self.hand = hand

    def estimate(self, depth_m, K):
        assert depth_m.dtype == np.float32 and depth_m.ndim == 2
        return self.hand


def depth_frame(msgs, depth_mm):
    h = conv.make_header(msgs, 2_000_000_000, "camera_depth_optical_frame")
    from featmap_ros.geometry import CameraModel

    return (conv.numpy_to_image(msgs, depth_mm, "16UC1", h),
            conv.camera_model_to_info(msgs, CameraModel(K, depth_mm.shape[1], depth_mm.shape[0]), h))


def test_hand_pipeline(store, msgs):
    names = ["palm_center", "thumb_tip"]
    hand = HandPose(joint_names=names, joints_m=np.array([[0.01, 0.02, 0.5], [0.05, 0.0, 0.48]]), score=0.6)
    values = P.validate_params(P.HAND_NODE_PARAMS, {})
    pipe = HandPipeline(FakeHandEstimator(hand), msgs, HandSettings.from_params(values))
    depth, info = depth_frame(msgs, np.full((480, 640), 500, np.uint16))
    out = pipe.process(depth, info, want_debug=True)
    assert out.hand_pose.header.frame_id == "camera_depth_optical_frame"
    store.serialize_cdr(out.hand_pose, out.hand_pose.__msgtype__)
    assert out.transform.child_frame_id == "featmap/hand"
    assert out.transform.transform.translation.z == pytest.approx(0.5)
    assert out.debug_image is not None and out.debug_image.width == 640
    pipe.settings = HandSettings.from_params({**values, "min_score": 0.9})
    out = pipe.process(depth, info)
    assert out.result is None and out.transform is None and len(out.markers.markers) == 1  # cleared
    assert list(out.hand_pose.joints) == [] and out.hand_pose.score == 0.0  # still one message per frame
    assert conv.stamp_to_ns(out.hand_pose.header.stamp) == 2_000_000_000
    store.serialize_cdr(out.hand_pose, out.hand_pose.__msgtype__)
    with pytest.raises(conv.ConversionError, match=r"depth\.data: no valid depth"):
        pipe.process(*depth_frame(msgs, np.zeros((480, 640), np.uint16)))


# ---------------------------------------------------------------- object pipeline: depth and the pose filter


class FakeDepthEstimator(FakeObjectEstimator):
    """Also takes ``depth_m`` (recorded) and says which objects it cannot refine."""

    def __init__(self, no_mesh=()):
        super().__init__()
        self.depths = []
        self.no_mesh = set(no_mesh)

    def estimate(self, image_rgb, K, boxes=None, depth_m=None):
        self.depths.append(depth_m)
        poses = super().estimate(image_rgb, K, boxes)
        for p in poses if depth_m is not None else []:
            p.refined, p.refine_fitness = True, 0.9
        return poses

    def refine_model(self, name):
        return f"no mesh for {name!r}" if name in self.no_mesh else object()


def depth_msgs(msgs, depth, encoding, ns=1_000_000_123, k=None):
    h = conv.make_header(msgs, ns, "camera_color_optical_frame")
    from featmap_ros.geometry import CameraModel

    info = conv.camera_model_to_info(msgs, CameraModel(K if k is None else k, depth.shape[1], depth.shape[0]), h)
    return conv.numpy_to_image(msgs, depth, encoding, h), info


def test_object_pipeline_refines_with_16UC1_and_32FC1_depth(msgs):
    est = FakeDepthEstimator()
    pipe = ObjectPipeline(est, msgs, settings())
    img, info = frame(msgs)
    mm = np.full((480, 640), 800, np.uint16)
    mm[:10] = 0  # invalid
    out = pipe.process(img, info, depth_msg=depth_msgs(msgs, mm, "16UC1")[0], depth_info_msg=depth_msgs(msgs, mm, "16UC1")[1])
    assert out.warnings == [] and all(p.refined for p in out.results)
    d = est.depths[-1]
    assert d.dtype == np.float32 and d.shape == (480, 640)
    assert d[100, 100] == pytest.approx(0.8) and np.isnan(d[0, 0])
    m = np.full((480, 640), 0.8, np.float32)
    out = pipe.process(img, info, depth_msg=depth_msgs(msgs, m, "32FC1")[0])  # no depth_camera_info: K not checked
    assert out.warnings == [] and est.depths[-1][5, 5] == pytest.approx(0.8)
    # without depth nothing changes: the estimator is called as before (no depth_m)
    out = pipe.process(img, info)
    assert est.depths[-1] is None and not any(p.refined for p in out.results)
    # off: the depth is not used
    pipe.settings = settings(**{"refine.depth": "off"})
    pipe.process(img, info, depth_msg=depth_msgs(msgs, m, "32FC1")[0])
    assert est.depths[-1] is None


@pytest.mark.parametrize("make,field", [
    (lambda msgs: depth_msgs(msgs, np.full((240, 320), 800, np.uint16), "16UC1"),
     r"depth\.width/height: 320x240 but the colour image is 640x480: the depth must be registered to the colour "
     r"image \(aligned to the colour camera: same size and K, e\.g\. RealSense aligned_depth_to_color\)"),
    (lambda msgs: depth_msgs(msgs, np.full((480, 640, 3), 80, np.uint8), "rgb8"), r"depth\.encoding: 'rgb8' is not a depth encoding"),
    (lambda msgs: depth_msgs(msgs, np.full((480, 640), np.nan, np.float32), "32FC1"), r"depth\.data: no valid depth pixel"),
    (lambda msgs: depth_msgs(msgs, np.full((480, 640), 800, np.uint16), "16UC1", k=K * [[1.1], [1.1], [1]]),
     r"depth_camera_info\.k differs from camera_info\.k: the depth must be registered"),
])
def test_object_pipeline_bad_depth_keeps_the_colour_pose_with_a_named_warning(msgs, make, field):
    est = FakeDepthEstimator()
    pipe = ObjectPipeline(est, msgs, settings())
    img, info = frame(msgs)
    depth, depth_info = make(msgs)
    out = pipe.process(img, info, depth_msg=depth, depth_info_msg=depth_info)
    assert len(out.warnings) == 1 and re.match(field, out.warnings[0]), out.warnings
    assert out.warnings[0].endswith("colour poses published, not refined")
    assert est.depths == [None] and sorted(out.poses) == ["ape", "can"]  # colour poses, still published
    assert not any(p.refined for p in out.results)


def test_object_pipeline_depth_warnings_for_objects_without_a_mesh_and_on_without_depth(msgs):
    est = FakeDepthEstimator(no_mesh=["can"])
    pipe = ObjectPipeline(est, msgs, settings())
    img, info = frame(msgs)
    out = pipe.process(img, info, depth_msg=depth_msgs(msgs, np.full((480, 640), 800, np.uint16), "16UC1")[0])
    assert out.warnings == ["refine.depth: no mesh for 'can'"]
    assert pipe.prepare_refinement() == ["refine.depth: no mesh for 'can'"]
    pipe.settings = settings(**{"refine.depth": "on"})
    out = pipe.process(img, info)
    assert out.warnings == ["depth: refine.depth is 'on' but the frame came without a depth image: colour poses published, not refined"]
    # an estimator without depth refinement says so
    pipe = ObjectPipeline(FakeObjectEstimator(), msgs, settings())
    assert "has no depth refinement" in pipe.prepare_refinement()[0]


class NoisyEstimator(FakeObjectEstimator):
    """Poses of a still object (ape at 0.8 m) with 3 mm noise per axis, independent per frame;
    with ``covariance``, each pose says so (3 mm / 1 deg per axis, all of it jitter for the
    Kalman filter with ``jitter_share`` 1)."""

    def __init__(self, covariance=False):
        super().__init__()
        self.rng = np.random.default_rng(0)
        self.covariance = np.diag([0.003**2] * 3 + [np.radians(1.0) ** 2] * 3) if covariance else None

    def estimate(self, image_rgb, K, boxes=None):
        p = make_pose("ape", t=np.array([0.0, 0.0, 0.8]) + self.rng.normal(0, 0.003, 3))
        p.covariance = None if self.covariance is None else self.covariance.copy()
        return [p]


def positions(det_msg):
    return np.array([[d.results[0].pose.pose.position.x, d.results[0].pose.pose.position.y,
                      d.results[0].pose.pose.position.z] for d in det_msg.detections])


#: the Kalman filter told the NoisyEstimator's noise (the One-Euro filter needs no telling)
FILTER_KINDS = {"kalman": {"filter.kind": "kalman", "filter.meas_sigma_m": 0.003},
                "one_euro": {"filter.kind": "one_euro"}}


@pytest.mark.parametrize("kind", sorted(FILTER_KINDS))
def test_object_pipeline_filters_poses_over_time_and_keeps_the_raw_ones(store, msgs, kind):
    pipe = ObjectPipeline(NoisyEstimator(), msgs, settings(**FILTER_KINDS[kind]))
    assert pipe.pose_filter.config.kind == kind
    raw, filt = [], []
    for i in range(60):  # 2 s at 30 Hz, stamps from the input header
        out = pipe.process(*frame(msgs, ns=1_000_000_000 + i * 33_333_333))
        r, f = positions(out.detections_raw)[0], positions(out.detections)[0]
        np.testing.assert_allclose(r, out.raw_results[0].t_m2c_m)
        np.testing.assert_allclose(f, out.results[0].t_m2c_m)
        assert out.poses["ape"].pose.position.z == pytest.approx(f[2])  # pose topic and TF: the filtered pose
        assert out.transforms[0].transform.translation.x == pytest.approx(f[0])
        assert conv.stamp_to_ns(out.detections_raw.header.stamp) == 1_000_000_000 + i * 33_333_333
        store.serialize_cdr(out.detections_raw, out.detections_raw.__msgtype__)
        raw.append(r)
        filt.append(f)
    raw, filt = np.array(raw), np.array(filt)
    np.testing.assert_array_equal(raw[0], filt[0])  # a track starts at its first pose
    assert np.std(raw[20:], axis=0).mean() > 3.0 * np.std(filt[20:], axis=0).mean()
    # the filter off: both outputs are the per-frame poses
    pipe.settings = settings(**{"filter.enabled": False})
    out = pipe.process(*frame(msgs, ns=3_000_000_000))
    np.testing.assert_array_equal(positions(out.detections), positions(out.detections_raw))
    # new constants (ros2 param set) start the tracks over
    pipe.settings = settings(**{**FILTER_KINDS[kind], "filter.min_cutoff": 1.0})
    out = pipe.process(*frame(msgs, ns=3_100_000_000))
    np.testing.assert_array_equal(positions(out.detections), positions(out.detections_raw))
    assert pipe.pose_filter.config.trans_min_cutoff_hz == 1.0 == pipe.pose_filter.config.rot_min_cutoff_hz


def _covariance_of(pwc) -> np.ndarray:
    c = np.asarray(pwc.covariance, dtype=np.float64)
    assert c.shape == (36,)
    return c.reshape(6, 6)


def test_object_pipeline_publishes_the_filter_covariance(store, msgs):
    """Detection3D results and ~/<object>/poses_cov carry the Kalman filter's covariance: symmetric
    PSD, the same in both, shrinking at rest below the per-frame one; the raw detections carry the
    estimator's. Through CDR and back."""
    pipe = ObjectPipeline(NoisyEstimator(covariance=True), msgs, settings(**{"filter.kind": "kalman"}))
    pipe.settings = replace(pipe.settings, filter_config=replace(pipe.settings.filter_config, jitter_share=1.0))
    pipe.pose_filter = type(pipe.pose_filter)(pipe.settings.filter_config)
    covs = []
    for i in range(30):
        out = pipe.process(*frame(msgs, ns=1_000_000_000 + i * 33_333_333))
        det = store.deserialize_cdr(store.serialize_cdr(out.detections, out.detections.__msgtype__), out.detections.__msgtype__)
        c = _covariance_of(det.detections[0].results[0].pose)
        np.testing.assert_allclose(c, c.T, atol=0)
        assert np.linalg.eigvalsh(c).min() > 0
        pc = out.poses_cov["ape"]
        assert pc.__msgtype__ == "geometry_msgs/msg/PoseWithCovarianceStamped" and pc.header.frame_id == out.detections.header.frame_id
        np.testing.assert_array_equal(_covariance_of(pc.pose), c)
        assert pc.pose.pose.position.z == pytest.approx(out.results[0].t_m2c_m[2])
        np.testing.assert_allclose(_covariance_of(out.detections_raw.detections[0].results[0].pose), NoisyEstimator(True).covariance)
        covs.append(np.diag(c))
    np.testing.assert_allclose(covs[0], np.diag(NoisyEstimator(True).covariance), rtol=1e-9)  # a track's first pose
    assert np.all(covs[-1] < 0.3 * covs[0])  # averaging at rest
    # read back as ObjectPose (the evaluator's way in)
    back = conv.detection3d_array_to_object_poses(det)
    np.testing.assert_array_equal(back[0].covariance, c)


def test_unknown_covariance_is_published_as_zeros(msgs):
    out = ObjectPipeline(NoisyEstimator(), msgs, settings(**{"filter.kind": "one_euro"})).process(*frame(msgs))
    assert not np.any(_covariance_of(out.detections.detections[0].results[0].pose))
    assert not np.any(_covariance_of(out.poses_cov["ape"].pose))
    assert conv.detection3d_array_to_object_poses(out.detections)[0].covariance is None


def test_object_pipeline_with_the_estimator_and_ray_cast_depth(msgs, tmp_path, monkeypatch):
    """The real estimator (a box, its network replaced by the corners of a colour pose 2-4 cm off)
    and a 32FC1 depth message of the box: the published pose is the refined one; a depth that
    shows only a far wall is refused and the colour pose goes out, with the refusal's kind."""
    import trimesh
    from scipy.spatial.transform import Rotation

    from featmap_ros import crops, geometry
    from featmap_ros.data.bop import Mesh, save_mesh
    from featmap_ros.estimators import ObjectPoseEstimator
    from featmap_ros.nets import ModelConfig, build_model
    from test_depth_refine import BOX, R_GT, T_GT, in_camera, render_depth

    ply = tmp_path / "box.ply"
    save_mesh(ply, Mesh(np.asarray(BOX.vertices), np.asarray(BOX.faces), None, "box"))
    corners = geometry.box_corners([-0.05, -0.035, -0.025], [0.10, 0.07, 0.05])
    meta = {"object_names": ["ape"], "obj_ids": [1], "corners_m": [corners.tolist()], "window_scale": 1.2}
    model = build_model(ModelConfig(backbone="small", input_size=32, feature_dim=16, small_channels=[4, 8], n_objects=1,
                                    pretrained=False))
    est = ObjectPoseEstimator(model, meta, device="cpu", mesh_sources=[str(ply)])
    R0 = Rotation.from_rotvec([0.03, -0.02, 0.04]).as_matrix() @ R_GT
    t0 = T_GT * 1.05  # 3 cm too far along the ray
    px = geometry.project_model_points(corners, R0, t0, K)
    box = np.r_[px.min(0), px.max(0) - px.min(0)]
    win = crops.window_from_bbox(box, scale=1.2)
    monkeypatch.setattr(est, "_infer", lambda b: crops.image_to_crop_normalised(px, win)[None, None].repeat(len(b), 0))
    pipe = ObjectPipeline(est, msgs, settings(roi_source="detections", objects="ape"))
    img, info = frame(msgs)
    dets = conv.boxes_to_detection2d_array(msgs, [("ape", box, 0.9)], img.header)
    depth = render_depth([in_camera(BOX, R_GT, T_GT)]).astype(np.float32)
    d_msg, d_info = depth_msgs(msgs, depth, "32FC1")
    out = pipe.process(img, info, detections_msg=dets, depth_msg=d_msg, depth_info_msg=d_info)
    assert out.warnings == [] and out.raw_results[0].refined
    p = out.poses["ape"].pose.position
    assert np.linalg.norm(np.array([p.x, p.y, p.z]) - T_GT) < 0.003  # the colour pose was 30 mm off
    wall = np.full((480, 640), 1.6, np.float32)
    out = pipe.process(*frame(msgs, ns=5_000_000_000), detections_msg=dets, depth_msg=depth_msgs(msgs, wall, "32FC1")[0])
    assert out.warnings == ["depth: refinement of 'ape' refused (measured depth N m behind the object > max N m): "
                            "colour pose published"]
    np.testing.assert_allclose(out.raw_results[0].t_m2c_m, t0, atol=1e-4)


def test_lmo_node_config_names_the_bundled_objects_and_its_localiser():
    """config/lmo_object_pose_node.yaml over the defaults: valid parameters, the bundled lmo.pt by
    name, objects the checkpoint knows, and a localiser in it (what roi_source: localiser needs)."""
    from featmap_ros.checkpoint import ObjectMeta, load_checkpoint

    values = P.load_param_file(REPO / "config" / "object_pose_node.yaml", "object_pose_node")
    lmo = P.load_param_file(REPO / "config" / "lmo_object_pose_node.yaml", "object_pose_node")
    assert set(lmo) <= set(values)
    checked = P.validate_params(P.OBJECT_NODE_PARAMS, {**values, **lmo})
    path = P.resolve_weights(checked["weights"], "object")
    assert path.name == "lmo.pt"
    ck = load_checkpoint(path, task="object")
    meta = ObjectMeta.from_dict(ck["meta"], str(path))
    assert set(P.parse_objects(checked["objects"])) == set(meta.object_names)
    assert checked["roi_source"] == "localiser" and ck.get("localiser") is not None
    with pytest.raises(InputError, match="parameter 'weights'"):
        P.resolve_weights("no_such_bundle", "object")
