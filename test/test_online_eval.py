"""featmap_ros/evaluation/online.py: stamp matching, metrics with known values, and equality with
``featmap eval object|hand`` on a replay of the same frames (in process, through CDR messages)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

pytest.importorskip("rosbags")

from featmap_ros import geometry
from featmap_ros.evaluation import online as online_eval
from featmap_ros.ros import online_eval as ros_online_eval
from featmap_ros.data import player
from featmap_ros.data import nyu
from featmap_ros.ros.bag import frame_messages
from featmap_ros.errors import InputError
from featmap_ros.results import HandPose, ObjectPose
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.msg_defs import featmap_typestore
from test_player import make_bop, make_nyu
from featmap_ros.ros.params import EVALUATOR_NODE_PARAMS
from featmap_ros.ros.pipeline import ObjectPipeline, ObjectSettings


@pytest.fixture(scope="module")
def store():
    return featmap_typestore("jazzy")


@pytest.fixture(scope="module")
def msgs(store):
    return conv.RosbagsMessages(store)


def through_cdr(store, msg):
    """What a subscriber receives: the message serialised and read back."""
    return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


# ------------------------------------------------------------------------------------ matcher


def test_matcher_pairs_exact_stamps_in_any_order():
    m = online_eval.StampMatcher(max_pending=10, max_lag_ns=1000)
    assert m.add_estimate(5, "e5") == []
    s = m.add_ground_truth(5, "g5")
    assert [(x.stamp_ns, x.ground_truth, x.estimate) for x in s] == [(5, "g5", "e5")]
    assert m.add_ground_truth(6, "g6") == []
    assert [(x.stamp_ns, x.estimate) for x in m.add_estimate(6, "e6")] == [(6, "e6")]
    assert m.add_estimate(7, "near miss") == [] and m.add_ground_truth(8, "g8") == []  # 7 != 8: never matched
    settled = m.finish()
    assert [(x.stamp_ns, x.estimate) for x in settled] == [(8, None)]
    assert m.unmatched_estimates == 1


def test_matcher_settles_missing_estimates_as_failures_by_lag_and_count():
    m = online_eval.StampMatcher(max_pending=3, max_lag_ns=100)
    out = []
    for s in (0, 10, 20):
        out += m.add_ground_truth(s, s)
    assert out == []
    out = m.add_ground_truth(150, 150)  # 0 and 10 and 20 are > 100 ns behind
    assert [(x.stamp_ns, x.estimate) for x in out] == [(0, None), (10, None), (20, None)]
    assert m.add_estimate(10, "late") == [] and m.late_estimates == 1
    m2 = online_eval.StampMatcher(max_pending=2, max_lag_ns=10**12)
    out = [x.stamp_ns for s in range(4) for x in m2.add_ground_truth(s, s)]
    assert out == [0, 1] and m2.pending == 2
    assert m2.add_ground_truth(3, 3) == [] and m2.duplicate_ground_truth == 1
    with pytest.raises(InputError, match="max_pending"):
        online_eval.StampMatcher(max_pending=0)


# ------------------------------------------------------------------------------------ objects


def _model(name="cube", symmetric=False):
    pts = geometry.box_corners([-0.05, -0.05, -0.05], [0.1, 0.1, 0.1])
    return online_eval.ObjectModel(name, pts, float(np.sqrt(3) * 0.1), symmetric, pts)


K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])


def _pose(name, t, R=None):
    return ObjectPose(name, 1, np.eye(3) if R is None else R, np.asarray(t, float), 1.0)


def test_object_metrics_known_values_and_missing_frames(tmp_path):
    ev = online_eval.OnlineObjectEvaluator({"cube": _model()})
    gt = [_pose("cube", [0, 0, 1.0])]
    ev.add_ground_truth(1, gt, K)
    ev.add_estimate(1, [_pose("cube", [0.001, 0, 1.0])])  # 1 mm off: ADD 1 mm, 500 * 1 mm / depth px
    ev.add_ground_truth(2, gt, K)
    ev.add_estimate(2, [_pose("cube", [0.02, 0, 1.0])])  # 2 cm = 11.5 % of the 173 mm diameter: ADD fails
    ev.add_ground_truth(3, gt, K)  # never answered
    ev.add_ground_truth(4, gt, K)
    ev.add_estimate(4, [])  # answered, found nothing
    ev.finish()
    r = ev.report()
    s = r["summary"]
    assert r["frames"] == 4 and r["frames_missed"] == 1 and s["instances"] == 4
    assert s["add_10"] == pytest.approx(0.25) and s["proj2d_5px"] == pytest.approx(0.25) and s["found"] == pytest.approx(0.5)
    recs = ev.records()
    assert recs[0].add_m == pytest.approx(0.001) and recs[0].proj2d_px == pytest.approx((0.5 / 0.95 + 0.5 / 1.05) / 2)
    assert recs[1].add_frac == pytest.approx(0.02 / (np.sqrt(3) * 0.1)) and not recs[2].found
    paths = ev.write(tmp_path / "out")
    rep = json.loads(paths[0].read_text())
    assert rep["summary"]["instances"] == 4 and rep["summary"]["median_proj2d_px"] == "inf"  # 2 of 4 missing
    rows = list(csv.DictReader(paths[1].open()))
    assert [int(r["found"]) for r in rows] == [1, 1, 0, 0] and rows[0]["object"] == "cube"
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_object_symmetric_uses_adds_and_unknown_objects_are_rejected():
    ev = online_eval.OnlineObjectEvaluator({"cube": _model(symmetric=True)})
    Rz = geometry.matrix_from_quat_xyzw(np.array([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]))  # 90 deg about z
    ev.add_ground_truth(1, [_pose("cube", [0, 0, 1.0])], K)
    ev.add_estimate(1, [_pose("cube", [0, 0, 1.0], Rz)])
    ev.finish()
    assert ev.records()[0].add_m == pytest.approx(0.0, abs=1e-12)  # a symmetric view of the cube
    with pytest.raises(InputError, match="no model"):
        ev.add_ground_truth(2, [_pose("sphere", [0, 0, 1])], K)
    with pytest.raises(InputError, match="objects"):
        online_eval.OnlineObjectEvaluator({"cube": _model()}, objects=["sphere"])


def test_hand_metrics_known_values(tmp_path):
    names = ["a", "b"]
    ev = online_eval.OnlineHandEvaluator()
    g = HandPose(names, np.array([[0, 0, 0.5], [0.01, 0, 0.5]]), 1.0)
    ev.add_ground_truth(1, g)
    ev.add_estimate(1, HandPose(["b", "a"], np.array([[0.01, 0.003, 0.5], [0, 0, 0.504]]), 1.0))  # joints by name
    ev.add_ground_truth(2, g)
    ev.finish()
    e = ev.errors_mm()
    assert np.allclose(e[0], [4.0, 3.0]) and np.all(e[1] == online_eval.MISSED_JOINT_MM)
    r = ev.report()["summary"]
    assert r["frames"] == 2 and r["missed"] == 1 and r["mean_mm"] == pytest.approx((7.0 + 2000.0) / 4)
    assert r["within_20mm"] == pytest.approx(0.5)
    paths = ev.write(tmp_path)
    rows = list(csv.DictReader(paths[1].open()))
    assert rows[0]["found"] == "1" and float(rows[0]["a_mm"]) == pytest.approx(4.0) and rows[1]["found"] == "0"


# ------------------------------------------------------------------------------------ message front


def test_message_evaluator_rejects_bad_messages_with_reasons(tmp_path, msgs):
    root = make_bop(tmp_path / "lm", n=1)
    me = ros_online_eval.make_evaluator("object", "lm", root)
    fr = player.BopSource(root).frame(0)
    out = dict(frame_messages(msgs, fr, 5))
    info, gt = out[player.TOPICS["colour_info"]], out[player.TOPICS["gt_objects"]]
    assert me.on_ground_truth(gt) is None  # held until a camera_info arrives
    assert me.on_camera_info(info) is None and me.evaluator.matcher.pending == 1
    bad_info = conv.camera_model_to_info(msgs, geometry.CameraModel(K, 640, 480, np.zeros(5)), info.header)
    bad_info.k[0] = 0.0
    assert "camera_info.k" in me.on_camera_info(bad_info)
    nan = conv.object_poses_to_detection3d_array(msgs, fr.objects, gt.header)
    nan.detections[0].results[0].pose.pose.position.x = float("nan")
    assert "NaN" in me.on_estimate(nan)
    nan.detections[0].results = []
    assert "results: empty" in me.on_estimate(nan)
    assert me.rejected == {"camera_info": 1, "estimates": 2}
    assert me.on_estimate(conv.object_poses_to_detection3d_array(msgs, fr.objects, gt.header)) is None
    assert me.summary()["add_10"] == 1.0 and me.summary()["frames"] == 1


# ------------------------------------------------------------------------------------ equality with featmap eval


def _object_estimator(root):
    from featmap_ros.data import bop
    from featmap_ros.estimators import ObjectPoseEstimator
    from featmap_ros.nets import ModelConfig, build_model

    infos = bop.load_models_info(root / "models" / "models_info.json")
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small", input_size=32, feature_dim=16, small_channels=[4, 8], n_objects=2, pretrained=False))
    with torch.no_grad():  # small outputs: corners near the crop centre, so PnP gives plausible, varied poses
        model.h.fc.weight.mul_(0.05)
    meta = {"object_names": ["ape", "eggbox"], "obj_ids": [1, 10], "corners_m": [infos[1].corners_m.tolist(), infos[10].corners_m.tolist()],
            "window_scale": 1.2}
    return ObjectPoseEstimator(model, meta, device="cpu")


def test_replay_equals_featmap_eval_object(tmp_path, store, msgs):
    from featmap_ros.evaluation.datasets import evaluate_object_dataset

    root = make_bop(tmp_path / "lm", n=6, w=96, h=72)
    est = _object_estimator(root)
    offline = evaluate_object_dataset(est, root, "test", "gt", 0, None, 0)
    pipe = ObjectPipeline(est, msgs, ObjectSettings(objects=tuple(est.object_names), roi_source="ground_truth"))
    src = player.BopSource(root)
    me = ros_online_eval.make_evaluator("object", "lm", root)
    for k in player.schedule(player.parse_range(None, len(src))):
        fr = src.frame(k)
        out = {t: through_cdr(store, m) for t, m in frame_messages(msgs, fr, player.stamp_ns(k))}
        img, info, gt = out[player.TOPICS["colour_image"]], out[player.TOPICS["colour_info"]], out[player.TOPICS["gt_objects"]]
        # estimator side: object_pose_node's own pipeline with roi_source ground_truth, on the
        # frame as its messages give it; the evaluator scores ~/detections_raw, as in the launch
        det = through_cdr(store, pipe.process(img, info, ground_truth_msg=gt).detections_raw)
        if k % 2:  # either topic may arrive first
            assert me.on_estimate(det) is None and me.on_ground_truth(gt) is None and me.on_camera_info(info) is None
        else:
            assert me.on_camera_info(info) is None and me.on_ground_truth(gt) is None and me.on_estimate(det) is None
    me.finish()
    online = me.evaluator.report()
    a, b = offline["summary"], online["summary"]
    assert a["instances"] == b["instances"] == 12
    for key in [k for k, v in a.items() if isinstance(v, (int, float)) and k not in ("seconds_per_frame",)]:  # every metric
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-9), key
    for key in ("curve_proj2d", "curve_add"):
        assert b[key]["fraction"] == pytest.approx(a[key]["fraction"])
    assert set(online["per_object"]) == set(offline["per_object"])
    for name, per in offline["per_object"].items():
        for key in [k for k, v in per.items() if isinstance(v, (int, float)) and k != "seconds_per_frame"]:
            # poses cross as quaternions in the messages: round-off only (a different window moves them by pixels)
            assert online["per_object"][name][key] == pytest.approx(per[key], rel=1e-7, abs=1e-9), (name, key)
    assert b["median_proj2d_px"] > 0  # a random network: real, non-trivial errors were compared


def _hand_estimator():
    from featmap_ros.estimators import HandPoseEstimator
    from featmap_ros.nets import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(task="hand", backbone="small", input_size=32, feature_dim=16, small_channels=[4, 8],
                                    n_joints=14, pretrained=False))
    from featmap_ros.data.specs import hand_dataset
    return HandPoseEstimator(model, {"joint_names": list(hand_dataset("nyu").joint_names), "cube_mm": 300.0}, device="cpu")


def _hand_depths(root):
    """Give the fixture frames a hand-like blob at the palm (the localiser then finds most of them)."""
    ds = nyu.NyuDataset(root, "test")
    K = nyu.nyu_K()
    for i in range(len(ds)):
        fr = ds[i]
        palm = nyu.eval_joints(fr)[13]
        uv = geometry.project_points(palm[None], K)[0]
        h, w = 480, 640
        vv, uu = np.mgrid[0:h, 0:w]
        d = np.full((h, w), 1500.0, np.float32)
        d[(uu - uv[0]) ** 2 + (vv - uv[1]) ** 2 < 40 ** 2] = palm[2] * 1000.0
        if i == 1:
            d[:] = 0.0  # no valid pixel: nothing found (a failure in both evaluators)
        nyu.write_depth_png(fr.depth_path, d)


def test_replay_equals_featmap_eval_hand(tmp_path, store, msgs):
    from featmap_ros.evaluation.datasets import evaluate_hand_dataset
    from featmap_ros.ros.pipeline import HandPipeline, HandSettings

    root = make_nyu(tmp_path / "nyu", n=5)
    _hand_depths(root)
    est = _hand_estimator()
    offline = evaluate_hand_dataset(est, root, "test", False, 0, None, 0)
    src = player.NyuSource(root)
    me = ros_online_eval.make_evaluator("hand", "nyu", "")
    pipe = HandPipeline(est, msgs, HandSettings())
    for k in range(len(src)):
        out = {t: through_cdr(store, m) for t, m in frame_messages(msgs, src.frame(k), player.stamp_ns(k))}
        assert me.on_ground_truth(out[player.TOPICS["gt_hand"]]) is None
        try:  # the hand node's own callback logic; no hand = nothing published
            res = pipe.process(out[player.TOPICS["depth_image"]], out[player.TOPICS["depth_info"]])
        except conv.ConversionError:
            res = None
        if res is not None and res.hand_pose is not None:
            assert me.on_estimate(through_cdr(store, res.hand_pose)) is None
    me.finish()
    a, b = offline, me.evaluator.report()["summary"]
    assert a["frames"] == b["frames"] == 5 and a["missed"] == b["missed"] >= 1
    assert b["mean_mm"] == pytest.approx(a["mean_mm"], rel=1e-6)
    assert b["per_joint_mm"] == pytest.approx(a["per_joint_mm"], rel=1e-6)
    assert b["max_frame_curve"]["fraction"] == pytest.approx(a["max_frame_curve"]["fraction"])
    assert b["missed"] < 5  # some frames really were estimated


def test_evaluator_parameters_are_valid_specs():
    for s in EVALUATOR_NODE_PARAMS:
        assert s.check(s.default) == s.default
    with pytest.raises(InputError, match="task"):
        ros_online_eval.make_evaluator("car", "lm", "")


def test_rows_table_across_chunks():
    t = online_eval._Rows(3)
    assert t.data.shape == (0, 3)
    ref = np.arange(3 * (online_eval._Rows.CHUNK + 5), dtype=np.float64).reshape(-1, 3)
    for r in ref:
        t.append(r)
    assert t.n == len(ref) and np.array_equal(t.data, ref)


def test_evaluator_node_reads_only_declared_parameters():
    from pathlib import Path

    from test_player import _param_keys_used

    used = _param_keys_used(Path(online_eval.__file__).parents[1] / "ros" / "evaluator_node.py")
    declared = {s.name for s in EVALUATOR_NODE_PARAMS}
    assert used and used <= declared, used - declared


def test_held_ground_truth_of_an_unknown_object_is_rejected_not_raised(tmp_path, msgs):
    root = make_bop(tmp_path / "lm", n=1)
    me = ros_online_eval.make_evaluator("object", "lm", root)
    fr = player.BopSource(root).frame(0)
    out = dict(frame_messages(msgs, fr, 5))
    ghost = conv.object_poses_to_detection3d_array(msgs, [ObjectPose("ghost", 99, np.eye(3), np.array([0, 0, 1.0]), 1.0)],
                                                   out[player.TOPICS["gt_objects"]].header)
    assert me.on_ground_truth(ghost) is None  # held: no camera_info yet
    assert me.on_camera_info(out[player.TOPICS["colour_info"]]) is None
    assert me.rejected == {"ground_truth": 1}


def test_eval_object_with_localiser_boxes_needs_a_localiser(tmp_path):
    from featmap_ros.evaluation.datasets import evaluate_object_dataset

    root = make_bop(tmp_path / "lm", n=2, w=96, h=72)
    est = _object_estimator(root)
    assert est.localiser is None
    with pytest.raises(InputError, match=r"--boxes localiser: this checkpoint has no localiser.*--boxes gt"):
        evaluate_object_dataset(est, root, "test", "localiser", 0, None, 0)
