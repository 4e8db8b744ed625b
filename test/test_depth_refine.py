"""featmap_ros.depth_refine: recovery of perturbed poses on synthetic depth, occluders, bad input.

Depth is ray cast in numpy (Moller-Trumbore over the pixels of the scene's box), no renderer.
"""
import time

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from featmap_ros import depth_refine as dr
from featmap_ros.errors import InputError
from featmap_ros.geometry import look_at_R_m2c, rotation_angle_deg

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])  # LINEMOD
H, W = 480, 640
BOX = trimesh.creation.box(extents=(0.10, 0.07, 0.05))
R_GT = look_at_R_m2c(np.array([0.5, -0.6, 0.7]), inplane_rad=0.3)  # three faces in view
T_GT = np.array([0.03, -0.02, 0.60])
TABLE_Z_M = 0.75


def render_depth(meshes_c, table_z_m=TABLE_Z_M):
    """Depth along z of triangle meshes given in the camera frame, over a plane at ``table_z_m``.

    Args:
        meshes_c: [(V (n, 3) camera frame metres, F (f, 3))].

    Returns:
        (H, W) float64 depth, metres.
    """
    depth = np.full((H, W), np.inf if table_z_m is None else float(table_z_m))
    V_all = np.concatenate([V for V, _ in meshes_c])
    uv = V_all[:, :2] / V_all[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    c0, r0 = np.maximum(np.floor(uv.min(0)).astype(int) - 1, 0)
    c1, r1 = np.minimum(np.ceil(uv.max(0)).astype(int) + 2, [W, H])
    uu, vv = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    d = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1).reshape(-1, 3)
    best = depth[r0:r1, c0:c1].reshape(-1).copy()
    for V, F in meshes_c:
        for a, b, c in V[F]:
            e1, e2 = b - a, c - a
            p = np.cross(d, e2)
            det = p @ e1
            with np.errstate(divide="ignore", invalid="ignore"):
                s = -a
                bu = (p @ s) / det
                q = np.cross(s, e1)
                bv = (d @ q) / det
                tz = (e2 @ q) / det  # ray z = 1: the hit's parameter is its depth
            hit = (np.abs(det) > 1e-12) & (bu >= 0) & (bv >= 0) & (bu + bv <= 1) & (tz > 0) & (tz < best)
            best[hit] = tz[hit]
    depth[r0:r1, c0:c1] = best.reshape(uu.shape)
    depth[~np.isfinite(depth)] = np.nan
    return depth


def in_camera(mesh, R, t):
    return np.asarray(mesh.vertices) @ R.T + t, np.asarray(mesh.faces)


def perturbed(rng, R, t, trans_m=(0.02, 0.04), rot_deg=(2.0, 5.0), lateral_px=5.0):
    """A colour-like estimate: 2-4 cm off along the viewing ray, a few pixels off in 2D, a few degrees."""
    ray = t / np.linalg.norm(t)
    lateral = rng.normal(size=3)
    lateral -= (lateral @ ray) * ray
    lateral *= lateral_px * t[2] / K[0, 0] / np.linalg.norm(lateral)
    t_p = t + rng.choice([-1, 1]) * rng.uniform(*trans_m) * ray + lateral
    axis = rng.normal(size=3)
    R_p = Rotation.from_rotvec(np.radians(rng.uniform(*rot_deg)) * axis / np.linalg.norm(axis)).as_matrix() @ R
    return R_p, t_p


@pytest.fixture(scope="module")
def model():
    return dr.refine_model_from_trimesh(BOX, n_points=500, name="box")


@pytest.fixture(scope="module")
def depth_clean():
    return render_depth([in_camera(BOX, R_GT, T_GT)])


def errors(res):
    return float(np.linalg.norm(res.t_m2c_m - T_GT)), rotation_angle_deg(res.R_m2c, R_GT)


def test_model_sampling_is_even_outward_and_deterministic(model):
    assert model.points_m.shape == (500, 3) and model.normals_m.shape == (500, 3)
    np.testing.assert_allclose(np.linalg.norm(model.normals_m, axis=1), 1.0)
    # box: every point on the surface, normals outward (away from the centre)
    assert np.all(np.abs(np.abs(model.points_m) - np.array([0.05, 0.035, 0.025])).min(axis=1) < 1e-9)
    assert np.all(np.einsum("ij,ij->i", model.points_m, model.normals_m) > 0)
    # inverted winding is turned outward, and the seed fixes the sample
    flipped = dr.refine_model_from_mesh(BOX.vertices, BOX.faces[:, ::-1], 500, "flipped")
    assert np.all(np.einsum("ij,ij->i", flipped.points_m, flipped.normals_m) > 0)
    again = dr.refine_model_from_trimesh(BOX, n_points=500)
    np.testing.assert_array_equal(again.points_m, model.points_m)
    # farthest point sampling: no two points closer than a fraction of the even spacing
    spacing = np.sqrt(BOX.area / 500)
    nn = cKDTree(model.points_m).query(model.points_m, k=2)[0][:, 1]
    assert nn.min() > 0.3 * spacing


def test_mesh_without_faces_is_an_input_error_naming_it():
    with pytest.raises(InputError, match="'cloud'.*no faces"):
        dr.refine_model_from_mesh(BOX.vertices, np.zeros((0, 3), int), name="cloud")
    with pytest.raises(InputError, match="'pc.ply'.*no faces"):
        dr.refine_model_from_trimesh(trimesh.PointCloud(BOX.vertices), name="pc.ply")
    with pytest.raises(InputError, match="'bad'.*out of range"):
        dr.refine_model_from_mesh(BOX.vertices, BOX.faces + 100, name="bad")
    with pytest.raises(InputError, match="'flat'.*zero area"):
        dr.refine_model_from_mesh(np.zeros((3, 3)), [[0, 1, 2]], name="flat")


def test_exact_pose_is_a_fixed_point(model, depth_clean):
    res = dr.refine_pose_with_depth(R_GT, T_GT, depth_clean, K, model)
    assert res.accepted, res.reason
    dt, dR = errors(res)
    assert dt < 1e-3 and dR < 0.3
    assert res.fitness > 0.95 and res.inlier_rmse_m < 1e-3 and res.n_points > 100


@pytest.mark.parametrize("lateral_px", [5.0, 15.0])
def test_recovers_perturbed_poses(model, depth_clean, lateral_px):
    # 15 px: a box slid 2 cm along an edge used to stay there (its end face taken for occluded)
    rng = np.random.default_rng(1)
    for _ in range(8):
        R0, t0 = perturbed(rng, R_GT, T_GT, lateral_px=lateral_px)
        res = dr.refine_pose_with_depth(R0, t0, depth_clean, K, model)
        assert res.accepted, res.reason
        dt, dR = errors(res)
        assert dt < 0.005 and dR < 2.0, (dt, dR, np.linalg.norm(t0 - T_GT))


def test_non_convex_model():
    # a thick ring seen from 37 deg above: the far inner wall faces the camera, half hidden
    ring = trimesh.creation.annulus(r_min=0.03, r_max=0.05, height=0.04)
    model_ring = dr.refine_model_from_trimesh(ring, 500, name="ring")
    R = look_at_R_m2c(np.array([0.0, -0.8, 0.6]))
    t = np.array([0.0, 0.0, 0.6])
    depth = render_depth([in_camera(ring, R, t)])
    rng = np.random.default_rng(7)
    for _ in range(3):
        R0, t0 = perturbed(rng, R, t)
        res = dr.refine_pose_with_depth(R0, t0, depth, K, model_ring)
        assert res.accepted and res.fitness > 0.9, res.reason
        assert np.linalg.norm(res.t_m2c_m - t) < 0.002


def test_noise_and_dropouts(model, depth_clean):
    rng = np.random.default_rng(2)
    depth = depth_clean + rng.normal(0, 0.002, depth_clean.shape)  # 2 mm, structured-light-like at 0.6 m
    depth[rng.random(depth.shape) < 0.15] = 0.0  # 15 % holes
    R0, t0 = perturbed(rng, R_GT, T_GT)
    res = dr.refine_pose_with_depth(R0, t0, depth.astype(np.float32), K, model)
    assert res.accepted, res.reason
    dt, dR = errors(res)
    assert dt < 0.005 and dR < 2.0
    assert 0.0003 < res.inlier_rmse_m < 0.004  # nearest neighbours pick the nearer noisy points: below 2 mm


def test_occluder_in_front_does_not_pull_the_pose(model):
    # a plate 8 cm in front covering about 40 % of the object in the image
    plate = trimesh.creation.box(extents=(0.05, 0.12, 0.01))
    t_plate = T_GT + np.array([-0.035, 0.0, -0.08]) * np.array([(T_GT[2] - 0.08) / T_GT[2], 1, 1])
    depth = render_depth([in_camera(BOX, R_GT, T_GT), in_camera(plate, np.eye(3), t_plate)])
    rng = np.random.default_rng(3)
    for _ in range(3):
        R0, t0 = perturbed(rng, R_GT, T_GT)
        res = dr.refine_pose_with_depth(R0, t0, depth, K, model)
        assert res.accepted, res.reason
        assert res.occluded_fraction > 0.15
        dt, dR = errors(res)
        assert dt < 0.006 and dR < 2.5


def test_all_nan_depth_is_rejected_with_reason_and_keeps_colour_pose(model):
    R0, t0 = perturbed(np.random.default_rng(4), R_GT, T_GT)
    res = dr.refine_pose_with_depth(R0, t0, np.full((H, W), np.nan), K, model)
    assert not res.accepted and res.reason == "no valid depth in window"
    np.testing.assert_array_equal(res.R_m2c, R0)
    np.testing.assert_array_equal(res.t_m2c_m, t0)
    res = dr.refine_pose_with_depth(R0, t0, np.zeros((H, W)), K, model)
    assert not res.accepted and res.reason == "no valid depth in window"


def test_depth_far_behind_the_object_is_rejected(model):
    # the object is missing from the depth (black, or another frame): only the wall at 1.5 m
    res = dr.refine_pose_with_depth(R_GT, T_GT, np.full((H, W), 1.5), K, model)
    assert not res.accepted and "behind the object" in res.reason


def test_a_wall_instead_of_the_object_is_rejected(model):
    # a wall through the object: step 1 snaps onto it, ICP turns a face flat against it (48 deg).
    # The face explains the wall perfectly (fitness 1.0): only the rotation limit can catch this.
    res = dr.refine_pose_with_depth(R_GT, T_GT, np.full((H, W), 0.6), K, model)
    assert not res.accepted and res.reason.startswith("turned 48."), res.reason


def test_another_object_in_the_window_gives_low_fitness(model):
    # a sphere where the box should be: the box cannot explain it
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    depth = render_depth([in_camera(sphere, np.eye(3), T_GT + [0, 0, 0.02])])
    res = dr.refine_pose_with_depth(R_GT, T_GT, depth, K, model)
    assert not res.accepted and res.reason.startswith("fitness"), res.reason
    assert res.fitness < 0.6


def test_object_outside_image_and_behind_camera_are_rejected(model, depth_clean):
    res = dr.refine_pose_with_depth(R_GT, T_GT + [5.0, 0, 0], depth_clean, K, model)
    assert not res.accepted and res.reason == "object not in the image"
    res = dr.refine_pose_with_depth(R_GT, -T_GT, depth_clean, K, model)
    assert not res.accepted and "behind the camera" in res.reason


def test_bad_arrays_are_input_errors_naming_the_field(model, depth_clean):
    with pytest.raises(InputError, match="depth_m: shape .* registered"):
        dr.refine_pose_with_depth(R_GT, T_GT, depth_clean[:240], K, model, expected_shape_hw=(H, W))
    with pytest.raises(InputError, match="depth_m: expected float metres, got uint16"):
        dr.refine_pose_with_depth(R_GT, T_GT, (depth_clean * 1000).astype(np.uint16), K, model)
    with pytest.raises(InputError, match="depth_m: expected an \\(H, W\\)"):
        dr.refine_pose_with_depth(R_GT, T_GT, depth_clean[..., None], K, model)
    with pytest.raises(InputError, match="t_m2c_m"):
        dr.refine_pose_with_depth(R_GT, [0, 0, np.nan], depth_clean, K, model)
    with pytest.raises(InputError, match="R_m2c"):
        dr.refine_pose_with_depth(np.eye(2), T_GT, depth_clean, K, model)
    with pytest.raises(InputError, match="K"):
        dr.refine_pose_with_depth(R_GT, T_GT, depth_clean, np.eye(2), model)


def test_window_from_the_caller(model, depth_clean):
    uv = (BOX.vertices @ R_GT.T + T_GT) @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    xywh = np.r_[uv.min(0), uv.max(0) - uv.min(0)]
    R0, t0 = perturbed(np.random.default_rng(8), R_GT, T_GT)
    res = dr.refine_pose_with_depth(R0, t0, depth_clean, K, model, window_xywh=xywh)
    assert res.accepted and errors(res)[0] < 0.002
    with pytest.raises(InputError, match="window_xywh"):
        dr.refine_pose_with_depth(R0, t0, depth_clean, K, model, window_xywh=[0, 0, np.nan, 10])


def test_inputs_not_mutated(model, depth_clean):
    R0, t0 = perturbed(np.random.default_rng(5), R_GT, T_GT)
    copies = [a.copy() for a in (R0, t0, depth_clean, K, model.points_m, model.normals_m)]
    dr.refine_pose_with_depth(R0, t0, depth_clean, K, model)
    for a, b in zip((R0, t0, depth_clean, K, model.points_m, model.normals_m), copies):
        np.testing.assert_array_equal(a, b)


def test_figures_on_synthetic_scenes(model, depth_clean):
    """The module docstring's figures: 30 noisy cases; prints them with ``pytest -s``."""
    rng = np.random.default_rng(6)
    err_t, err_R, ms, ms_first = [], [], [], []
    for _ in range(30):
        depth = (depth_clean + rng.normal(0, 0.002, depth_clean.shape)).astype(np.float32)
        R0, t0 = perturbed(rng, R_GT, T_GT)
        runs = []
        for _ in range(3):  # best of 3: the cores are shared with other work
            t_start = time.perf_counter()
            res = dr.refine_pose_with_depth(R0, t0, depth, K, model)
            runs.append(1e3 * (time.perf_counter() - t_start))
        ms.append(min(runs))
        ms_first.append(runs[0])
        assert res.accepted, res.reason
        dt, dR = errors(res)
        err_t.append(dt)
        err_R.append(dR)
    err_t_mm = 1e3 * np.array(err_t)
    print(f"\n[depth_refine] 30 cases, 2 mm noise: translation error median {np.median(err_t_mm):.2f} mm, "
          f"p95 {np.percentile(err_t_mm, 95):.2f} mm; rotation median {np.median(err_R):.2f} deg; "
          f"time per object: median {np.median(ms):.2f} ms best of 3, p95 {np.percentile(ms, 95):.2f} ms; "
          f"median of single runs {np.median(ms_first):.2f} ms")
    assert np.median(err_t_mm) < 10.0  # the aim; measured well below
    assert np.median(ms) < 25.0  # aim 5 ms; loose here because the test machine's cores are shared
