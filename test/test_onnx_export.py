"""Tests of featmap_ros.onnx_export and the estimators' ``runtime="onnxruntime"``."""
from featmap_ros.render.renderer import preload_torch_compiler

preload_torch_compiler()  # as the other estimator tests: before anything renders

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from featmap_ros import geometry
from featmap_ros import crops
from featmap_ros.errors import InputError
from featmap_ros.estimators import HandPoseEstimator, ObjectPoseEstimator
from featmap_ros.nets import ModelConfig, build_model
from featmap_ros.onnx_export import OrtRunner, check_onnx, export_onnx, export_onnx_bytes

K = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]])


def tiny(task="object", map_level="fc", size=32, n_objects=2, seed=0):
    """A small random model whose g is NOT the identity (so mapping vs no mapping differ)."""
    torch.manual_seed(seed)
    m = build_model(ModelConfig(task=task, backbone="small", input_size=size, feature_dim=16, small_channels=[4, 8],
                                n_objects=n_objects, pretrained=False, map_level=map_level))
    with torch.no_grad():
        for p in m.g.parameters():
            p.normal_(0.0, 0.2)
        for mod in m.modules():  # non-trivial BatchNorm running statistics
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


@pytest.mark.parametrize("task", ["object", "hand"])
@pytest.mark.parametrize("map_level", ["fc", "conv"])
def test_export_matches_torch_for_both_map_levels(tmp_path, task, map_level):
    m = tiny(task, map_level, size=16 if map_level == "conv" else 32)
    out = export_onnx(m, tmp_path / "sub" / "net.onnx", use_mapping=True)
    assert out.is_file() and not list(out.parent.glob(".*tmp*"))  # atomic: no leftovers
    onnx.checker.check_model(onnx.load(str(out)))
    assert check_onnx(m, out, use_mapping=True, batch_sizes=(1, 3)) < 1e-4
    # dynamic batch, output shape and values by hand
    x = np.random.default_rng(1).uniform(0, 1, (3, m.cfg.in_channels, m.cfg.input_size, m.cfg.input_size)).astype(np.float32)
    y = OrtRunner(out).run(x)
    with torch.no_grad():
        want = m(torch.from_numpy(x), real=True).numpy()
        no_map = m(torch.from_numpy(x), real=False).numpy()
    assert y.shape == want.shape == ((3, 2, 8, 2) if task == "object" else (3, 14, 3))
    assert np.abs(y - want).max() < 1e-4
    assert np.abs(want - no_map).max() > 1e-3  # g matters, so the test above tells the two apart
    y_nomap = OrtRunner(export_onnx_bytes(m, use_mapping=False)).run(x)
    assert np.abs(y_nomap - no_map).max() < 1e-4


def test_export_leaves_the_model_alone(tmp_path):
    m = tiny().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    export_onnx(m, tmp_path / "a.onnx", input_shape=(3, 32, 32))
    assert all(mod.training for mod in m.modules())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def object_setup():
    """Meta of one object and a model whose head predicts a valid box around a known pose."""
    from scipy.spatial.transform import Rotation

    corners_m = geometry.box_corners([-0.03, -0.04, -0.02], [0.06, 0.08, 0.04])
    meta = {"object_names": ["obj0"], "obj_ids": [1], "corners_m": corners_m[None].tolist(), "window_scale": 1.2}
    R, t = Rotation.from_euler("xyz", [0.4, 0.3, -0.2]).as_matrix(), np.array([0.02, 0.01, 0.8])
    px = geometry.project_model_points(corners_m, R, t, K)
    lo, hi = px.min(0), px.max(0)
    box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
    target = crops.image_to_crop_normalised(px, crops.window_from_bbox(box, scale=1.2))
    m = tiny(n_objects=1)
    with torch.no_grad():  # near-valid corners that still depend on the crop
        m.h.fc.weight.mul_(0.02)
        m.h.fc.bias.copy_(torch.as_tensor(target.reshape(-1), dtype=torch.float32))
    return m, meta, box


def test_object_estimator_onnxruntime_gives_the_torch_poses():
    m, meta, box = object_setup()
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    boxes = [("obj0", box), ("obj0", box + [30, -20, 5, 5]), ("obj0", box + [-60, 40, -4, -4])]
    ref = ObjectPoseEstimator(m, meta, device="cpu", runtime="torch").estimate(img, K, boxes)
    est = ObjectPoseEstimator(m, meta, device="cpu", runtime="onnxruntime")
    assert est.runtime == "onnxruntime" and est._ort is not None  # f, g, h run in ONNX Runtime
    est.warmup()
    got = est.estimate(img, K, boxes)
    assert len(ref) == len(got) == 3
    for a, b in zip(ref, got):
        assert np.abs(a.corners_px - b.corners_px).max() < 1e-3
        assert np.allclose(a.R_m2c, b.R_m2c, atol=1e-4) and np.allclose(a.t_m2c_m, b.t_m2c_m, atol=1e-5)
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_hand_estimator_onnxruntime_gives_the_torch_joints():
    Kh = np.array([[290.0, 0, 160.0], [0, 290.0, 120.0], [0, 0, 1.0]])
    v, u = np.mgrid[0:240, 0:320]
    depth = (0.7 + 0.05 * np.sin(u / 15.0) * np.cos(v / 11.0)).astype(np.float32)  # textured surface
    centres = [np.array([0.02, -0.01, 0.7]), np.array([-0.05, 0.03, 0.68])]
    meta = {"cube_mm": 300.0, "joint_names": [f"j{i}" for i in range(14)]}
    m = tiny("hand", "conv", size=16)
    ref = HandPoseEstimator(m, meta, device="cpu", runtime="torch").estimate_batch([depth, depth], Kh, centers_m=centres)
    got = HandPoseEstimator(m, meta, device="cpu", runtime="onnxruntime").estimate_batch([depth, depth], Kh, centers_m=centres)
    assert not np.allclose(ref[0].joints_m, ref[1].joints_m)  # different crops, different joints
    for a, b in zip(ref, got):
        assert np.abs(a.joints_m - b.joints_m).max() < 1e-5  # metres


def test_bad_input_names_the_field_or_file(tmp_path, monkeypatch):
    m, meta, _ = object_setup()
    with pytest.raises(InputError, match="runtime: .*'tensorrt'"):
        ObjectPoseEstimator(m, meta, device="cpu", runtime="tensorrt")
    with pytest.raises(InputError, match="runtime"):
        HandPoseEstimator(tiny("hand"), {}, device="cpu", runtime="onnx")
    missing = tmp_path / "none.pt"
    with pytest.raises(InputError, match="none.pt"):
        ObjectPoseEstimator.from_checkpoint(missing, device="cpu", runtime="onnxruntime")
    with pytest.raises(InputError, match="none.pt"):
        HandPoseEstimator.from_checkpoint(missing, device="cpu", runtime="onnxruntime")
    with pytest.raises(InputError, match="input_shape"):
        export_onnx(m, tmp_path / "x.onnx", input_shape=(1, 32, 32))
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(InputError, match="nothing.onnx"):
        OrtRunner(tmp_path / "nothing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="bad.onnx"):
        OrtRunner(bad)


def test_onnxruntime_is_the_default_and_torch_the_fallback_logged_once(monkeypatch, caplog):
    m, meta, box = object_setup()
    img = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    est = ObjectPoseEstimator(m, meta, device="cpu")
    assert est.runtime == "onnxruntime" and est._ort is not None and est.runtime_fallback == ""
    # not installed: torch, and why, logged once
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with caplog.at_level("WARNING", logger="featmap_ros"):
        est_t = ObjectPoseEstimator(m, meta, device="cpu")
        est_t.estimate(img, K, [("obj0", box)])
        est_t.estimate(img, K, [("obj0", box)])
    assert est_t.runtime == "torch" and est_t._ort is None
    assert "'onnxruntime' is not installed" in est_t.runtime_fallback and "torch runs it" in est_t.runtime_fallback
    assert [r.getMessage() for r in caplog.records].count(est_t.runtime_fallback) == 1
    monkeypatch.delitem(sys.modules, "onnxruntime")
    # a session that fails on a batch: this batch and the next in torch, said once
    ref = ObjectPoseEstimator(m, meta, device="cpu", runtime="torch").estimate(img, K, [("obj0", box)])

    def broken(_):
        raise RuntimeError("no kernel for this input")

    monkeypatch.setattr(est._ort, "run", broken)
    caplog.clear()
    with caplog.at_level("WARNING", logger="featmap_ros"):
        got = [est.estimate(img, K, [("obj0", box)]) for _ in range(2)]
    assert est.runtime == "torch" and "no kernel for this input" in est.runtime_fallback
    assert len([r for r in caplog.records if "ONNX Runtime failed" in r.getMessage()]) == 1
    for g in got:
        np.testing.assert_allclose(g[0].t_m2c_m, ref[0].t_m2c_m, atol=1e-12)


def test_default_install_estimators_match_torch_on_real_like_frames(tmp_path):
    """The bundled weights, ONNX Runtime (the default) vs torch, on real-like frames: the same
    poses and joints within a tolerance (float32 kernels differ in their last bits)."""
    import json

    from featmap_ros.checkpoint import bundled_weights
    from featmap_ros.commands.demo import make_object_frames
    from featmap_ros.data.bop import load_rgb
    from featmap_ros.data.nyu import nyu_K
    from featmap_ros.data.specs import hand_dataset
    from featmap_ros.render.depth_sensor import sample_pair

    root = make_object_frames(tmp_path / "obj", 2, seed=5)
    scene = root / "test" / "000001"
    cams = json.loads((scene / "scene_camera.json").read_text())
    ests = {rt: ObjectPoseEstimator.from_checkpoint(bundled_weights("object"), device="cpu", runtime=rt)
            for rt in ("onnxruntime", "torch")}
    assert ObjectPoseEstimator.from_checkpoint(bundled_weights("object"), device="cpu").runtime == "onnxruntime"
    n = 0
    for im_id, cam in cams.items():
        img = load_rgb(next((scene / "rgb").glob(f"{int(im_id):06d}.*")))
        Kc = np.array(cam["cam_K"], np.float64).reshape(3, 3)
        a, b = (ests[rt].estimate(img, Kc) for rt in ("onnxruntime", "torch"))
        assert len(a) == len(b)
        for pa, pb in zip(a, b):
            assert np.abs(pa.corners_px - pb.corners_px).max() < 0.05  # pixels
            assert np.linalg.norm(pa.t_m2c_m - pb.t_m2c_m) < 1e-3  # metres
            assert geometry.rotation_angle_deg(pa.R_m2c, pb.R_m2c) < 0.1
            n += 1
    assert n >= 1
    hands = {rt: HandPoseEstimator.from_checkpoint(bundled_weights("hand"), device="cpu", runtime=rt)
             for rt in ("onnxruntime", "torch")}
    assert hands["onnxruntime"].runtime == "onnxruntime" and hands["onnxruntime"].centre_refiner.runtime == "onnxruntime"
    spec, Kh = hand_dataset("nyu"), nyu_K()
    rng = np.random.default_rng([5, 11])
    for _ in range(2):
        _, _, real_m = sample_pair(rng, Kh, spec.width, spec.height)
        a, b = (hands[rt].estimate(real_m.astype(np.float32), Kh) for rt in ("onnxruntime", "torch"))
        assert a is not None and b is not None  # these two frames' hands are found (seed 5)
        assert np.abs(a.joints_m - b.joints_m).max() < 1e-5  # metres


def test_a_gpu_without_onnxruntime_gpu_keeps_torch(monkeypatch):
    """device cuda and a CPU-only ONNX Runtime: torch on the GPU, not ONNX Runtime on the CPU."""
    from featmap_ros.onnx_export import check_ort_device

    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(InputError, match="no CUDAExecutionProvider"):
        check_ort_device("cuda:0")
    check_ort_device("cpu")
