"""featmap_ros.evaluation.hand_poses: nearest-pose distance and finger curl."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featmap_ros.evaluation import hand_poses as hp


def poses(n, seed=0):
    return np.random.default_rng(seed).normal(0.0, 0.04, (n, 14, 3))


def test_distance_is_zero_under_similarity_and_not_under_reflection():
    P = poses(4)
    R = Rotation.random(random_state=1).as_matrix()
    moved = 1.3 * P @ R.T + np.array([0.1, -0.2, 0.7])
    np.testing.assert_allclose(hp.nearest_pose_distance_mm(P, moved), 0.0, atol=1e-6)
    mirrored = P * np.array([-1.0, 1.0, 1.0])
    assert np.all(hp.nearest_pose_distance_mm(P, mirrored) > 1.0)
    # the nearest one is found among others
    d = hp.nearest_pose_distance_mm(P[:1], np.concatenate([poses(10, 5), moved[:1]]))
    assert d[0] == pytest.approx(0.0, abs=1e-6)


def test_known_offset_in_mm():
    P = poses(1)
    Q = P.copy()
    Q[0, 0] += np.array([0.0, 0.0, 0.014])  # one joint 14 mm off
    d = hp.nearest_pose_distance_mm(P, Q)[0]
    # the alignment minimises the RMS error, which the identity makes 14 / sqrt(14) mm; the mean is at most that
    assert 0.5 < d <= 14.0 / np.sqrt(14.0) + 1e-9


def test_finger_curl():
    J = np.zeros((1, 14, 3))
    J[0, 13] = [0, 0, 0]
    for f, (a, b, c) in enumerate(hp.CURL_JOINTS):
        J[0, b] = J[0, a] + [0, -0.05, 0]
        J[0, c] = J[0, b] + ([0, -0.03, 0] if f % 2 == 0 else [0, 0, 0.03])  # straight or at a right angle
    np.testing.assert_allclose(hp.finger_curl_deg(J)[0], [0, 90, 0, 90, 0], atol=1e-9)
    assert hp.curl_distance_deg(J, J).max() == pytest.approx(0.0)


def test_nyu_label_reader(tmp_path):
    line = " ".join(["320 240 800"] * 14)
    p = tmp_path / "labels.txt"
    p.write_text(line + "\n" + line + "\n")
    J = hp.nyu_label_joints_m(p)
    assert J.shape == (2, 14, 3)
    np.testing.assert_allclose(J[0, 0], [0.0, 0.0, 0.8])
