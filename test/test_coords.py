"""Tests of featmap_ros.coords (the dense-correspondence head's targets, symmetries, loss and
PnP-RANSAC decoding), of the ``coords`` head in nets/checkpoints/training, and of zoom-in."""
from featmap_ros.render.renderer import preload_torch_compiler

preload_torch_compiler()  # at collection, before any test renders (Mesa then triton segfaults)

import numpy as np
import pytest
import torch

from featmap_ros import coords, crops, geometry
from featmap_ros.checkpoint import ObjectMeta
from featmap_ros.data.bop import ModelInfo
from featmap_ros.errors import InputError
from featmap_ros.nets import ModelConfig, build_model
from featmap_ros.render.renderer import MeshRenderer, crop_intrinsics
from featmap_ros.render.toy_object import make_toy_object

K = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]])


def _pose():
    R = geometry.look_at_R_m2c(np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8]), 0.4)
    return R, np.array([0.03, -0.02, 0.7])


def _render_targets(size=64):
    mesh, info = make_toy_object(1)
    R, t = _pose()
    win = crops.ground_truth_window(info.corners_m, R, t, K)
    with MeshRenderer(size, size) as r:
        out = r.render_crop(mesh, R, t, K, win, size)
    return mesh, info, R, t, win, out


def test_coords_from_depth_are_on_the_surface_and_decode_to_the_pose():
    mesh, info, R, t, win, out = _render_targets()
    Kc = crop_intrinsics(K, win, 64)
    X = coords.model_coords_from_depth(out.depth_m, out.mask, Kc, R, t)
    pts = X[out.mask]
    # the back-projected points lie in the model's box: all but the grazing silhouette-edge pixels
    # (whose centre sample lies just off the surface) within 1 mm, every one within 5 mm
    out_mm = 1000 * (np.maximum(info.min_m - pts, 0) + np.maximum(pts - info.min_m - info.size_m, 0)).max(axis=1)
    assert np.mean(out_mm < 1.0) > 0.98 and out_mm.max() < 5.0
    # and projects back onto its own pixel
    v, u = np.nonzero(out.mask)
    uv = geometry.project_model_points(pts.astype(np.float64), R, t, Kc)
    assert np.median(np.linalg.norm(uv - np.stack([u, v], 1), axis=1)) < 0.05
    c, vis = coords.coords_targets(out.depth_m, out.mask, out.mask, Kc, R, t, info.min_m, info.size_m)
    assert c.shape == (3, 16, 16) and vis.shape == (16, 16) and 0 <= vis.min() and vis.max() <= 1
    maps = np.concatenate([np.where(vis > 0.5, 6.0, -6.0)[None], c], 0)
    p = coords.pose_from_coords(maps, win, K, info.min_m, info.size_m)
    # the cell averages lean towards the interior in edge cells: about 1 % of the distance in depth,
    # but the box projects within 2 px
    assert geometry.rotation_angle_deg(p.R_m2c, R) < 1.0 and np.linalg.norm(p.t_m2c_m - t) < 0.01 * t[2]
    err_px = np.linalg.norm(geometry.project_model_points(info.corners_m, p.R_m2c, p.t_m2c_m, K)
                            - geometry.project_model_points(info.corners_m, R, t, K), axis=1)
    assert err_px.max() < 2.0 and p.n_inliers >= 0.9 * p.n_confident


def test_hidden_pixels_leave_the_visible_mask_but_not_the_coordinates_elsewhere():
    _, info, R, t, win, out = _render_targets()
    Kc = crop_intrinsics(K, win, 64)
    vis = out.mask.copy()
    vis[:, :32] = False  # the left half hidden
    c_all, m_all = coords.coords_targets(out.depth_m, out.mask, out.mask, Kc, R, t, info.min_m, info.size_m)
    c_half, m_half = coords.coords_targets(out.depth_m, out.mask, vis, Kc, R, t, info.min_m, info.size_m)
    assert m_half[:, :8].max() == 0 and np.allclose(m_half[:, 8:], m_all[:, 8:])
    assert np.allclose(c_half[:, :, 8:], c_all[:, :, 8:]) and np.all(c_half[:, :, :8] == 0)


def test_pose_from_coords_bad_input():
    win = crops.Window(320, 240, 100)
    with pytest.raises(InputError, match="confident cells"):
        coords.pose_from_coords(np.full((4, 8, 8), -5.0), win, K, np.zeros(3), np.ones(3))
    with pytest.raises(InputError, match=r"\(4, h, h\)"):
        coords.pose_from_coords(np.zeros((3, 8, 8)), win, K, np.zeros(3), np.ones(3))


def _box_symmetric_info():
    # a box symmetric by a half turn about its z axis through (0.01, 0.02, 0) (not the origin)
    c = np.array([0.01, 0.02, 0.0])
    Rz = np.diag([-1.0, -1.0, 1.0])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = Rz, c - Rz @ c
    return ModelInfo(1, 0.2, c - np.array([0.05, 0.03, 0.04]), np.array([0.1, 0.06, 0.08]), [T], []), T


def test_symmetry_affines_map_coordinates_like_the_model_symmetry():
    info, T = _box_symmetric_info()
    a = coords.symmetry_affines(info.min_m, info.size_m, info.symmetries_discrete)
    assert a.A.shape == (2, 3, 3) and np.allclose(a.A[0], np.eye(3)) and np.allclose(a.b[0], 0)
    X = info.min_m + np.random.default_rng(0).uniform(0, 1, (20, 3)) * info.size_m
    got = coords.denormalise_coords(coords.normalise_coords(X, info.min_m, info.size_m) @ a.A[1].T + a.b[1], info.min_m, info.size_m)
    assert np.allclose(got, X @ T[:3, :3].T + T[:3, 3], atol=1e-6)
    # the symmetric image of a point of the box stays in the box: normalised coordinates in [0, 1]
    assert np.all((coords.normalise_coords(got, info.min_m, info.size_m) > -1e-6) & (coords.normalise_coords(got, info.min_m, info.size_m) < 1 + 1e-6))
    cont = coords.symmetry_affines(info.min_m, info.size_m, info.symmetries_discrete, [{"axis": [0, 0, 1.0], "offset_m": [0.01, 0.02, 0]}])
    assert cont.A.shape == (2 * coords.CONTINUOUS_SYMMETRY_STEPS, 3, 3)


def _meta(info, head="coords"):
    return {"object_names": ["box"], "corners_m": [info.corners_m.tolist()], "head": head,
            "coords_box_min_m": [info.min_m.tolist()], "coords_box_size_m": [info.size_m.tolist()],
            "symmetries_discrete": [[np.asarray(T).tolist() for T in info.symmetries_discrete]], "symmetries_continuous": [[]]}


def test_coords_loss_is_symmetry_aware_and_masks():
    info, _ = _box_symmetric_info()
    sym = coords.SymmetryTables.from_meta(_meta(info))
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 8, 8, generator=g)
    m = (torch.rand(2, 8, 8, generator=g) > 0.3).float()
    logit = (m * 2 - 1) * 20.0
    pred = torch.cat([logit[:, None], y], 1)[:, None]  # (B, 1, 4, h, w)
    assert float(coords.coords_loss(pred, y, m, None, sym)) < 1e-6
    # predicting the symmetric version of the target costs nothing either ...
    A, b = sym.A[0, 1], sym.b[0, 1]
    y_sym = torch.einsum("ij,bjhw->bihw", A, y) + b[:, None, None]
    pred_sym = torch.cat([logit[:, None], y_sym], 1)[:, None]
    assert float(coords.coords_loss(pred_sym, y, m, None, sym)) < 1e-5
    # ... but without the symmetry it is an error
    no_sym = coords.SymmetryTables.from_meta(dict(_meta(info), symmetries_discrete=[[]]))
    assert float(coords.coords_loss(pred_sym, y, m, None, no_sym)) > 0.05
    # the mask term: wrong logits cost with the mask, nothing without it
    flipped = torch.cat([-logit[:, None], y], 1)[:, None]
    assert float(coords.coords_loss(flipped, y, m, None, sym)) > 1.0
    assert float(coords.coords_loss(flipped, y, m, None, sym, with_mask=False)) < 1e-6


def test_meta_without_the_coordinate_range_is_an_error_naming_the_field():
    info, _ = _box_symmetric_info()
    meta = _meta(info)
    del meta["coords_box_size_m"]
    with pytest.raises(InputError, match="coords_box_size_m"):
        ObjectMeta.from_dict(meta, "ck.pt: meta")
    with pytest.raises(InputError, match="coords_box_size_m"):
        coords.SymmetryTables.from_meta(meta, "ck.pt: meta")
    old = {"object_names": ["box"], "corners_m": [info.corners_m.tolist()]}  # a checkpoint from before the heads
    assert ObjectMeta.from_dict(old).head == "bb8"
    assert ObjectMeta.from_dict(_meta(info)).coords_box_size_m.shape == (1, 3)


def test_coords_model_shapes_and_config_errors():
    cfg = ModelConfig(task="object", backbone="small", input_size=32, small_channels=[8, 16, 16], pretrained=False,
                      map_level="conv", head="coords", n_objects=3, decoder_channels=[16, 8])
    net = build_model(cfg)
    y = net(torch.rand(2, 3, 32, 32), real=True)
    assert y.shape == (2, 3, 4, 8, 8)
    _, pose_real, f_syn, f_real, _ = net(torch.rand(4, 3, 32, 32), n_synth=2)
    assert pose_real.shape == (2, 3, 4, 8, 8) and f_syn.shape == f_real.shape and f_syn.dim() == 4
    with pytest.raises(InputError, match="model.map_level"):
        ModelConfig(task="object", backbone="small", head="coords", map_level="fc").check()
    with pytest.raises(InputError, match="model.head"):
        ModelConfig(task="hand", backbone="deepprior", head="coords", map_level="conv").check()
    with pytest.raises(InputError, match="model.head"):
        ModelConfig(head="corners").check()


def test_symmetric_object_without_models_info_symmetries_is_an_error(tmp_path, capsys):
    from featmap_ros.cli import main
    from featmap_ros.data import bop

    mesh, _ = make_toy_object(1)
    ply = tmp_path / "glue_without_info.ply"
    bop.save_mesh(ply, mesh, units="mm")
    rc = main(["train", "object", "--config", "config/demo_object.yaml", "--mesh", str(ply), "--out", str(tmp_path / "run"),
               "--device", "cpu", "data.dataset=lmo", "data.object_ids=[11]", "model.head=coords", "model.map_level=conv",
               "data.synthetic_count=2", f"data.cache_dir={tmp_path / 'cache'}", "steps_stage1=1", "steps_stage2=0"])
    err = capsys.readouterr().err
    assert rc == 2 and "obj_id 11 is symmetric" in err and "models_info.json" in err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # refused before rendering


def test_train_a_coords_head_with_real_pairs_and_estimate_with_zoom_in(tmp_path):
    """featmap train object with model.head=coords on the toy object and real-like pairs: the
    checkpoint records the head and the coordinate range, the loss falls, and the estimator decodes
    poses by PnP-RANSAC with and without zoom-in."""
    from featmap_ros.checkpoint import load_checkpoint
    from featmap_ros.cli import main
    from featmap_ros.data.bop import read_scene, list_scenes
    from featmap_ros.estimators import ObjectPoseEstimator

    real = tmp_path / "real"
    assert main(["render", "object", "--toy", "--count", "3", "--domain", "real-like", "--out", str(real), "--split", "train", "--seed", "5"]) == 0
    out = tmp_path / "run"
    rc = main(["train", "object", "--config", "config/demo_object.yaml", "--real", str(real), "--out", str(out), "--device", "cpu",
               "model.head=coords", "model.map_level=conv", "model.decoder_channels=[16,16]", "data.synthetic_count=24",
               f"data.cache_dir={tmp_path / 'cache'}", "steps_stage1=30", "steps_stage2=6", "batch_size=8", "pair_batch_size=4",
               "tensorboard=false", "localiser_steps=0", "log_every=5", "lr=0.003"])
    assert rc == 0
    ck = load_checkpoint(out / "last.pt")
    assert ck["model_config"]["head"] == "coords" and ck["meta"]["head"] == "coords"
    hist = ck["metrics"]["history"]
    assert hist[-1]["pose_synth"] < hist[0]["pose_synth"]
    assert "pose_real" in hist[-1] and "feature_match" in hist[-1]
    frame = read_scene(list_scenes(real / "train")[0])[0]
    from featmap_ros.data import bop
    img = bop.load_rgb(frame.rgb_path)
    est = ObjectPoseEstimator.from_checkpoint(out / "last.pt", device="cpu")
    assert est.head == "coords" and est.zoom_in == 1  # the coords head's default
    g = frame.instances[0]
    win = crops.ground_truth_window(est.corners_m[0], g.R_m2c, g.t_m2c_m, frame.K)
    for zoom in (0, 2):
        est.zoom_in = zoom
        poses = est.estimate(img, frame.K, boxes=[("toy", win)])
        for p in poses:  # a few steps of training: any pose it returns is a rigid, finite pose in front of the camera
            assert p.t_m2c_m[2] > 0 and geometry.orthonormality_error(p.R_m2c) < 1e-6 and 0 <= p.score <= 1
    # the demo checkpoint's localiser (same toy object) copied in: localiser windows, then the coords head and zoom-in
    from featmap_ros.checkpoint import bundled_weights
    with_loc = tmp_path / "with_loc.pt"
    assert main(["train", "localiser", "--checkpoint", str(out / "last.pt"), "--copy-from", str(bundled_weights("object")),
                 "--out", str(with_loc)]) == 0
    est = ObjectPoseEstimator.from_checkpoint(with_loc, device="cpu")
    assert est.localiser is not None and est.head == "coords"
    assert all(p.object_name == "toy" for p in est.estimate(img, frame.K))
    assert main(["train", "localiser", "--checkpoint", str(out / "last.pt"), "--copy-from", str(out / "last.pt")]) == 2  # no localiser there


def test_zoom_window_is_the_training_window_of_the_pose_and_falls_back(tmp_path):
    from featmap_ros.checkpoint import bundled_weights
    from featmap_ros.estimators import ObjectPoseEstimator
    from featmap_ros.results import ObjectPose

    est = ObjectPoseEstimator.from_checkpoint(bundled_weights("object"), device="cpu")
    assert est.head == "bb8" and est.zoom_in == 0  # old checkpoints: BB8, no zoom-in unless asked
    R, t = _pose()
    name = est.object_names[0]
    p = ObjectPose(object_name=name, obj_id=est.obj_ids[0], R_m2c=R, t_m2c_m=t, score=1.0)
    fallback = crops.Window(300, 200, 90)
    w = est.zoom_window(p, K, fallback)
    assert w == crops.ground_truth_window(est.corners_m[0], R, t, K)
    behind = ObjectPose(object_name=name, obj_id=est.obj_ids[0], R_m2c=R, t_m2c_m=np.array([0.0, 0.0, -0.5]), score=1.0)
    assert est.zoom_window(behind, K, fallback) == fallback and est.zoom_window(None, K, fallback) == fallback
    with pytest.raises(InputError, match="zoom_in"):
        ObjectPoseEstimator.from_checkpoint(bundled_weights("object"), device="cpu", zoom_in=-1)
