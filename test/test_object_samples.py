"""Synthetic samples, real/synthetic pairs and evaluation crops."""
import numpy as np
import pytest
import torch
from matplotlib.path import Path as MPath
from scipy.spatial import ConvexHull

from featmap_ros import geometry
from featmap_ros import crops
from featmap_ros.data.backgrounds import BackgroundSource, procedural_background
from featmap_ros.data.object_samples import (
    BopCropDataset, PoseSampling, RealSynthPairs, SyntheticObjectDataset, collect_frames, object_window, sample_pose,
)
from featmap_ros.data.specs import ObjectDatasetSpec, LINEMOD_OBJECTS
from featmap_ros.errors import InputError
from featmap_ros.render.real_like import write_object_dataset
from featmap_ros.render.renderer import MeshRenderer
from featmap_ros.render.toy_object import make_toy_object

# a LINEMOD camera at quarter resolution keeps renders tiny
SPEC = ObjectDatasetSpec("tiny", 143.1, 143.4, 81.3, 60.5, 160, 120, LINEMOD_OBJECTS, (1,), ())
K = np.array([[SPEC.fx, 0, SPEC.cx], [0, SPEC.fy, SPEC.cy], [0, 0, 1.0]])
SAMPLING = PoseSampling(distance_range_m=(0.25, 0.4), margin_px=30)


@pytest.fixture(scope="module")
def toy():
    return make_toy_object()


_WORKERS_SCRIPT = """
import numpy as np, torch
from featmap_ros.data.object_samples import PoseSampling, SyntheticObjectDataset
from featmap_ros.render.toy_object import make_toy_object
mesh, info = make_toy_object()
K = np.array([[143.1, 0, 81.3], [0, 143.4, 60.5], [0, 0, 1.0]])
ds = SyntheticObjectDataset(mesh, info, K, 160, 120, crop_size=16, seed=2, length=4,
                            sampling=PoseSampling(distance_range_m=(0.25, 0.4), margin_px=30))
multi = {s["index"].item(): s["image"] for s in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)}
ref = {s["index"].item(): s["image"] for s in ds}
assert sorted(multi) == sorted(ref) == [0, 1, 2, 3], (sorted(multi), sorted(ref))
assert all(torch.equal(ref[i], multi[i]) for i in ref)
print("SAME")
"""


def test_dataloader_workers_give_the_same_stream():
    # In a fresh interpreter: forked workers must start before the process renders anything,
    # since a Mesa EGL context does not survive fork (see the class docstring); the test
    # process may have rendered in other tests already.
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYOPENGL_PLATFORM=os.environ.get("PYOPENGL_PLATFORM", "egl"), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _WORKERS_SCRIPT], capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0 and "SAME" in res.stdout, res.stderr[-2000:]


def test_sample_pose_ranges():
    rng = np.random.default_rng(0)
    c = np.array([0.01, -0.02, 0.005])
    for _ in range(50):
        R, t = sample_pose(rng, K, 160, 120, SAMPLING, c)
        assert geometry.orthonormality_error(R) < 1e-9
        p = R @ c + t
        assert 0.25 - 1e-9 <= np.linalg.norm(p) <= 0.4 + 1e-9
        u, v = geometry.project_points(p, K)
        assert 30 - 1e-6 <= u <= 130 + 1e-6 and 30 - 1e-6 <= v <= 90 + 1e-6
        # the camera looks from the upper hemisphere relative to the line of sight to the object
        view_dir_m = R.T @ (-p / np.linalg.norm(p))
        assert view_dir_m[2] >= -1e-9


def test_synthetic_dataset_is_deterministic_and_consistent(toy):
    mesh, info = toy
    kw = dict(width=160, height=120, crop_size=32, sampling=SAMPLING, length=4)
    a = list(SyntheticObjectDataset(mesh, info, K, seed=3, **kw))
    b = list(SyntheticObjectDataset(mesh, info, K, seed=3, **kw))
    c = list(SyntheticObjectDataset(mesh, info, K, seed=4, **kw))
    assert len(a) == 4
    s = a[0]
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    assert s["corners_n"].shape == (8, 2) and s["window"].shape == (3,)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["corners_n"], y["corners_n"])
    assert not torch.equal(a[0]["image"], c[0]["image"])
    # targets are the projected box corners in the sample's own window
    for s in a:
        w = crops.Window(*s["window"].double().numpy())
        uv = geometry.project_model_points(info.corners_m, s["R_m2c"].double().numpy(), s["t_m2c_m"].double().numpy(), K)
        np.testing.assert_allclose(crops.image_to_crop_normalised(uv, w), s["corners_n"].numpy(), atol=2e-4)


def test_object_inside_its_box_in_the_crop(toy):
    mesh, info = toy
    ds = SyntheticObjectDataset(mesh, info, K, 160, 120, crop_size=48, sampling=SAMPLING, seed=1, jitter=False)
    with MeshRenderer(48, 48) as r:
        s = ds.make_sample(5, r, BackgroundSource(None))
        w = crops.Window(*s["window"].double().numpy())
        R, t = s["R_m2c"].double().numpy(), s["t_m2c_m"].double().numpy()
        out = r.render_crop(mesh, R, t, K, w, 48)
    px = (s["corners_n"].double().numpy() + 1) * 48 / 2 - 0.5
    hull = MPath(px[ConvexHull(px).vertices])
    ys, xs = np.nonzero(out.mask)
    assert len(xs) > 50
    assert hull.contains_points(np.stack([xs, ys], 1), radius=1.0).mean() > 0.99
    # unjittered window: the box fills the window up to the margin factor
    assert np.abs(s["corners_n"].numpy()).max() == pytest.approx(1 / 1.1, abs=0.02)


def test_backgrounds(tmp_path):
    rng = np.random.default_rng(0)
    a = procedural_background(np.random.default_rng(1), 40, 30)
    assert a.shape == (30, 40, 3) and a.dtype == np.uint8 and a.std() > 5
    assert np.array_equal(a, procedural_background(np.random.default_rng(1), 40, 30))
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), np.full((50, 80, 3), (10, 20, 200), np.uint8))
    src = BackgroundSource(tmp_path)
    b = src.sample(rng, 16, 16)
    assert b.shape == (16, 16, 3) and np.all(b[..., 0] == 200)  # BGR file -> RGB
    with pytest.raises(InputError, match="not found"):
        BackgroundSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no background images"):
        BackgroundSource(tmp_path / "empty")


@pytest.fixture(scope="module")
def real_like_root(tmp_path_factory, toy):
    mesh, info = toy
    root = tmp_path_factory.mktemp("rl") / "ds"
    write_object_dataset(root, mesh, info, 4, spec=SPEC, domain="real-like", seed=0, sampling=SAMPLING, progress=False)
    return root


def test_pairs_share_window_and_background(real_like_root, toy):
    mesh, info = toy
    frames = collect_frames(real_like_root, "train", 1)
    assert len(frames) == 4
    pairs = RealSynthPairs(frames, mesh, info, crop_size=32, seed=0)
    p = pairs[1]
    assert p["real"].shape == p["synth"].shape == (3, 32, 32)
    w = crops.Window(*p["window"].double().numpy())
    fr = frames[1]
    with MeshRenderer(32, 32) as r:
        m = r.render_crop(mesh, fr.R_m2c, fr.t_m2c_m, fr.K, w, 32)
    outside = m.alpha == 0
    assert outside.sum() > 100 and m.mask.sum() > 20
    # the synthetic crop is the real crop with the object pasted in: equal outside the render
    np.testing.assert_array_equal(p["real"].numpy()[:, outside], p["synth"].numpy()[:, outside])
    assert (p["real"] - p["synth"]).abs().numpy()[:, m.mask].mean() > 0.02
    q = pairs[1]
    assert torch.equal(p["synth"], q["synth"])
    pairs.set_epoch(1)
    assert not torch.equal(pairs[1]["window"], p["window"])  # new jitter per epoch


def test_bop_crop_dataset(real_like_root, toy):
    _, info = toy
    frames = collect_frames(real_like_root, "train", 1, im_ids=[0, 2])
    assert [f.im_id for f in frames] == [0, 2]
    ds = BopCropDataset(frames, info, crop_size=24)
    s = ds[0]
    assert s["image"].shape == (3, 24, 24)
    uv = geometry.project_model_points(info.corners_m, frames[0].R_m2c, frames[0].t_m2c_m, frames[0].K)
    w = object_window(uv)
    np.testing.assert_allclose(s["window"].numpy(), [w.center_u, w.center_v, w.side], rtol=1e-5)
    sb = BopCropDataset(frames, info, crop_size=24, window_from="bbox")[0]
    assert sb["window"][2] > 0
    with pytest.raises(InputError):
        BopCropDataset(frames, info, window_from="nope")
    assert collect_frames(real_like_root, "train", 7) == []


# ------------------------------------------------------------------------------------------
# Occlusion: occluder meshes in front of the target, cut-outs


def _occluder():
    from featmap_ros.render.toy_object import box_mesh

    return box_mesh([-0.03, -0.03, -0.03], [0.06, 0.06, 0.06], np.full((8, 3), (250, 20, 200), np.uint8), "occluder")


def _targets(s):
    return [s[k] for k in ("corners_n", "R_m2c", "t_m2c_m", "window")]


def test_occlusion_off_leaves_the_stream_unchanged(toy):
    mesh, info = toy
    kw = dict(width=160, height=120, crop_size=32, sampling=SAMPLING, length=3, seed=5)
    plain = list(SyntheticObjectDataset(mesh, info, K, **kw))
    off = list(SyntheticObjectDataset(mesh, info, K, occluders=[_occluder()], occluder_prob=0.0, cutout_prob=0.0, **kw))
    for a, b in zip(plain, off):
        assert torch.equal(a["image"], b["image"])
        assert float(a["visib_fract"]) == 1.0


def test_occluders_hide_part_of_the_target_and_keep_its_targets(toy):
    from featmap_ros.data.object_samples import MIN_VISIB_FRACT

    mesh, info = toy
    kw = dict(width=160, height=120, crop_size=32, sampling=SAMPLING, length=4, seed=5)
    plain = list(SyntheticObjectDataset(mesh, info, K, **kw))
    occ = SyntheticObjectDataset(mesh, info, K, occluders=[_occluder()], occluder_prob=1.0, **kw)
    a, b = list(occ), list(occ)
    visib = [float(s["visib_fract"]) for s in a]
    assert all(MIN_VISIB_FRACT - 1e-6 <= v <= 1.0 for v in visib)
    assert min(visib) < 0.97, visib  # at least one of the four is occluded
    for p, s, s2 in zip(plain, a, b):
        assert torch.equal(s["image"], s2["image"])  # deterministic
        # the pose, window and box corners are the whole target's, occluded or not
        for x, y in zip(_targets(p), _targets(s)):
            assert torch.equal(x, y)
    k = int(np.argmin(visib))
    diff = (a[k]["image"] - plain[k]["image"]).abs().sum(0) > 0.05
    assert 0 < diff.float().mean() < 1
    # the occluder's magenta shows where the crops differ
    img = a[k]["image"].numpy()
    assert (img[1][diff.numpy()] < img[0][diff.numpy()]).mean() > 0.5


def test_cutouts_paste_rectangles_over_the_target(toy):
    mesh, info = toy
    kw = dict(width=160, height=120, crop_size=32, sampling=SAMPLING, length=4, seed=6)
    plain = list(SyntheticObjectDataset(mesh, info, K, **kw))
    cut = list(SyntheticObjectDataset(mesh, info, K, cutout_prob=1.0, **kw))
    assert any(not torch.equal(p["image"], c["image"]) for p, c in zip(plain, cut))
    assert any(float(c["visib_fract"]) < 1.0 for c in cut)
    for p, c in zip(plain, cut):
        for x, y in zip(_targets(p), _targets(c)):
            assert torch.equal(x, y)


def test_add_cutouts_known_mask():
    from featmap_ros.data.object_samples import MIN_VISIB_FRACT, add_cutouts

    image = np.full((40, 40, 3), 100, np.uint8)
    before = image.copy()
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    for seed in range(10):
        out, hidden = add_cutouts(np.random.default_rng(seed), image, mask, np.zeros_like(mask), BackgroundSource(None))
        assert np.array_equal(image, before)  # input untouched
        assert not (hidden & ~mask).any()  # only target pixels count as hidden
        assert (mask & ~hidden).sum() >= MIN_VISIB_FRACT * mask.sum()
        changed = (out != before).any(axis=2)
        assert not (hidden & ~changed).sum() > 0.1 * hidden.sum()  # hidden pixels were pasted over (flat colour may equal 100 rarely)
    # no target: nothing to cover
    out, hidden = add_cutouts(np.random.default_rng(0), image, np.zeros_like(mask), np.zeros_like(mask), BackgroundSource(None))
    assert np.array_equal(out, image) and not hidden.any()


def test_occlusion_bad_input(toy):
    mesh, info = toy
    with pytest.raises(InputError, match="occluder_prob must be in"):
        SyntheticObjectDataset(mesh, info, K, occluders=[_occluder()], occluder_prob=1.5)
    with pytest.raises(InputError, match="cutout_prob must be in"):
        SyntheticObjectDataset(mesh, info, K, cutout_prob=-0.1)
    with pytest.raises(InputError, match="no occluder meshes"):
        SyntheticObjectDataset(mesh, info, K, occluder_prob=0.5)


def test_occluders_are_the_other_objects_or_shapes(toy):
    from featmap_ros.training.prepare import occluders_for

    mesh, _ = toy
    other = _occluder()
    assert occluders_for([mesh, other], 0, 0) == [other]
    assert occluders_for([mesh, other], 1, 0) == [mesh]
    alone = occluders_for([mesh], 0, 0)
    assert len(alone) == 9 and all(m is not mesh for m in alone)


def test_synthetic_dataset_takes_package_photos(toy):
    mesh, info = toy
    ds = SyntheticObjectDataset(mesh, info, K, 160, 120, crop_size=24, sampling=SAMPLING, seed=1, backgrounds="photos", length=1)
    assert next(iter(ds))["image"].shape == (3, 24, 24)
