"""Scoring published results: hand predictions in the published NYU/ICVL/MSRA format
(``featmap eval hands``, 7.441 mm for Feature Mapping on NYU) and BOP-19 result files
(``featmap eval bop``, cross-checked against the BOP toolkit)."""
from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from featmap_ros import atomic
from featmap_ros.data import bop  # the object reader (its own module, with mesh loading)
from featmap_ros.data import hand_predictions
from featmap_ros.data.specs import hand_dataset, object_dataset
from featmap_ros.errors import InputError, read_text
from featmap_ros.evaluation import metrics

#: Thresholds (mm) of the curve reported in tables and JSON.
HAND_TABLE_THRESHOLDS_MM = tuple(range(0, 81, 10))


def evaluate_hands(pred_path: Path, gt_path: Path, dataset: str) -> dict:
    """Score a published prediction file; returns the JSON report (see README "Evaluation")."""
    spec = hand_dataset(dataset)
    pred_uvd, gt_uvd = hand_predictions.read_pred_gt(pred_path, gt_path, spec)
    errors = metrics.hand_joint_errors_mm(
        hand_predictions.uvd_to_xyz_mm(pred_uvd, spec), hand_predictions.uvd_to_xyz_mm(gt_uvd, spec)
    )
    subjects = spec.subjects if spec.subjects and spec.subjects[-1][1] == errors.shape[0] else ()
    m = metrics.hand_metrics(errors, subjects)
    return {
        "dataset": spec.name,
        "pred": str(Path(pred_path).resolve()),
        "gt": str(Path(gt_path).resolve()),
        "camera": {"fx": spec.fx, "fy": spec.fy, "cx": spec.cx, "cy": spec.cy, "y_up": spec.y_up},
        "frames": m.frames,
        "joints": len(spec.joint_names),
        "mean_mm": m.mean_mm,
        "joint_names": list(spec.joint_names),
        "per_joint_mm": [float(x) for x in m.per_joint_mm],
        "max_frame_fraction": {str(d): m.fraction_within(d) for d in HAND_TABLE_THRESHOLDS_MM},
        "max_frame_curve": {
            "thresholds_mm": [float(x) for x in m.curve_thresholds_mm],
            "fraction": [float(x) for x in m.max_frame_fraction],
        },
        "per_subject_mm": m.per_subject_mm,
        "per_subject_note": "" if subjects else f"no subject split applies to {m.frames} frames of {spec.name}",
    }


def format_hand_table(report: dict) -> str:
    """The human-readable table of a hand report."""
    lines = [
        f"{report['pred']}",
        f"  dataset {report['dataset']}, {report['frames']} frames, {report['joints']} joints",
        f"  mean joint error: {report['mean_mm']:.3f} mm",
    ]
    for name, v in report["per_subject_mm"].items():
        lines.append(f"    {name:<12s} {v:8.3f} mm")
    lines.append("  frames with every joint within D:")
    lines.append("    " + " ".join(f"{d + ' mm':>8s}" for d in report["max_frame_fraction"]))
    lines.append("    " + " ".join(f"{100 * v:7.1f}%" for v in report["max_frame_fraction"].values()))
    lines.append("  per joint (mm):")
    for name, v in zip(report["joint_names"], report["per_joint_mm"]):
        lines.append(f"    {name:<12s} {v:8.3f}")
    return "\n".join(lines)


@dataclass(frozen=True)
class BopEstimate:
    """One line of a BOP-19 results CSV.

    Attributes:
        scene_id, im_id, obj_id: BOP ids.
        score: confidence.
        R_m2c: (3, 3) float64 rotation, row-major in the file.
        t_m2c_mm: (3,) float64 translation, mm.
        time_s: run time of the image, seconds (-1: not given).
        line: line number in the file (1-based).
    """

    scene_id: int
    im_id: int
    obj_id: int
    score: float
    R_m2c: np.ndarray
    t_m2c_mm: np.ndarray
    time_s: float
    line: int


def write_bop_results(path: str | Path, estimates: Sequence[BopEstimate]) -> Path:
    """Write a BOP-19 results CSV (``scene_id,im_id,obj_id,score,R,t,time``; R row-major, t in mm,
    time per image in seconds), atomically; :func:`read_bop_results` and ``featmap eval bop`` read it."""
    rows = ["scene_id,im_id,obj_id,score,R,t,time"]
    for e in estimates:
        R = " ".join(f"{x:.8f}" for x in np.asarray(e.R_m2c, np.float64).reshape(9))
        t = " ".join(f"{x:.4f}" for x in np.asarray(e.t_m2c_mm, np.float64).reshape(3))
        rows.append(f"{e.scene_id},{e.im_id},{e.obj_id},{e.score:.6f},{R},{t},{e.time_s:.6f}")
    atomic.write_text(path, "\n".join(rows) + "\n")
    return Path(path)


def read_bop_results(path: str | Path) -> list[BopEstimate]:
    """Read a BOP-19 results CSV (``scene_id,im_id,obj_id,score,R,t,time``; header optional).

    R is 9 numbers and t 3 numbers, each separated by spaces, inside their comma-separated field.

    Raises:
        InputError: missing file, a line without 7 fields, a field that is not a number, a wrong
            count of R/t values, NaN or inf; the message names the file, line and field.
    """
    p = Path(path)
    text = read_text(p)
    out = []
    names = ("scene_id", "im_id", "obj_id", "score", "R", "t", "time")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if lineno == 1 and "scene_id,im_id,obj_id,score,R,t,time" in line.replace(" ", ""):
            continue
        where = f"{p}:{lineno}"
        fields = line.split(",")
        if len(fields) != 7:
            raise InputError(f"{where}: {len(fields)} comma-separated fields, expected 7 ({','.join(names)})")
        try:
            ids = [int(fields[i]) for i in range(3)]
        except ValueError:
            bad = next(i for i in range(3) if not fields[i].strip().lstrip("-").isdigit())
            raise InputError(f"{where}: {names[bad]} is not an integer: {fields[bad].strip()!r}") from None
        vals = {}
        for i, n in ((3, 1), (4, 9), (5, 3), (6, 1)):
            try:
                v = np.array([float(x) for x in fields[i].split()], dtype=np.float64)
            except ValueError:
                raise InputError(f"{where}: {names[i]} is not a number: {fields[i].strip()!r}") from None
            if v.size != n:
                raise InputError(f"{where}: {names[i]} has {v.size} values, expected {n}")
            if not np.all(np.isfinite(v)):
                raise InputError(f"{where}: {names[i]} contains NaN or inf: {fields[i].strip()!r}")
            vals[i] = v
        out.append(BopEstimate(ids[0], ids[1], ids[2], float(vals[3][0]), vals[4].reshape(3, 3), vals[5], float(vals[6][0]), lineno))
    if not out:
        raise InputError(f"{p}: no estimates")
    return out


def _average_time_per_image(path: Path, ests: list[BopEstimate]) -> float:
    """The toolkit's check: every estimate of an image must report the same time (within 1 ms)."""
    times: dict[tuple[int, int], float] = {}
    for e in ests:
        if e.time_s < 0:
            return -1.0
        key = (e.scene_id, e.im_id)
        if key in times and abs(times[key] - e.time_s) > 0.001:
            raise InputError(
                f"{path}:{e.line}: time {e.time_s} differs from the other estimates of scene {e.scene_id} "
                f"image {e.im_id} ({times[key]}); BOP-19 wants the run time of the whole image on every line"
            )
        times.setdefault(key, e.time_s)
    return float(np.mean(list(times.values()))) if times else -1.0


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _raw_gt_rotations(scene_gt_path: Path) -> dict[int, list[np.ndarray]]:
    """``cam_R_m2c`` exactly as stored (im_id -> list of (3, 3)).

    The reader (data/bop.py) replaces slightly non-orthonormal ground-truth rotations by the
    nearest rotation, which is right for training and rendering; the BOP toolkit scores
    against the stored matrices, and so does this evaluator (the difference reaches ~1 mm on
    LM-O's can). Validation (shape, finiteness) was done by the reader already.
    """
    data = json.loads(Path(scene_gt_path).read_text())
    return {int(k): [np.asarray(g["cam_R_m2c"], dtype=np.float64).reshape(3, 3) for g in v] for k, v in data.items()}


def evaluate_bop(
    results_path: str | Path,
    dataset_root: str | Path,
    dataset: str,
    targets_path: str | Path | None = None,
    split: str = "test",
    visib_gt_min: float = -1.0,
) -> dict:
    """Score a BOP-19 results file against a BOP dataset folder (6D localisation, BOP-19 rules).

    Targets come from ``test_targets_bop19.json``; for each target the ``inst_count``
    highest-scoring estimates are kept; errors use the ``models_eval`` meshes (else ``models``);
    estimates are matched greedily by descending score; recall = matched targets / targets.

    Returns:
        The JSON report (see README "Evaluation").
    """

    spec = object_dataset(dataset)
    root = Path(dataset_root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    models_dir = "models_eval" if (root / "models_eval" / "models_info.json").is_file() else "models"
    infos = bop.load_models_info(root / models_dir / "models_info.json")
    infos_mm = bop.models_info_to_json(infos)
    targets_file = Path(targets_path) if targets_path is not None else root / "test_targets_bop19.json"
    targets = bop.load_test_targets(targets_file)
    width = spec.width
    cam_json = root / "camera.json"
    if cam_json.is_file():
        try:
            width = int(json.loads(cam_json.read_text())["width"])
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(f"{cam_json}: cannot read 'width' ({e})") from None
    mspd_factor = 640.0 / width

    results_path = Path(results_path)
    ests = read_bop_results(results_path)
    avg_time = _average_time_per_image(results_path, ests)
    by_key: dict[tuple[int, int, int], list[BopEstimate]] = {}
    for e in ests:
        by_key.setdefault((e.scene_id, e.im_id, e.obj_id), []).append(e)

    tars: dict[int, dict[int, dict[int, int]]] = {}
    for t in targets:
        tars.setdefault(t.scene_id, {}).setdefault(t.im_id, {})[t.obj_id] = t.inst_count
    obj_ids = sorted({t.obj_id for t in targets})
    missing = [o for o in obj_ids if o not in infos]
    if missing:
        raise InputError(f"{root / models_dir / 'models_info.json'}: no entry for target object(s) {missing}")
    points_mm: dict[int, np.ndarray] = {}
    syms = {}
    for o in obj_ids:
        points_mm[o] = bop.load_mesh(bop.model_path(root, o, models_dir)).vertices_m * 1000.0
        syms[o] = metrics.symmetry_transformations(infos_mm[str(o)])

    images: list[metrics.ImageEval] = []
    used = 0
    progress = tqdm(total=sum(len(v) for v in tars.values()), desc="scoring", unit="img", leave=False)
    for scene_id in sorted(tars):
        scene_dir = root / split / f"{scene_id:06d}"
        with _quiet_logger("featmap_ros.data.bop"):  # its re-orthonormalisation note does not apply: see _raw_gt_rotations
            frames = {f.im_id: f for f in bop.read_scene(scene_dir, infos)}
        raw_R = _raw_gt_rotations(scene_dir / "scene_gt.json")
        for im_id in sorted(tars[scene_id]):
            if im_id not in frames:
                raise InputError(f"{targets_file}: scene {scene_id} image {im_id} is not in {scene_dir / 'scene_camera.json'}")
            frame = frames[im_id]
            gt_obj = [g.obj_id for g in frame.instances]
            visib = [g.visib_fract if g.visib_fract is not None else 1.0 for g in frame.instances]
            im = metrics.ImageEval(scene_id, im_id, gt_obj, metrics.bop19_valid_gts(gt_obj, visib, tars[scene_id][im_id], visib_gt_min))
            K = frame.K
            for obj_id, inst_count in sorted(tars[scene_id][im_id].items()):
                cands = by_key.get((scene_id, im_id, obj_id), [])
                keep = [cands[i] for i in metrics.bop19_top_estimates([c.score for c in cands], inst_count)]
                used += len(keep)
                diameter = float(infos_mm[str(obj_id)]["diameter"])
                pts = points_mm[obj_id]
                for est in keep:
                    errs: dict[str, dict[int, float]] = {"mssd": {}, "mspd": {}, "ad": {}, "proj": {}, "rete": {}}
                    for gt_id, g in enumerate(frame.instances):
                        if g.obj_id != obj_id:
                            continue
                        R_g, t_g = raw_R[im_id][gt_id], g.t_m2c_m * 1000.0
                        R_e, t_e = est.R_m2c, est.t_m2c_mm
                        overlap = np.linalg.norm(t_e - t_g) < diameter  # the toolkit's bounding-sphere test
                        errs["mssd"][gt_id] = metrics.mssd_error(R_e, t_e, R_g, t_g, pts, syms[obj_id]) / diameter if overlap else math.inf
                        errs["mspd"][gt_id] = metrics.mspd_error(R_e, t_e, R_g, t_g, K, pts, syms[obj_id]) * mspd_factor
                        if overlap:
                            ad = metrics.adds_error if obj_id in spec.symmetric_obj_ids else metrics.add_error
                            errs["ad"][gt_id] = ad(R_e, t_e, R_g, t_g, pts) / diameter
                        else:
                            errs["ad"][gt_id] = math.inf
                        errs["proj"][gt_id] = metrics.proj2d_error(R_e, t_e, R_g, t_g, K, pts)
                        errs["rete"][gt_id] = max(
                            metrics.rotation_error_deg(R_e, R_g) / metrics.ROT_DEG,
                            metrics.translation_error(t_e, t_g) / (1000.0 * metrics.TRANS_M),
                        )
                    im.estimates.append(metrics.EstimateErrors(obj_id, est.score, errs, est.line))
            images.append(im)
            progress.update()
    progress.close()

    ar_mssd = metrics.average_recall(images, "mssd", metrics.BOP19_MSSD_THRESHOLDS, obj_ids)
    ar_mspd = metrics.average_recall(images, "mspd", metrics.BOP19_MSPD_THRESHOLDS, obj_ids)
    add10 = metrics.localization_recall(images, "ad", metrics.ADD_FRACTION, obj_ids)
    proj5 = metrics.localization_recall(images, "proj", metrics.PROJ2D_PX, obj_ids)
    rete = metrics.localization_recall(images, "rete", 1.0, obj_ids)
    per_object = {}
    for o in obj_ids:
        per_object[str(o)] = {
            "name": spec.object_names.get(o, str(o)),
            "targets": sum(v for im in images for go, v in zip(im.gt_obj_ids, im.gt_valid) if go == o),
            "AR_MSSD": ar_mssd["obj_AR"][o],
            "AR_MSPD": ar_mspd["obj_AR"][o],
            "ADD_10": add10.obj_recalls[o],
            "proj_5px": proj5.obj_recalls[o],
            "5cm5deg": rete.obj_recalls[o],
            "add_metric": "ADD-S" if o in spec.symmetric_obj_ids else "ADD",
        }
    return {
        "dataset": spec.name,
        "results": str(results_path.resolve()),
        "dataset_root": str(root.resolve()),
        "targets_file": str(targets_file.resolve()),
        "split": split,
        "models": models_dir,
        "visib_gt_min": visib_gt_min,
        "image_width": width,
        "estimates": len(ests),
        "estimates_evaluated": used,
        "targets": ar_mssd["targets"],
        "AR_MSSD": ar_mssd["AR"],
        "AR_MSPD": ar_mspd["AR"],
        "AR": 0.5 * (ar_mssd["AR"] + ar_mspd["AR"]),
        "AR_note": "mean of AR_MSSD and AR_MSPD; the official BOP-19 AR also averages AR_VSD (needs depth rendering), not computed here",
        "ADD_10": add10.recall,
        "proj_5px": proj5.recall,
        "5cm5deg": rete.recall,
        "recalls_MSSD": dict(zip([f"{t:.2f}" for t in ar_mssd["thresholds"]], ar_mssd["recalls"])),
        "recalls_MSPD": dict(zip([f"{t:g}" for t in ar_mspd["thresholds"]], ar_mspd["recalls"])),
        "average_time_per_image_s": avg_time,
        "per_object": per_object,
    }


def format_bop_table(r: dict) -> str:
    """The human-readable table of a BOP report."""
    lines = [
        f"{r['results']}",
        f"  {r['dataset']} ({r['dataset_root']}), {r['targets']} targets, {r['estimates_evaluated']} of {r['estimates']} estimates evaluated",
        f"  AR_MSSD {r['AR_MSSD']:.4f}   AR_MSPD {r['AR_MSPD']:.4f}   AR(MSSD,MSPD) {r['AR']:.4f}",
        f"  ADD(-S) < 10% d {100 * r['ADD_10']:.1f}%   2D proj < 5 px {100 * r['proj_5px']:.1f}%   5cm 5deg {100 * r['5cm5deg']:.1f}%",
        f"  {'obj':>4s} {'name':<12s} {'targets':>7s} {'AR_MSSD':>8s} {'AR_MSPD':>8s} {'ADD_10':>7s} {'proj_5':>7s}",
    ]
    for o, v in r["per_object"].items():
        lines.append(
            f"  {o:>4s} {v['name']:<12s} {v['targets']:>7d} {v['AR_MSSD']:8.4f} {v['AR_MSPD']:8.4f} "
            f"{100 * v['ADD_10']:6.1f}% {100 * v['proj_5px']:6.1f}%"
        )
    return "\n".join(lines)
