"""Depth refinement of an object pose from a colour estimate (registered RGB-D).

The colour estimate places the object well in the image (2D) but poorly in depth. With a depth
image registered to the colour image (same size and intrinsics ``K``), the pose is refined in two
steps:

1. **Translation along the viewing ray.** The model's visible surface points (normals facing the
   camera, not hidden behind the model itself) are projected into the depth image; the offsets
   between measured and predicted depth are summed up robustly (the densest 2 cm of offsets, then
   their median), and the translation is scaled along the ray through the object's origin, which
   keeps the 2D position the colour estimate got right.
2. **Point-to-plane ICP** with the model's normals, in both directions: visible model points
   find their nearest depth point back-projected in the object's window, and a spread subset of
   those depth points finds its nearest visible model point (without it, a box 2 cm off along an
   edge stays there: the two faces along the edge fit, and the end face that would pull it back
   has no correspondence). The distance threshold shrinks from 3 cm to 8 mm, a step each time
   the pose has settled (trimming occluders and background); Huber weights on the residuals; a
   little damping (a flat face leaves its in-plane motion to the colour pose); each step rotates
   about the points' centre.

Model points whose predicted depth is beyond the measured depth by more than a margin (2 cm, and
during ICP at least the current threshold, else a wrong pose could call the face that contradicts
it occluded) are occluded by something else (a hand, another object) and take no part. The
fitness is projective: among the remaining visible points with a valid measured depth at their
pixel, the fraction whose predicted depth is within ``inlier_dist_m`` of it. (It was the fraction
with a window depth point within ``inlier_dist_m``; but the window's points are subsampled to
``max_target_points``, 4-5 mm apart for a 10 cm object at 0.7-1 m, so correct poses scored 0.43-0.94
on the real-like RGB-D frames of ``featmap bench refine`` and a fifth of them were rejected;
projective, correct poses score 0.71-0.99 there and wrong ones 0.23-0.29.) A refinement that fails a check (no depth, low fitness, moved or turned too
far) comes back with ``accepted=False`` and the reason, and the caller keeps the colour pose.
Known limit: a flat wall through the object is explained perfectly by one face of a box (fitness
1.0); only the rotation limit rejects it.

Why a compact ``scipy.spatial.cKDTree`` ICP rather than Open3D's ``registration_icp``, measured
on the synthetic scenes of ``test/test_depth_refine.py`` (box 100x70x50 mm at 0.6 m, 640x480, K
of LINEMOD, 2 mm depth noise; colour pose 2-4 cm off along the ray, 5 or 15 px off in 2D, 2-5 deg;
30 cases; 2 shared CPU cores; Open3D 0.20 point-to-plane with its own target normals, given the
same visible points, window and translation step):

==========================  ==================  ===================  ==================
case                        this module         Open3D, 2 cm         Open3D, 3->0.8 cm
==========================  ==================  ===================  ==================
5 px, clean                 0.19 mm, 3.7 ms     0.19 mm, 2.6 ms      0.21 mm, 2.5 ms
5 px, 40 % occluded         0.46 mm, 3.6 ms     0.76 mm, 2.5 ms      0.58 mm, 3.1 ms
15 px, clean (p95)          0.29 mm, 4.8 ms     0.68 mm, 2.5 ms      5.4 mm, 2.9 ms
15 px, 40 % occluded (med)  0.98 mm, 5.9 ms     4.1 mm (p95 1 m)     1.5 mm (p95 0.4 m)
==========================  ==================  ===================  ==================

(median translation error unless marked; median time per object of single runs on the shared
cores, including the numpy visibility and window steps; best of 3, this module takes 3.6-3.8 ms
in the 5 px case. In the last row this module's p95, 41 mm, is rejected refinements, which keep
the colour pose; Open3D has no rejection.) Open3D is 1-2 ms faster, half of which is its normal
estimation, but no more accurate, and worse from a large 2D error; it has no model-side
visibility, occlusion test or rejection, which would be written in numpy anyway. Its wheel is
900 MB and needs libusb and a dozen Python packages (dash, plotly, pydantic, ...). So this module
keeps the numpy/scipy version: as accurate, within the 5 ms aim, no new dependency. The
comparison script is not kept; this module's figures are printed by
``pytest -s test/test_depth_refine.py -k figures``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from featmap_ros.errors import InputError
from featmap_ros.geometry import check_K, check_pose


@dataclass(frozen=True)
class DepthRefineConfig:
    """Thresholds of :func:`refine_pose_with_depth` (metres, pixels, degrees as named)."""

    #: The window is the model's projected box grown by this fraction of its size on each side:
    #: room for the colour pose's 2D error (a few pixels) and its depth error (scale).
    window_margin: float = 0.2
    #: At most this many depth pixels of the window are back-projected (a regular stride): bounds
    #: the KD-tree cost; for a 100 mm box at 0.6 m (a 150x130 px window) every third pixel.
    max_target_points: int = 3000
    #: Depth points farther than this from the model's depth range (after step 1) are dropped:
    #: table and wall behind, far occluders in front.
    depth_band_m: float = 0.05
    #: Step 1 takes the median of the densest ``2 * offset_band_m`` of depth offsets: an
    #: occluder in front and background at the silhouette fall outside it.
    offset_band_m: float = 0.01
    #: A visible model point whose predicted depth is beyond the measured one by more than this
    #: is occluded by something else (kept out of ICP and of the fitness).
    occlusion_margin_m: float = 0.02
    #: Self-occlusion: a model point further than this (plus two z-buffer cells) behind the
    #: nearest model point of its cell is hidden by the model itself (non-convex models).
    self_occlusion_margin_m: float = 0.01
    #: ICP iterations (Gauss-Newton steps); it stops earlier when the step is below 0.1 mm and 0.1 deg.
    icp_iterations: int = 10
    #: The correspondence distance threshold starts here (colour pose error after step 1) ...
    icp_start_dist_m: float = 0.03
    #: ... and shrinks by the factor ``icp_shrink`` down to this (3-4 sigma of sensor noise) ...
    icp_min_dist_m: float = 0.008
    icp_shrink: float = 0.7
    #: ... after each step that moves the points' centre by less than this.
    icp_settled_m: float = 0.002
    #: Depth points (a spread subset) that also look for their nearest visible model point: a
    #: face of the object the model has slid off pulls it back (0 = model -> depth only).
    reverse_points: int = 150
    #: A visible model point whose measured depth is this close to its predicted one is an inlier
    #: (fitness; for the RMSE: a depth point this close): about 2.5 sigma of 2 mm sensor noise. A
    #: box fitted to a sphere of its size explains 25 % of its points (projective, 5 mm).
    inlier_dist_m: float = 0.005
    #: Fewer usable model points than this: no refinement.
    min_points: int = 30
    #: Rejections: the refined pose must explain this fraction of the visible points ...
    min_fitness: float = 0.6
    #: ... must not move the colour pose further than this (step 1's offset neither): the bundled
    #: toy weights' colour poses are up to 0.46 m off along the ray on the real-like frames of
    #: ``featmap bench refine`` (depth from a box's apparent size); at 0.1 m a quarter of the
    #: refinements were refused, at 0.5 m 2 %, none of the accepted ones wrong (the fitness
    #: check catches a snap onto something else) ...
    max_translation_m: float = 0.5
    max_rotation_deg: float = 30.0
    #: ... and at most this fraction of the model's visible points may be occluded.
    max_occluded_fraction: float = 0.8


@dataclass(frozen=True)
class RefineModel:
    """Surface points of a model for depth refinement.

    Attributes:
        points_m: (N, 3) float64 surface points, model frame, metres.
        normals_m: (N, 3) float64 outward unit normals, model frame.
        name: the mesh's name, for messages.
    """

    points_m: np.ndarray
    normals_m: np.ndarray
    name: str = ""


@dataclass(frozen=True)
class DepthRefinement:
    """The result of :func:`refine_pose_with_depth`.

    Attributes:
        R_m2c: (3, 3) float64 refined rotation; the input one when not accepted.
        t_m2c_m: (3,) float64 refined translation, metres; the input one when not accepted.
        fitness: fraction of the visible, unoccluded model points with a valid measured depth at
            their pixel whose predicted depth is within ``inlier_dist_m`` of it, at the refined
            pose (0 when there was nothing to refine).
        inlier_rmse_m: RMS point-to-plane distance (along the model normal) of the visible,
            unoccluded model points with a window depth point within ``inlier_dist_m`` to those
            points, metres (NaN if none); below the sensor noise when the fit is
            good (the nearest of noisy depth points is the nearer: 0.9 mm for 2 mm noise).
        n_points: visible, unoccluded model points at the refined pose.
        occluded_fraction: fraction of the visible model points occluded by something in front.
        accepted: whether the refined pose should replace the colour pose.
        reason: why not accepted ("" when accepted).
        iterations: ICP iterations run.
    """

    R_m2c: np.ndarray
    t_m2c_m: np.ndarray
    fitness: float
    inlier_rmse_m: float
    n_points: int
    occluded_fraction: float
    accepted: bool
    reason: str = ""
    iterations: int = 0


# --------------------------------------------------------------------------------------------
# Model points
# --------------------------------------------------------------------------------------------


def refine_model_from_mesh(
    vertices_m: np.ndarray, faces: np.ndarray, n_points: int = 500, name: str = "mesh", seed: int = 0
) -> RefineModel:
    """Sample evenly spread surface points with normals from a triangle mesh.

    Points are drawn area-weighted (8x more than needed, fixed seed), then thinned by farthest
    point sampling, so that a small, detailed part does not take all the points. Normals are the
    faces' normals, turned outward when the mesh's signed volume says the winding is inverted.

    Args:
        vertices_m: (V, 3) float vertices, model frame, metres.
        faces: (F, 3) int vertex indices.
        n_points: points to keep.
        name: the mesh's name, used in error messages.
        seed: sampling seed (the result is deterministic).

    Returns:
        :class:`RefineModel` with ``n_points`` points.

    Raises:
        InputError: naming the mesh, when it has no vertices or faces, non-finite vertices, face
            indices out of range, or zero area.
    """
    V = np.asarray(vertices_m, dtype=np.float64)
    F = np.asarray(faces)
    if V.ndim != 2 or V.shape[1] != 3 or len(V) == 0:
        raise InputError(f"mesh {name!r}: expected (V, 3) vertices, got shape {V.shape}")
    if F.size == 0:
        raise InputError(f"mesh {name!r}: has no faces (a point cloud cannot give surface normals)")
    if F.ndim != 2 or F.shape[1] != 3 or not np.issubdtype(F.dtype, np.integer):
        raise InputError(f"mesh {name!r}: expected (F, 3) integer faces, got shape {F.shape} {F.dtype}")
    if not np.all(np.isfinite(V)):
        raise InputError(f"mesh {name!r}: vertices contain NaN or inf")
    if F.min() < 0 or F.max() >= len(V):
        raise InputError(f"mesh {name!r}: face indices out of range [0, {len(V)})")
    if int(n_points) < 1:
        raise InputError(f"n_points: must be >= 1, got {n_points}")
    tri = V[F]  # (F, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area2 = np.linalg.norm(cross, axis=1)
    if not area2.sum() > 0:
        raise InputError(f"mesh {name!r}: all faces have zero area")
    normals_f = cross / np.maximum(area2, 1e-300)[:, None]
    if np.einsum("ij,ij->", tri[:, 0], cross) < 0:  # 6x signed volume < 0: inward winding
        normals_f = -normals_f
    rng = np.random.default_rng(seed)
    n_cand = 8 * int(n_points)
    fi = rng.choice(len(F), size=n_cand, p=area2 / area2.sum())
    r1, r2 = rng.random(n_cand), rng.random(n_cand)
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    pts = tri[fi, 0] + r1[:, None] * (tri[fi, 1] - tri[fi, 0]) + r2[:, None] * (tri[fi, 2] - tri[fi, 0])
    keep = _farthest_point_indices(pts, int(n_points))
    return RefineModel(pts[keep], normals_f[fi[keep]], name)


def refine_model_from_trimesh(mesh, n_points: int = 500, name: str | None = None, seed: int = 0) -> RefineModel:
    """:func:`refine_model_from_mesh` for a ``trimesh.Trimesh`` (or anything with ``vertices`` and
    ``faces``, in metres). The name defaults to the mesh's ``metadata['file_name']``."""
    if name is None:
        meta = getattr(mesh, "metadata", None) or {}
        name = str(meta.get("file_name", "mesh"))
    verts = getattr(mesh, "vertices", None)
    faces = getattr(mesh, "faces", None)
    if verts is None:
        raise InputError(f"mesh {name!r}: no vertices (got a {type(mesh).__name__})")
    return refine_model_from_mesh(verts, np.zeros((0, 3), np.int64) if faces is None else faces, n_points, name, seed)


def _farthest_point_indices(points: np.ndarray, n: int) -> np.ndarray:
    if n >= len(points):
        return np.arange(len(points))
    idx = np.empty(n, dtype=np.int64)
    idx[0] = 0
    d2 = np.sum((points - points[0]) ** 2, axis=1)
    for k in range(1, n):
        idx[k] = int(np.argmax(d2))
        d2 = np.minimum(d2, np.sum((points - points[idx[k]]) ** 2, axis=1))
    return idx


# --------------------------------------------------------------------------------------------
# Refinement
# --------------------------------------------------------------------------------------------


def check_registered_depth(depth_m, expected_shape_hw=None) -> np.ndarray:
    """Check a depth image for refinement: (H, W) float metres, of the colour image's size.

    Args:
        depth_m: (H, W) float depth along z, metres (0 or NaN = invalid).
        expected_shape_hw: (H, W) of the colour image, or None.

    Returns:
        ``depth_m`` as an array (not copied).

    Raises:
        InputError: naming ``depth_m``: not 2-D, not float (16UC1 millimetres), or another size
            than the colour image (then it is not registered: same size and K as the colour
            camera, e.g. RealSense ``aligned_depth_to_color``).
    """
    d = np.asarray(depth_m)
    if d.ndim != 2:
        raise InputError(f"depth_m: expected an (H, W) depth image, got shape {d.shape}")
    if not np.issubdtype(d.dtype, np.floating):
        raise InputError(
            f"depth_m: expected float metres, got {d.dtype} (16UC1 depth is millimetres: pass depth_mm * 1e-3)"
        )
    if expected_shape_hw is not None and tuple(d.shape) != tuple(int(s) for s in expected_shape_hw):
        raise InputError(
            f"depth_m: shape {tuple(d.shape)} differs from the colour image's {tuple(int(s) for s in expected_shape_hw)}; "
            "depth must be registered to colour (aligned to the colour camera: same size and K, "
            "e.g. RealSense aligned_depth_to_color)"
        )
    return d


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # np.cross costs 30 us on (300, 3) arrays, most of it argument handling
    out = np.empty_like(a)
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


def _rodrigues(w: np.ndarray) -> np.ndarray:
    th = float(np.linalg.norm(w))
    if th < 1e-12:
        return np.eye(3)
    k = w / th
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(th) * Kx + (1 - math.cos(th)) * (Kx @ Kx)


def rejection_kind(reason: str) -> str:
    """A rejection reason with its numbers replaced by N ("fitness 0.41 < 0.6" -> "fitness N < N"):
    one message per kind, for counting and for logs that show each message once."""
    return re.sub(r"[-+]?\d+(\.\d+)?", "N", reason)


def _rejected(R, t, reason, fitness=0.0, rmse=float("nan"), n=0, occ=0.0, it=0) -> DepthRefinement:
    return DepthRefinement(R.copy(), t.copy(), float(fitness), float(rmse), int(n), float(occ), False, reason, it)


class _View:
    """Model points seen at one pose: which are visible and what the depth image says there."""

    def __init__(self, model: RefineModel, R, t, depth, K, cfg: DepthRefineConfig):
        H, W = depth.shape
        P = model.points_m @ R.T + t
        N = model.normals_m @ R.T
        z = P[:, 2]
        facing = (np.einsum("ij,ij->i", N, P) < 0) & (z > 1e-6)
        zs = np.where(facing, z, 1.0)
        u = K[0, 0] * P[:, 0] / zs + K[0, 1] * P[:, 1] / zs + K[0, 2]
        v = K[1, 1] * P[:, 1] / zs + K[1, 2]
        ui = np.floor(u).astype(np.int64)
        vi = np.floor(v).astype(np.int64)
        vis = facing & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
        # self-occlusion: a coarse z-buffer of the model's own facing points
        if vis.sum() >= 2:
            uu, vv = u[vis], v[vis]
            area = max((uu.max() - uu.min()) * (vv.max() - vv.min()), 1.0)
            cell = max(2.0, 2.0 * math.sqrt(area / vis.sum()))
            cu = ((uu - uu.min()) / cell).astype(np.int64)
            cv = ((vv - vv.min()) / cell).astype(np.int64)
            cid = cv * (cu.max() + 1) + cu
            zmin = np.full(cid.max() + 1, np.inf)
            np.minimum.at(zmin, cid, z[vis])
            cell_m = cell * float(z[vis].mean()) / K[0, 0]
            hidden = z[vis] > zmin[cid] + cfg.self_occlusion_margin_m + 2 * cell_m
            vis[np.flatnonzero(vis)[hidden]] = False
        self.P, self.N, self.u, self.v = P, N, u, v
        self.visible = vis
        z_meas = np.full(len(P), np.nan)
        z_meas[vis] = depth[vi[vis], ui[vis]]
        z_meas[~(z_meas > 0)] = np.nan  # 0, negative and NaN = invalid
        self.z_meas = z_meas
        self.occluded = self.occluded_at(cfg.occlusion_margin_m)
        self.used = vis & ~self.occluded  # visible and not behind something else

    def occluded_at(self, margin_m: float) -> np.ndarray:
        """Visible points whose measured depth is in front of them by more than ``margin_m``."""
        with np.errstate(invalid="ignore"):
            return self.visible & (self.z_meas < self.P[:, 2] - margin_m)


def _window_points(depth, K, u, v, z_lo, z_hi, cfg: DepthRefineConfig, window_xywh) -> np.ndarray:
    H, W = depth.shape
    if window_xywh is None:
        u0, u1, v0, v1 = u.min(), u.max(), v.min(), v.max()
    else:
        x, y, w, h = (float(a) for a in np.asarray(window_xywh, dtype=np.float64).reshape(4))
        u0, u1, v0, v1 = x, x + w, y, y + h
    mu, mv = cfg.window_margin * (u1 - u0), cfg.window_margin * (v1 - v0)
    c0, c1 = int(max(0, math.floor(u0 - mu))), int(min(W, math.ceil(u1 + mu) + 1))
    r0, r1 = int(max(0, math.floor(v0 - mv))), int(min(H, math.ceil(v1 + mv) + 1))
    if c1 <= c0 or r1 <= r0:
        return np.zeros((0, 3))
    n_pix = (c1 - c0) * (r1 - r0)
    stride = max(1, int(math.ceil(math.sqrt(n_pix / max(cfg.max_target_points, 1)))))
    win = depth[r0:r1:stride, c0:c1:stride]
    ok = (win > z_lo) & (win < z_hi)  # also drops NaN
    rr, cc = np.nonzero(ok)
    z = win[rr, cc].astype(np.float64)
    uu = c0 + cc * stride + 0.5
    vv = r0 + rr * stride + 0.5
    y = (vv - K[1, 2]) * z / K[1, 1]
    x = (uu - K[0, 2] - K[0, 1] * y / np.maximum(z, 1e-12)) * z / K[0, 0]
    return np.stack([x, y, z], axis=1)


def _translation_step(view: _View, cfg: DepthRefineConfig) -> tuple[float, int]:
    """Robust depth offset (metres, measured - predicted) of the visible points, and their count."""
    m = view.visible & np.isfinite(view.z_meas)
    off = np.sort(view.z_meas[m] - view.P[m, 2])
    if len(off) == 0:
        return float("nan"), 0
    hi = np.searchsorted(off, off + 2 * cfg.offset_band_m, side="right")
    i = int(np.argmax(hi - np.arange(len(off))))
    return float(np.median(off[i:hi[i]])), len(off)


def refine_pose_with_depth(
    R_m2c: np.ndarray,
    t_m2c_m: np.ndarray,
    depth_m: np.ndarray,
    K: np.ndarray,
    model: RefineModel,
    config: DepthRefineConfig | None = None,
    expected_shape_hw: tuple[int, int] | None = None,
    window_xywh: np.ndarray | None = None,
) -> DepthRefinement:
    """Refine an object pose with a registered depth image.

    Args:
        R_m2c: (3, 3) float rotation of the colour estimate, model -> camera.
        t_m2c_m: (3,) float translation of the colour estimate, metres.
        depth_m: (H, W) float depth along z, metres, registered to the colour image; 0 or NaN
            = invalid.
        K: (3, 3) intrinsics of the (colour and depth) image, pixels.
        model: the model's surface points, see :func:`refine_model_from_mesh`.
        config: thresholds; defaults to :class:`DepthRefineConfig()`.
        expected_shape_hw: (H, W) of the colour image, when known: a depth image of another
            size is not registered.
        window_xywh: (4,) x, y, w, h pixels of the object's window; defaults to the box of the
            model projected at the colour pose.

    Returns:
        :class:`DepthRefinement`; when ``accepted`` is False its pose is the colour pose and
        ``reason`` says why (no depth in the window, low fitness, moved too far, ...).

    Raises:
        InputError: naming the argument, for arrays of the wrong shape or type (a depth image
            of another size than ``expected_shape_hw``, integer depth, non-finite pose or K).
            Problems of the data itself (no valid depth, depth behind the object, an occluder)
            give a rejected refinement instead.
    """
    cfg = DepthRefineConfig() if config is None else config
    R0, t0 = check_pose(R_m2c, t_m2c_m)
    K = check_K(K)
    depth = check_registered_depth(depth_m, expected_shape_hw)
    if len(model.points_m) == 0:
        raise InputError(f"mesh {model.name!r}: no surface points")
    if window_xywh is not None:
        win = np.asarray(window_xywh, dtype=np.float64).reshape(-1)
        if win.shape != (4,) or not np.all(np.isfinite(win)) or win[2] <= 0 or win[3] <= 0:
            raise InputError(f"window_xywh: expected finite x, y, w > 0, h > 0 pixels, got {win.tolist()}")
    if t0[2] <= 0:
        return _rejected(R0, t0, f"colour pose behind the camera (t_z = {t0[2]:.3f} m)")

    # step 1: translation along the viewing ray
    view = _View(model, R0, t0, depth, K, cfg)
    if not view.visible.any():
        return _rejected(R0, t0, "object not in the image")
    dz, n_valid = _translation_step(view, cfg)
    if n_valid == 0:
        return _rejected(R0, t0, "no valid depth in window")
    if n_valid < cfg.min_points:
        return _rejected(R0, t0, f"only {n_valid} visible model points have valid depth (< {cfg.min_points})")
    if abs(dz) > cfg.max_translation_m:
        where = "behind" if dz > 0 else "in front of"
        return _rejected(R0, t0, f"measured depth {abs(dz):.3f} m {where} the object > max {cfg.max_translation_m} m")
    R = R0.copy()
    t = t0 * (1.0 + dz / t0[2])

    # step 2: point-to-plane ICP against the window's depth points
    view = _View(model, R, t, depth, K, cfg)
    zc = view.P[view.visible, 2]
    Q = _window_points(depth, K, view.u[view.visible], view.v[view.visible],
                       zc.min() - cfg.depth_band_m, zc.max() + cfg.depth_band_m, cfg, window_xywh)
    if len(Q) < cfg.min_points:
        return _rejected(R0, t0, f"only {len(Q)} depth points near the object in its window (< {cfg.min_points})")
    tree = cKDTree(Q)
    # the reverse term: a spread subset of the depth points pulls the nearest visible model points
    Q_rev = Q[:: max(1, len(Q) // cfg.reverse_points)] if cfg.reverse_points > 0 else Q[:0]
    thr = cfg.icp_start_dist_m
    it = 0
    for it in range(1, cfg.icp_iterations + 1):
        if (it - 1) % 3 == 0:  # visibility changes slowly: refresh it every third step
            # occluded = in front by more than the threshold too: else a wrong pose could call
            # the face that contradicts it occluded (a box 2 cm off along an edge, stuck)
            vw = view if it == 1 else _View(model, R, t, depth, K, cfg)
            used = vw.visible & ~vw.occluded_at(max(cfg.occlusion_margin_m, thr))
            seen_m = model.points_m[vw.visible]
            seen_n = model.normals_m[vw.visible]
            tree_m = cKDTree(seen_m) if len(Q_rev) and len(seen_m) else None
        p = model.points_m[used] @ R.T + t
        n = model.normals_m[used] @ R.T
        d, j = tree.query(p, distance_upper_bound=thr)
        ok = np.isfinite(d)
        if ok.sum() < cfg.min_points:
            break
        p, n, q = p[ok], n[ok], Q[j[ok]]
        if tree_m is not None:  # nearest model points of the depth points, found in the model frame
            d2, j2 = tree_m.query((Q_rev - t) @ R, distance_upper_bound=thr)
            ok2 = np.isfinite(d2)
            if ok2.any():
                p = np.concatenate([p, seen_m[j2[ok2]] @ R.T + t])
                n = np.concatenate([n, seen_n[j2[ok2]] @ R.T])
                q = np.concatenate([q, Q_rev[ok2]])
        c = p.mean(axis=0)  # rotate about the points' centre, not the camera's: a well-posed step
        r = np.einsum("ij,ij->i", n, p - q)
        A = np.empty((len(r), 6))
        A[:, :3] = _cross(q - c, n)  # d r / d omega; the rest d r / d delta_t
        A[:, 3:] = n
        k = 0.25 * thr
        w = np.minimum(1.0, k / np.maximum(np.abs(r), 1e-12))  # Huber
        Aw = A * w[:, None]
        H = Aw.T @ A
        H += 1e-6 * np.trace(H) * np.eye(6)  # damping: a flat face leaves its in-plane motion alone
        x = -np.linalg.solve(H, Aw.T @ r)
        dR = _rodrigues(x[:3])
        R, t = dR @ R, dR @ (t - c) + c + x[3:]
        step_m, step_rad = float(np.linalg.norm(x[3:])), float(np.linalg.norm(x[:3]))
        if thr <= cfg.icp_min_dist_m and step_m < 1e-4 and step_rad < 1.7e-3:
            break
        # shrink only once the pose has settled at this threshold: shrinking while a face is
        # still sliding cuts off the face that holds it (a box stuck 15 mm along an edge)
        if step_m < cfg.icp_settled_m:
            thr = max(cfg.icp_min_dist_m, thr * cfg.icp_shrink)
    U, _, Vt = np.linalg.svd(R)
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt

    # fitness at the refined pose
    view = _View(model, R, t, depth, K, cfg)
    n_vis, n_used = int(view.visible.sum()), int(view.used.sum())
    occ = float(view.occluded.sum()) / max(n_vis, 1)
    if n_used == 0:
        return _rejected(R0, t0, "no visible unoccluded model points at the refined pose", occ=occ, it=it)
    # fitness: projective (the measured depth at each point's pixel), among the points with a
    # measurement; the window's depth points are too sparse for a nearest-point test (see the module doc)
    measured = view.used & np.isfinite(view.z_meas)
    n_measured = int(measured.sum())
    fitness = float(np.sum(np.abs(view.z_meas[measured] - view.P[measured, 2]) <= cfg.inlier_dist_m)) / max(n_measured, 1)
    d, j = tree.query(view.P[view.used], distance_upper_bound=cfg.inlier_dist_m)
    inl = np.isfinite(d)
    # point-to-plane: the point-to-point distance would include the depth points' spacing
    r = np.einsum("ij,ij->i", view.N[view.used][inl], view.P[view.used][inl] - Q[j[inl]])
    rmse = float(np.sqrt(np.mean(r**2))) if inl.any() else float("nan")
    moved = float(np.linalg.norm(t - t0))
    turned = math.degrees(math.acos(float(np.clip((np.trace(R0.T @ R) - 1) / 2, -1, 1))))
    stats = dict(fitness=fitness, rmse=rmse, n=n_used, occ=occ, it=it)
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        return _rejected(R0, t0, "ICP diverged (non-finite pose)", **stats)
    if n_used < cfg.min_points:
        return _rejected(R0, t0, f"only {n_used} visible unoccluded model points (< {cfg.min_points})", **stats)
    if n_measured < cfg.min_points:
        return _rejected(R0, t0, f"only {n_measured} visible model points have valid depth at the refined pose "
                                 f"(< {cfg.min_points})", **stats)
    if occ > cfg.max_occluded_fraction:
        return _rejected(R0, t0, f"occluded fraction {occ:.2f} > {cfg.max_occluded_fraction}", **stats)
    if fitness < cfg.min_fitness:
        return _rejected(R0, t0, f"fitness {fitness:.2f} < {cfg.min_fitness}", **stats)
    if moved > cfg.max_translation_m:
        return _rejected(R0, t0, f"moved {moved:.3f} m > max {cfg.max_translation_m} m", **stats)
    if turned > cfg.max_rotation_deg:
        return _rejected(R0, t0, f"turned {turned:.1f} deg > max {cfg.max_rotation_deg} deg", **stats)
    return DepthRefinement(R, t, fitness, rmse, n_used, occ, True, "", it)
