"""featmap_ros/training/adapt.py and ``featmap train adapt``: pseudo-pairs from unlabelled frames.

Ground truth is never read (the ground-truth files are replaced by invalid JSON, and an audit hook
records every file Python opens); a bag of the
camera's topics round-trips into the frames folder; the label-free scores have hand-made known
values; and adaptation of a synthetic-only checkpoint improves held-out real-like frames.
"""
from featmap_ros.render.renderer import preload_torch_compiler

preload_torch_compiler()  # at collection, before any test renders (Mesa then triton segfaults)

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from featmap_ros import crops
from featmap_ros.checkpoint import adaptation_of, bundled_weights, load_checkpoint
from featmap_ros.cli import main as featmap
from featmap_ros.data import bop
from featmap_ros.errors import InputError
from featmap_ros.estimators import ObjectPoseEstimator
from featmap_ros.render.real_like import write_object_dataset, write_object_sequence
from featmap_ros.render.renderer import MeshRenderer
from featmap_ros.render.toy_object import make_toy_object
from featmap_ros.training import adapt

GT_NAMES = ("scene_gt.json", "scene_gt_info.json", "test_targets_bop19.json")
_OPENED: list = []
_RECORDING = [False]


def _audit(event, args):
    if _RECORDING[0] and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def toy_frames(tmp_path_factory):
    """Six real-like frames of the toy object (a sequence: one scene, a moving camera), whose
    ground-truth files are then replaced by invalid JSON: reading them would fail loudly."""
    root = tmp_path_factory.mktemp("adapt") / "seq"
    mesh, info = make_toy_object(1)
    write_object_sequence(root, mesh, info, 6, seed=3, progress=False)
    return root


def poison_ground_truth(root: Path) -> None:
    for p in list(root.rglob("scene_gt*.json")):
        p.write_text("{ not json: ground truth must not be read")
    (root / "test_targets_bop19.json").write_text("[ not json")


def test_unlabelled_frames_never_open_ground_truth(toy_frames, tmp_path):
    import shutil

    root = tmp_path / "frames"
    shutil.copytree(toy_frames, root)
    poison_ground_truth(root)
    with pytest.raises(InputError, match="scene_gt.json"):  # the poison is real: a reader of GT fails
        bop.read_scene(root / "test" / "000001")
    _OPENED.clear()
    _RECORDING[0] = True
    try:
        frames = adapt.read_unlabelled_frames(root, "test")
    finally:
        _RECORDING[0] = False
    assert [f.im_id for f in frames] == list(range(6)) and all(f.depth_path is not None for f in frames)
    assert any(o.endswith("scene_camera.json") for o in _OPENED)
    assert not [o for o in _OPENED if Path(o).name in GT_NAMES]
    assert len(adapt.read_unlabelled_frames(root, "test", max_frames=3)) == 3
    with pytest.raises(InputError, match="empty_nothing/test: split folder not found"):
        adapt.read_unlabelled_frames(tmp_path / "empty_nothing", "test")
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(InputError, match="no scene folders"):
        adapt.read_unlabelled_frames(tmp_path / "empty", "test")


def test_train_adapt_end_to_end_reads_no_ground_truth_and_loads_everywhere(toy_frames, tmp_path):
    """The command on frames whose ground truth is poison: it runs, opens no GT file, and writes a
    checkpoint that the estimator loads, with what it adapted on."""
    import shutil

    root = tmp_path / "frames"
    shutil.copytree(toy_frames, root)
    poison_ground_truth(root)
    out = tmp_path / "adapted.pt"
    _OPENED.clear()
    _RECORDING[0] = True
    try:
        rc = featmap(["train", "adapt", "--checkpoint", str(bundled_weights("object")), "--frames", str(root), "--mesh-root",
                      str(root / "models"), "--out", str(out), "--rounds", "2", "steps=3", "synthetic_count=8", "batch_size=4",
                      "keep_fraction=1.0", "refine_iters=1", "pair_epochs=1"])
    finally:
        _RECORDING[0] = False
    assert rc == 0
    assert not [o for o in _OPENED if Path(o).name in GT_NAMES], "ground truth was opened"
    assert any(o.endswith("scene_camera.json") for o in _OPENED)  # the hook sees the reads (images go through OpenCV)
    ck = load_checkpoint(out, task="object")
    rec = adaptation_of(ck, str(out))
    assert rec.n_frames == 6 and rec.frames == str(root.resolve()) and len(rec.rounds) == 2
    assert rec.source_checkpoint == str(bundled_weights("object").resolve())
    assert ck["config"]["mapping"] is True
    r1 = rec.rounds[0]
    assert r1.estimates == len(r1.labels) and r1.kept == sum(lab.kept for lab in r1.labels)
    assert r1.kept > 0 and r1.train_steps == 3  # the pairs were made and trained on
    est = ObjectPoseEstimator.from_checkpoint(out, device="cpu")
    assert est.use_mapping and est.localiser is not None
    before = load_checkpoint(bundled_weights("object"))["model"]
    assert any(not np.allclose(before[k].float().numpy(), v.float().numpy()) for k, v in ck["model"].items() if k.startswith("g."))


def test_bag_round_trip_to_frames_and_adapt(toy_frames, tmp_path):
    """A bag as ``ros2 bag record`` of the node's inputs (image in bgr8, camera_info, depth 16UC1;
    rosbags messages, real CDR) -> the frames folder: pixels, K and depth come back exactly."""
    from featmap_ros.geometry import CameraModel
    from featmap_ros.ros import conversions as conv
    from featmap_ros.ros.bag import BagWriter, bag_to_bop_frames

    frames = adapt.read_unlabelled_frames(toy_frames, "test")
    bag = tmp_path / "camera.bag"
    rgbs, depths = [], []
    with BagWriter(bag, storage="mcap") as w:
        for k, fr in enumerate(frames):
            rgb = bop.load_rgb(fr.rgb_path)
            depth_mm = np.round(bop.load_depth_m(fr.depth_path, fr.depth_scale) * 1000).astype(np.uint16)
            rgbs.append(rgb)
            depths.append(depth_mm)
            stamp = 10**9 + k * 33_000_000
            header = conv.make_header(w.msgs, stamp, "camera_color_optical_frame")
            info = conv.camera_model_to_info(w.msgs, CameraModel(fr.K, rgb.shape[1], rgb.shape[0], np.zeros(5)), header)
            if k > 0:  # the first image comes before any camera_info: skipped
                w.write("/cam/color/camera_info", info, stamp)
            w.write("/cam/color/image_raw", conv.numpy_to_image(w.msgs, np.ascontiguousarray(rgb[..., ::-1]), "bgr8", header), stamp)
            w.write("/cam/depth/image_raw", conv.numpy_to_image(w.msgs, depth_mm, "16UC1", header), stamp)
    out = tmp_path / "from_bag"
    s = bag_to_bop_frames(bag, out, "/cam/color/image_raw", depth_topic="/cam/depth/image_raw", progress=False)
    assert (s.frames, s.skipped_no_info, s.with_depth) == (5, 1, 5)
    back = adapt.read_unlabelled_frames(out, "test")
    assert [f.im_id for f in back] == [0, 1, 2, 3, 4]
    for f, rgb, d, src in zip(back, rgbs[1:], depths[1:], frames[1:]):
        assert np.array_equal(bop.load_rgb(f.rgb_path), rgb)
        assert np.allclose(f.K, src.K)
        assert np.array_equal(np.round(bop.load_depth_m(f.depth_path, f.depth_scale) * 1000).astype(np.uint16), d)
    with pytest.raises(InputError, match="not a topic of .*topics: "):
        bag_to_bop_frames(bag, tmp_path / "x", "/camera/color/image_raw", progress=False)
    assert not (tmp_path / "x").exists()
    adapted = tmp_path / "a.pt"
    assert featmap(["train", "adapt", "--checkpoint", str(bundled_weights("object")), "--bag", str(bag), "--topic", "/cam/color/image_raw",
                    "--mesh-root", str(toy_frames / "models"), "--out", str(adapted), "--rounds", "1", "steps=2", "synthetic_count=8",
                    "batch_size=4", "refine=none", "pair_epochs=1", "keep_fraction=1.0"]) == 0
    rec = adaptation_of(load_checkpoint(adapted))
    assert rec.n_frames == 5 and rec.frames.startswith(f"bag:{bag.resolve()} topic /cam/color/image_raw info /cam/color/camera_info")


def test_bad_input_names_the_option(toy_frames, tmp_path, capsys):
    ck = str(bundled_weights("object"))
    assert featmap(["train", "adapt", "--checkpoint", ck, "--frames", str(toy_frames), "--mesh-root", str(tmp_path), "--out",
                    str(tmp_path / "a.pt")]) == 2
    assert "obj_000001.ply not found" in capsys.readouterr().err
    assert featmap(["train", "adapt", "--checkpoint", ck, "--frames", str(toy_frames), "--mesh-root", str(toy_frames / "models"),
                    "--out", str(tmp_path / "a.pt"), "keep_fraction=0"]) == 2
    assert "keep_fraction" in capsys.readouterr().err
    assert featmap(["train", "adapt", "--checkpoint", ck, "--bag", str(tmp_path), "--mesh-root", str(toy_frames / "models"),
                    "--out", str(tmp_path / "a.pt")]) == 2
    assert "not a rosbag2 bag" in capsys.readouterr().err
    other = tmp_path / "other_models"
    other.mkdir()
    mesh, _ = make_toy_object(1)
    bop.save_mesh(other / "obj_000001.ply", bop.Mesh(mesh.vertices_m * 2.0, mesh.faces, mesh.colors, "big"), units="mm")
    with pytest.raises(InputError, match="obj_000001.ply .*not the mesh the checkpoint was trained on"):
        adapt.load_meshes(other, [1], ObjectPoseEstimator.from_checkpoint(ck, device="cpu").corners_m)
    assert not (tmp_path / "a.pt").exists()


# ----------------------------------------------------------------------------- the label-free scores


def _square_view(size=64, side=24, shift=(0, 0)):
    img = np.zeros((size, size, 3), np.uint8)
    a = (size - side) // 2
    img[a + shift[0]:a + side + shift[0], a + shift[1]:a + side + shift[1]] = 255
    return adapt.edge_view(img, crops.Window(size / 2 - 0.5, size / 2 - 0.5, size), size)


def _square_contour(size=64, side=24):
    m = np.zeros((size, size), np.uint8)
    a = (size - side) // 2
    m[a:a + side, a:a + side] = 1
    return np.argwhere((m > 0) & (cv2.erode(m, np.ones((3, 3), np.uint8)) == 0))


def test_edge_score_known_values():
    view, contour = _square_view(), _square_contour()
    agree, peak = adapt.edge_score(view, contour, tol_px=2.0)
    assert agree == 1.0 and peak > 0.5  # on the square's edges; shifted by 10 px, the sides across the shift miss them
    off = adapt.edge_score(_square_view(shift=(12, 12)), contour, tol_px=2.0)
    assert off[0] < 0.6 and off[1] < 0.3
    flat = adapt.edge_view(np.full((64, 64, 3), 128, np.uint8), crops.Window(31.5, 31.5, 64), 64)
    assert adapt.edge_score(flat, contour, 2.0) == (0.0, 0.0)
    assert adapt.edge_score(view, contour[:5], 2.0) == (0.0, 0.0)
    assert adapt.chamfer_cost(view, contour) == pytest.approx(0.0, abs=1.01) and adapt.chamfer_cost(flat, contour) == 5.0


def test_combined_score_and_keep_top():
    assert adapt.combined_score(0.5, 0.0, 0.4, None) == pytest.approx(0.2)
    assert adapt.combined_score(0.5, adapt.ZOOM_SCALE, 0.4, 0.5) == pytest.approx(0.2 * np.exp(-1) * 0.5)
    assert adapt.combined_score(0.9, 0.0, -0.2, None) == 0.0
    es = [adapt.Estimate(None, None, 0, 0, 0, 0, 0, score=s) for s in (0.3, 0.0, 0.9, 0.1)]
    assert adapt.keep_top(es, 0.5) == pytest.approx(0.3)
    assert [e.kept for e in es] == [True, False, True, False]
    assert adapt.keep_top(es, 1.0) == pytest.approx(0.1) and not es[1].kept  # a zero score is never kept
    with pytest.raises(InputError, match="keep_fraction"):
        adapt.AdaptConfig(keep_fraction=1.5).check()


def test_silhouette_search_moves_a_perturbed_pose_back():
    """Render the toy object at a pose; start the search 6 px off and 5 % too far: it comes back closer."""
    from featmap_ros import geometry
    from featmap_ros.data.specs import object_dataset

    mesh, info = make_toy_object(1)
    spec = object_dataset("lm")
    K = np.array([[spec.fx, 0, spec.cx], [0, spec.fy, spec.cy], [0, 0, 1.0]])
    R = geometry.look_at_R_m2c(np.array([0.3, -0.5, 0.8]))
    t = np.array([0.01, -0.02, 0.6])
    with MeshRenderer(640, 480) as full, MeshRenderer(96, 96) as r:
        img = full.render(mesh, R, t, K).rgb
        t_off = t + np.array([6 * t[2] / K[0, 0], 0.0, 0.05 * t[2]])
        win = crops.ground_truth_window(info.corners_m, R, t_off, K)
        view = adapt.edge_view(img, crops.Window(win.center_u, win.center_v, win.side * 1.2), 96)
        R2, t2, c0, c1 = adapt.refine_on_edges(r, mesh, R, t_off, K, view, iters=3)
    assert c1 < c0
    truth = geometry.project_model_points(info.corners_m, R, t, K)
    err = lambda RR, tt: np.linalg.norm(geometry.project_model_points(info.corners_m, RR, tt, K) - truth, axis=1).mean()  # noqa: E731
    assert err(R2, t2) < 0.6 * err(R, t_off)
    assert np.allclose(R2 @ R2.T, np.eye(3), atol=1e-9)


def test_pseudo_label_precision_against_ground_truth(toy_frames):
    from featmap_ros.checkpoint import AdaptationRecord, AdaptRound, PseudoLabelRecord
    from featmap_ros.evaluation.pseudo_labels import label_errors, precision_by_round

    frames = bop.read_scene(toy_frames / "test" / "000001")
    g = frames[2].instances[0]
    exact = PseudoLabelRecord(1, 2, 1, tuple(g.R_m2c.ravel()), tuple(g.t_m2c_m), 0.9, 0.9, 0.0, 0.5, float("nan"), True)
    far = PseudoLabelRecord(1, 3, 1, tuple(g.R_m2c.ravel()), tuple(g.t_m2c_m + np.array([0.05, 0, 0])), 0.1, 0.1, 0.0, 0.1,
                            float("nan"), False)
    errs = label_errors([exact, far], toy_frames)
    assert errs[0] == (pytest.approx(0.0, abs=1e-9), pytest.approx(0.0, abs=1e-6))
    assert errs[1][0] > 0.1 and errs[1][1] > 5.0
    rec = AdaptationRecord("ck", "frames", "test", 2, {}, (AdaptRound(1, 2, 2, 1, 0.9, 0, 1, 0.0, 0.0, 0.0, 0.0, (exact, far)),))
    row = precision_by_round(AdaptationRecord.from_dict(rec.to_dict()), toy_frames)[0]
    assert row["precision_add10"] == 1.0 and row["all_add10"] == 0.5 and row["kept"] == 1
    with pytest.raises(InputError, match="im_id 99"):
        label_errors([PseudoLabelRecord(1, 99, 1, exact.R_m2c, exact.t_m2c_m, 0, 0, 0, 0, 0, False)], toy_frames)


# ----------------------------------------------------------------------------- are the kept estimates right?


def test_label_free_selection_keeps_mostly_right_estimates_on_real_like_frames(tmp_path):
    """A synthetic-only tiny network on 80 unlabelled real-like frames of a camera with its own
    colour response (320 x 240): the label-free scores keep estimates that are right (2D projection
    <= 5 px) far more often than the estimates as a whole.

    What this test does not claim: that training on these pseudo-pairs improves held-out frames.
    At this scale it did not (docs/results.md, "Adaptation to unlabelled frames"): the mean corner
    error on 24 held-out frames went from 7.9 px to 9.8 px, and stage 2 on the *true* poses of the
    same 40 frames also lost (9.3 px).
    """
    import dataclasses

    from featmap_ros.data.specs import object_dataset
    from featmap_ros.evaluation.pseudo_labels import precision_by_round
    from featmap_ros.render.real_like import RealLikeConfig

    lm = object_dataset("lm")
    spec = dataclasses.replace(lm, fx=lm.fx / 2, fy=lm.fy / 2, cx=lm.cx / 2, cy=lm.cy / 2, width=320, height=240)
    camera = RealLikeConfig(gamma=(1.3, 1.4), saturation=(0.55, 0.65))
    mesh, info = make_toy_object(1)
    write_object_dataset(tmp_path / "adapt", mesh, info, 80, spec=spec, seed=21, split="test", real_like=camera, progress=False)
    so = tmp_path / "so"
    assert featmap(["train", "object", "--config", "config/demo_object.yaml", "--out", str(so), "--device", "cpu",
                    "data.synthetic_count=600", f"data.cache_dir={tmp_path / 'cache'}", "steps_stage1=300", "steps_stage2=0",
                    "model.input_size=32", "model.small_channels=[8,16,32,32]", "model.feature_dim=64", "localiser_steps=0",
                    "batch_size=32", "tensorboard=false", "data.max_real=0", "checkpoint_every=0"]) == 0
    assert featmap(["train", "localiser", "--checkpoint", str(so / "last.pt"), "--copy-from", str(bundled_weights("object"))]) == 0
    out = tmp_path / "adapted.pt"
    assert featmap(["train", "adapt", "--checkpoint", str(so / "last.pt"), "--frames", str(tmp_path / "adapt"), "--mesh-root",
                    str(tmp_path / "adapt" / "models"), "--out", str(out), "--rounds", "1", "steps=5"]) == 0
    row = precision_by_round(adaptation_of(load_checkpoint(out)), tmp_path / "adapt")[0]
    assert row["estimates"] >= 20 and row["kept"] >= 5
    # 80 frames: seeds 21 / 23 keep 10 / 17 estimates, 40 / 53 % right against 10 / 16 % of all (40 frames
    # kept 6-7, too few for a stable share: the ONNX Runtime and torch estimators differed by one estimate there)
    assert row["precision_proj5px"] >= 0.3 and row["precision_proj5px"] >= 2.5 * row["all_proj5px"]
    assert row["kept_median_proj_px"] < 0.5 * row["all_median_proj_px"]


def test_train_mapping_changes_g_only_and_fits_the_pairs():
    """``train=g``: f and h stay as they were; g moves the real features onto the synthetic ones."""
    import torch

    from featmap_ros.nets import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(task="object", backbone="small", input_size=16, feature_dim=16, small_channels=[4, 8], pretrained=False))
    real = torch.rand(12, 3, 16, 16)
    pairs = {"real": real, "synth": (real * 0.5 + 0.3).clamp(0, 1), "corners_n": torch.rand(12, 8, 2) * 2 - 1,
             "obj_index": torch.zeros(12, dtype=torch.long)}
    feats = adapt.pair_features(model, pairs, "none", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = adapt.AdaptConfig(steps=60, batch_size=8, lr=3e-3, lambda_map=1.0, pose_weight=0.0)
    with torch.no_grad():
        gap0 = float(adapt.feature_match_loss(model.g(feats["f_real"]), feats["f_synth"]))
    m = adapt.train_mapping(model, feats, cfg, progress=False)
    with torch.no_grad():
        gap1 = float(adapt.feature_match_loss(model.g(feats["f_real"]), feats["f_synth"]))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("g.")), "f or h changed"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("g."))
    assert gap1 < 0.7 * gap0 and m["steps"] == 60
    assert all(p.requires_grad for p in model.parameters())  # the freeze is undone
