"""ObjectPoseEstimator.estimate_images (several cameras, one network call) and the object
pipeline's batch (featmap_ros.ros.pipeline.process_object_batch) on rosbags messages."""
import numpy as np
import pytest
import torch

from featmap_ros import geometry
from featmap_ros.errors import InputError
from featmap_ros.estimators import ObjectPoseEstimator
from featmap_ros.nets import ModelConfig, build_model

K1 = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]])
K2 = np.array([[600.0, 0, 310.0], [0, 600.0, 250.0], [0, 0, 1.0]])


def estimator():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small", input_size=32, feature_dim=16, small_channels=[4, 8], n_objects=2,
                                    pretrained=False))
    corners = np.stack([geometry.box_corners([-0.03, -0.04, -0.02], [0.06, 0.08, 0.04 + 0.02 * i]) for i in range(2)])
    meta = {"object_names": ["obj0", "obj1"], "obj_ids": [1, 2], "corners_m": corners.tolist(), "window_scale": 1.2}
    return ObjectPoseEstimator(model, meta, device="cpu")


def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(3)]


def test_estimate_images_equals_estimate_per_image_with_one_network_call(monkeypatch):
    est = estimator()
    imgs = images()
    items = [(imgs[0], K1, [("obj0", np.array([100.0, 120, 80, 90])), ("obj1", np.array([300.0, 200, 60, 70]))]),
             (imgs[1], K2, []),
             (imgs[2], K2, [("obj1", np.array([20.0, 30, 100, 100]))])]
    singles = [est.estimate(img, K, boxes) for img, K, boxes in items]
    calls = []
    infer = est._infer
    monkeypatch.setattr(est, "_infer", lambda x: calls.append(x.shape[0]) or infer(x))
    batched = est.estimate_images(items)
    assert calls == [3]  # the three windows of all images in one call
    assert [len(b) for b in batched] == [len(s) for s in singles]
    for b_img, s_img in zip(batched, singles):
        for b, s in zip(b_img, s_img):
            assert b.object_name == s.object_name
            np.testing.assert_allclose(b.t_m2c_m, s.t_m2c_m, atol=1e-5)
            np.testing.assert_allclose(b.R_m2c, s.R_m2c, atol=1e-5)
            assert b.score == pytest.approx(s.score, abs=1e-6)


def test_estimate_images_bad_input_and_no_windows():
    est = estimator()
    assert est.estimate_images([]) == []
    assert est.estimate_images([(images()[0], K1, [])]) == [[]]
    with pytest.raises(InputError, match="unknown object 'cat'"):
        est.estimate_images([(images()[0], K1, [("cat", np.array([0.0, 0, 10, 10]))])])


def test_process_object_batch_one_call_per_camera_outputs_and_a_bad_camera_isolated(monkeypatch):
    pytest.importorskip("rosbags")
    from featmap_ros.geometry import CameraModel
    from featmap_ros.ros import conversions as conv
    from featmap_ros.ros import params as P
    from featmap_ros.ros.msg_defs import featmap_typestore
    from featmap_ros.ros.pipeline import ObjectPipeline, ObjectSettings, process_object_batch

    msgs = conv.RosbagsMessages(featmap_typestore("jazzy"))
    est = estimator()
    values = P.validate_params(P.OBJECT_NODE_PARAMS, {"roi_source": "detections", "markers.mesh_resource": ""})
    pipes = {cam: ObjectPipeline(est, msgs, ObjectSettings.from_params(values, est.object_names)) for cam in ("left", "right", "bad")}
    calls = []
    orig = est.estimate_images
    monkeypatch.setattr(est, "estimate_images", lambda items: calls.append(len(items)) or orig(items))

    def frame(cam, K, encoding="rgb8"):
        h = conv.make_header(msgs, 7_000_000_000, f"{cam}_optical")
        arr = images()[0] if encoding == "rgb8" else np.zeros((480, 640), np.uint16)
        img = conv.numpy_to_image(msgs, arr, encoding, h)
        info = conv.camera_model_to_info(msgs, CameraModel(K, 640, 480), h)
        dets = conv.boxes_to_detection2d_array(msgs, [("obj0", np.array([100.0, 120, 80, 90]), 0.9)], h)
        return {"image_msg": img, "info_msg": info, "detections_msg": dets}

    outs = process_object_batch([(pipes["left"], frame("left", K1), False), (pipes["right"], frame("right", K2), True),
                                 (pipes["bad"], frame("bad", K2, "16UC1"), False)])
    assert calls == [2]  # the two good cameras in one estimator call
    left, right, bad = outs
    assert isinstance(bad, InputError) and "image.encoding" in str(bad)
    assert left.detections.header.frame_id == "left_optical" and right.detections.header.frame_id == "right_optical"
    assert right.debug_image is not None and left.debug_image is None
    # the same as each camera's own pipeline run (K differs: the poses differ)
    solo = ObjectPipeline(est, msgs, ObjectSettings.from_params(values, est.object_names)).process(**frame("right", K2))
    got = right.detections.detections[0].results[0].pose.pose.position
    want = solo.detections.detections[0].results[0].pose.pose.position
    assert (got.x, got.y, got.z) == pytest.approx((want.x, want.y, want.z), abs=1e-6)
