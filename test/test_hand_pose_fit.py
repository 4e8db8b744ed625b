"""featmap_ros.render.hand_pose_fit: ICVL reader, the IK fit, the bundled angle table."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros.errors import InputError
from featmap_ros.render import hand as hm
from featmap_ros.render import hand_pose_fit as F


def icvl_line(shape, angles, R, t):
    """One line of an ICVL label file (16 x u, v, d mm) made from our own hand: palm centre, then
    thumb (MCP, IP, tip), index, middle, ring, pinky (MCP, PIP, tip), as the fit pairs them."""
    P = F._model_points(shape, angles)  # (5, 4, 3): palm, then the three points per finger
    pts = [P[0, 0]] + [p for f in F.ICVL_FINGER_ORDER for p in P[f, 1:]]
    X = np.array(pts) @ R.T + t
    fx, fy, cx, cy = F.ICVL_INTRINSICS
    uvd = np.stack([fx * X[:, 0] / X[:, 2] + cx, fy * X[:, 1] / X[:, 2] + cy, X[:, 2] * 1000.0], axis=1)
    return " ".join(f"{v:.6f}" for v in uvd.ravel())


def known_angles():
    a = np.array([[0.10, 0.9, 1.2, 0.8], [0.05, 0.5, 0.6, 0.4], [0.0, 0.2, 0.3, 0.2], [-0.1, 0.1, 0.15, 0.1], [0.3, 0.4, 0.3, 0.5]])
    a[:4, 3] = a[:4, 2] * 2.0 / 3.0  # the fit's DIP coupling holds exactly
    return a


def test_fit_recovers_known_angles_and_rotation(tmp_path):
    shape = hm.anatomic_shape()
    a = known_angles()
    R = Rotation.from_euler("xyz", [0.3, -0.5, 2.8]).as_matrix()
    path = tmp_path / "icvl.txt"
    path.write_text(icvl_line(shape, a, R, np.array([0.01, -0.02, 0.35])) + "\n")
    J = F.read_icvl_labels(path)
    assert J.shape == (1, 16, 3) and abs(J[0, 0, 2] - 0.35) < 0.05
    res = F.fit_icvl_frame(J[0], shape)
    assert res.direction_error_deg < 0.5
    # abduction and flexions of every finger, within 0.03 rad; the thumb's CMC pair is seen through
    # its MCP's direction only, so it is checked by the directions it makes
    np.testing.assert_allclose(res.angles_rad[:4], a[:4], atol=0.03)
    np.testing.assert_allclose(res.angles_rad[4, 2:], a[4, 2:], atol=0.03)
    assert np.degrees(np.arccos((np.trace(res.R_h2c.T @ R) - 1) / 2)) < 2.0


def test_fit_file_and_table_round_trip(tmp_path):
    shape = hm.anatomic_shape()
    rng = np.random.default_rng(0)
    lines = []
    for k in range(3):
        a = hm.clip_angles(known_angles() + rng.normal(0, 0.1, (5, 4)))
        lines.append(icvl_line(shape, a, Rotation.random(random_state=k).as_matrix(), np.array([0.0, 0.0, 0.4])))
    path = tmp_path / "icvl.txt"
    path.write_text("\n".join(lines) + "\n")
    tab = F.fit_icvl_file(path, progress=False)
    assert tab["angles_rad"].shape == (3, 5, 4) and np.all(tab["sequence"] == 0)
    assert np.all(tab["direction_error_deg"] < 3.0)
    out = F.write_table(tab, tmp_path / "t.npz")
    loaded = F.load_table(out)
    np.testing.assert_allclose(loaded.angles_rad, tab["angles_rad"], atol=1e-6)
    assert "ICVL" in loaded.origin and "NYU labels were not used" in loaded.origin
    a = F.sample_table_articulation(rng, loaded, 0.5)
    assert a.shape == (5, 4) and np.all(a >= hm.ANGLE_LIMITS_RAD[..., 0]) and np.all(a <= hm.ANGLE_LIMITS_RAD[..., 1])
    with pytest.raises(InputError, match="sequence 1"):
        loaded.subset(1)


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="no such ICVL"):
        F.read_icvl_labels(tmp_path / "none.txt")
    p = tmp_path / "short.txt"
    p.write_text("1 2 3\n")
    with pytest.raises(InputError, match="line 1: expected 48 values"):
        F.read_icvl_labels(p)
    bad = tmp_path / "bad.npz"
    np.savez(bad, angles_rad=np.zeros((2, 5, 3)), sequence=np.zeros(2), origin=np.array("x"))
    with pytest.raises(InputError, match="angles_rad"):
        F.load_table(bad)
    np.savez(bad, angles_rad=np.zeros((2, 5, 4)), origin=np.array("x"))
    with pytest.raises(InputError, match="'sequence' missing"):
        F.load_table(bad)


def test_bundled_table():
    t = F.load_table()
    assert t.angles_rad.shape[1:] == (5, 4) and len(t.angles_rad) == 1596
    assert set(t.sequence.tolist()) == {0, 1} and int(np.sum(t.sequence == 0)) == F.ICVL_SEQUENCE_SPLIT
    assert "ICVL" in t.origin
    assert np.all(t.angles_rad >= hm.ANGLE_LIMITS_RAD[..., 0] - 1e-6) and np.all(t.angles_rad <= hm.ANGLE_LIMITS_RAD[..., 1] + 1e-6)
    # real poses: not all open hands (some fingers are well flexed)
    assert np.mean(t.angles_rad[:, :4, 2] > 0.8) > 0.05


def test_commands(tmp_path, capsys):
    from featmap_ros import cli

    shape = hm.anatomic_shape()
    path = tmp_path / "icvl.txt"
    path.write_text(icvl_line(shape, known_angles(), np.eye(3), np.array([0.0, 0.0, 0.4])) + "\n")
    out = tmp_path / "table.npz"
    assert cli.main(["render", "hand-poses", "--icvl", str(path), "--out", str(out)]) == 0
    assert F.load_table(out).angles_rad.shape == (1, 5, 4) and "fitted 1 frames" in capsys.readouterr().out
    assert cli.main(["render", "hand-poses", "--icvl", str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    assert "no such ICVL label file" in capsys.readouterr().err
    # the pose comparison refuses a label file that is not NYU's test set
    labels = tmp_path / "nyu.txt"
    labels.write_text((" ".join(["320 240 800"] * 14) + "\n") * 3)
    assert cli.main(["bench", "hand-poses", "--nyu-labels", str(labels), "--frames", "2", "--samples", "2"]) == 2
    assert "8252" in capsys.readouterr().err
