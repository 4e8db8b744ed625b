"""featmap_ros.crops (colour windows): crop geometry, normalisation round trips, jitter, bad input."""
import numpy as np
import pytest

from featmap_ros import crops
from featmap_ros.errors import InputError


def test_window_covering_image_is_identity():
    img = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    w = crops.Window(31.5, 31.5, 64.0)
    np.testing.assert_allclose(crops.crop_image(img, w, 64), img, atol=1e-3)


def test_crop_places_a_pixel_where_the_affine_map_says():
    img = np.zeros((480, 640), np.float32)
    img[200, 300] = 1.0
    w = crops.Window(310.0, 190.0, 64.0)  # scale 2 to a 128 crop
    out = crops.crop_image(img, w, 128)
    M = w.affine_to_crop(128)
    u, v = M @ np.array([300.0, 200.0, 1.0])
    peak = np.unravel_index(np.argmax(out), out.shape)
    assert abs(peak[1] - u) <= 1 and abs(peak[0] - v) <= 1
    assert (u, v) == pytest.approx(((300 - 310) * 2 + 63.5, (200 - 190) * 2 + 63.5))


def test_crop_normalised_round_trip_and_edges():
    w = crops.Window(100.0, 50.0, 40.0)
    pts = np.random.default_rng(0).uniform(0, 200, (10, 2))
    n = crops.image_to_crop_normalised(pts, w)
    np.testing.assert_allclose(crops.crop_normalised_to_image(n, w), pts)
    np.testing.assert_allclose(crops.image_to_crop_normalised([[80.0, 30.0], [120.0, 70.0]], w), [[-1, -1], [1, 1]])
    # normalised -1 / +1 are the window edges, which the affine map sends to -0.5 / size - 0.5
    M = w.affine_to_crop(128)
    np.testing.assert_allclose(M @ np.array([80.0, 30.0, 1.0]), [-0.5, -0.5])
    np.testing.assert_allclose(M @ np.array([120.0, 70.0, 1.0]), [127.5, 127.5])


def test_window_from_bbox_and_points():
    w = crops.window_from_bbox([10, 20, 30, 60], scale=1.5)
    assert (w.center_u, w.center_v, w.side) == (25.0, 50.0, 90.0)
    w2 = crops.window_from_points(np.array([[10.0, 20.0], [40.0, 80.0], [np.nan, 5.0]]), scale=1.0)
    assert (w2.center_u, w2.center_v, w2.side) == (25.0, 50.0, 60.0)
    assert crops.window_from_bbox([0, 0, 1, 1]).side == 8.0  # min_side


def test_jitter_bounds():
    rng = np.random.default_rng(1)
    w = crops.Window(300.0, 200.0, 100.0)
    ws = [crops.jitter_window(w, rng) for _ in range(500)]
    du = np.array([x.center_u - 300 for x in ws])
    dv = np.array([x.center_v - 200 for x in ws])
    s = np.array([x.side / 100 for x in ws])
    assert np.all(np.abs(du) <= 10) and np.all(np.abs(dv) <= 10)
    assert np.all((s >= 0.8) & (s <= 1.2))
    assert du.std() > 3 and s.std() > 0.05  # it does move


def test_bad_input():
    with pytest.raises(InputError, match="side"):
        crops.Window(0, 0, 0)
    with pytest.raises(InputError, match="non-finite"):
        crops.Window(np.nan, 0, 10)
    with pytest.raises(InputError, match="bbox"):
        crops.window_from_bbox([0, 0, 10])
    with pytest.raises(InputError, match="positive"):
        crops.window_from_bbox([0, 0, -5, 10])
    with pytest.raises(InputError, match="no finite"):
        crops.window_from_points(np.full((3, 2), np.nan))
    with pytest.raises(InputError, match="image"):
        crops.crop_image(np.zeros((0, 5)), crops.Window(1, 1, 2), 8)


def test_crop_keeps_dtype_and_channels():
    img = np.random.default_rng(2).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    out = crops.crop_image(img, crops.Window(80, 60, 300), 64)  # downscale > 2x: pre-blur path
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
