"""Zoomed insets of object overlays (draw.boxes): tiles with crisp poses, the strip below a frame."""
import numpy as np
import pytest

from featmap_ros import crops, geometry
from featmap_ros.draw.boxes import ZOOM_TILE_PX, with_zoom_strip, zoom_tile, zoom_window
from featmap_ros.errors import InputError

K = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]])
CORNERS_M = geometry.box_corners(np.array([-0.02, -0.02, -0.02]), np.array([0.04, 0.04, 0.04]))
R = geometry.look_at_R_m2c(np.array([1.0, 1.0, 1.0]) / np.sqrt(3))
T = np.array([0.05, -0.03, 0.8])
GREEN = (0, 200, 0)


def _frame():
    rng = np.random.default_rng(0)
    return rng.integers(0, 60, (480, 640, 3), dtype=np.uint8)


def test_zoom_window_holds_the_box():
    uv = geometry.project_model_points(CORNERS_M, R, T, K)
    w = zoom_window(uv)
    assert w.side == pytest.approx(1.5 * np.ptp(uv, axis=0).max(), rel=1e-6)
    inside = crops.image_to_crop_normalised(uv, w)
    assert np.abs(inside).max() < 1.0


def test_zoom_tile_draws_the_pose_where_it_projects():
    img = _frame()
    before = img.copy()
    uv = geometry.project_model_points(CORNERS_M, R, T, K)
    w = zoom_window(uv)
    tile = zoom_tile(img, K, w, [(CORNERS_M, R, T, GREEN)], size=120)
    assert np.array_equal(img, before)
    assert tile.shape == (120, 120, 3) and tile.dtype == np.uint8
    # the drawn box spans the corners mapped into the tile (known values: the window's affine map)
    A = w.affine_to_crop(120)
    uv_tile = uv @ A[:, :2].T + A[:, 2]
    ys, xs = np.nonzero((tile[..., 1] > 120) & (tile[..., 0] < 60))
    assert len(xs) > 100
    assert xs.min() == pytest.approx(uv_tile[:, 0].min(), abs=2.0) and xs.max() == pytest.approx(uv_tile[:, 0].max(), abs=2.0)
    assert ys.min() == pytest.approx(uv_tile[:, 1].min(), abs=2.0) and ys.max() == pytest.approx(uv_tile[:, 1].max(), abs=2.0)
    # a 60-px object fills most of its tile: about 1 / 1.5 of the side
    assert 0.5 < (xs.max() - xs.min()) / 120 < 0.75


def test_zoom_tile_label_and_no_pose():
    img = _frame()
    w = crops.Window(320.0, 240.0, 60.0)
    plain = zoom_tile(img, K, w, [])
    assert plain.shape == (ZOOM_TILE_PX, ZOOM_TILE_PX, 3)
    np.testing.assert_array_equal(plain, crops.crop_image(img, w, ZOOM_TILE_PX))
    labelled = zoom_tile(img, K, w, [], label="ape 3.1 px")
    assert (labelled[:16, :60] != plain[:16, :60]).any() and np.array_equal(labelled[40:], plain[40:])


def test_zoom_strip_layout():
    frame = _frame()
    before = frame.copy()
    tiles = [np.full((150, 150, 3), 10 * i, np.uint8) for i in range(1, 10)]
    sheet = with_zoom_strip(frame, tiles, gap=4)
    assert np.array_equal(frame, before)
    # four 150-px tiles and five 4-px gaps fit in 640 px: 9 tiles -> 3 rows
    assert sheet.shape == (480 + 3 * 154 + 4, 640, 3)
    assert np.array_equal(sheet[:480], frame)
    assert np.all(sheet[484:634, 4:154] == 10)  # first tile, first row
    assert np.all(sheet[484:634, 158:308] == 20)  # second
    assert np.all(sheet[638:788, 4:154] == 50)  # fifth: second row
    assert np.all(sheet[792:942, 4:154] == 90)  # ninth: third row
    assert np.array_equal(with_zoom_strip(frame, []), frame)
    # a frame narrower than a tile widens to hold it
    assert with_zoom_strip(frame[:, :100], tiles[:1]).shape == (480 + 154 + 4, 158, 3)


def test_bad_input():
    frame = _frame()
    with pytest.raises(InputError, match="tiles must all be"):
        with_zoom_strip(frame, [np.zeros((150, 150, 3), np.uint8), np.zeros((100, 100, 3), np.uint8)])
    with pytest.raises(InputError, match="uint8"):
        zoom_tile(frame.astype(np.float32), K, crops.Window(320, 240, 60), [])
    with pytest.raises(InputError, match="size"):
        zoom_tile(frame, K, crops.Window(320, 240, 60), [], size=8)


def _has(img, rgb):
    """Whether some pixel has this colour (anti-aliased lines: its hue, at least half as bright)."""
    px = img.reshape(-1, 3).astype(np.float64)
    c = np.asarray(rgb, np.float64)
    norm = np.linalg.norm(px, axis=1)
    cos = px @ c / np.maximum(norm * np.linalg.norm(c), 1e-9)
    return bool(np.any((cos > 0.998) & (norm > 0.5 * np.linalg.norm(c))))


def test_one_colour_convention_in_debug_images_overlays_and_markers():
    """Ground truth green, estimate blue, windows yellow: the node's debug image, the evaluation
    overlays and the RViz markers (it was green for the estimate in the debug image)."""
    from featmap_ros.draw import colours
    from featmap_ros.draw.debug import draw_hand_debug, draw_object_debug
    from featmap_ros.draw.skeleton import hand_overlay
    from featmap_ros.results import HandPose, ObjectPose
    from featmap_ros.ros import conversions as conv
    from featmap_ros.ros.msg_defs import featmap_typestore

    assert colours.GROUND_TRUTH_RGB == GREEN and colours.ESTIMATE_RGB != colours.GROUND_TRUTH_RGB
    black = np.zeros((480, 640, 3), np.uint8)
    pose = ObjectPose("toy", 1, R, T, 0.9, extents_m=np.full(3, 0.04))
    dbg = draw_object_debug(black, [pose], K, rois=[("toy", np.array([280.0, 200.0, 80.0, 80.0]))])
    assert _has(dbg, colours.ESTIMATE_RGB) and _has(dbg, colours.WINDOW_RGB) and not _has(dbg, colours.GROUND_TRUTH_RGB)
    # hands: the ground truth green, the estimate blue, on the depth map and in the node's picture
    Kh = np.array([[290.0, 0, 160.0], [0, 290.0, 120.0], [0, 0, 1.0]])
    depth = np.full((240, 320), 0.7, np.float32)
    joints = np.array([0.0, 0.0, 0.7]) + np.random.default_rng(0).uniform(-0.05, 0.05, (14, 3))
    ov = hand_overlay(depth, Kh, gt_c_m=joints)
    assert _has(ov, colours.GROUND_TRUTH_RGB) and not _has(ov, colours.ESTIMATE_RGB)
    ov = hand_overlay(depth, Kh, pred_c_m=joints)
    assert _has(ov, colours.ESTIMATE_RGB) and not _has(ov, colours.GROUND_TRUTH_RGB)
    from featmap_ros.data.specs import hand_dataset

    names = list(hand_dataset("nyu").joint_names)
    assert _has(draw_hand_debug(depth, HandPose(names, joints, 0.9), Kh), colours.ESTIMATE_RGB)
    # RViz markers of the estimates
    msgs = conv.RosbagsMessages(featmap_typestore())
    header = conv.make_header(msgs, 1, "cam")
    marker = conv.object_markers(msgs, [pose], header).markers[-1]
    rgba = (marker.color.r, marker.color.g, marker.color.b, marker.color.a)
    assert rgba == pytest.approx(colours.rgba_unit(colours.ESTIMATE_RGB))
