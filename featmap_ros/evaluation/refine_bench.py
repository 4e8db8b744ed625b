"""Depth refinement and pose filtering, measured on real-like RGB-D frames (``featmap bench refine``,
``featmap bench tracking``).

- :func:`run_refine_bench`: every frame of a BOP split with depth, colour-only estimates vs the same
  estimates refined with the frame's depth (:meth:`ObjectPoseEstimator.refine_with_depth`): ADD(-S)
  <= 10 %, 5 cm 5 deg, median translation and rotation errors, and the time the refinement adds
  per object (timed alone, the network and PnP not included).
- :func:`run_tracking_bench`: a sequence (``featmap render object --sequence``) through the
  estimator and :class:`~featmap_ros.tracking.PoseTracker`, per-frame vs filtered poses:
  :func:`jitter` over the rest periods and :func:`lag_frames` in motion.

Both take their windows from the ground truth by default (``boxes="gt"``: the pose accuracy
alone, as ``featmap demo``'s first row), or from the estimator's localiser.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from featmap_ros import pose_covariance
from featmap_ros.data import bop
from featmap_ros.depth_refine import rejection_kind
from featmap_ros.errors import InputError
from featmap_ros.evaluation import metrics
from featmap_ros.evaluation.datasets import ground_truth_boxes, pose_in_window
from featmap_ros.evaluation.records import ObjectRecord, add_points_m, object_record
from featmap_ros.results import ObjectPose
from featmap_ros.tracking import FILTER_KINDS, PoseFilterConfig, PoseTracker

#: Seconds at the start of each rest period left out of the jitter: the filter is still settling
#: from the motion (its cutoff at rest, 0.2 Hz, has a time constant of 0.8 s).
DEFAULT_SETTLE_S = 1.0


def _model_points(root: Path, est, obj_ids) -> dict[int, np.ndarray]:
    points = {}
    for oid in sorted(set(obj_ids) & set(est.obj_ids)):
        points[oid] = add_points_m(root, oid)
    return points


def _rgbd_frames(root: Path, split: str, max_frames: int = 0) -> tuple[dict, list]:
    infos = bop.load_models_info(root / "models" / "models_info.json")
    scenes = bop.list_scenes(root / split)
    if not scenes:
        raise InputError(f"{root / split}: no scenes")
    frames = [f for s in scenes for f in bop.read_scene(s, infos) if f.rgb_path is not None]
    missing = [f.im_id for f in frames if f.depth_path is None]
    if missing:
        raise InputError(f"{root / split}: frames {missing[:5]} have no depth image (depth/ is needed)")
    return infos, frames[:max_frames] if max_frames else frames


def _boxes_for(est, fr, boxes: str):
    names = dict(zip(est.obj_ids, est.object_names))
    gts = [g for g in fr.instances if g.obj_id in names]
    if boxes == "localiser":
        return gts, None
    if boxes != "gt":
        raise InputError(f"boxes: must be 'gt' or 'localiser', got {boxes!r}")
    return gts, ground_truth_boxes(est, gts, fr.K)


def _match(poses: Sequence[ObjectPose], name: str, window, boxes: str) -> ObjectPose | None:
    if boxes == "gt":  # one estimate per ground-truth window (PnP failures are left out)
        return pose_in_window(poses, name, window)
    cand = [p for p in poses if p.object_name == name]
    return max(cand, key=lambda p: p.score) if cand else None


def _summary(records: Sequence[ObjectRecord]) -> dict:
    rot = np.array([r.rot_deg for r in records])
    tr = np.array([r.trans_m for r in records])
    return {
        "add10": float(np.mean([r.add_frac <= metrics.ADD_FRACTION for r in records])),
        "5cm5deg": float(np.mean(metrics.within_5cm_5deg(rot, tr))),
        "proj2d_5px": float(np.mean([r.proj2d_px <= metrics.PROJ2D_PX for r in records])),
        "median_trans_mm": float(np.median(tr) * 1000.0),
        "median_rot_deg": float(np.median(rot)),
        "found": float(np.mean([r.found for r in records])),
    }


def run_refine_bench(est, roots: str | Path | Sequence[str | Path], split: str = "test", boxes: str = "gt",
                     max_frames: int = 0, progress: bool = True) -> dict:
    """Colour-only vs colour + depth on the RGB-D frames of BOP splits.

    Args:
        est: an :class:`~featmap_ros.estimators.ObjectPoseEstimator` whose objects have meshes.
        roots: BOP dataset folder(s) (``models/``, ``<split>/`` with ``depth/``), e.g. one per
            object; the figures are over all their instances.
        split: split folder.
        boxes: ``gt`` (the ground-truth windows, :func:`~featmap_ros.evaluation.datasets.ground_truth_boxes`) or ``localiser``.
        max_frames: evaluate the first this many frames of each dataset (0 = all).
        progress: show a tqdm bar.

    Returns:
        ``add10_rgb``, ``add10_depth``, ``5cm5deg_rgb``/``_depth``, ``proj2d_5px_rgb``/``_depth``,
        ``median_trans_mm_rgb``/``_depth``, ``median_rot_deg_rgb``/``_depth`` (over instances;
        a missed instance counts as wrong), ``added_ms_per_object`` (median over frames of the
        refinement time divided by the frame's objects) and its p95, ``refined_fraction`` (poses
        whose refinement was accepted), ``rejections`` (reason -> count), ``instances``,
        ``frames``, ``per_object`` (name -> the same figures).

    Raises:
        InputError: no frames, frames without depth, an object without a mesh.
    """
    from tqdm import tqdm

    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    for name in est.object_names:
        m = est.refine_model(name)  # built before the timing
        if isinstance(m, str):
            raise InputError(f"cannot refine: {m}")
    k_of = {oid: k for k, oid in enumerate(est.obj_ids)}
    rec_rgb, rec_depth, ms_per_object, reasons = [], [], [], Counter()
    n_refined = n_poses = n_frames = 0
    for root in roots:
        infos, frames = _rgbd_frames(root, split, max_frames)
        points = _model_points(root, est, {g.obj_id for f in frames for g in f.instances})
        n_frames += len(frames)
        for fr in tqdm(frames, desc=f"bench refine {root.name}", unit="frame", disable=not progress, dynamic_ncols=True):
            gts, box_list = _boxes_for(est, fr, boxes)
            if not gts:
                continue
            img = bop.load_rgb(fr.rgb_path)
            depth = bop.load_depth_m(fr.depth_path, fr.depth_scale)
            colour = est.estimate(img, fr.K, box_list)
            t0 = time.perf_counter()
            refined = est.refine_with_depth(colour, depth, fr.K)
            dt = time.perf_counter() - t0
            if colour:
                ms_per_object.append(1000.0 * dt / len(colour))
            n_poses += len(refined)
            n_refined += sum(p.refined for p in refined)
            reasons.update(rejection_kind(p.refine_reason) for p in refined if not p.refined)
            for gi, g in enumerate(gts):
                k = k_of[g.obj_id]
                name, info = est.object_names[k], infos[g.obj_id]
                for poses, out in ((colour, rec_rgb), (refined, rec_depth)):
                    p = _match(poses, name, None if box_list is None else box_list[gi][1], boxes)
                    out.append(object_record(name, None if p is None else p.R_m2c, None if p is None else p.t_m2c_m,
                                             g.R_m2c, g.t_m2c_m, fr.K, points[g.obj_id], info.diameter_m,
                                             info.is_symmetric, est.corners_m[k]))
    if not rec_rgb:
        raise InputError(f"{', '.join(str(r / split) for r in roots)}: no instances of the estimator's objects {est.object_names}")
    ms = np.array(ms_per_object) if ms_per_object else np.array([np.nan])
    out = _both(rec_rgb, rec_depth)
    out.update({
        "added_ms_per_object": float(np.median(ms)), "added_ms_per_object_p95": float(np.percentile(ms, 95)),
        "refined_fraction": n_refined / max(n_poses, 1), "rejections": dict(reasons.most_common()),
        "instances": len(rec_rgb), "frames": n_frames, "boxes": boxes,
        "per_object": {n: {**_both([r for r in rec_rgb if r.object_name == n], [r for r in rec_depth if r.object_name == n]),
                           "instances": sum(r.object_name == n for r in rec_rgb)}
                       for n in est.object_names if any(r.object_name == n for r in rec_rgb)},
        "refine_config": asdict(est.refine_config),
    })
    return out


def _both(rec_rgb: Sequence[ObjectRecord], rec_depth: Sequence[ObjectRecord]) -> dict:
    out = {f"{k}_rgb": v for k, v in _summary(rec_rgb).items()}
    out.update({f"{k}_depth": v for k, v in _summary(rec_depth).items()})
    return out


# --------------------------------------------------------------------------------------------
# Tracking


def read_sequence(root: str | Path) -> dict:
    """``sequence.json`` of a sequence written by :func:`featmap_ros.render.real_like.write_object_sequence`.

    Raises:
        InputError: missing or malformed file (naming it).
    """
    p = Path(root) / "sequence.json"
    if not p.is_file():
        raise InputError(f"{p}: not found (write a sequence with 'featmap render object --sequence')")
    try:
        meta = json.loads(p.read_text())
        meta["fps"], meta["moving"] = float(meta["fps"]), [bool(m) for m in meta["moving"]]
        meta["rest_periods"] = [(int(a), int(b)) for a, b in meta["rest_periods"]]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{p}: malformed ({type(e).__name__}: {e})") from None
    if not meta["fps"] > 0:
        raise InputError(f"{p}: fps must be positive, got {meta['fps']}")
    return meta


def jitter(t_m: np.ndarray, R: np.ndarray, periods: Sequence[tuple[int, int]], skip: int = 0) -> tuple[float, float, int]:
    """Jitter of a pose track over rest periods: the RMS distance of the pose from its mean in each
    period (translation, 3D) and the RMS angle from the period's mean rotation.

    Args:
        t_m: (N, 3) translations, metres (NaN rows = no pose, left out).
        R: (N, 3, 3) rotations.
        periods: (first, last) frame indices of the rest periods, inclusive.
        skip: frames left out at the start of each period (the filter settling).

    Returns:
        (jitter_mm, jitter_deg, frames used); NaN when no period has two frames with a pose.
    """
    t_m, R = np.asarray(t_m, np.float64), np.asarray(R, np.float64)
    d_mm, d_deg = [], []
    for a, b in periods:
        idx = np.arange(a + skip, b + 1)
        idx = idx[np.all(np.isfinite(t_m[idx]), axis=1)] if len(idx) else idx
        if len(idx) < 2:
            continue
        t = t_m[idx]
        d_mm.append(1000.0 * np.linalg.norm(t - t.mean(axis=0), axis=1))
        rots = Rotation.from_matrix(R[idx])
        d_deg.append(np.degrees((rots.mean().inv() * rots).magnitude()))
    if not d_mm:
        return float("nan"), float("nan"), 0
    mm, deg = np.concatenate(d_mm), np.concatenate(d_deg)
    return float(np.sqrt(np.mean(mm**2))), float(np.sqrt(np.mean(deg**2))), len(mm)


def lag_frames(est_t_m: np.ndarray, truth_t_m: np.ndarray, moving: np.ndarray) -> float:
    """How many frames a track is behind the truth in motion (translation).

    The error of frame i is modelled as ``-lag * v_i`` (a copy of the truth ``lag`` frames ago),
    with ``v_i`` the truth's motion from frame i - 1 to i; ``lag`` is its least-squares fit over
    the moving frames: ``-sum(e_i . v_i) / sum(|v_i|^2)``. Errors across the motion (an
    estimator's bias, mostly, as the motion keeps turning) fit as no lag; noise averages out.

    Args:
        est_t_m, truth_t_m: (N, 3) translations, metres (NaN rows = no pose, left out).
        moving: (N,) bool, True in motion.

    Returns:
        Frames (NaN without motion).
    """
    e = np.asarray(est_t_m, np.float64) - np.asarray(truth_t_m, np.float64)
    v = np.diff(np.asarray(truth_t_m, np.float64), axis=0, prepend=np.nan * np.ones((1, 3)))
    use = np.asarray(moving, bool) & np.all(np.isfinite(e), axis=1) & np.all(np.isfinite(v), axis=1)
    den = float(np.sum(v[use] ** 2))
    return -float(np.sum(e[use] * v[use])) / den if den > 0 else float("nan")


def lag_frames_rot(est_R: np.ndarray, truth_R: np.ndarray, moving: np.ndarray) -> float:
    """:func:`lag_frames` for rotations: errors ``log(R_truth_i^T R_i)`` against the truth's
    rotation ``log(R_truth_{i-1}^T R_truth_i)`` (model frame)."""
    est_R, truth_R = np.asarray(est_R, np.float64), np.asarray(truth_R, np.float64)
    ok = np.all(np.isfinite(est_R.reshape(len(est_R), -1)), axis=1)
    e = np.full((len(est_R), 3), np.nan)
    if ok.any():
        e[ok] = (Rotation.from_matrix(truth_R[ok]).inv() * Rotation.from_matrix(est_R[ok])).as_rotvec()
    w = np.full((len(truth_R), 3), np.nan)
    w[1:] = (Rotation.from_matrix(truth_R[:-1]).inv() * Rotation.from_matrix(truth_R[1:])).as_rotvec()
    use = np.asarray(moving, bool) & np.all(np.isfinite(e), axis=1) & np.all(np.isfinite(w), axis=1)
    den = float(np.sum(w[use] ** 2))
    return -float(np.sum(e[use] * w[use])) / den if den > 0 else float("nan")


def motion_error(est_t_m: np.ndarray, est_R: np.ndarray, truth_t_m: np.ndarray, truth_R: np.ndarray,
                 moving: np.ndarray) -> tuple[float, float]:
    """RMS error of a track over the moving frames (the minimum-jerk moves).

    Args:
        est_t_m, truth_t_m: (N, 3) translations, metres (NaN rows = no pose, left out).
        est_R, truth_R: (N, 3, 3) rotations.
        moving: (N,) bool.

    Returns:
        (translation mm, rotation deg), NaN without a moving frame with a pose.
    """
    est_t_m, truth_t_m = np.asarray(est_t_m, np.float64), np.asarray(truth_t_m, np.float64)
    use = np.asarray(moving, bool) & np.all(np.isfinite(est_t_m), axis=1)
    if not use.any():
        return float("nan"), float("nan")
    e_mm = 1000.0 * np.linalg.norm(est_t_m[use] - truth_t_m[use], axis=1)
    e_deg = np.degrees((Rotation.from_matrix(np.asarray(truth_R)[use]).inv() * Rotation.from_matrix(np.asarray(est_R)[use])).magnitude())
    return float(np.sqrt(np.mean(e_mm**2))), float(np.sqrt(np.mean(e_deg**2)))


def track_coverage(t_m: np.ndarray, R: np.ndarray, cov: np.ndarray, gt_t: np.ndarray, gt_R: np.ndarray) -> dict:
    """:func:`featmap_ros.pose_covariance.coverage` of a track (rows with NaN left out).

    Args:
        t_m: (N, 3) metres; R: (N, 3, 3); cov: (N, 6, 6); gt_t, gt_R: the truth.
    """
    ok = np.all(np.isfinite(t_m), axis=1) & np.all(np.isfinite(cov.reshape(-1, 36)), axis=1)
    if not ok.any():
        return pose_covariance.coverage(np.full((0, 6), np.nan), np.full((0, 6, 6), np.nan))
    return pose_covariance.coverage(pose_covariance.pose_error(t_m[ok], R[ok], gt_t[ok], gt_R[ok]), cov[ok])


def _track_figures(raw_t, raw_R, filt_t, filt_R, gt_t, gt_R, meta, skip, raw_cov=None, filt_cov=None) -> dict:
    moving = np.asarray(meta["moving"], bool)
    jr = jitter(raw_t, raw_R, meta["rest_periods"], skip)
    jf = jitter(filt_t, filt_R, meta["rest_periods"], skip)
    err_raw = np.linalg.norm(raw_t - gt_t, axis=1)
    err_filt = np.linalg.norm(filt_t - gt_t, axis=1)
    return {
        "jitter_mm_raw": jr[0], "jitter_mm_filtered": jf[0], "jitter_deg_raw": jr[1], "jitter_deg_filtered": jf[1],
        "jitter_ratio_mm": jr[0] / jf[0] if jf[0] > 0 else float("nan"),
        "jitter_ratio_deg": jr[1] / jf[1] if jf[1] > 0 else float("nan"),
        "rest_frames_used": jr[2],
        "lag_frames": lag_frames(filt_t, gt_t, moving), "lag_frames_raw": lag_frames(raw_t, gt_t, moving),
        "lag_frames_rot": lag_frames_rot(filt_R, gt_R, moving), "lag_frames_rot_raw": lag_frames_rot(raw_R, gt_R, moving),
        "median_trans_mm_raw": float(np.nanmedian(err_raw) * 1000.0) if np.isfinite(err_raw).any() else float("nan"),
        "median_trans_mm_filtered": float(np.nanmedian(err_filt) * 1000.0) if np.isfinite(err_filt).any() else float("nan"),
        "found": float(np.mean(np.isfinite(err_raw))),
        **dict(zip(("motion_rms_mm_raw", "motion_rms_deg_raw"), motion_error(raw_t, raw_R, gt_t, gt_R, moving))),
        **dict(zip(("motion_rms_mm_filtered", "motion_rms_deg_filtered"), motion_error(filt_t, filt_R, gt_t, gt_R, moving))),
        **({} if raw_cov is None else {"coverage_2sigma_raw": track_coverage(raw_t, raw_R, raw_cov, gt_t, gt_R)}),
        **({} if filt_cov is None else {"coverage_2sigma_filtered": track_coverage(filt_t, filt_R, filt_cov, gt_t, gt_R)}),
    }


def collect_tracks(est, root: str | Path, boxes: str = "gt", progress: bool = True) -> dict:
    """The estimator's per-frame poses on a sequence, colour-only and colour + depth.

    Each frame's best pose of the estimator's first object present is kept (the refined one
    from it for ``depth``).

    Args:
        est: an :class:`~featmap_ros.estimators.ObjectPoseEstimator`.
        root: a sequence (``sequence.json`` and a BOP split with depth).
        boxes: ``gt`` or ``localiser``.
        progress: show a tqdm bar.

    Returns:
        ``{"meta": sequence.json's content, "stamps_s": (N,), "gt_t": (N, 3) m, "gt_R": (N, 3, 3),
        "poses": {"rgb": [ObjectPose or None] * N, "depth": [...]}}``.

    Raises:
        InputError: a malformed sequence, or none of the estimator's objects in its first frame.
    """
    from tqdm import tqdm

    root = Path(root)
    meta = read_sequence(root)
    infos, frames = _rgbd_frames(root, meta["split"])
    frames = sorted((f for f in frames if f.scene_id == meta["scene_id"]), key=lambda f: f.im_id)
    if len(frames) != len(meta["moving"]):
        raise InputError(f"{root / 'sequence.json'}: {len(meta['moving'])} frames listed, {len(frames)} in the scene")
    n = len(frames)
    gt_t, gt_R = np.full((n, 3), np.nan), np.full((n, 3, 3), np.nan)
    poses: dict[str, list] = {"rgb": [None] * n, "depth": [None] * n}
    oid = next((g.obj_id for g in frames[0].instances if g.obj_id in est.obj_ids), None)
    if oid is None:
        raise InputError(f"{root}: no instance of the estimator's objects {est.object_names} in the first frame")
    name = est.object_names[est.obj_ids.index(oid)]
    for i, fr in enumerate(tqdm(frames, desc="bench tracking", unit="frame", disable=not progress, dynamic_ncols=True)):
        gts, box_list = _boxes_for(est, fr, boxes)
        g = next(g for g in gts if g.obj_id == oid)
        box_list = None if box_list is None else [b for b in box_list if b[0] == name][:1]
        gt_t[i], gt_R[i] = g.t_m2c_m, g.R_m2c
        img = bop.load_rgb(fr.rgb_path)
        colour = [p for p in est.estimate(img, fr.K, box_list) if p.object_name == name]
        colour = [max(colour, key=lambda p: p.score)] if colour else []
        depth = est.refine_with_depth(colour, bop.load_depth_m(fr.depth_path, fr.depth_scale), fr.K)
        poses["rgb"][i] = colour[0] if colour else None
        poses["depth"][i] = depth[0] if depth else None
    return {"meta": meta, "stamps_s": np.array([f.im_id / meta["fps"] for f in frames]), "gt_t": gt_t, "gt_R": gt_R,
            "poses": poses}


def filter_track(poses: Sequence, stamps_s: np.ndarray, config: PoseFilterConfig) -> dict:
    """One source's per-frame poses through a fresh :class:`PoseTracker`.

    Args:
        poses: N ObjectPose or None (no pose in that frame).
        stamps_s: (N,) seconds.
        config: the filter.

    Returns:
        ``{"raw_t", "filt_t"}`` (N, 3) metres, ``{"raw_R", "filt_R"}`` (N, 3, 3), ``"raw_cov",
        "filt_cov"`` (N, 6, 6) (NaN where no pose or no covariance).
    """
    tracker = PoseTracker(config)
    n = len(poses)
    tr = {k: np.full((n, 3), np.nan) for k in ("raw_t", "filt_t")}
    tr.update({k: np.full((n, 3, 3), np.nan) for k in ("raw_R", "filt_R")})
    tr.update({k: np.full((n, 6, 6), np.nan) for k in ("raw_cov", "filt_cov")})
    for i, p in enumerate(poses):
        filtered = tracker.update([p] if p is not None else [], float(stamps_s[i]))
        if p is not None:
            tr["raw_t"][i], tr["raw_R"][i] = p.t_m2c_m, p.R_m2c
            tr["filt_t"][i], tr["filt_R"][i] = filtered[0].t_m2c_m, filtered[0].R_m2c
            if p.covariance is not None:
                tr["raw_cov"][i] = p.covariance
            if filtered[0].covariance is not None:
                tr["filt_cov"][i] = filtered[0].covariance
    return tr


def run_tracking_bench(est, root: str | Path, boxes: str = "gt",
                       filter_configs: Mapping[str, PoseFilterConfig] | None = None,
                       settle_s: float = DEFAULT_SETTLE_S, progress: bool = True) -> dict:
    """Per-frame vs filtered poses on a sequence, colour-only and colour + depth, for each filter.

    The estimator runs once; each filter (a fresh :class:`PoseTracker` per source, stamps
    ``im_id / fps``) gets the same per-frame poses.

    Args:
        est: an :class:`~featmap_ros.estimators.ObjectPoseEstimator`.
        root: a sequence (``sequence.json`` and a BOP split with depth).
        boxes: ``gt`` or ``localiser``.
        filter_configs: label -> filter (default: the default config of each kind, Kalman first).
        settle_s: seconds left out at the start of each rest period.
        progress: show a tqdm bar.

    Returns:
        ``{"filters": {label: {"rgb": figures, "depth": figures, "filter_config"}}, "rgb", "depth",
        "filter_config"`` (the first filter's, at the top level too), ``"fps", "frames",
        "rest_periods", "settle_s", "boxes"}``; figures: ``jitter_mm_raw``/``_filtered``,
        ``jitter_deg_raw``/``_filtered``, their ratios, ``lag_frames`` (filtered,
        translation), ``lag_frames_raw``, ``lag_frames_rot``(``_raw``), ``motion_rms_mm`` /
        ``_deg`` (``_raw``, ``_filtered``: error over the moving frames), median translation
        errors, ``found``.
    """
    if filter_configs is None:
        filter_configs = {k: PoseFilterConfig(kind=k) for k in FILTER_KINDS}
    tracks = collect_tracks(est, root, boxes, progress)
    meta = tracks["meta"]
    skip = int(round(settle_s * meta["fps"]))
    filters = {}
    for label, cfg in filter_configs.items():
        figs = {}
        for src in ("rgb", "depth"):
            tr = filter_track(tracks["poses"][src], tracks["stamps_s"], cfg)
            figs[src] = _track_figures(tr["raw_t"], tr["raw_R"], tr["filt_t"], tr["filt_R"], tracks["gt_t"],
                                       tracks["gt_R"], meta, skip, tr["raw_cov"], tr["filt_cov"])
        filters[label] = {**figs, "filter_config": asdict(cfg)}
    first = filters[next(iter(filters))]
    return {"filters": filters, "rgb": first["rgb"], "depth": first["depth"], "filter_config": first["filter_config"],
            "fps": meta["fps"], "frames": len(tracks["stamps_s"]), "rest_periods": [list(p) for p in meta["rest_periods"]],
            "settle_s": float(settle_s), "boxes": boxes}
