"""Object and hand pose metrics, the BOP-19 protocol, recall curves and their plots.

Objects (BOP conventions): poses map model points into the camera frame, ``p_c = R_m2c p_m +
t_m2c``; errors come out in the unit of the points and translations (BOP files: mm) or in
pixels. The symmetry handling, target selection, greedy matching and recall follow the BOP
toolkit (thodan/bop_toolkit: ``pose_error.py``, ``misc.get_symmetry_transformations``,
``pose_matching.py``, ``score.calc_localization_scores``, ``scripts/eval_bop19_pose.py``).

Hands: joint errors are Euclidean distances in mm between predicted and ground-truth 3D joints;
the published curve is the fraction of frames whose *maximum* joint error is <= D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from featmap_ros.errors import InputError
from featmap_ros.geometry import project_points, transform_points

#: The classic object criteria, one table for every evaluator (offline, online, ablation, BOP):
#: 2D projection error <= PROJ2D_PX pixels; ADD(-S) <= ADD_FRACTION of the diameter;
#: "5 cm 5 degrees" = rotation error < ROT_DEG and translation error < TRANS_M.
PROJ2D_PX = 5.0
ADD_FRACTION = 0.10
ROT_DEG = 5.0
TRANS_M = 0.05
#: BOP-19: an instance is a target when at least this fraction of it is visible (``visib_fract``).
MIN_VISIBLE_FRACTION = 0.1


def within_5cm_5deg(rot_deg: np.ndarray, trans_m: np.ndarray) -> np.ndarray:
    """The "5 cm 5 degrees" criterion (Shotton et al. 2013) on arrays of errors: (N,) bool."""
    return (np.asarray(rot_deg) < ROT_DEG) & (np.asarray(trans_m) < TRANS_M)


#: BOP-19 thresholds of correctness: MSSD as fractions of the object diameter, MSPD in pixels
#: for a 640-pixel-wide image (both exactly as ``eval_bop19_pose.py`` builds them).
BOP19_MSSD_THRESHOLDS = tuple(float(x) for x in np.arange(0.05, 0.51, 0.05))
BOP19_MSPD_THRESHOLDS = tuple(float(x) for x in np.arange(5, 51, 5))
#: Step of the discretisation of continuous symmetries, as a fraction of the diameter.
BOP19_MAX_SYM_DISC_STEP = 0.01
#: Thresholds of the hand curve, mm.
HAND_CURVE_THRESHOLDS_MM = tuple(range(0, 81))


def _pose(R: np.ndarray, t: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if R.shape != (3, 3) and R.size == 9:
        R = R.reshape(3, 3)
    if R.shape != (3, 3) or t.size != 3:
        raise InputError(f"{name}: expected R (3, 3) and t (3,), got {R.shape} and {t.shape}")
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise InputError(f"{name}: pose contains NaN or inf")
    return R, t.reshape(3)


def _points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
        raise InputError(f"model points: expected (N, 3) with N > 0, got {p.shape}")
    return p


# --------------------------------------------------------------------------------------------
# Object pose errors
# --------------------------------------------------------------------------------------------

def add_error(R_est, t_est, R_gt, t_gt, points: np.ndarray) -> float:
    """ADD: mean distance between model points at the two poses (Hinterstoisser et al. 2012).

    Args:
        R_est, t_est: estimated pose, (3, 3) and (3,).
        R_gt, t_gt: ground-truth pose.
        points: (N, 3) float64 model points, same unit as t.

    Returns:
        Mean distance, unit of the points.
    """
    R_e, t_e = _pose(R_est, t_est, "estimate")
    R_g, t_g = _pose(R_gt, t_gt, "ground truth")
    p = _points(points)
    return float(np.linalg.norm(transform_points(p, R_e, t_e) - transform_points(p, R_g, t_g), axis=1).mean())


def adds_error(R_est, t_est, R_gt, t_gt, points: np.ndarray) -> float:
    """ADD-S (ADI): mean distance from each ground-truth model point to the closest estimated one.

    Args: as :func:`add_error`.

    Returns:
        Mean closest-point distance, unit of the points (k-d tree search).
    """
    R_e, t_e = _pose(R_est, t_est, "estimate")
    R_g, t_g = _pose(R_gt, t_gt, "ground truth")
    p = _points(points)
    dists, _ = cKDTree(transform_points(p, R_e, t_e)).query(transform_points(p, R_g, t_g), k=1)
    return float(dists.mean())


def proj2d_error(R_est, t_est, R_gt, t_gt, K: np.ndarray, points: np.ndarray) -> float:
    """2D projection error: mean pixel distance between projected model points (Brachmann 2016).

    Args:
        R_est, t_est, R_gt, t_gt: poses as in :func:`add_error`.
        K: (3, 3) intrinsics, pixels.
        points: (N, 3) model points.

    Returns:
        Mean distance in pixels; inf when a point lies behind the camera in either pose.
    """
    R_e, t_e = _pose(R_est, t_est, "estimate")
    R_g, t_g = _pose(R_gt, t_gt, "ground truth")
    p = _points(points)
    d = np.linalg.norm(project_points(transform_points(p, R_e, t_e), K) - project_points(transform_points(p, R_g, t_g), K), axis=1)
    return float(d.mean()) if np.all(np.isfinite(d)) else math.inf


def rotation_error_deg(R_est, R_gt) -> float:
    """Angle of R_est R_gt^-1 in degrees, [0, 180] (BOP ``re``; the inverse tolerates
    slightly non-orthonormal ground truth as the toolkit does)."""
    R_e = np.asarray(R_est, dtype=np.float64).reshape(3, 3)
    R_g = np.asarray(R_gt, dtype=np.float64).reshape(3, 3)
    cos = 0.5 * (np.trace(R_e @ np.linalg.inv(R_g)) - 1.0)
    return float(np.degrees(math.acos(min(1.0, max(-1.0, cos)))))


def translation_error(t_est, t_gt) -> float:
    """Euclidean distance between translations, their unit."""
    return float(np.linalg.norm(np.asarray(t_est, dtype=np.float64).reshape(3) - np.asarray(t_gt, dtype=np.float64).reshape(3)))


@dataclass(frozen=True)
class Symmetry:
    """A symmetry transformation of an object model: ``p -> R p + t`` leaves it unchanged.

    Attributes:
        R: (3, 3) float64.
        t: (3,) float64, unit of the model (BOP: mm).
    """

    R: np.ndarray
    t: np.ndarray


def symmetry_transformations(model_info: Mapping, max_sym_disc_step: float = BOP19_MAX_SYM_DISC_STEP) -> list[Symmetry]:
    """Symmetries of a model from its ``models_info.json`` entry, as the BOP toolkit builds them.

    The identity plus every ``symmetries_discrete`` entry (4x4 row-major, t in mm); each
    ``symmetries_continuous`` entry (``axis``, ``offset``) is discretised into
    ``ceil(pi / max_sym_disc_step)`` rotations about the axis through the offset, and the
    discrete ones are combined with every discretised continuous one.

    Args:
        model_info: one object's entry of models_info.json.
        max_sym_disc_step: largest step, as a fraction of the diameter, that the vertex
            farthest from the axis travels between consecutive discretised rotations.

    Returns:
        List of :class:`Symmetry`, the identity first.

    Raises:
        InputError: a malformed symmetry entry.
    """
    discrete = [Symmetry(np.eye(3), np.zeros(3))]
    for i, sym in enumerate(model_info.get("symmetries_discrete", []) or []):
        m = np.asarray(sym, dtype=np.float64)
        if m.size != 16 or not np.all(np.isfinite(m)):
            raise InputError(f"symmetries_discrete[{i}]: expected 16 finite numbers, got {np.shape(sym)}")
        m = m.reshape(4, 4)
        discrete.append(Symmetry(m[:3, :3], m[:3, 3].copy()))
    continuous = []
    for i, sym in enumerate(model_info.get("symmetries_continuous", []) or []):
        try:
            axis = np.asarray(sym["axis"], dtype=np.float64).reshape(3)
            offset = np.asarray(sym["offset"], dtype=np.float64).reshape(3)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"symmetries_continuous[{i}]: expected 'axis' and 'offset' of 3 numbers, got {sym!r}") from None
        norm = np.linalg.norm(axis)
        if not np.isfinite(norm) or norm < 1e-12:
            raise InputError(f"symmetries_continuous[{i}]: zero or non-finite axis {axis.tolist()}")
        steps = int(np.ceil(np.pi / max_sym_disc_step))
        for k in range(steps):
            R = Rotation.from_rotvec(axis / norm * (k * 2.0 * np.pi / steps)).as_matrix()
            continuous.append(Symmetry(R, offset - R @ offset))
    if not continuous:
        return discrete
    return [Symmetry(c.R @ d.R, c.R @ d.t + c.t) for d in discrete for c in continuous]


def _symmetric_gt_poses(R_gt: np.ndarray, t_gt: np.ndarray, syms: Sequence[Symmetry]) -> tuple[np.ndarray, np.ndarray]:
    if not syms:
        raise InputError("symmetries: empty list (the identity must be included)")
    Rs = np.stack([R_gt @ s.R for s in syms])  # (S, 3, 3)
    ts = np.stack([R_gt @ np.asarray(s.t, dtype=np.float64).reshape(3) + t_gt for s in syms])  # (S, 3)
    return Rs, ts


def mssd_error(R_est, t_est, R_gt, t_gt, points: np.ndarray, syms: Sequence[Symmetry]) -> float:
    """BOP-19 Maximum Symmetry-aware Surface Distance.

    ``min over symmetries S of max over points |(R_est p + t_est) - (R_gt S)(p)|``.

    Args:
        R_est, t_est, R_gt, t_gt: poses (t in the unit of the points).
        points: (N, 3) model points (BOP: the ``models_eval`` vertices, mm).
        syms: from :func:`symmetry_transformations`.

    Returns:
        The error, unit of the points.
    """
    R_e, t_e = _pose(R_est, t_est, "estimate")
    R_g, t_g = _pose(R_gt, t_gt, "ground truth")
    p = _points(points)
    p_e = transform_points(p, R_e, t_e)
    Rs, ts = _symmetric_gt_poses(R_g, t_g, syms)
    best = math.inf
    for R_s, t_s in zip(Rs, ts):
        best = min(best, float(np.linalg.norm(p_e - transform_points(p, R_s, t_s), axis=1).max()))
    return best


def mspd_error(R_est, t_est, R_gt, t_gt, K: np.ndarray, points: np.ndarray, syms: Sequence[Symmetry]) -> float:
    """BOP-19 Maximum Symmetry-aware Projection Distance, pixels.

    Same as :func:`mssd_error` on the projections with ``K`` (3, 3); inf when a point is
    behind the camera.
    """
    R_e, t_e = _pose(R_est, t_est, "estimate")
    R_g, t_g = _pose(R_gt, t_gt, "ground truth")
    p = _points(points)
    uv_e = project_points(transform_points(p, R_e, t_e), K)
    Rs, ts = _symmetric_gt_poses(R_g, t_g, syms)
    best = math.inf
    for R_s, t_s in zip(Rs, ts):
        d = np.linalg.norm(uv_e - project_points(transform_points(p, R_s, t_s), K), axis=1)
        if np.all(np.isfinite(d)):
            best = min(best, float(d.max()))
    return best


# --------------------------------------------------------------------------------------------
# BOP-19 protocol: valid ground truth, top-n estimates, greedy matching, recall
# --------------------------------------------------------------------------------------------

def bop19_valid_gts(
    gt_obj_ids: Sequence[int],
    gt_visib_fracts: Sequence[float],
    target_inst_counts: Mapping[int, int],
    visib_gt_min: float = -1.0,
) -> list[bool]:
    """Which ground-truth instances of one image are targets (BOP-19 localisation).

    With ``visib_gt_min < 0`` (the toolkit's default) the ``inst_count`` most visible
    instances of each target object are valid; otherwise an instance is valid when its object
    is a target of the image and ``visib_fract >= visib_gt_min`` (the BOP-19 paper's 0.1).
    For LM-O both give the same targets (``test_targets_bop19.json`` lists instances >= 10 %
    visible).

    Args:
        gt_obj_ids: obj_id of each instance in scene_gt.json order.
        gt_visib_fracts: their ``visib_fract`` from scene_gt_info.json.
        target_inst_counts: obj_id -> inst_count from test_targets_bop19.json for this image.
        visib_gt_min: see above.

    Returns:
        One flag per instance.
    """
    if len(gt_obj_ids) != len(gt_visib_fracts):
        raise InputError(f"scene_gt has {len(gt_obj_ids)} instances but scene_gt_info has {len(gt_visib_fracts)}")
    if visib_gt_min >= 0:
        return [int(o) in target_inst_counts and float(v) >= visib_gt_min for o, v in zip(gt_obj_ids, gt_visib_fracts)]
    valid = [False] * len(gt_obj_ids)
    to_add = {int(k): int(v) for k, v in target_inst_counts.items()}
    order = sorted(range(len(gt_obj_ids)), key=lambda i: float(gt_visib_fracts[i]), reverse=True)
    for i in order:
        o = int(gt_obj_ids[i])
        if to_add.get(o, 0) > 0:
            valid[i] = True
            to_add[o] -= 1
    return valid


@dataclass
class EstimateErrors:
    """One pose estimate of one image, with its errors to the ground-truth instances of its object.

    Attributes:
        obj_id: the estimate's object.
        score: its confidence (matching goes by descending score).
        errors: error name -> {gt index in the image -> error}. Errors are already normalised
            the way they are thresholded (MSSD / diameter, MSPD * 640 / width, ...).
        est_id: index of the estimate in the results file (for reports).
    """

    obj_id: int
    score: float
    errors: dict[str, dict[int, float]] = field(default_factory=dict)
    est_id: int = -1


@dataclass
class ImageEval:
    """The ground truth and the selected estimates of one test image.

    Attributes:
        scene_id, im_id: BOP ids.
        gt_obj_ids: obj_id per ground-truth instance (scene_gt.json order).
        gt_valid: whether each instance is a target (:func:`bop19_valid_gts`).
        estimates: the estimates kept for evaluation (:func:`bop19_top_estimates`).
    """

    scene_id: int
    im_id: int
    gt_obj_ids: list[int]
    gt_valid: list[bool]
    estimates: list[EstimateErrors] = field(default_factory=list)


def bop19_top_estimates(scores: Sequence[float], inst_count: int) -> list[int]:
    """Indices of the ``inst_count`` highest-scoring estimates of one target (BOP ``n_top=-1``).

    Ties keep file order (Python's sort is stable, as in the toolkit).
    """
    order = sorted(range(len(scores)), key=lambda i: float(scores[i]), reverse=True)
    return order[: max(0, int(inst_count))]


def match_greedy(estimates: Sequence[EstimateErrors], error_name: str, threshold: float, gt_valid: Sequence[bool]) -> dict[int, int]:
    """Greedy matching of one image's estimates of one object to its ground truth.

    Estimates are taken by decreasing score; each goes to the valid, still unmatched
    ground-truth instance with the lowest error below ``threshold`` (strictly), as in
    ``bop_toolkit_lib.pose_matching.match_poses``.

    Returns:
        gt index -> position of the matched estimate in ``estimates``.
    """
    order = sorted(range(len(estimates)), key=lambda i: float(estimates[i].score), reverse=True)
    matched: dict[int, int] = {}
    for i in order:
        best_gt, best_err = -1, threshold
        for gt_id, err in estimates[i].errors.get(error_name, {}).items():
            if gt_valid[gt_id] and gt_id not in matched and err < best_err:
                best_gt, best_err = gt_id, err
        if best_gt >= 0:
            matched[best_gt] = i
    return matched


@dataclass(frozen=True)
class RecallResult:
    """Recall of one error at one threshold.

    Attributes:
        recall: true positives / targets over all objects (the number BOP averages).
        obj_recalls: obj_id -> recall of that object's targets (0 when it has none).
        targets: number of targets.
        true_positives: number of matched targets.
    """

    recall: float
    obj_recalls: dict[int, float]
    targets: int
    true_positives: int


def localization_recall(images: Sequence[ImageEval], error_name: str, threshold: float, obj_ids: Sequence[int] | None = None) -> RecallResult:
    """Recall of the 6D localisation task at one threshold (``score.calc_localization_scores``).

    Args:
        images: the evaluated images.
        error_name: which entry of :attr:`EstimateErrors.errors` to threshold.
        threshold: an estimate is correct when its error is < threshold.
        obj_ids: objects to report recalls for (default: those with targets).

    Returns:
        :class:`RecallResult`.
    """
    tars: dict[int, int] = {}
    tps: dict[int, int] = {}
    for im in images:
        for o, v in zip(im.gt_obj_ids, im.gt_valid):
            if v:
                tars[o] = tars.get(o, 0) + 1
        by_obj: dict[int, list[EstimateErrors]] = {}
        for e in im.estimates:
            by_obj.setdefault(e.obj_id, []).append(e)
        for o, ests in by_obj.items():
            valid = [v and go == o for go, v in zip(im.gt_obj_ids, im.gt_valid)]
            for gt_id in match_greedy(ests, error_name, threshold, valid):
                tps[o] = tps.get(o, 0) + 1
    ids = sorted(tars) if obj_ids is None else [int(o) for o in obj_ids]
    obj_recalls = {o: (tps.get(o, 0) / tars[o] if tars.get(o) else 0.0) for o in ids}
    n_t, n_p = sum(tars.values()), sum(tps.values())
    return RecallResult(n_p / n_t if n_t else 0.0, obj_recalls, n_t, n_p)


def average_recall(images: Sequence[ImageEval], error_name: str, thresholds: Sequence[float], obj_ids: Sequence[int] | None = None) -> dict:
    """BOP average recall of one error: the mean of the recalls over the thresholds.

    Returns:
        ``{"AR": float, "recalls": [per threshold], "thresholds": [...],
        "obj_AR": {obj_id: mean over thresholds of the object's recall}, "targets": int}``.
    """
    if not thresholds:
        raise InputError("average_recall: no thresholds")
    results = [localization_recall(images, error_name, th, obj_ids) for th in thresholds]
    objs = results[0].obj_recalls.keys()
    return {
        "AR": float(np.mean([r.recall for r in results])),
        "recalls": [r.recall for r in results],
        "thresholds": [float(t) for t in thresholds],
        "obj_AR": {int(o): float(np.mean([r.obj_recalls[o] for r in results])) for o in objs},
        "targets": results[0].targets,
    }


# --------------------------------------------------------------------------------------------
# Hands
# --------------------------------------------------------------------------------------------

def hand_joint_errors_mm(pred_xyz_mm: np.ndarray, gt_xyz_mm: np.ndarray) -> np.ndarray:
    """Per-frame, per-joint 3D errors.

    Args:
        pred_xyz_mm: (N, J, 3) float predicted joints, mm.
        gt_xyz_mm: (N, J, 3) ground truth, mm.

    Returns:
        (N, J) float64 Euclidean distances, mm.
    """
    p = np.asarray(pred_xyz_mm, dtype=np.float64)
    g = np.asarray(gt_xyz_mm, dtype=np.float64)
    if p.shape != g.shape or p.ndim != 3 or p.shape[-1] != 3:
        raise InputError(f"hand joints: prediction {p.shape} and ground truth {g.shape} must both be (N, J, 3)")
    return np.linalg.norm(p - g, axis=-1)


def max_frame_fraction(errors_mm: np.ndarray, thresholds_mm: Sequence[float] = HAND_CURVE_THRESHOLDS_MM) -> np.ndarray:
    """Fraction of frames whose maximum joint error is <= D, for each D.

    Args:
        errors_mm: (N, J) joint errors, mm.
        thresholds_mm: (T,) values of D, mm.

    Returns:
        (T,) float64 fractions in [0, 1].
    """
    e = np.asarray(errors_mm, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0:
        raise InputError(f"joint errors: expected (N, J) with N > 0, got {e.shape}")
    worst = e.max(axis=1)
    th = np.asarray(thresholds_mm, dtype=np.float64)
    return (worst[None, :] <= th[:, None]).mean(axis=1)


@dataclass(frozen=True)
class HandMetrics:
    """Hand metrics of one prediction set.

    Attributes:
        frames: number of frames N.
        mean_mm: mean joint error over frames and joints.
        per_joint_mm: (J,) mean error of each joint.
        curve_thresholds_mm: (T,) values of D.
        max_frame_fraction: (T,) fraction of frames with every joint within D.
        per_subject_mm: subject name -> mean error over its frames.
    """

    frames: int
    mean_mm: float
    per_joint_mm: np.ndarray
    curve_thresholds_mm: np.ndarray
    max_frame_fraction: np.ndarray
    per_subject_mm: dict[str, float]

    def fraction_within(self, d_mm: float) -> float:
        """Curve value at threshold ``d_mm`` (must be one of the curve's thresholds)."""
        idx = np.nonzero(np.isclose(self.curve_thresholds_mm, d_mm))[0]
        if idx.size == 0:
            raise InputError(f"{d_mm} mm is not a threshold of the curve")
        return float(self.max_frame_fraction[idx[0]])


def hand_metrics(
    errors_mm: np.ndarray,
    subjects: Sequence[tuple[int, int, str]] = (),
    thresholds_mm: Sequence[float] = HAND_CURVE_THRESHOLDS_MM,
) -> HandMetrics:
    """All hand metrics from per-joint errors.

    Args:
        errors_mm: (N, J) joint errors, mm.
        subjects: (first_frame, last_frame, name), 1-based inclusive frame ranges; ranges
            beyond N raise InputError.
        thresholds_mm: values of D for the curve.

    Returns:
        :class:`HandMetrics`.
    """
    e = np.asarray(errors_mm, dtype=np.float64)
    curve = max_frame_fraction(e, thresholds_mm)
    per_subject = {}
    for first, last, name in subjects:
        if not (1 <= first <= last <= e.shape[0]):
            raise InputError(f"subject {name!r}: frames {first}-{last} outside 1-{e.shape[0]}")
        per_subject[name] = float(e[first - 1:last].mean())
    return HandMetrics(
        frames=int(e.shape[0]),
        mean_mm=float(e.mean()),
        per_joint_mm=e.mean(axis=0),
        curve_thresholds_mm=np.asarray(thresholds_mm, dtype=np.float64),
        max_frame_fraction=curve,
        per_subject_mm=per_subject,
    )


