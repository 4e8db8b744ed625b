"""Real-like domain: camera effects, frames with exact ground truth in BOP format, determinism."""
import json

import numpy as np
import pytest

from featmap_ros import geometry
from featmap_ros.data import bop
from featmap_ros.data.object_samples import PoseSampling
from featmap_ros.data.specs import LINEMOD_OBJECTS, ObjectDatasetSpec
from featmap_ros.errors import InputError
from featmap_ros.render.depth_sensor import SensorModel
from featmap_ros.render.real_like import (RealLikeConfig, SequenceConfig, camera_effects, camera_motion, rest_periods,
                                          write_object_dataset, write_object_sequence)
from featmap_ros.render.toy_object import make_toy_object

SPEC = ObjectDatasetSpec("tiny", 143.1, 143.4, 81.3, 60.5, 160, 120, LINEMOD_OBJECTS, (1,), ())
SAMPLING = PoseSampling(distance_range_m=(0.25, 0.4), margin_px=30)
#: the tiny scenes are closer than a Kinect's 0.4 m minimum range
NEAR_SENSOR = SensorModel(min_range_m=0.1)


def test_camera_effects():
    rng = np.random.default_rng(0)
    img = np.zeros((40, 50, 3), np.uint8)
    img[10:30, 10:40] = (200, 60, 30)
    a = camera_effects(img, np.random.default_rng(1))
    b = camera_effects(img, np.random.default_rng(1))
    assert a.shape == img.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - img.astype(int)).mean() > 2  # noise, blur, cast, JPEG changed it
    assert a[20, 25, 0] > a[20, 25, 2]  # but the object's colour is still recognisable
    assert not np.array_equal(img, np.zeros_like(img)) and img[0, 0].sum() == 0  # input untouched
    with pytest.raises(InputError):
        camera_effects(img.astype(np.float32), rng)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    mesh, info = make_toy_object()
    root = tmp_path_factory.mktemp("rl") / "ds"
    write_object_dataset(root, mesh, info, 7, spec=SPEC, domain="real-like", seed=11, sampling=SAMPLING,
                         real_like=RealLikeConfig(occlusion_prob=1.0, depth_sensor=NEAR_SENSOR), progress=False)
    return root, mesh, info


def test_real_like_dataset_round_trip(written):
    root, mesh, info = written
    infos = bop.load_models_info(root / "models" / "models_info.json")
    np.testing.assert_allclose(infos[1].size_m, info.size_m, atol=1e-9)
    frames = bop.read_scene(root / "train" / "000001", infos)
    assert [f.im_id for f in frames] == list(range(7))
    K = np.array([[SPEC.fx, 0, SPEC.cx], [0, SPEC.fy, SPEC.cy], [0, 0, 1]])
    occluded = 0
    valid_fracs = []
    for f in frames:
        np.testing.assert_allclose(f.K, K)
        g = f.instances[0]
        assert geometry.orthonormality_error(g.R_m2c) < 1e-9
        rgb = bop.load_rgb(f.rgb_path)
        assert rgb.shape == (120, 160, 3)
        m, mv = bop.load_mask(g.mask_path), bop.load_mask(g.mask_visib_path)
        assert not (mv & ~m).any()
        assert 0.0 < g.visib_fract <= 1.0
        assert g.visib_fract >= 0.4 - 1e-9 or g.visib_fract == pytest.approx(mv.sum() / g.px_count_all)
        occluded += g.visib_fract < 0.999
        # object's centre projects inside the silhouette's box; depth there is the object's
        u, v = geometry.project_points(g.R_m2c @ info.center_m + g.t_m2c_m, f.K)
        x, y, w, h = g.bbox_obj
        assert x <= u <= x + w and y <= v <= y + h
        if m.sum() == g.px_count_all:  # entirely inside the image
            assert g.bbox_obj == tuple(bop._bbox_of(m))
        d = bop.load_depth_m(f.depth_path, f.depth_scale)
        zs = d[mv]
        zc = (g.R_m2c @ info.center_m + g.t_m2c_m)[2]
        valid = zs > 0  # the sensor drops pixels at edges, grazing angles and in the occluder's projector shadow
        assert valid.mean() > 0.2 and np.all(np.abs(zs[valid] - zc) <= info.diameter_m / 2 + 5e-3)
        valid_fracs.append(valid.mean())
        assert (d > 0).mean() > 0.6  # the backdrop plane fills the background (less the shadows and dropouts)
    assert np.median(valid_fracs) > 0.7
    assert occluded >= 2  # occlusion_prob 1: most frames get an occluder that leaves >= 40 % visible
    train = bop.read_split_file(root / "train.txt")
    test = bop.read_split_file(root / "test.txt")
    assert sorted(train + test) == list(range(7)) and len(train) == 2  # ceil(0.15 * 7)


def test_real_like_is_deterministic(written, tmp_path):
    root, mesh, info = written
    again = tmp_path / "again"
    write_object_dataset(again, mesh, info, 2, spec=SPEC, domain="real-like", seed=11, sampling=SAMPLING,
                         real_like=RealLikeConfig(occlusion_prob=1.0, depth_sensor=NEAR_SENSOR), progress=False)
    for im in (0, 1):
        for folder in ("rgb", "depth"):
            a = (root / "train" / "000001" / folder / f"{im:06d}.png").read_bytes()
            b = (again / "train" / "000001" / folder / f"{im:06d}.png").read_bytes()
            assert a == b
    # exact depth (no sensor): the same colour image (the sensor draws last), the rendered depth
    exact = tmp_path / "exact"
    write_object_dataset(exact, mesh, info, 1, spec=SPEC, domain="real-like", seed=11, sampling=SAMPLING,
                         real_like=RealLikeConfig(occlusion_prob=1.0, depth_sensor=None), progress=False)
    (f_n,), (f_e,) = (bop.read_scene(r / "train" / "000001")[:1] for r in (root, exact))
    assert f_n.rgb_path.read_bytes() == f_e.rgb_path.read_bytes()
    d_n, d_e = bop.load_depth_m(f_n.depth_path, f_n.depth_scale), bop.load_depth_m(f_e.depth_path, f_e.depth_scale)
    both = (d_n > 0) & (d_e > 0)
    err_mm = 1000 * (d_n - d_e)[both]
    assert 0.2 < err_mm.std() < 4.0 and abs(np.median(err_mm)) < 1.5  # structured-light noise, unbiased
    assert (d_e > 0).mean() < 0.5 < (d_n > 0).mean()  # exact: the clutter only; the sensor sees the backdrop
    assert ((d_e > 0) & (d_n == 0)).mean() > 0.005  # dropouts (edges, shadows, holes)
    syn = tmp_path / "syn"
    write_object_dataset(syn, mesh, info, 1, spec=SPEC, domain="synthetic", seed=11, sampling=SAMPLING, progress=False)
    a = bop.load_rgb(root / "train" / "000001" / "rgb" / "000000.png")
    b = bop.load_rgb(syn / "train" / "000001" / "rgb" / "000000.png")
    assert a.shape == b.shape and not np.array_equal(a, b)
    with pytest.raises(InputError):
        write_object_dataset(tmp_path / "bad", mesh, info, 1, spec=SPEC, domain="cartoon", progress=False)
    assert not (tmp_path / "bad").exists()


def test_harsh_crop_domain_moves_colours_and_is_seeded():
    from featmap_ros.render.real_like import harsh_crop_domain

    img = np.zeros((48, 48, 3), np.uint8)
    img[8:40, 8:40] = (220, 40, 30)  # a red object on black
    a = harsh_crop_domain(img, np.random.default_rng(1))
    b = harsh_crop_domain(img, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == img.shape and a.dtype == np.uint8
    centre = a[16:32, 16:32].reshape(-1, 3).mean(axis=0)
    # the fixed colour response turns the red object into a mostly green-blue one
    assert centre[0] < max(centre[1], centre[2])
    assert img[20, 20, 0] == 220  # input untouched
    with pytest.raises(InputError):
        harsh_crop_domain(img[..., 0], np.random.default_rng(0))


def test_camera_motion_rests_and_moves_smoothly():
    cfg = SequenceConfig(fps=30.0, rest_s=(0.5, 0.5), move_s=(1.0, 1.0), max_turn_deg=20.0)
    centre = np.array([0.02, -0.01, 0.8])
    dR, dt, moving = camera_motion(np.random.default_rng(0), 120, centre, cfg)
    assert dR.shape == (120, 3, 3) and dt.shape == (120, 3) and moving.shape == (120,)
    np.testing.assert_allclose(dR[0], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(dt[0], 0.0, atol=1e-12)
    assert rest_periods(moving) == [(0, 14), (45, 59), (90, 104)]  # 15 frames rest, 30 move
    assert not moving[:15].any() and moving[15:45].all()
    p = dR @ centre + dt  # the pivot: the object's centre moves by the shift only
    step = np.linalg.norm(np.diff(p, axis=0), axis=1)
    for a, b in rest_periods(moving):
        assert np.all(step[a:b] == 0.0)  # rest: exactly the same pose
    assert step.max() < 2 * np.linalg.norm(cfg.max_shift_m) / 30 * 1.875  # minimum jerk: peak speed 1.875x the mean
    assert step[15] < 0.2 * step.max()  # starts from rest smoothly
    turn = [geometry.rotation_angle_deg(dR[i], np.eye(3)) for i in range(120)]
    assert max(turn) <= 20.0 + 1e-6 and turn[44] >= 8.0
    with pytest.raises(InputError):
        camera_motion(np.random.default_rng(0), 0, centre)


def test_sequence_writes_one_scene_from_a_moving_camera(tmp_path):
    mesh, info = make_toy_object()
    root = tmp_path / "seq"
    seq = SequenceConfig(fps=10.0, rest_s=(0.3, 0.3), move_s=(0.3, 0.3))
    write_object_sequence(root, mesh, info, 7, spec=SPEC, seed=3, sampling=SAMPLING, sequence=seq,
                          real_like=RealLikeConfig(depth_sensor=NEAR_SENSOR), progress=False)
    meta = json.loads((root / "sequence.json").read_text())
    assert meta["fps"] == 10.0 and meta["frames"] == 7 and meta["split"] == "test"
    assert meta["moving"] == [False] * 3 + [True] * 3 + [False] and meta["rest_periods"] == [[0, 2], [6, 6]]
    frames = bop.read_scene(root / "test" / "000001", bop.load_models_info(root / "models" / "models_info.json"))
    assert [f.im_id for f in frames] == list(range(7)) and bop.read_split_file(root / "test.txt") == list(range(7))
    t = np.array([f.instances[0].t_m2c_m for f in frames])
    np.testing.assert_array_equal(t[0], t[1])  # at rest: the same pose ...
    rgb = [bop.load_rgb(f.rgb_path).astype(int) for f in frames]
    depth = [bop.load_depth_m(f.depth_path, f.depth_scale) for f in frames]
    assert np.abs(rgb[0] - rgb[1]).mean() > 0.5 and not np.array_equal(depth[0], depth[1])  # ... new noise per frame
    assert np.abs(rgb[0] - rgb[1]).mean() < 40  # but the same scene
    assert np.linalg.norm(t[5] - t[2]) > 1e-3  # it moved
