"""Scoring trained models: object and hand metrics from predictions, curves and overlays.

Used by ``featmap eval object|hand``, ``featmap demo`` and ``featmap bench ablation``; the
metric definitions themselves live in :mod:`featmap_ros.metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from featmap_ros import geometry, metrics
from featmap_ros.atomic import atomic_path
from featmap_ros.errors import InputError

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


def object_record(name: str, R_est, t_est_m, R_gt, t_gt_m, K, points_m: np.ndarray, diameter_m: float,
                  symmetric: bool, corners_px_est: np.ndarray | None, corners_m: np.ndarray) -> ObjectRecord:
    """Errors of one estimate; ``R_est`` None = no estimate (counts as a miss)."""
    if R_est is None:
        return ObjectRecord(name, np.inf, np.inf, np.inf, 180.0, np.inf, np.inf, found=False)
    add = (metrics.adds_error if symmetric else metrics.add_error)(R_est, t_est_m, R_gt, t_gt_m, points_m)
    gt_corners = geometry.project_model_points(corners_m, R_gt, t_gt_m, K)
    cerr = float(np.mean(np.linalg.norm(np.asarray(corners_px_est) - gt_corners, axis=1))) if corners_px_est is not None else np.inf
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
        "proj2d_5px": float(np.mean(p <= 5.0)),
        "add_10": float(np.mean(a <= 0.10)),
        "5cm_5deg": float(np.mean((rot < 5.0) & (tr < 0.05))),
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


def plot_object_curves(curves: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """Two panels: fraction of instances vs 2D projection threshold and vs ADD threshold.

    Args:
        curves: label -> an :func:`object_summary` dict.
        path: output PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    try:
        for label, s in curves.items():
            axes[0].plot(s["curve_proj2d"]["thresholds_px"], 100 * np.array(s["curve_proj2d"]["fraction"]), label=label, linewidth=2)
            axes[1].plot(100 * np.array(s["curve_add"]["thresholds_frac"]), 100 * np.array(s["curve_add"]["fraction"]), label=label, linewidth=2)
        axes[0].axvline(5, color="grey", linestyle=":")
        axes[1].axvline(10, color="grey", linestyle=":")
        axes[0].set_xlabel("2D projection error threshold (px)")
        axes[1].set_xlabel("ADD threshold (% of diameter)")
        for ax in axes:
            ax.set_ylabel("instances within threshold (%)")
            ax.set_ylim(0, 100)
            ax.grid(True, alpha=0.4)
            ax.legend(loc="lower right", fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


BOX_EDGES = ((0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7), (6, 7))


def _box_edges(corners_m: np.ndarray) -> list[tuple[int, int]]:
    """Edges of an axis-aligned box from its corner coordinates (pairs differing in one axis)."""
    c = np.asarray(corners_m)
    edges = []
    for i in range(8):
        for j in range(i + 1, 8):
            if int(np.sum(~np.isclose(c[i], c[j]))) == 1:
                edges.append((i, j))
    return edges if len(edges) == 12 else list(BOX_EDGES)


def draw_box(image_bgr: np.ndarray, corners_px: np.ndarray, corners_m: np.ndarray, color: tuple, thickness: int = 2) -> np.ndarray:
    """A copy of ``image_bgr`` with the projected 3D box drawn (non-finite corners skipped)."""
    out = image_bgr.copy()
    p = np.asarray(corners_px, dtype=np.float64)
    for i, j in _box_edges(corners_m):
        if np.all(np.isfinite(p[[i, j]])) and np.all(np.abs(p[[i, j]]) < 1e5):
            cv2.line(out, tuple(int(round(x)) for x in p[i]), tuple(int(round(x)) for x in p[j]), color, thickness, cv2.LINE_AA)
    return out


def write_png(path: str | Path, image_bgr: np.ndarray) -> Path:
    """Write a BGR image as PNG atomically."""
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise InputError(f"{path}: PNG encoding failed")
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(buf.tobytes())
    return Path(path)


#: Parent of each of NYU's 14 evaluation joints for drawing (palm centre = 13).
HAND_SKELETON = ((0, 1), (1, 13), (2, 3), (3, 13), (4, 5), (5, 13), (6, 7), (7, 13), (8, 9), (9, 10), (10, 13), (11, 13), (12, 13))


def colour_depth(depth_m: np.ndarray, near_m: float | None = None, far_m: float | None = None) -> np.ndarray:
    """(H, W) depth in metres -> (H, W, 3) uint8 BGR picture (invalid pixels black)."""
    d = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    if not valid.any():
        return np.zeros((*d.shape, 3), np.uint8)
    lo = float(np.percentile(d[valid], 1)) if near_m is None else near_m
    hi = float(np.percentile(d[valid], 99)) if far_m is None else far_m
    x = np.clip((np.where(valid, d, hi) - lo) / max(hi - lo, 1e-6), 0, 1)
    img = cv2.applyColorMap((255 * (1 - x)).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    img[~valid] = 0
    return img


def draw_hand(image_bgr: np.ndarray, joints_m: np.ndarray, K: np.ndarray, color: tuple, radius: int = 3) -> np.ndarray:
    """A copy with the 14-joint skeleton (optical-frame metres) projected and drawn."""
    out = image_bgr.copy()
    uv = geometry.project_points(np.asarray(joints_m, dtype=np.float64), K)
    ok = np.all(np.isfinite(uv), axis=1)
    pts = [tuple(int(round(x)) for x in p) if o else None for p, o in zip(uv, ok)]
    for i, j in HAND_SKELETON:
        if i < len(pts) and j < len(pts) and pts[i] and pts[j]:
            cv2.line(out, pts[i], pts[j], color, 2, cv2.LINE_AA)
    for p in pts:
        if p:
            cv2.circle(out, p, radius, color, -1, cv2.LINE_AA)
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
