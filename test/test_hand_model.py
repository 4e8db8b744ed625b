"""Hand model: layout, kinematics, limits, sampling, and the capsule depth renderer."""
from __future__ import annotations

import numpy as np
import pytest

from featmap_ros.data.nyu import nyu_K
from featmap_ros.data.specs import NYU_EVAL_JOINTS
from featmap_ros.errors import InputError
from featmap_ros.render import hand as hm
from featmap_ros.render.hand_depth import render_capsules_depth, render_hand_depth, render_plane_depth

K = nyu_K()
FRONT = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])  # fingers up, palm to the camera


def test_layout():
    assert len(hm.NYU_JOINT_NAMES) == 36
    assert hm.NYU_JOINT_NAMES[:6] == ("F1_KNU3_A", "F1_KNU3_B", "F1_KNU2_A", "F1_KNU2_B", "F1_KNU1_A", "F1_KNU1_B")
    assert hm.NYU_JOINT_NAMES[24] == "TH_KNU3_A" and hm.NYU_JOINT_NAMES[30:] == tuple(f"PALM_{i}" for i in range(1, 7))
    assert hm.NYU_JOINT_NAMES[hm.PALM_CENTER] == "PALM_3"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bone_lengths_equal_the_model(seed):
    rng = np.random.default_rng(seed)
    shape = hm.HandShape(scale=rng.uniform(0.8, 1.2))
    angles = hm.sample_articulation(rng, sigma_rad=0.6)
    J = hm.forward_kinematics_h(shape, angles)
    L = shape.bone_lengths_m()
    for f in range(5):
        base, mid, dist, tip = J[6 * f + 5], J[6 * f + 3], J[6 * f + 1], J[6 * f + 0]
        np.testing.assert_allclose(
            [np.linalg.norm(mid - base), np.linalg.norm(dist - mid), np.linalg.norm(tip - dist)], L[f], rtol=0, atol=1e-12
        )
        # A points lie on their bones
        np.testing.assert_allclose(J[6 * f + 4], base + hm.A_FRACTION * (mid - base), atol=1e-12)
        np.testing.assert_allclose(J[6 * f + 2], mid + hm.A_FRACTION * (dist - mid), atol=1e-12)
    # rigid motion keeps them
    R = hm.sample_rotation_h2c(rng)
    inst = hm.HandInstance(shape, angles, R, np.array([0.0, 0.0, 0.8]))
    Jc = inst.joints_c_m()
    for a, b in hm.bone_segments():
        assert abs(np.linalg.norm(Jc[a] - Jc[b]) - np.linalg.norm(J[a] - J[b])) < 1e-12


def test_limits_and_flexion_direction():
    a = np.full((5, 4), 5.0)
    np.testing.assert_array_equal(hm.clip_angles(a), hm.ANGLE_LIMITS_RAD[..., 1])
    straight = hm.forward_kinematics_h(hm.HandShape(), np.zeros((5, 4)))
    bent = hm.forward_kinematics_h(hm.HandShape(), np.tile([0.0, 0.0, 1.5, 0.0], (5, 1)))
    # fingers flex towards the palm side (+z of the hand frame)
    for f in range(4):
        assert bent[6 * f, 2] > straight[6 * f, 2] + 0.02
    # pinky on the ulnar (-x) side, thumb and index on the radial (+x) side
    assert straight[0, 0] < straight[12, 0] < straight[18, 0] < straight[24, 0]
    with pytest.raises(InputError):
        hm.clip_angles(np.zeros((5, 3)))
    with pytest.raises(InputError):
        hm.HandShape(scale=-1)
    with pytest.raises(InputError):
        hm.sample_articulation(np.random.default_rng(0), base="nope")


def test_sample_hand_is_seeded_and_in_view():
    a = hm.sample_hand(np.random.default_rng(3), K, 640, 480)
    b = hm.sample_hand(np.random.default_rng(3), K, 640, 480)
    np.testing.assert_array_equal(a.joints_c_m(), b.joints_c_m())
    for seed in range(10):
        h = hm.sample_hand(np.random.default_rng(seed), K, 640, 480, depth_range_m=(0.6, 0.9))
        c = h.joints_c_m()[hm.PALM_CENTER]
        assert 0.6 <= c[2] <= 0.9
        u, v = K[0, 0] * c[0] / c[2] + K[0, 2], K[1, 1] * c[1] / c[2] + K[1, 2]
        assert 0 < u < 640 and 0 < v < 480
        assert h.forearm_direction_c()[2] >= 0.2


def test_ray_caster_known_values():
    # a sphere of radius 0.1 at 1 m on the optical axis: depth 0.9 at the principal point
    d = render_capsules_depth([[0, 0, 1.0]], [[0, 0, 1.0]], [0.1], K, 640, 480)
    assert d[240, 320] == pytest.approx(0.9, abs=1e-6)
    # its silhouette radius in pixels: f * r / sqrt(z^2 - r^2)
    row = d[240] > 0
    assert row.sum() == pytest.approx(2 * K[0, 0] * 0.1 / np.sqrt(1 - 0.01), abs=2)
    # a horizontal capsule: depth z - r along its axis, and the caps round off the ends
    d = render_capsules_depth([[-0.1, 0, 0.5]], [[0.1, 0, 0.5]], [0.02], K, 640, 480)
    assert d[240, 320] == pytest.approx(0.48, abs=1e-6)
    u_end = int(round(K[0, 0] * 0.1 / 0.5 + K[0, 2]))
    assert d[240, u_end] == pytest.approx(0.48, abs=2e-4)
    assert d[240, u_end + 30] == 0
    # nearest wins; a plane behind
    plane = render_plane_depth([0, 0, 2.0], [0, 0, -1.0], K, 640, 480)
    assert np.allclose(plane, 2.0)
    d = render_capsules_depth([[0, 0, 1.0], [0, 0, 0.7]], [[0, 0, 1.0], [0, 0, 0.7]], [0.1, 0.05], K, 640, 480, depth_m=plane)
    assert d[240, 320] == pytest.approx(0.65, abs=1e-6) and d[0, 0] == pytest.approx(2.0)
    with pytest.raises(InputError):
        render_capsules_depth([[0, 0, 1.0]], [[0, 0, 1.0]], [0.1, 0.2], K, 640, 480)


def _joint_depth_check(hand, depth, tol_m=0.002):
    """Return (visible joint count, failures) of the joint/depth consistency check."""
    J = hand.joints_c_m()
    thickness = 2.0 * float(hand.shape.radii_m.max() * hand.shape.scale)
    palm = 2.0 * hand.shape.palm_radius_m * hand.shape.scale * 1.15
    fails, visible = [], 0
    for j, p in enumerate(J):
        u, v = K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]
        ui, vi = int(round(u)), int(round(v))
        if not (0 <= ui < depth.shape[1] and 0 <= vi < depth.shape[0]):
            continue
        d = float(depth[vi, ui])
        # every joint is inside the body: something is always at or in front of it
        if not (0 < d <= p[2] + tol_m):
            fails.append((j, "no surface at or in front of the joint", d, p[2]))
            continue
        limit = palm if j >= 30 or j in (28, 29) else thickness
        if p[2] - d <= limit:  # not hidden by another part: the surface is the joint's own
            visible += 1
    return visible, fails


@pytest.mark.parametrize("seed", range(6))
def test_rendered_depth_agrees_with_joints(seed, tmp_path):
    rng = np.random.default_rng(100 + seed)
    hand = hm.sample_hand(rng, K, 640, 480)
    depth = render_hand_depth(hand, K, 640, 480)
    visible, fails = _joint_depth_check(hand, depth)
    if fails or visible < 12:
        from featmap_ros.draw.skeleton import hand_overlay, write_png

        png = tmp_path / f"hand_{seed}.png"
        write_png(png, hand_overlay(depth, K, gt_c_m=hand.joints_c_m()[list(NYU_EVAL_JOINTS)], crop_to=hand.joints_c_m()[32], scale=2))
        pytest.fail(f"{len(fails)} joints without surface, {visible} visible; overlay: {png}; {fails[:3]}")


def test_frontal_open_hand_surface_is_one_radius_in_front():
    hand = hm.HandInstance(hm.HandShape(), hm.BASE_POSES_RAD["spread"], FRONT, np.array([0.0, 0.06, 0.5]))
    depth = render_hand_depth(hand, K, 640, 480)
    J = hand.joints_c_m()
    r = hand.shape.radii_m
    for f in range(4):
        for k, j in ((2, 6 * f + 1), (1, 6 * f + 3)):  # middle of distal and middle bones' bases
            p = J[j]
            u, v = K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]
            d = depth[int(round(v)), int(round(u))]
            assert 0.6 * r[f, k] < p[2] - d < 1.4 * r[f, k] + 0.002, (f, k, p[2] - d)


def test_trimesh_matches_capsules():
    hand = hm.sample_hand(np.random.default_rng(0), K, 640, 480)
    mesh = hm.hand_trimesh(hand)
    a, b, r = hand.capsules_c(0.10)
    # every vertex lies on the surface of at least one capsule
    v = mesh.vertices
    ab = b - a
    t = np.clip(np.einsum("vnk,nk->vn", v[:, None] - a[None], ab) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
    dist = np.linalg.norm(v[:, None] - (a[None] + t[..., None] * ab[None]), axis=2) - r[None]
    assert np.abs(dist).min(axis=1).max() < 1e-6


def test_ray_caster_agrees_with_the_mesh_renderer():
    """Cross-check against an independent renderer: OpenGL (pyrender) on the capsule mesh."""
    try:
        from featmap_ros.data.bop import Mesh
        from featmap_ros.render.renderer import MeshRenderer

        renderer = MeshRenderer(640, 480)
    except Exception as e:  # no EGL / OpenGL on this machine
        pytest.skip(f"mesh renderer unavailable: {e}")
    try:
        hand = hm.sample_hand(np.random.default_rng(1), K, 640, 480)
        tm = hm.hand_trimesh(hand, sections=24)
        out = renderer.render(Mesh(np.asarray(tm.vertices), np.asarray(tm.faces), None, "hand"), np.eye(3), np.zeros(3), K, depth_only=True)
    finally:
        renderer.close()
    d = render_hand_depth(hand, K, 640, 480)
    a, b = d > 0, out.depth_m > 0
    assert (a & b).sum() / (a | b).sum() > 0.97
    diff = np.abs(d[a & b] - out.depth_m[a & b])
    assert np.median(diff) < 0.001  # tessellation of the mesh: well under a millimetre


def test_anatomic_surface():
    shape = hm.anatomic_shape()
    a = np.zeros((5, 4))
    A, B, R, part = hm.anatomic_capsules_h(shape, a, forearm_length_m=0.25, sleeve=(0.06, 0.05))
    assert A.shape == B.shape == (len(R), 3) and set(part.tolist()) == {hm.PART_SKIN, hm.PART_SLEEVE}
    # the same joints as the capsule hand with these bones: the surface does not move the skeleton
    np.testing.assert_allclose(hm.forward_kinematics_h(shape, a)[:30], hm.forward_kinematics_h(hm.HandShape(bases_m=shape.bases_m, lengths_m=shape.lengths_m), a)[:30])
    # tapered fingers: the index's capsules thin towards the tip
    ch = hm.finger_chains_h(shape, a)
    near_tip = R[np.linalg.norm((A + B) / 2 - (ch[3, 2] + ch[3, 3]) / 2, axis=1) < 0.006]
    near_base = R[np.linalg.norm((A + B) / 2 - (ch[3, 0] + ch[3, 1]) / 2, axis=1) < 0.012]
    assert near_tip.size and near_base.size and near_tip.max() < near_base.max()
    # a palm of real thickness (~28 mm) and wider, thicker hands with the factors
    inst = hm.HandInstance(shape, a, FRONT, np.array([0.0, 0.0, 0.6]))
    d = render_hand_depth(inst, K, 640, 480)
    c = inst.joints_c_m()[hm.PALM_CENTER]
    u, v = int(round(K[0, 0] * c[0] / c[2] + K[0, 2])), int(round(K[1, 1] * c[1] / c[2] + K[1, 2]))
    assert 0.011 < c[2] - d[v, u] < 0.017  # the palm's surface lies half its thickness in front of the palm centre
    thick = hm.anatomic_shape(thickness_factor=1.2)
    assert thick.palm_radius_m == pytest.approx(1.2 * shape.palm_radius_m)
    wide = hm.anatomic_shape(palm_width_factor=1.1)
    assert np.ptp(wide.bases_m[:4, 0]) == pytest.approx(1.1 * np.ptp(shape.bases_m[:4, 0]))
    with pytest.raises(InputError, match="joint_radii_m"):
        hm.HandShape(joint_radii_m=np.zeros((5, 4)))
