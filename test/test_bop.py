"""BOP reader/writer: round trips on a fixture written here, bad input, the training split."""
import json
import logging

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros import geometry
from featmap_ros.data import bop
from featmap_ros.errors import InputError


def _box_mesh(half=(0.02, 0.03, 0.04)) -> bop.Mesh:  # noqa: D103
    hx, hy, hz = half
    v = geometry.box_corners([-hx, -hy, -hz], [2 * hx, 2 * hy, 2 * hz])
    # 12 triangles of the box, corners indexed by bits (x, y, z)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = np.array([[a, b, c] for a, b, c, d in quads] + [[a, c, d] for a, b, c, d in quads], np.int64)
    colors = (geometry.BOX_CORNER_SIGNS * 200 + 30).astype(np.uint8)
    return bop.Mesh(v, f, colors, "box")


def _write_fixture(root, n_frames=3, rot_noise=0.0):
    mesh = _box_mesh()
    info = bop.model_info_from_mesh(1, mesh, [np.diag([-1.0, -1.0, 1.0, 1.0])])
    K = np.array([[500.0, 0, 32], [0, 500.0, 24], [0, 0, 1]])
    rng = np.random.default_rng(0)
    poses = []
    with bop.BopWriter(root, split="test") as w:
        w.write_models({1: mesh}, {1: info})
        for im_id in range(n_frames):
            R = Rotation.random(random_state=im_id).as_matrix()
            t = np.array([0.0, 0.0, 0.5 + 0.1 * im_id])
            poses.append((R, t))
            rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            depth = np.zeros((48, 64), np.float32)
            depth[10:20, 10:30] = 0.5 + 0.1 * im_id
            m = np.zeros((48, 64), bool)
            m[10:20, 10:30] = True
            mv = m.copy()
            mv[10:15] = False
            w.add_frame(2, im_id, K, [bop.GtInstance(1, R, t)], rgb=rgb, depth_m=depth, masks=[m], masks_visib=[mv])
    return mesh, info, K, poses


def test_round_trip(tmp_path):
    root = tmp_path / "ds"
    mesh, info, K, poses = _write_fixture(root)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    infos = bop.load_models_info(root / "models" / "models_info.json")
    assert set(infos) == {1}
    np.testing.assert_allclose(infos[1].diameter_m, info.diameter_m, rtol=1e-9)
    np.testing.assert_allclose(infos[1].min_m, info.min_m, atol=1e-12)
    np.testing.assert_allclose(infos[1].size_m, [0.04, 0.06, 0.08], atol=1e-12)
    np.testing.assert_allclose(infos[1].diameter_m, np.sqrt(0.04**2 + 0.06**2 + 0.08**2), rtol=1e-9)
    np.testing.assert_allclose(infos[1].symmetries_discrete[0], np.diag([-1.0, -1.0, 1.0, 1.0]))
    m2 = bop.load_mesh(bop.model_path(root, 1))
    np.testing.assert_allclose(m2.vertices_m, mesh.vertices_m, atol=1e-7)
    np.testing.assert_array_equal(m2.faces, mesh.faces)
    np.testing.assert_array_equal(m2.colors, mesh.colors)

    frames = bop.read_scene(root / "test" / "000002", infos)
    assert [f.im_id for f in frames] == [0, 1, 2]
    for f, (R, t) in zip(frames, poses):
        np.testing.assert_allclose(f.K, K)
        g = f.instances[0]
        np.testing.assert_allclose(g.R_m2c, R, atol=1e-12)
        np.testing.assert_allclose(g.t_m2c_m, t, atol=1e-12)
        assert g.bbox_obj == (10, 10, 19, 9)  # bop_toolkit: w = x_max - x_min
        assert g.bbox_visib == (10, 15, 19, 4)
        assert g.px_count_all == 200
        assert g.visib_fract == pytest.approx(0.5)
        assert bop.load_mask(g.mask_visib_path).sum() == 100
        d = bop.load_depth_m(f.depth_path, f.depth_scale)
        assert d[12, 12] == pytest.approx(t[2], abs=1e-6) and d[0, 0] == 0
        assert bop.load_rgb(f.rgb_path).shape == (48, 64, 3)


def test_writer_is_atomic(tmp_path):
    root = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with bop.BopWriter(root) as w:
            w.add_frame(1, 0, np.eye(3), [])
            raise RuntimeError("interrupted")
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []


def test_jpg_and_lmo_style_keys(tmp_path):
    root = tmp_path / "ds"
    with bop.BopWriter(root, image_format="jpg") as w:
        w.add_frame(0, 7, np.diag([400.0, 400.0, 1.0]), [], rgb=np.full((8, 8, 3), 128, np.uint8))
    frames = bop.read_scene(root / "test" / "000000")
    assert frames[0].rgb_path.suffix == ".jpg" and frames[0].instances == []


def test_non_orthonormal_rotation_is_corrected_with_warning(tmp_path, caplog):
    root = tmp_path / "ds"
    _write_fixture(root, n_frames=1)
    gt_path = root / "test" / "000002" / "scene_gt.json"
    gt = json.loads(gt_path.read_text())
    R = np.asarray(gt["0"][0]["cam_R_m2c"]).reshape(3, 3)
    bad = R * 1.004  # like LM-O's worst entries (~1e-2 off)
    gt["0"][0]["cam_R_m2c"] = bad.reshape(-1).tolist()
    gt_path.write_text(json.dumps(gt))
    with caplog.at_level(logging.WARNING, logger="featmap_ros.data.bop"):
        frames = bop.read_scene(root / "test" / "000002")
    Rc = frames[0].instances[0].R_m2c
    assert geometry.orthonormality_error(Rc) < 1e-12
    np.testing.assert_allclose(Rc, R, atol=1e-9)
    assert "re-orthonormalised 1" in caplog.text and "0.008" in caplog.text
    gt["0"][0]["cam_R_m2c"] = (R * 2).reshape(-1).tolist()  # not a rotation at all
    gt_path.write_text(json.dumps(gt))
    with pytest.raises(InputError, match="not a rotation"):
        bop.read_scene(root / "test" / "000002")


def test_bad_input(tmp_path):
    root = tmp_path / "ds"
    _write_fixture(root, n_frames=1)
    scene = root / "test" / "000002"
    with pytest.raises(InputError, match="not in models_info"):
        bop.read_scene(scene, {5: None})
    # truncated PLY
    ply = bop.model_path(root, 1)
    data = ply.read_bytes()
    trunc = tmp_path / "trunc.ply"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.ply"):
        bop.load_mesh(trunc)
    with pytest.raises(InputError, match="missing.ply"):
        bop.load_mesh(tmp_path / "missing.ply")
    # truncated PNG
    png = next((scene / "rgb").iterdir())
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(InputError, match="bad.png"):
        bop.load_rgb(bad_png)
    # truncated JSON names the file and line
    cam = scene / "scene_camera.json"
    cam.write_text(cam.read_text()[:-20])
    with pytest.raises(InputError, match="scene_camera.json: line"):
        bop.read_scene(scene)
    # missing key names the key
    cam.write_text(json.dumps({"0": {"depth_scale": 1.0}}))
    with pytest.raises(InputError, match="cam_K"):
        bop.read_scene(scene)
    info = root / "models" / "models_info.json"
    info.write_text(json.dumps({"1": {"diameter": 10.0}}))
    with pytest.raises(InputError, match="min_x"):
        bop.load_models_info(info)
    with pytest.raises(InputError, match="nothere"):
        bop.load_test_targets(tmp_path / "nothere.json")


def test_models_info_symmetries_round_trip(tmp_path):
    info = bop.ModelInfo(
        3, 0.2, np.array([-0.1, -0.05, -0.02]), np.array([0.2, 0.1, 0.04]),
        [np.array([[-1.0, 0, 0, 0.001], [0, -1, 0, 0.002], [0, 0, 1, 0], [0, 0, 0, 1]])],
        [{"axis": np.array([0.0, 0.0, 1.0]), "offset_m": np.array([0.0, 0.003, 0.0])}],
    )
    js = bop.models_info_to_json({3: info})
    assert js["3"]["symmetries_discrete"][0][3] == pytest.approx(1.0)  # millimetres on disk
    p = tmp_path / "models_info.json"
    p.write_text(json.dumps(js))
    back = bop.load_models_info(p)[3]
    np.testing.assert_allclose(back.symmetries_discrete[0], info.symmetries_discrete[0], atol=1e-12)
    np.testing.assert_allclose(back.symmetries_continuous[0]["offset_m"], [0.0, 0.003, 0.0], atol=1e-12)
    assert back.is_symmetric and back.diameter_m == pytest.approx(0.2)
    np.testing.assert_allclose(back.corners_m[7], [0.1, 0.05, 0.02], atol=1e-12)


def test_test_targets(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps([{"im_id": 3, "inst_count": 1, "obj_id": 5, "scene_id": 2}]))
    assert bop.load_test_targets(p) == [bop.TestTarget(2, 3, 5, 1)]


def test_farthest_view_split_is_deterministic_and_spread(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    # views on a sphere: camera 1 m away along random directions
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    Rs = np.stack([geometry.look_at_R_m2c(d) for d in dirs])
    ts = np.stack([-R @ d for R, d in zip(Rs, dirs)])
    np.testing.assert_allclose(bop.viewing_directions(Rs, ts), dirs, atol=1e-9)
    ids = list(range(100, 100 + n))
    train, test = bop.farthest_view_split(ids, Rs, ts, 0.15)
    assert len(train) == 30 and len(test) == 170 and sorted(train + test) == ids
    assert bop.farthest_view_split(ids[::-1], Rs[::-1], ts[::-1], 0.15) == (train, test)
    sel = dirs[np.array(train) - 100]
    ang = np.degrees(np.arccos(np.clip(sel @ sel.T, -1, 1)))
    np.fill_diagonal(ang, 180)
    # 30 random picks would typically have a nearest pair a few degrees apart
    assert ang.min() > 15.0
    p = tmp_path / "train.txt"
    bop.write_split_file(p, train)
    assert bop.read_split_file(p) == train
    p.write_text("1\nfoo\n")
    with pytest.raises(InputError, match="line 2"):
        bop.read_split_file(p)


def test_decimate_mesh_keeps_the_shape_within_the_triangle_budget():
    from featmap_ros.render.toy_object import make_toy_object

    toy, _ = make_toy_object()
    assert len(toy.faces) > 2000
    small = bop.decimate_mesh(toy, 2000)
    assert 1000 <= len(small.faces) <= 2000 and small.faces.max() < len(small.vertices_m)
    # the same object: its box within 2 mm, in metres as the input
    np.testing.assert_allclose(small.vertices_m.min(0), toy.vertices_m.min(0), atol=0.002)
    np.testing.assert_allclose(small.vertices_m.max(0), toy.vertices_m.max(0), atol=0.002)
    assert "decimated to" in small.name
    assert bop.decimate_mesh(small, 5000) is small  # already small enough
    with pytest.raises(InputError, match="max_triangles must be at least 4"):
        bop.decimate_mesh(toy, 2)
