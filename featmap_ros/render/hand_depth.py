"""Depth rendering of capsules, spheres and planes by analytic ray casting (numpy).

Why not the mesh renderer: the hand is ~25 capsules, whose exact ray intersections are a few
vectorised numpy expressions per capsule over its projected bounding box only. That is faster
than OpenGL through software EGL at these sizes, exact (no tessellation), needs no GL context
(works in DataLoader worker processes), and is deterministic. ``hand.hand_trimesh`` gives the
same hand as a mesh for the pyrender-based renderer where one is wanted.

Depth here is z along the optical axis (what depth cameras report), metres; 0 = no surface.
"""
from __future__ import annotations

import numpy as np

from featmap_ros.errors import InputError
from featmap_ros.geometry import check_K
from featmap_ros.render.hand import HandInstance


def _bbox_of_capsule(a: np.ndarray, b: np.ndarray, r: float, K: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Conservative pixel box (u0, v0, u1, v1), u1/v1 exclusive, or None when not visible.

    The capsule lies inside the axis-aligned 3D box of its ends grown by r; the projection of
    that box's 8 corners bounds the capsule's projection.
    """
    lo = np.minimum(a, b) - r
    hi = np.maximum(a, b) + r
    if hi[2] <= 1e-4:
        return None
    if lo[2] <= 1e-3:  # reaches the camera plane: whole image
        return 0, 0, width, height
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    u = K[0, 0] * corners[:, 0] / corners[:, 2] + K[0, 2]
    v = K[1, 1] * corners[:, 1] / corners[:, 2] + K[1, 2]
    u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, width)
    v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return u0, v0, u1, v1


def _ray_capsule_t(dx: np.ndarray, dy: np.ndarray, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """Depth (ray parameter with d = (dx, dy, 1)) of the first hit of rays from the origin, inf if none."""
    ba = b - a
    oa = -a
    baba = float(ba @ ba)
    dd = dx * dx + dy * dy + 1.0
    rd_oa = dx * oa[0] + dy * oa[1] + oa[2]
    oaoa = float(oa @ oa)
    t = np.full(dx.shape, np.inf)
    if baba > 1e-16:
        bard = dx * ba[0] + dy * ba[1] + ba[2]
        baoa = float(ba @ oa)
        A = baba * dd - bard * bard
        B = baba * rd_oa - baoa * bard
        C = baba * oaoa - baoa * baoa - r * r * baba
        h = B * B - A * C
        ok = (h >= 0) & (A > 1e-20)
        with np.errstate(invalid="ignore", divide="ignore"):
            tc = (-B - np.sqrt(np.where(ok, h, 0.0))) / np.where(ok, A, 1.0)
        y = baoa + tc * bard
        body = ok & (y > 0) & (y < baba) & (tc > 0)
        t = np.where(body, tc, t)
        # caps: the sphere at a (y <= 0) or at b (y >= baba) for rays that missed the body
        for cap, sel in ((a, ~body & (y <= 0)), (b, ~body & (y >= baba))):
            ts = _ray_sphere_t(dx, dy, dd, cap, r)
            t = np.where(sel, np.minimum(t, ts), t)
        # rays that miss the infinite cylinder can still graze a cap
        miss = ~ok
        if np.any(miss):
            ts = np.minimum(_ray_sphere_t(dx, dy, dd, a, r), _ray_sphere_t(dx, dy, dd, b, r))
            t = np.where(miss, np.minimum(t, ts), t)
    else:
        t = _ray_sphere_t(dx, dy, dd, a, r)
    return t


def _ray_sphere_t(dx: np.ndarray, dy: np.ndarray, dd: np.ndarray, c: np.ndarray, r: float) -> np.ndarray:
    oc = -c
    b = dx * oc[0] + dy * oc[1] + oc[2]
    cc = float(oc @ oc) - r * r
    h = b * b - dd * cc
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(np.where(h >= 0, h, 0.0))) / dd
    return np.where((h >= 0) & (t > 0), t, np.inf)


def render_capsules_depth(
    a_c_m: np.ndarray,
    b_c_m: np.ndarray,
    r_m: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    depth_m: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    label_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Z-buffer depth of a union of capsules seen by a pinhole camera at the origin.

    Args:
        a_c_m, b_c_m: (N, 3) segment ends, camera optical frame, metres.
        r_m: (N,) radii, metres (a == b gives a sphere).
        K: (3, 3) intrinsics, pixels.
        width, height: image size.
        depth_m: optional (H, W) depth to composite with (0 = empty); not modified.
        labels: optional (H, W) int array receiving ``label_ids[i]`` where capsule i is in
            front; modified in place (it is an output buffer).
        label_ids: (N,) ints for ``labels`` (default 1..N).

    Returns:
        (H, W) float32 depth along z, metres, 0 where no surface.
    """
    K = check_K(K)
    a_c_m = np.asarray(a_c_m, dtype=np.float64).reshape(-1, 3)
    b_c_m = np.asarray(b_c_m, dtype=np.float64).reshape(-1, 3)
    r_m = np.asarray(r_m, dtype=np.float64).reshape(-1)
    if not (a_c_m.shape == b_c_m.shape and a_c_m.shape[0] == r_m.shape[0]):
        raise InputError(f"capsules: a {a_c_m.shape}, b {b_c_m.shape}, r {r_m.shape} disagree")
    if width <= 0 or height <= 0:
        raise InputError(f"image size must be positive, got {width}x{height}")
    z = np.full((height, width), np.inf)
    if depth_m is not None:
        d0 = np.asarray(depth_m, dtype=np.float64)
        if d0.shape != (height, width):
            raise InputError(f"depth_m: expected shape {(height, width)}, got {d0.shape}")
        z = np.where(d0 > 0, d0, np.inf)
    ids = np.arange(1, len(r_m) + 1) if label_ids is None else np.asarray(label_ids)
    for i in range(len(r_m)):
        box = _bbox_of_capsule(a_c_m[i], b_c_m[i], float(r_m[i]), K, width, height)
        if box is None:
            continue
        u0, v0, u1, v1 = box
        dx = ((np.arange(u0, u1) - K[0, 2]) / K[0, 0])[None, :]
        dy = ((np.arange(v0, v1) - K[1, 2]) / K[1, 1])[:, None]
        dx, dy = np.broadcast_arrays(dx, dy)
        t = _ray_capsule_t(dx, dy, a_c_m[i], b_c_m[i], float(r_m[i]))
        win = z[v0:v1, u0:u1]
        closer = t < win
        if labels is not None:
            labels[v0:v1, u0:u1][closer] = ids[i]
        z[v0:v1, u0:u1] = np.where(closer, t, win)
    out = np.where(np.isfinite(z), z, 0.0).astype(np.float32)
    return out


def render_plane_depth(point_c_m: np.ndarray, normal_c: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Depth of an infinite plane through ``point_c_m`` with ``normal_c`` (camera frame).

    Returns:
        (H, W) float32 metres, 0 where the plane is behind the camera or parallel to the ray.
    """
    K = check_K(K)
    p = np.asarray(point_c_m, dtype=np.float64).reshape(3)
    n = np.asarray(normal_c, dtype=np.float64).reshape(3)
    dx = ((np.arange(width) - K[0, 2]) / K[0, 0])[None, :]
    dy = ((np.arange(height) - K[1, 2]) / K[1, 1])[:, None]
    den = n[0] * dx + n[1] * dy + n[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = float(n @ p) / den
    return np.where(np.isfinite(t) & (t > 0), t, 0.0).astype(np.float32)


def composite_nearest(*depths_m: np.ndarray) -> np.ndarray:
    """Per-pixel nearest of several depth maps (0 = empty): (H, W) float32."""
    stack = np.stack([np.where(d > 0, d, np.inf) for d in depths_m])
    z = stack.min(axis=0)
    return np.where(np.isfinite(z), z, 0.0).astype(np.float32)


def render_hand_depth(hand: HandInstance, K: np.ndarray, width: int, height: int, forearm_length_m: float = 0.10, depth_m: np.ndarray | None = None) -> np.ndarray:
    """Clean depth of a posed hand (and forearm stub) for camera ``K``.

    Args:
        hand: the posed hand.
        K: (3, 3) intrinsics.
        width, height: image size.
        forearm_length_m: forearm capsule length behind the wrist.
        depth_m: optional background depth to composite with.

    Returns:
        (H, W) float32 metres, 0 = no surface.
    """
    a, b, r = hand.capsules_c(forearm_length_m)
    return render_capsules_depth(a, b, r, K, width, height, depth_m=depth_m)
