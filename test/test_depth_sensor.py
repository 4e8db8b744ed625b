"""Real-like depth sensor model: seeded, noise growing with depth, quantised, shadows, dropout."""
from __future__ import annotations

import numpy as np

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
