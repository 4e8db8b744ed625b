"""Real-like depth sensor model: seeded, noise growing with depth, quantised, shadows, dropout."""
from __future__ import annotations

import numpy as np
import pytest

from featmap_ros.data.nyu import nyu_K
from featmap_ros.render.depth_sensor import SensorModel, apply_sensor, render_pair, sample_pair
from featmap_ros.render.hand import sample_hand
from featmap_ros.render.hand_depth import render_capsules_depth, render_plane_depth

K = nyu_K()
QUIET = SensorModel(speckle_count=0.0)


def test_seeded():
    a = sample_pair(np.random.default_rng(5), K)
    b = sample_pair(np.random.default_rng(5), K)
    c = sample_pair(np.random.default_rng(6), K)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[2], c[2])


def test_noise_grows_with_depth_and_is_quantised():
    stds = []
    for z in (0.6, 1.2):
        clean = render_plane_depth([0, 0, z], [0, 0, -1.0], K, 640, 480)
        out = apply_sensor(clean, K, np.random.default_rng(0), QUIET)
        ok = out > 0
        assert ok.mean() > 0.99
        err = out[ok] - clean[ok]
        assert abs(err.mean()) < 0.002
        stds.append(err.std())
        # whole millimetres
        np.testing.assert_allclose(out[ok] * 1000, np.round(out[ok] * 1000), atol=1e-3)
    # disparity noise: depth error ~ z^2 (4x from 0.6 m to 1.2 m; quantisation blurs it a little)
    assert 2.5 < stds[1] / stds[0] < 5.5, stds
    assert 0.0003 < stds[0] < 0.004


def test_projector_shadow_and_edges():
    wall = render_plane_depth([0, 0, 1.5], [0, 0, -1.0], K, 640, 480)
    scene = render_capsules_depth([[0, 0, 0.7]], [[0, 0, 0.7]], [0.06], K, 640, 480, depth_m=wall)
    out = apply_sensor(scene, K, np.random.default_rng(1), QUIET)
    row = out[240]
    r_px = K[0, 0] * 0.06 / 0.7
    left = row[int(320 - r_px - 40): int(320 - r_px - 3)]
    right = row[int(320 + r_px + 3): int(320 + r_px + 40)]
    # the projector sits on the +x side: the wall left of the sphere is in its shadow
    assert (left == 0).mean() > 0.6 and (right == 0).mean() < 0.1
    # grazing angles at the sphere's rim lose pixels, its front does not
    assert out[240, 320] > 0
    sphere = (scene > 0) & (scene < 1.0)
    assert (out[sphere] == 0).mean() > 0.03


def test_tilted_plane_loses_pixels():
    frontal = render_plane_depth([0, 0, 1.0], [0, 0, -1.0], K, 640, 480)
    tilted = render_plane_depth([0, 0, 1.0], [0.985, 0, -0.17], K, 640, 480)  # ~80 degrees
    a = apply_sensor(frontal, K, np.random.default_rng(0), QUIET)
    b = apply_sensor(tilted, K, np.random.default_rng(0), QUIET)
    valid_b = (tilted > 0.4) & (tilted < 4.0)
    assert (a == 0).mean() < 0.01 and (b[valid_b] == 0).mean() > 0.5


def test_pair_same_pose():
    rng = np.random.default_rng(3)
    hand = sample_hand(rng, K, 640, 480)
    synth, real = render_pair(hand, K, 640, 480, rng)
    J = hand.joints_c_m()
    c = J[32]
    u, v = int(round(K[0, 0] * c[0] / c[2] + K[0, 2])), int(round(K[1, 1] * c[1] / c[2] + K[1, 2]))
    # same hand at the same place: around the palm centre both agree to sensor noise
    win = (slice(v - 3, v + 4), slice(u - 3, u + 4))
    s, r = synth[win], real[win]
    both = (s > 0) & (r > 0)
    assert both.sum() > 10
    assert np.median(np.abs(s[both] - r[both])) < 0.006
    # synthetic: hand only; real-like: a scene around it
    assert (synth > 0).mean() < 0.2 and (real > 0).mean() > 0.5
    assert real.max() > c[2] + 0.4


def test_harsh_crop_depth():
    from featmap_ros.render.depth_sensor import HarshCropSensor, harsh_crop_depth

    crop = np.ones((48, 48), np.float32)
    crop[12:36, 12:36] = -0.2  # a flat foreground square inside the cube
    a = harsh_crop_depth(crop, np.random.default_rng(3))
    b = harsh_crop_depth(crop, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == crop.shape and np.all(np.abs(a) <= 1.0)
    assert crop[20, 20] == np.float32(-0.2)  # input untouched
    fg = a[14:34, 16:34]
    assert 0.01 < float(np.std(fg)) < 0.2  # strong noise
    # the left edge of the square is lost (shadow), the right edge is not
    valid = a < 0.99
    assert valid[14:34, 10:15].sum() < valid[14:34, 33:38].sum()
    assert np.mean(valid[16:32, 18:30]) > 0.9  # the inside survives (few random holes)
    # quantised to the step (before the back value of missing pixels)
    q = HarshCropSensor().quant_step
    vals = fg[fg < 0.99]
    np.testing.assert_allclose(vals / q, np.round(vals / q), atol=1e-4)


# ----------------------------------------------------------------------------- Kinect v1 model, domains

from dataclasses import replace  # noqa: E402

from featmap_ros.errors import InputError  # noqa: E402
from featmap_ros.render import depth_sensor as dsm  # noqa: E402
from featmap_ros.render import hand as hm  # noqa: E402

KQUIET = replace(dsm.KINECT_V1, speckle_count=0.0, dark_drop_prob=0.0, thin_drop_prob=1.0)


def test_kinect_loses_thin_parts_keeps_wide_ones():
    wall = render_plane_depth([0, 0, 1.5], [0, 0, -1.0], K, 640, 480)
    # an 8-mm rod (~6 px at 0.8 m) and a 40-mm one, upright in front of the wall; a 9-px window
    scene = render_capsules_depth([[-0.1, -0.1, 0.8], [0.1, -0.1, 0.8]], [[-0.1, 0.1, 0.8], [0.1, 0.1, 0.8]], [0.004, 0.02], K, 640, 480, depth_m=wall)
    thin_px = (np.abs(scene - 0.8) < 0.01) & (np.arange(640)[None, :] < 320)
    wide_px = (np.abs(scene - 0.8) < 0.03) & (np.arange(640)[None, :] > 320)
    only_thin = replace(KQUIET, edge_drop_prob=0.0, thin_px=9)
    on = apply_sensor(scene, K, np.random.default_rng(0), only_thin)
    off = apply_sensor(scene, K, np.random.default_rng(0), replace(only_thin, thin_px=0))
    assert (on[thin_px] == 0).mean() > 0.9 and (off[thin_px] > 0).mean() > 0.3
    assert (on[wide_px] > 0).mean() > 0.6


def test_kinect_dark_material_and_edge_band():
    plane = render_plane_depth([0, 0, 0.9], [0, 0, -1.0], K, 640, 480)
    dark = np.zeros(plane.shape, bool)
    dark[:, :320] = True
    s = replace(dsm.KINECT_V1, speckle_count=0.0)
    out = apply_sensor(plane, K, np.random.default_rng(0), s, dark_mask=dark)
    lost_dark, lost_light = (out[:, :320] == 0).mean(), (out[:, 320:] == 0).mean()
    assert 0.35 < lost_dark < 0.65 and lost_light < 0.02
    with pytest.raises(InputError, match="dark_mask"):
        apply_sensor(plane, K, np.random.default_rng(0), s, dark_mask=dark[:10])
    # silhouettes: a band of 2 px drops more than a band of 1 px
    scene = render_capsules_depth([[0, 0, 0.7]], [[0, 0, 0.7]], [0.06], K, 640, 480, depth_m=render_plane_depth([0, 0, 1.5], [0, 0, -1.0], K, 640, 480))
    wall_right = (scene > 1.0) & (np.arange(640)[None, :] > 320)  # no projector shadow on this side
    lost = [(apply_sensor(scene, K, np.random.default_rng(1), replace(QUIET, edge_band_px=b, edge_drop_prob=1.0))[wall_right] == 0).sum() for b in (1, 2)]
    assert lost[1] > lost[0] * 1.5
    # seeded
    np.testing.assert_array_equal(apply_sensor(scene, K, np.random.default_rng(4), dsm.KINECT_V1), apply_sensor(scene, K, np.random.default_rng(4), dsm.KINECT_V1))


def test_kinect_depth_is_quantised_in_disparity():
    plane = render_plane_depth([0, 0, 0.8], [0, 0, -1.0], K, 640, 480)
    out = apply_sensor(plane, K, np.random.default_rng(0), replace(KQUIET, smooth_window_px=0, disparity_sigma_px=0.2))
    fb = K[0, 0] * KQUIET.baseline_m
    levels = np.unique(np.round(fb / out[out > 0] * KQUIET.disparity_subpixel, 1))
    # depths come from whole 1/8-px disparity steps (to within the millimetre rounding)
    assert np.all(np.abs(levels - np.round(levels)) < 0.35)


def test_domains():
    with pytest.raises(InputError, match="valid"):
        dsm.hand_domain("nope")
    with pytest.raises(InputError, match="surface"):
        dsm.HandDomain(surface="mesh")
    # v1 draws exactly what sample_hand draws (the first real-like domain is unchanged)
    a = dsm.sample_domain_hand(np.random.default_rng(3), K, 640, 480, dsm.hand_domain("v1"))
    b = sample_hand(np.random.default_rng(3), K, 640, 480)
    np.testing.assert_array_equal(a.joints_c_m(), b.joints_c_m())
    # kinect_hard: poses are rows of the table's sequence A (plus little noise), anatomic, most with sleeves
    from featmap_ros.render.hand_pose_fit import load_table

    tab = load_table()
    rng = np.random.default_rng(0)
    hands = [dsm.sample_domain_hand(rng, K, 640, 480, dsm.hand_domain("kinect_hard"), tab) for _ in range(20)]
    assert all(h.shape.joint_radii_m is not None for h in hands) and sum(h.sleeve is not None for h in hands) >= 12
    seq_a = tab.angles_rad[tab.sequence == 0].reshape(-1, 20)
    seq_b = tab.angles_rad[tab.sequence == 1].reshape(-1, 20)
    for h in hands[:5]:
        d_a = np.abs(seq_a - h.angles_rad.reshape(20)).mean(1).min()
        d_b = np.abs(seq_b - h.angles_rad.reshape(20)).mean(1).min()
        assert d_a < 0.1 and d_a <= d_b + 1e-9
    hand, synth, real = dsm.sample_domain_pair(np.random.default_rng(1), K, dsm.hand_domain("kinect"), table=tab)
    c = hand.joints_c_m()[hm.PALM_CENTER]
    u, v = int(K[0, 0] * c[0] / c[2] + K[0, 2]), int(K[1, 1] * c[1] / c[2] + K[1, 2])
    assert synth[v, u] > 0 and abs(synth[v, u] - c[2]) < 0.03


def test_write_dataset_with_a_domain(tmp_path):
    from featmap_ros.data.nyu import NyuDataset

    dsm.write_hand_dataset(tmp_path, 2, 0, "test", domain="kinect_hard")
    ds = NyuDataset(tmp_path, "test")
    assert len(ds) == 2
