"""Per-instance records and summaries: object and hand metrics from predictions (what every
evaluator reports).

Used by ``featmap eval object|hand``, ``featmap demo`` and ``featmap bench ablation``; the
metric definitions themselves live in :mod:`featmap_ros.evaluation.metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from featmap_ros import geometry
from featmap_ros.data import bop
from featmap_ros.errors import InputError
from featmap_ros.evaluation import metrics

#: Model points per object for ADD(-S): the mesh's vertices, at most this many (a seeded subsample).
ADD_POINTS = 3000

#: 2D projection thresholds of the object curve, pixels.
PROJ_THRESHOLDS_PX = tuple(float(x) for x in range(0, 41))
#: ADD thresholds of the object curve, fractions of the diameter.
ADD_THRESHOLDS = tuple(float(x) for x in np.linspace(0.0, 0.5, 51))


@dataclass
class ObjectRecord:
    """Errors of one object instance estimate (metres, pixels, degrees)."""

    object_name: str
    proj2d_px: float
    add_m: float
    add_frac: float
    rot_deg: float
    trans_m: float
    corner_px: float
    found: bool = True


def add_points_m(root, obj_id: int) -> np.ndarray:
    """The ADD(-S) points of object ``obj_id`` of the BOP folder ``root``: (P, 3) float64, metres,
    model frame; the vertices of ``models/obj_XXXXXX.ply``, subsampled to :data:`ADD_POINTS` with
    seed 0, so that every evaluator scores with the same points."""
    pts = np.asarray(bop.load_mesh(bop.model_path(root, obj_id)).vertices_m, np.float64)
    if len(pts) > ADD_POINTS:
        pts = pts[np.random.default_rng(0).choice(len(pts), ADD_POINTS, replace=False)]
    return pts


def object_record(name: str, R_est, t_est_m, R_gt, t_gt_m, K, points_m: np.ndarray, diameter_m: float,
                  symmetric: bool, corners_m: np.ndarray) -> ObjectRecord:
    """Errors of one estimate; ``R_est`` None = no estimate (counts as a miss).

    ``corner_px`` is the mean distance between the box ``corners_m`` (8, 3) projected at the
    estimated and at the ground-truth pose: a function of the pose alone, so an evaluation of
    published poses (the evaluator node, a BOP file) and of the estimator agree on it.
    """
    if R_est is None:
        return ObjectRecord(name, np.inf, np.inf, np.inf, 180.0, np.inf, np.inf, found=False)
    add = (metrics.adds_error if symmetric else metrics.add_error)(R_est, t_est_m, R_gt, t_gt_m, points_m)
    gt_corners = geometry.project_model_points(corners_m, R_gt, t_gt_m, K)
    est_corners = geometry.project_model_points(corners_m, R_est, t_est_m, K)
    cerr = float(np.mean(np.linalg.norm(est_corners - gt_corners, axis=1)))
    return ObjectRecord(
        name, metrics.proj2d_error(R_est, t_est_m, R_gt, t_gt_m, K, points_m), add, add / diameter_m,
        metrics.rotation_error_deg(R_est, R_gt), metrics.translation_error(t_est_m, t_gt_m), cerr,
    )


def object_summary(records: Sequence[ObjectRecord]) -> dict:
    """Fractions of instances within the standard thresholds (and the curves)."""
    if not records:
        raise InputError("object evaluation: no instances were evaluated")
    p = np.array([r.proj2d_px for r in records])
    a = np.array([r.add_frac for r in records])
    rot = np.array([r.rot_deg for r in records])
    tr = np.array([r.trans_m for r in records])
    c = np.array([r.corner_px for r in records])
    return {
        "instances": len(records),
        "proj2d_5px": float(np.mean(p <= metrics.PROJ2D_PX)),
        "add_10": float(np.mean(a <= metrics.ADD_FRACTION)),
        "5cm_5deg": float(np.mean(metrics.within_5cm_5deg(rot, tr))),
        "median_proj2d_px": float(np.median(p)),
        "mean_corner_px": float(np.mean(c[np.isfinite(c)])) if np.isfinite(c).any() else float("inf"),
        "median_rot_deg": float(np.median(rot)),
        "median_trans_mm": float(np.median(tr) * 1000.0),
        "found": float(np.mean([r.found for r in records])),
        "curve_proj2d": {"thresholds_px": list(PROJ_THRESHOLDS_PX), "fraction": [float(np.mean(p <= t)) for t in PROJ_THRESHOLDS_PX]},
        "curve_add": {"thresholds_frac": list(ADD_THRESHOLDS), "fraction": [float(np.mean(a <= t)) for t in ADD_THRESHOLDS]},
    }


def poses_from_corners(corners_n: np.ndarray, windows: np.ndarray, K: np.ndarray, corners_m: np.ndarray):
    """PnP of crop-normalised corner predictions.

    Args:
        corners_n: (N, 8, 2) predicted corners, crop-normalised.
        windows: (N, 3) crop windows (centre u, centre v, side), pixels.
        K: (N, 3, 3) or (3, 3) intrinsics.
        corners_m: (8, 3) model box corners, metres.

    Returns:
        list of (R (3, 3), t (3,), corners_px (8, 2)) or (None, None, corners_px) when PnP fails.
    """
    out = []
    Ks = np.broadcast_to(np.asarray(K, dtype=np.float64), (len(corners_n), 3, 3))
    for cn, w, k in zip(np.asarray(corners_n, dtype=np.float64), np.asarray(windows, dtype=np.float64), Ks):
        px = cn * (w[2] / 2.0) + w[:2]
        try:
            R, t = geometry.solve_pnp(corners_m, px, k)
        except InputError:
            R, t = None, None
        out.append((R, t, px))
    return out


def hand_summary(errors_mm: np.ndarray) -> dict:
    """Mean, per-joint, and max-frame curve of (N, J) joint errors in mm."""
    m = metrics.hand_metrics(errors_mm)
    return {
        "frames": m.frames,
        "mean_mm": m.mean_mm,
        "per_joint_mm": [float(x) for x in m.per_joint_mm],
        "within_20mm": m.fraction_within(20.0),
        "within_40mm": m.fraction_within(40.0),
        "max_frame_curve": {"thresholds_mm": [float(x) for x in m.curve_thresholds_mm], "fraction": [float(x) for x in m.max_frame_fraction]},
    }


def score_object(split: dict, pred: np.ndarray, meta: dict) -> dict[str, np.ndarray]:

    idx = split["obj_index"].numpy() if "obj_index" in split else np.zeros(len(pred), int)
    corners_m = np.asarray(meta["corners_m"], dtype=np.float64)
    pts = [np.asarray(p, dtype=np.float64) for p in meta["model_points_m"]]
    diam = np.asarray(meta["diameter_m"], dtype=np.float64)
    win = split["window"].numpy().astype(np.float64)
    K = split["K"].numpy().astype(np.float64)
    R_gt = split["R_m2c"].numpy().astype(np.float64)
    t_gt = split["t_m2c_m"].numpy().astype(np.float64)
    proj = np.zeros(len(pred))
    add = np.zeros(len(pred))
    cerr = np.zeros(len(pred))
    for n in range(len(pred)):
        k = int(idx[n])
        px = np.asarray(pred[n, k], dtype=np.float64) * (win[n, 2] / 2.0) + win[n, :2]
        gt_px = geometry.project_model_points(corners_m[k], R_gt[n], t_gt[n], K[n])
        cerr[n] = float(np.mean(np.linalg.norm(px - gt_px, axis=1)))
        try:
            R, t = geometry.solve_pnp(corners_m[k], px, K[n])
            proj[n] = metrics.proj2d_error(R, t, R_gt[n], t_gt[n], K[n], pts[k])
            add[n] = metrics.add_error(R, t, R_gt[n], t_gt[n], pts[k]) / diam[k]
        except InputError:
            proj[n] = add[n] = np.inf
    return {"proj2d_5px": (proj <= metrics.PROJ2D_PX).astype(np.float64), "add_10": (add <= metrics.ADD_FRACTION).astype(np.float64), "corner_px": cerr}


def score_hand(split: dict, pred: np.ndarray, cube_m: float) -> dict[str, np.ndarray]:
    centre = split["center_c_m"].numpy().astype(np.float64)
    gt = split["joints_c_m"].numpy().astype(np.float64)
    joints = np.asarray(pred, dtype=np.float64) * (cube_m / 2.0) + centre[:, None, :]
    err = np.linalg.norm(joints - gt, axis=2) * 1000.0
    worst = err.max(axis=1)
    return {"mean_mm": err.mean(axis=1), "max_le_20mm": (worst <= 20.0).astype(np.float64), "max_le_40mm": (worst <= 40.0).astype(np.float64)}
