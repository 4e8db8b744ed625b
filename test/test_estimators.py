"""Tests of featmap_ros.estimators: crop/PnP round trip, batching, bad input, checkpoints."""
from featmap_ros.render.renderer import preload_torch_compiler

preload_torch_compiler()  # at collection, before any test renders (Mesa then triton segfaults)

import re

import numpy as np
import pytest
import torch

from featmap_ros import geometry
from featmap_ros import crops
from featmap_ros.errors import InputError
from featmap_ros.estimators import ObjectPoseEstimator
from featmap_ros.nets import Localiser, LocaliserConfig, ModelConfig, build_model
from featmap_ros.training.sources import TensorSource
from featmap_ros.training.config import TrainConfig
from featmap_ros.training.loop import train

K = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]])


def object_meta(n=2):
    corners = np.stack([geometry.box_corners([-0.03, -0.04, -0.02 - 0.01 * i], [0.06, 0.08, 0.04 + 0.02 * i]) for i in range(n)])
    return {"object_names": [f"obj{i}" for i in range(n)], "obj_ids": list(range(1, n + 1)), "corners_m": corners.tolist(), "window_scale": 1.2}


def tiny_model(n=2):
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="small", input_size=32, feature_dim=16, small_channels=[4, 8], n_objects=n, pretrained=False))


def pose(rx, tz, tx=0.0):
    from scipy.spatial.transform import Rotation
    return Rotation.from_euler("xyz", [rx, 0.3, -0.2]).as_matrix(), np.array([tx, 0.01, tz])


def test_perfect_corners_give_exact_pose_for_several_instances(monkeypatch):
    meta = object_meta()
    est = ObjectPoseEstimator(tiny_model(), meta, device="cpu")
    corners = np.asarray(meta["corners_m"])
    gts = [("obj0", *pose(0.4, 0.8, -0.1)), ("obj1", *pose(-0.7, 1.1, 0.1)), ("obj0", *pose(1.2, 0.9, 0.05))]
    boxes, expected = [], []
    for name, R, t in gts:
        i = est.object_names.index(name)
        px = geometry.project_model_points(corners[i], R, t, K)
        lo, hi = px.min(0), px.max(0)
        box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
        boxes.append((name, box))
        win = crops.window_from_bbox(box, scale=1.2)
        out = np.zeros((2, 8, 2))
        out[i] = crops.image_to_crop_normalised(px, win)
        expected.append(out)
    calls = []

    def fake_infer(batch):
        calls.append(batch.shape)
        return np.stack(expected)

    monkeypatch.setattr(est, "_infer", fake_infer)
    res = est.estimate(np.zeros((480, 640, 3), np.uint8), K, boxes)
    assert calls == [(3, 3, 32, 32)]  # one batch for all instances
    assert [r.object_name for r in res] == ["obj0", "obj1", "obj0"]
    for r, (_, R, t) in zip(res, gts):
        assert np.allclose(r.R_m2c, R, atol=1e-6) and np.allclose(r.t_m2c_m, t, atol=1e-6)
        assert r.score > 0.99 and r.obj_id in (1, 2)


def test_bad_input_names_the_argument():
    est = ObjectPoseEstimator(tiny_model(), object_meta(), device="cpu")
    img = np.zeros((120, 160, 3), np.uint8)
    with pytest.raises(InputError, match="unknown object 'cat'"):
        est.estimate(img, K, [("cat", [10, 10, 20, 20])])
    with pytest.raises(InputError, match="image_rgb"):
        est.estimate(img.astype(np.float32), K, [("obj0", [10, 10, 20, 20])])
    with pytest.raises(InputError, match="localiser"):
        est.estimate(img, K)
    with pytest.raises(InputError, match="object_names"):
        ObjectPoseEstimator(tiny_model(3), object_meta(2), device="cpu")
    assert est.estimate(img, K, []) == []


def test_random_model_runs_and_localiser_path(tmp_path):
    loc = Localiser(LocaliserConfig(input_width=64, input_height=48, channels=[4, 4], n_objects=2))
    with torch.no_grad():  # force "present" for both objects at known windows
        loc.fc[-1].weight.zero_()
        loc.fc[-1].bias.copy_(torch.tensor([0.5, 0.5, np.log(0.2), 5.0, 0.3, 0.6, np.log(0.1), 5.0]))
    est = ObjectPoseEstimator(tiny_model(), object_meta(), localiser=loc, device="cpu")
    est.warmup()
    wins = est.localise(np.zeros((480, 640, 3), np.uint8))
    assert [w[0] for w in wins] == ["obj0", "obj1"]
    assert wins[1][1].center_u == pytest.approx(0.3 * 640) and wins[1][1].side == pytest.approx(64, rel=1e-4)
    res = est.estimate(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8), K)
    for r in res:
        assert r.R_m2c.shape == (3, 3) and r.corners_px.shape == (8, 2) and 0 <= r.score <= 1


def test_from_checkpoint_and_wrong_task(tmp_path):
    cfg = TrainConfig(model=tiny_model(1).cfg, steps_stage1=1, steps_stage2=0, batch_size=2, tensorboard=False, checkpoint_every=0)
    src = TensorSource({"image": torch.rand(4, 3, 32, 32), "corners_n": torch.rand(4, 8, 2)}, 0, 0)
    r = train(cfg, src, None, tmp_path, meta=object_meta(1), progress=False, device="cpu")
    est = ObjectPoseEstimator.from_checkpoint(r.checkpoint, device="cpu")
    assert est.object_names == ["obj0"]
    from featmap_ros.estimators import HandPoseEstimator
    with pytest.raises(InputError, match="model.task"):
        HandPoseEstimator.from_checkpoint(r.checkpoint, device="cpu")


def hand_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(task="hand", backbone="small", input_size=32, feature_dim=16, small_channels=[4, 8], pretrained=False))


def blob_depth(K, centre_m, radius_m=0.06, shape=(240, 320)):
    """A sphere in front of a far wall: (H, W) depth in metres."""
    H, W = shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    d = np.full(shape, 0.0)
    # ray-sphere intersection
    ray = np.stack([x, y, np.ones_like(x)], -1)
    b = ray @ centre_m
    a = (ray ** 2).sum(-1)
    disc = b ** 2 - a * (centre_m @ centre_m - radius_m ** 2)
    hit = disc > 0
    d[hit] = ((b[hit] - np.sqrt(disc[hit])) / a[hit])
    return d.astype(np.float32)


def test_hand_perfect_network_gives_joints_back(monkeypatch):
    from featmap_ros import crops as C
    from featmap_ros.estimators import HandPoseEstimator

    Kh = np.array([[290.0, 0, 160.0], [0, 290.0, 120.0], [0, 0, 1.0]])
    est = HandPoseEstimator(hand_model(), {"cube_mm": 300.0, "joint_names": [f"j{i}" for i in range(14)]}, device="cpu")
    centre = np.array([0.02, -0.01, 0.7])
    gt = centre + np.random.default_rng(0).uniform(-0.08, 0.08, (14, 3))
    T = C.depth_crop_transform(centre, Kh, 0.3, 32)
    monkeypatch.setattr(est, "_infer", lambda batch: C.joints_to_crop(gt, T)[None].repeat(len(batch), 0))
    depth = blob_depth(Kh, centre)
    res = est.estimate_batch([depth, depth], Kh, centers_m=[centre, centre])
    for r in res:
        assert np.allclose(r.joints_m, gt, atol=1e-9) and r.joint_names[0] == "j0"
    # localised path: a hand is found near the blob, result has the right shape
    found = est.estimate(depth, Kh)
    assert found is not None and np.linalg.norm(found.crop_center_m - centre) < 0.05
    # nothing in range -> None, never an exception
    assert est.estimate(np.zeros((240, 320), np.float32), Kh) is None
    assert est.estimate(np.full((240, 320), np.nan, np.float32), Kh) is None
    with pytest.raises(InputError, match="depth_m"):
        est.estimate(np.zeros((4, 4, 3), np.float32), Kh)


def test_hand_com_centre_is_the_refined_centre_of_mass(monkeypatch):
    """A ``centre: com`` checkpoint crops at DeepPrior++'s refined centre of mass of the depth,
    whether the seed is given or localised, and runs no learned refiner."""
    from featmap_ros import hand_localiser
    from featmap_ros.estimators import HandPoseEstimator

    Kh = np.array([[290.0, 0, 160.0], [0, 290.0, 120.0], [0, 0, 1.0]])
    meta = {"cube_mm": 250.0, "joint_names": [f"j{i}" for i in range(14)], "centre": "com"}
    est = HandPoseEstimator(hand_model(), meta, device="cpu")
    assert est.meta.centre == "com" and est.cube_mm == 250.0
    monkeypatch.setattr(est, "_infer", lambda batch: np.zeros((len(batch), 14, 3)))
    centre = np.array([0.02, -0.01, 0.7])
    depth = blob_depth(Kh, centre)
    seed = centre + np.array([0.02, -0.015, 0.01])
    res = est.estimate_batch([depth], Kh, centers_m=[seed])[0]
    want = hand_localiser.refined_com_m(depth, Kh, seed, cube_m=0.25)
    np.testing.assert_allclose(res.crop_center_m, want, atol=1e-12)
    assert np.linalg.norm(res.crop_center_m - seed) > 0.01  # it moved off the seed, onto the blob's surface
    found = est.estimate(depth, Kh)
    assert found is not None and np.linalg.norm(found.crop_center_m - want) < 0.005


def test_window_crop_matches_full_image_crop():
    from featmap_ros.estimators import _crop_window

    img = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    for w in [crops.Window(160, 120, 150), crops.Window(10, 5, 130), crops.Window(315, 235, 60), crops.Window(160, 120, 40), crops.Window(900, 900, 50)]:
        a = crops.crop_image(img, w, 48).astype(int)
        b = _crop_window(img, w, 48).astype(int)
        assert np.abs(a - b).max() <= 1


# ----------------------------------------------------------------------------- depth refinement


def _box_estimator(tmp_path, monkeypatch, R_colour, t_colour, mesh_sources=None, mesh_root=None):
    """An estimator of the box of test_depth_refine whose network returns the corners of
    (R_colour, t_colour) exactly; its mesh is a PLY written here (millimetres)."""
    from test_depth_refine import BOX

    from featmap_ros.data.bop import Mesh, save_mesh

    ply = tmp_path / "box.ply"
    save_mesh(ply, Mesh(np.asarray(BOX.vertices), np.asarray(BOX.faces), None, "box"))
    corners = geometry.box_corners([-0.05, -0.035, -0.025], [0.10, 0.07, 0.05])
    meta = {"object_names": ["box"], "obj_ids": [1], "corners_m": [corners.tolist()], "window_scale": 1.2}
    est = ObjectPoseEstimator(tiny_model(1), meta, device="cpu", mesh_sources=[str(ply)] if mesh_sources is None else mesh_sources,
                              mesh_root=mesh_root)
    px = geometry.project_model_points(corners, R_colour, t_colour, K)
    box = np.r_[px.min(0), px.max(0) - px.min(0)]
    win = crops.window_from_bbox(box, scale=1.2)
    calls = []

    def perfect(batch):
        calls.append(batch.shape)
        return crops.image_to_crop_normalised(px, win)[None, None].repeat(len(batch), 0)

    monkeypatch.setattr(est, "_infer", perfect)
    return est, [("box", box)], calls


@pytest.fixture(scope="module")
def box_scene():
    from test_depth_refine import BOX, R_GT, T_GT, in_camera, perturbed, render_depth

    depth = render_depth([in_camera(BOX, R_GT, T_GT)]).astype(np.float32)
    R0, t0 = perturbed(np.random.default_rng(11), R_GT, T_GT)
    return depth, R0, t0, R_GT, T_GT


def test_depth_refines_the_colour_pose(tmp_path, monkeypatch, box_scene):
    from test_depth_refine import K as K_LM

    depth, R0, t0, R_gt, t_gt = box_scene
    est, boxes, calls = _box_estimator(tmp_path, monkeypatch, R0, t0)
    img = np.zeros((480, 640, 3), np.uint8)
    (colour,) = est.estimate(img, K_LM, boxes)  # without depth: the colour pose, not refined
    assert np.allclose(colour.t_m2c_m, t0, atol=1e-4) and not colour.refined and colour.refine_reason == ""
    assert np.linalg.norm(colour.t_m2c_m - t_gt) > 0.015
    (ref,) = est.estimate(img, K_LM, boxes, depth_m=depth)
    assert ref.refined and ref.refine_reason == "", ref.refine_reason
    assert np.linalg.norm(ref.t_m2c_m - t_gt) < 0.003 and geometry.rotation_angle_deg(ref.R_m2c, R_gt) < 2.0
    assert ref.refine_fitness > 0.9 and ref.score == ref.refine_fitness and ref.refine_rmse_m < 0.001
    np.testing.assert_array_equal(ref.corners_px, colour.corners_px)  # the network's output stays
    # NaN depth: rejected, the colour pose and score kept, the reason recorded
    (kept,) = est.estimate(img, K_LM, boxes, depth_m=np.full((480, 640), np.nan, np.float32))
    assert not kept.refined and kept.refine_reason == "no valid depth in window"
    np.testing.assert_array_equal(kept.t_m2c_m, colour.t_m2c_m)
    assert kept.score == colour.score
    # covariances: the colour pose's from its PnP (the corners fit exactly: the residual floor),
    # the refined one's from the fit's RMSE, each with the calibrated factors; a refusal keeps the colour one
    from featmap_ros import pose_covariance as pc

    sc = est.covariance_scales
    want = pc.scale_covariance(pc.pnp_covariance(est.corners_m[0], colour.corners_px, colour.R_m2c, colour.t_m2c_m, K_LM),
                               sc.pnp_t, sc.pnp_rot)
    np.testing.assert_allclose(colour.covariance, want, rtol=1e-9)
    np.testing.assert_allclose(ref.covariance, pc.scale_covariance(pc.depth_fit_covariance(ref.refine_rmse_m, ref.extents_m),
                                                                   sc.depth_t, sc.depth_rot), rtol=1e-12)
    assert np.sqrt(ref.covariance[0, 0]) < np.sqrt(colour.covariance[2, 2])  # depth: surer than colour along z
    np.testing.assert_array_equal(kept.covariance, colour.covariance)


def test_depth_of_another_size_is_refused_before_the_network(tmp_path, monkeypatch, box_scene):
    from test_depth_refine import K as K_LM

    depth, R0, t0, _, _ = box_scene
    est, boxes, calls = _box_estimator(tmp_path, monkeypatch, R0, t0)
    img = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(InputError, match=r"depth_m: shape \(240, 320\) differs from the colour image's \(480, 640\); "
                                         r"depth must be registered .*aligned_depth_to_color"):
        est.estimate(img, K_LM, boxes, depth_m=depth[::2, ::2])
    with pytest.raises(InputError, match="depth_m: expected float metres"):
        est.estimate(img, K_LM, boxes, depth_m=(depth * 1000).astype(np.uint16))
    assert calls == []


def test_objects_without_a_usable_mesh_keep_the_colour_pose(tmp_path, monkeypatch, box_scene):
    from test_depth_refine import K as K_LM

    depth, R0, t0, _, _ = box_scene
    img = np.zeros((480, 640, 3), np.uint8)
    cloud = tmp_path / "cloud.ply"
    cloud.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                     "end_header\n0 0 0\n1 0 0\n0 1 0\n")
    for source, reason in [("", "no mesh for 'box'"), (str(tmp_path / "gone.ply"), "mesh of 'box' not found"),
                           (str(cloud), "mesh of 'box' unusable: .*cloud.ply")]:
        est, boxes, _ = _box_estimator(tmp_path, monkeypatch, R0, t0, mesh_sources=[source])
        (p,) = est.estimate(img, K_LM, boxes, depth_m=depth)
        assert not p.refined and np.allclose(p.t_m2c_m, t0, atol=1e-4)
        assert re.match(reason, p.refine_reason), p.refine_reason
    # a checkpoint naming its meshes by relative path (obj_000001.ply): found under the mesh root
    est, boxes, _ = _box_estimator(tmp_path, monkeypatch, R0, t0, mesh_sources=["box.ply"], mesh_root=tmp_path)
    assert est.mesh_sources == (str(tmp_path / "box.ply"),)
    assert est.estimate(img, K_LM, boxes, depth_m=depth)[0].refined
    est, boxes, _ = _box_estimator(tmp_path, monkeypatch, R0, t0, mesh_sources=["box.ply"])
    assert "set the mesh root" in est.estimate(img, K_LM, boxes, depth_m=depth)[0].refine_reason


def test_mesh_sources_of_checkpoints():
    from featmap_ros.checkpoint import ObjectMeta
    from featmap_ros.estimators import TOY_MESH, mesh_sources

    meta = ObjectMeta.from_dict({"object_names": ["toy"], "corners_m": np.zeros((1, 8, 3)).tolist(), "mesh_paths": [""]})
    assert mesh_sources(meta, {"data": {"models_root": "toy", "mesh": ""}}) == (TOY_MESH,)
    assert mesh_sources(meta, {"data": {"models_root": "/data/lm/models", "mesh": ""}}) == ("",)
    meta2 = ObjectMeta.from_dict({"object_names": ["ape", "can"], "corners_m": np.zeros((2, 8, 3)).tolist(),
                                  "mesh_paths": ["/m/obj_000001.ply"]})
    assert mesh_sources(meta2, {}) == ("/m/obj_000001.ply", "")
