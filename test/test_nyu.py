"""NYU reader and writer: a fixture in the exact NYU layout, round trips, bad files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io

from featmap_ros.data import nyu
from featmap_ros.data.specs import NYU_EVAL_JOINTS, hand_dataset
from featmap_ros.errors import InputError
from featmap_ros.render.hand import NYU_JOINT_NAMES


def _write_nyu_fixture(split_dir, n=4, views=3, seed=0, names_as_cell=True):
    """Write a split the way the NYU dataset has it (not through the project's writer)."""
    rng = np.random.default_rng(seed)
    split_dir.mkdir(parents=True)
    fx, fy, cx, cy = 588.03, 587.07, 320.0, 240.0
    uvd = np.zeros((views, n, 36, 3))
    uvd[..., 0] = rng.uniform(100, 540, size=(views, n, 36))
    uvd[..., 1] = rng.uniform(100, 380, size=(views, n, 36))
    uvd[..., 2] = rng.uniform(600, 1100, size=(views, n, 36))
    xyz = np.stack([(uvd[..., 0] - cx) * uvd[..., 2] / fx, (cy - uvd[..., 1]) * uvd[..., 2] / fy, uvd[..., 2]], axis=-1)
    if names_as_cell:
        names = np.empty((1, 36), dtype=object)
        for k, nm in enumerate(NYU_JOINT_NAMES):
            names[0, k] = nm
    else:
        names = np.array(NYU_JOINT_NAMES)
    scipy.io.savemat(str(split_dir / "joint_data.mat"), {"joint_uvd": uvd.astype(np.float32), "joint_xyz": xyz.astype(np.float32), "joint_names": names})
    depths = []
    for i in range(1, n + 1):
        mm = rng.integers(500, 1500, size=(480, 640))
        mm[:5, :5] = 0
        mm[5:10, :5] = 32001
        img_rgb = np.zeros((480, 640, 3), np.uint8)
        img_rgb[..., 0] = rng.integers(0, 256, size=(480, 640))  # R: unused by NYU, random here
        img_rgb[..., 1] = mm >> 8
        img_rgb[..., 2] = mm & 255
        cv2.imwrite(str(split_dir / f"depth_1_{i:07d}.png"), img_rgb[..., ::-1])
        cv2.imwrite(str(split_dir / f"synthdepth_1_{i:07d}.png"), img_rgb[..., ::-1])
        depths.append(np.where(mm == 32001, 0, mm))
    return uvd.astype(np.float32).astype(np.float64), xyz.astype(np.float32).astype(np.float64), depths


def test_reads_nyu_layout(tmp_path):
    uvd, xyz, depths = _write_nyu_fixture(tmp_path / "test")
    ds = nyu.NyuDataset(tmp_path, "test")
    assert len(ds) == 4
    assert ds.joint_names == list(NYU_JOINT_NAMES)
    f = ds[2]
    assert f.depth_path.name == "depth_1_0000003.png" and f.synth_path.name == "synthdepth_1_0000003.png"
    np.testing.assert_array_equal(f.joints_uvd, uvd[0, 2])
    # optical frame metres: y flipped, mm -> m
    np.testing.assert_allclose(f.joints_c_m, xyz[0, 2] * [1e-3, -1e-3, 1e-3], rtol=0, atol=1e-12)
    # and consistent with the camera: projecting the metres gives the uv of the file
    K = nyu.nyu_K()
    uv = f.joints_c_m[:, :2] / f.joints_c_m[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    np.testing.assert_allclose(uv, uvd[0, 2, :, :2], atol=1e-3)
    d = nyu.load_depth_mm(f.depth_path)
    assert d.dtype == np.float32 and d.shape == (480, 640)
    np.testing.assert_array_equal(d, depths[2])  # R ignored, 0 and 32001 -> 0
    assert ds[-1].index == 3
    with pytest.raises(IndexError):
        ds[4]
    # views
    ds2 = nyu.NyuDataset(tmp_path, "test", view=2)
    np.testing.assert_array_equal(ds2[0].joints_uvd, uvd[1, 0])
    assert ds2[0].depth_path.name == "depth_2_0000001.png"
    with pytest.raises(InputError, match="view 4"):
        nyu.NyuDataset(tmp_path, "test", view=4)


def test_char_matrix_names_and_eval_joints(tmp_path):
    _write_nyu_fixture(tmp_path / "train", n=2, views=1, names_as_cell=False)
    ds = nyu.NyuDataset(tmp_path, "train")
    assert ds.joint_names[0] == "F1_KNU3_A" and ds.joint_names[35] == "PALM_6"
    ev = nyu.eval_joints(ds[0])
    assert ev.shape == (14, 3)
    np.testing.assert_array_equal(ev, ds[0].joints_c_m[list(NYU_EVAL_JOINTS)])
    # the 14 evaluation joints are tips and middle joints of the fingers, thumb, wrist, palm
    names = [NYU_JOINT_NAMES[i] for i in NYU_EVAL_JOINTS]
    assert names == ["F1_KNU3_A", "F1_KNU2_B", "F2_KNU3_A", "F2_KNU2_B", "F3_KNU3_A", "F3_KNU2_B", "F4_KNU3_A", "F4_KNU2_B",
                     "TH_KNU3_A", "TH_KNU3_B", "TH_KNU2_B", "PALM_1", "PALM_2", "PALM_3"]
    spec_names = hand_dataset("nyu").joint_names
    assert len(spec_names) == 14
    assert spec_names[0] == "pinky_tip" and spec_names[7] == "index_mid" and spec_names[10] == "thumb_root"
    assert spec_names[11:] == ("wrist_pinky", "wrist_thumb", "palm_center")


def test_subjects(tmp_path):
    _write_nyu_fixture(tmp_path / "test", n=3, views=1)
    ds = nyu.NyuDataset(tmp_path, "test")
    assert ds.subjects() == [("subject_1", range(0, 3))]
    assert ds.subject_of(2) == "subject_1"


def test_writer_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    J = rng.uniform([-0.2, -0.2, 0.5], [0.2, 0.2, 1.1], size=(3, 36, 3))
    depth = [rng.integers(0, 3000, size=(480, 640)).astype(np.float32) for _ in range(3)]
    synth = [np.where(d > 1500, d, 0) for d in depth]
    out = nyu.write_nyu_split(tmp_path / "train", J, depth, synth)
    assert sorted(p.name for p in out.iterdir())[:2] == ["depth_1_0000001.png", "depth_1_0000002.png"]
    mat = scipy.io.loadmat(str(out / "joint_data.mat"))
    assert mat["joint_uvd"].shape == (1, 3, 36, 3) and mat["joint_xyz"].shape == (1, 3, 36, 3)
    np.testing.assert_allclose(mat["joint_xyz"][0, :, :, 1], -J[..., 1] * 1000, atol=1e-9)  # y up, mm
    ds = nyu.NyuDataset(tmp_path, "train")
    for i in range(3):
        np.testing.assert_allclose(ds[i].joints_c_m, J[i], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(nyu.load_depth_mm(ds[i].depth_path), depth[i])
        np.testing.assert_array_equal(nyu.load_depth_mm(ds[i].synth_path), synth[i])
    # read -> write -> read: the labels in the file are unchanged
    nyu.write_nyu_split(tmp_path / "again" / "train", ds.joints_c_m())
    mat2 = scipy.io.loadmat(str(tmp_path / "again" / "train" / "joint_data.mat"))
    np.testing.assert_allclose(mat2["joint_xyz"], mat["joint_xyz"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(mat2["joint_uvd"], mat["joint_uvd"], rtol=0, atol=1e-9)


def test_writer_is_atomic(tmp_path):
    J = np.zeros((2, 36, 3)) + [0, 0, 1.0]
    with pytest.raises(RuntimeError):
        with nyu.NyuSplitWriter(tmp_path / "train") as w:
            w.add(J[0], depth_mm=np.zeros((4, 4)))
            raise RuntimeError("interrupted")
    assert not (tmp_path / "train").exists()
    assert [p for p in tmp_path.iterdir()] == []


def test_bad_files(tmp_path):
    _write_nyu_fixture(tmp_path / "train", n=1, views=1)
    png = tmp_path / "train" / "depth_1_0000001.png"
    data = png.read_bytes()
    bad = tmp_path / "trunc.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.png"):
        nyu.load_depth_mm(bad)
    with pytest.raises(InputError, match="nothere.png"):
        nyu.load_depth_mm(tmp_path / "nothere.png")
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), np.zeros((4, 4), np.uint16))
    with pytest.raises(InputError, match="gray.png"):
        nyu.load_depth_mm(gray)
    mat = tmp_path / "train" / "joint_data.mat"
    raw = mat.read_bytes()
    mat.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(InputError, match="joint_data.mat"):
        nyu.NyuDataset(tmp_path, "train")
    scipy.io.savemat(str(mat), {"joint_uvd": np.zeros((1, 2, 36, 3))})
    with pytest.raises(InputError, match="joint_xyz"):
        nyu.NyuDataset(tmp_path, "train")
    scipy.io.savemat(str(mat), {"joint_uvd": np.zeros((1, 2, 14, 3)), "joint_xyz": np.zeros((1, 2, 14, 3))})
    with pytest.raises(InputError, match="36"):
        nyu.NyuDataset(tmp_path, "train")
    with pytest.raises(InputError, match="split"):
        nyu.NyuDataset(tmp_path, "val")
    with pytest.raises(InputError, match="not found"):
        nyu.NyuDataset(tmp_path, "test")


def test_render_hand_command_output_reads_back(tmp_path):
    from featmap_ros.cli import main

    rc = main(["render", "hand", "--count", "2", "--out", str(tmp_path), "--split", "test", "--seed", "5"])
    assert rc == 0
    ds = nyu.NyuDataset(tmp_path, "test")
    assert len(ds) == 2
    f = ds[1]
    real = nyu.load_depth_mm(f.depth_path)
    synth = nyu.load_depth_mm(f.synth_path)
    assert real.shape == synth.shape == (480, 640)
    # the palm centre lies on the hand in both images: the synthetic depth there is just in
    # front of the joint (within the palm's thickness)
    u, v, d = f.joints_uvd[32]
    z_synth = synth[int(round(v)), int(round(u))]
    assert 0 < d - z_synth < 30, (d, z_synth)
    assert (real > 0).mean() > 0.5 and (synth > 0).mean() < 0.2  # real-like has background
    assert (tmp_path / "test_preview.png").is_file()
    assert main(["render", "hand", "--count", "0", "--out", str(tmp_path / "x")]) == 2
