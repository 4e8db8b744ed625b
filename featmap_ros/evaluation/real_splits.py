"""Feature Mapping from a handful of real frames, measured on frames held out
(``featmap bench real-splits``).

From ONE stage-1 checkpoint (synthetic crops only), stage 2 is trained once per
(fold, seed, variant) and scored on the real frames the fold did not train on:

- ``synthetic_only``: stage 2 on synthetic crops alone (no real frame: what the real frames add
  is measured against this),
- ``no_mapping``: the paper's baseline, f and h on the fold's real crops + synthetic ones, no g,
- ``mapping``: Feature Mapping on the fold's real/synthetic pairs (g applied to real images).

A fold names the real frames (image ids) stage 2 may use; every other frame of the split that
has an image is held out. Each held-out ground-truth instance of a known object is cropped in
its ground-truth window (:func:`featmap_ros.evaluation.datasets.ground_truth_boxes`, as
``featmap eval object --boxes gt``) and scored per instance: 2D projection <= 5 px, ADD(-S) <= 10 %
of the diameter, mean corner error (px), and the per-instance BOP-19 recalls averaged over the
thresholds (MSPD 5..50 px, MSSD 0.05..0.5 of the diameter, ``models_eval`` meshes when present),
whose mean over instances is AR_MSPD / AR_MSSD when every instance is a target. The run's BOP-19
results file is also scored by :func:`featmap_ros.evaluation.published.evaluate_bop` against the
held-out frames' targets (``bop`` in each run's result: the official figures, VSD not computed).

Folds by viewpoint (``--holdout viewpoint``, :func:`viewpoint_folds`): the frames of one scene are
grouped by the camera's viewpoint (the rotation between two frames: the median over the objects both
show of the angle between their ``R_m2c``), one group is held out per fold, and stage 2 trains only
on frames at least ``min_gap_deg`` from every held-out frame (the frames in between are left out).
Folds over neighbouring frames over-estimate unseen ones: on LM-O scene 2 the 10 shared frames lie
6-25 deg from their nearest other shared frame, the 190 other test frames a median 48 deg (90 % within
70 deg) from the nearest shared one.

Comparisons pair the instances: each held-out instance (fold, image, object) is one item, its
value is averaged over seeds, and the difference of two variants gets the paired bootstrap 95 %
interval of the ablation bench (:func:`featmap_ros.evaluation.ablation.paired_bootstrap`).

Runs live in ``WORK/fold<k>_seed<s>_<variant>/`` (the stage-1 ``last.pt`` copied in, then
resumed: an interrupted bench is continued by running the same command; a finished run's
``result_fold<k>.json`` is reused; delete it to score the trained run again, e.g. after a change of the
evaluation: training is not repeated, its ``last.pt`` is at the last step).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from featmap_ros import atomic, geometry
from featmap_ros.config import from_dict, parse_override, to_dict
from featmap_ros.data import bop
from featmap_ros.errors import InputError
from featmap_ros.evaluation import metrics
from featmap_ros.evaluation.ablation import paired_bootstrap
from featmap_ros.evaluation.datasets import ground_truth_boxes, pose_in_window
from featmap_ros.evaluation.published import BopEstimate, evaluate_bop, write_bop_results
from featmap_ros.evaluation.records import add_points_m, object_record

log = logging.getLogger(__name__)

VARIANTS = ("synthetic_only", "no_mapping", "mapping")
#: per-instance values compared: higher is better except ``corner_px``.
METRICS = ("proj2d_5px", "add_10", "corner_px", "ar_mspd", "ar_mssd")
#: the comparisons of the report (a - b).
COMPARISONS = (("mapping", "no_mapping"), ("mapping", "synthetic_only"), ("no_mapping", "synthetic_only"))


@dataclass(frozen=True)
class Fold:
    """Real frames (image ids) stage 2 trains on, and the held-out ones it is scored on."""

    train: tuple[int, ...]
    test: tuple[int, ...]


def parse_id_list(text: str, where: str) -> list[int]:
    """``"3,8,17"`` -> [3, 8, 17] (InputError naming ``where`` otherwise)."""
    try:
        ids = [int(x) for x in str(text).replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise InputError(f"{where}: expected comma-separated image ids, got {text!r}") from None
    if not ids:
        raise InputError(f"{where}: no image ids in {text!r}")
    if len(set(ids)) != len(ids):
        raise InputError(f"{where}: repeated image id in {text!r}")
    return ids


def frames_with_images(root: str | Path, split: str) -> list[int]:
    """Image ids of ``root/split`` (all scenes) that have an image, sorted."""
    scenes = bop.list_scenes(Path(root) / split)
    if not scenes:
        raise InputError(f"{Path(root) / split}: no scene folders")
    return sorted({f.im_id for s in scenes for f in bop.read_scene(s) if f.rgb_path is not None})


def make_folds(train_sets: Sequence[Sequence[int]], available: Sequence[int]) -> list[Fold]:
    """Folds from their training frames; each holds out every other available frame.

    Raises:
        InputError: a training id that is not an available frame (naming it), or a fold that
            leaves nothing held out.
    """
    avail = sorted(set(int(i) for i in available))
    folds = []
    for k, tr in enumerate(train_sets):
        missing = sorted(set(int(i) for i in tr) - set(avail))
        if missing:
            raise InputError(f"--folds[{k}]: image id(s) {missing} are not frames with an image (frames: {avail})")
        test = tuple(i for i in avail if i not in set(tr))
        if not test:
            raise InputError(f"--folds[{k}]: trains on every frame; nothing is left to score on")
        folds.append(Fold(tuple(sorted(int(i) for i in tr)), test))
    return folds


def viewpoint_angles_deg(root: str | Path, split: str, im_ids: Sequence[int]) -> np.ndarray:
    """(n, n) float64 viewpoint change between the frames ``im_ids`` of ``root/split``, degrees:
    the median over the objects both frames show of the angle between their ``R_m2c`` (a moving
    camera over a still scene turns every object alike; the median ignores a moved one).

    Raises:
        InputError: an image id not in the split, or two frames with no object in common.
    """
    Rs: dict[int, dict[int, np.ndarray]] = {}
    wanted = set(int(i) for i in im_ids)
    for sdir in bop.list_scenes(Path(root) / split):
        for f in bop.read_scene(sdir):
            if f.im_id in wanted:
                Rs[f.im_id] = {g.obj_id: geometry.orthonormalize(g.R_m2c) for g in f.instances}
    missing = sorted(wanted - set(Rs))
    if missing:
        raise InputError(f"{Path(root) / split}: image id(s) {missing} not found in scene_gt.json")
    ids = [int(i) for i in im_ids]
    A = np.zeros((len(ids), len(ids)))
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            common = set(Rs[ids[a]]) & set(Rs[ids[b]])
            if not common:
                raise InputError(f"frames {ids[a]} and {ids[b]}: no object in common, no viewpoint change to measure")
            A[a, b] = A[b, a] = float(np.median([geometry.rotation_angle_deg(Rs[ids[a]][o], Rs[ids[b]][o]) for o in common]))
    return A


def viewpoint_folds(root: str | Path, split: str, n_folds: int, min_gap_deg: float) -> list[Fold]:
    """Folds whose held-out frames are far in viewpoint from every training frame (module docstring).

    The frames with an image are clustered into ``n_folds`` groups by viewpoint (complete linkage
    on :func:`viewpoint_angles_deg`, scipy); fold k holds out group k and trains on the frames at
    least ``min_gap_deg`` from each of its frames.

    Raises:
        InputError: fewer frames than folds, or a fold left with no training frame (naming the gap).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    ids = frames_with_images(root, split)
    if n_folds < 2 or len(ids) < n_folds:
        raise InputError(f"--n-folds: need 2 <= folds <= frames ({len(ids)}), got {n_folds}")
    A = viewpoint_angles_deg(root, split, ids)
    labels = fcluster(linkage(squareform(A, checks=False), "complete"), n_folds, "maxclust")
    folds = []
    for c in sorted(set(labels), key=lambda c: min(i for i, lab in zip(ids, labels) if lab == c)):
        test = [i for i, lab in zip(ids, labels) if lab == c]
        ti = [ids.index(i) for i in test]
        train = [i for n, i in enumerate(ids) if i not in test and A[n, ti].min() >= min_gap_deg]
        if not train:
            raise InputError(f"--min-gap-deg {min_gap_deg}: no frame is that far from held-out frames {test}; lower the gap")
        folds.append(Fold(tuple(train), tuple(test)))
    return folds


def fold_gaps_deg(root: str | Path, split: str, folds: Sequence[Fold]) -> list[float]:
    """Per fold, the smallest viewpoint change between a training and a held-out frame, degrees."""
    out = []
    for f in folds:
        ids = list(f.train) + list(f.test)
        A = viewpoint_angles_deg(root, split, ids)
        out.append(float(A[:len(f.train), len(f.train):].min()))
    return out


def variant_overrides(variant: str, real_root: str | Path, split: str, fold: Fold, seed: int, render_seed: int) -> dict[str, Any]:
    """Config changes (dotted keys) of a stage-2 variant on top of the stage-1 config."""
    if variant not in VARIANTS:
        raise InputError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    ov: dict[str, Any] = {"seed": int(seed), "data.render_seed": int(render_seed), "localiser_steps": 0,
                          "data.real_split": split, "data.max_real": 0}
    if variant == "synthetic_only":
        ov.update({"data.real_root": "", "data.real_im_ids": [], "mapping": False})
    else:
        ov.update({"data.real_root": str(real_root), "data.real_im_ids": list(fold.train), "mapping": variant == "mapping"})
    return ov


def apply_overrides(cfg_dict: dict, overrides: dict[str, Any], user: Sequence[str] = ()) -> dict:
    """A copy of a config dict with dotted-key ``overrides`` and then ``KEY=VALUE`` strings set."""
    out = json.loads(json.dumps(cfg_dict))
    items = list(overrides.items()) + [(".".join(k), v) for k, v in (parse_override(u) for u in user)]
    for key, value in items:
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise InputError(f"override {key!r}: {p} is not a section of the config")
            node = node[p]
        node[parts[-1]] = value
    return out


def run_name(fold_index: int, seed: int, variant: str) -> str:
    """Training folder of a run: ``synthetic_only`` uses no real frame, so one run per seed
    serves every fold (``seed<s>_synthetic_only``); the others ``fold<k>_seed<s>_<variant>``."""
    if variant == "synthetic_only":
        return f"seed{seed}_synthetic_only"
    return f"fold{fold_index}_seed{seed}_{variant}"


# ----------------------------------------------------------------------------- scoring


def _eval_points(root: Path, obj_ids: Sequence[int]) -> tuple[dict, dict, dict, str]:
    """Model points: (ADD points, m, 3000 at most as featmap eval object; BOP points, mm; symmetries; models folder)."""
    infos = bop.load_models_info(root / "models" / "models_info.json")
    models_dir = "models_eval" if (root / "models_eval" / "models_info.json").is_file() else "models"
    infos_eval = bop.load_models_info(root / models_dir / "models_info.json")
    infos_mm = bop.models_info_to_json(infos_eval)
    add_pts, bop_pts, syms = {}, {}, {}
    for oid in obj_ids:
        if oid not in infos:
            raise InputError(f"{root / 'models' / 'models_info.json'}: no entry for obj_id {oid} of the checkpoint")
        add_pts[oid] = (add_points_m(root, oid), infos[oid])
        if oid not in infos_eval:
            raise InputError(f"{root / models_dir / 'models_info.json'}: no entry for obj_id {oid} of the checkpoint")
        bop_pts[oid] = (bop.load_mesh(bop.model_path(root, oid, models_dir)).vertices_m * 1000.0, float(infos_mm[str(oid)]["diameter"]))
        syms[oid] = metrics.symmetry_transformations(infos_mm[str(oid)])
    return add_pts, bop_pts, syms, models_dir


def instance_recalls(R_est, t_est_mm, R_gt, t_gt_mm, K, pts_mm: np.ndarray, diameter_mm: float, syms) -> tuple[float, float, float, float]:
    """(MSPD px, MSSD / diameter, mean recall over the MSPD thresholds, over the MSSD thresholds) of one
    estimate, as :func:`~featmap_ros.evaluation.published.evaluate_bop` scores it (MSSD inf when the
    translation is off by a diameter or more: the toolkit's bounding-sphere test)."""
    if R_est is None:
        return math.inf, math.inf, 0.0, 0.0
    mspd = metrics.mspd_error(R_est, t_est_mm, R_gt, t_gt_mm, K, pts_mm, syms)
    overlap = np.linalg.norm(np.asarray(t_est_mm) - np.asarray(t_gt_mm)) < diameter_mm
    mssd = metrics.mssd_error(R_est, t_est_mm, R_gt, t_gt_mm, pts_mm, syms) / diameter_mm if overlap else math.inf
    ar_p = float(np.mean([mspd <= th for th in metrics.BOP19_MSPD_THRESHOLDS]))
    ar_s = float(np.mean([mssd <= th for th in metrics.BOP19_MSSD_THRESHOLDS]))
    return float(mspd), float(mssd), ar_p, ar_s


def score_frames(est, root: str | Path, split: str, im_ids: Sequence[int], progress: bool = True) -> tuple[list[dict], list[BopEstimate]]:
    """Every ground-truth instance of ``est``'s objects in frames ``im_ids``, in its ground-truth window.

    Returns:
        (per-instance dicts: ``im_id``, ``scene_id``, ``obj_id``, ``object``, ``proj2d_px``,
        ``add_frac``, ``corner_px`` (inf = no estimate), ``found``, ``mspd_px``, ``mssd_frac``,
        ``ar_mspd``, ``ar_mssd``; every estimate as a BOP-19 result).
    """
    from tqdm import tqdm

    root = Path(root)
    keep = set(int(i) for i in im_ids)
    add_pts, bop_pts, syms, _ = _eval_points(root, est.obj_ids)
    infos = bop.load_models_info(root / "models" / "models_info.json")
    frames = [f for s in bop.list_scenes(root / split) for f in bop.read_scene(s, infos) if f.im_id in keep]
    missing = sorted(keep - {f.im_id for f in frames})
    if missing:
        raise InputError(f"{root / split}: image id(s) {missing} are not in scene_camera.json")
    for f in frames:
        if f.rgb_path is None:
            raise InputError(f"{root / split / f'{f.scene_id:06d}' / 'rgb' / f'{f.im_id:06d}.png'}: image of im_id {f.im_id} not found")
    k_of = {oid: k for k, oid in enumerate(est.obj_ids)}
    out: list[dict] = []
    ests: list[BopEstimate] = []
    for fr in tqdm(frames, desc="score frames", disable=not progress, dynamic_ncols=True, leave=False):
        gts = [g for g in fr.instances if g.obj_id in k_of]
        if not gts:
            continue
        img = bop.load_rgb(fr.rgb_path)
        boxes = ground_truth_boxes(est, gts, fr.K)
        t0 = time.perf_counter()
        poses = est.estimate(img, fr.K, boxes)
        dt = time.perf_counter() - t0
        ests += [BopEstimate(fr.scene_id, fr.im_id, est.obj_ids[est.object_names.index(p.object_name)], float(p.score), p.R_m2c,
                             np.asarray(p.t_m2c_m, np.float64) * 1000.0, dt, 0) for p in poses]
        for (name, window), g in zip(boxes, gts):
            p = pose_in_window(poses, name, window)
            k = k_of[g.obj_id]
            pts, info = add_pts[g.obj_id]
            rec = object_record(name, None if p is None else p.R_m2c, None if p is None else p.t_m2c_m, g.R_m2c, g.t_m2c_m, fr.K,
                                pts, info.diameter_m, info.is_symmetric, est.corners_m[k])
            pts_mm, diam_mm = bop_pts[g.obj_id]
            mspd, mssd, ar_p, ar_s = instance_recalls(None if p is None else p.R_m2c, None if p is None else np.asarray(p.t_m2c_m) * 1000.0,
                                                      g.R_m2c, g.t_m2c_m * 1000.0, fr.K, pts_mm, diam_mm, syms[g.obj_id])
            out.append({"scene_id": fr.scene_id, "im_id": fr.im_id, "obj_id": g.obj_id, "object": name,
                        "proj2d_px": rec.proj2d_px, "add_frac": rec.add_frac, "corner_px": rec.corner_px, "found": rec.found,
                        "mspd_px": mspd, "mssd_frac": mssd, "ar_mspd": ar_p, "ar_mssd": ar_s})
    if not out:
        raise InputError(f"{root / split}: frames {sorted(keep)} hold no instance of the checkpoint's objects {est.obj_ids}")
    return out, ests


def instance_values(instances: Sequence[dict], metric: str) -> np.ndarray:
    """Per-instance values of ``metric`` (``corner_px``: NaN where there is no estimate)."""
    if metric == "proj2d_5px":
        return np.array([float(r["proj2d_px"] <= metrics.PROJ2D_PX) for r in instances])
    if metric == "add_10":
        return np.array([float(r["add_frac"] <= metrics.ADD_FRACTION) for r in instances])
    if metric == "corner_px":
        return np.array([r["corner_px"] if math.isfinite(r["corner_px"]) else np.nan for r in instances], dtype=np.float64)
    if metric in ("ar_mspd", "ar_mssd"):
        return np.array([float(r[metric]) for r in instances])
    raise InputError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")


def summarise(instances: Sequence[dict]) -> dict:
    """Mean of each metric over instances (``corner_px`` over those with an estimate)."""
    s = {"instances": len(instances)}
    for m in METRICS:
        v = instance_values(instances, m)
        s[m] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return s


def filtered_targets(targets_path: Path, im_ids: Sequence[int], out: Path) -> Path:
    """The BOP-19 targets of frames ``im_ids`` only, written to ``out``."""
    keep = set(int(i) for i in im_ids)
    rows = json.loads(Path(targets_path).read_text())
    atomic.write_json(out, [r for r in rows if int(r["im_id"]) in keep])
    return out


# ----------------------------------------------------------------------------- aggregation


def item_key(fold_index: int, r: dict) -> tuple:
    return (fold_index, int(r["scene_id"]), int(r["im_id"]), int(r["obj_id"]), str(r["object"]))


def paired_items(results: dict[tuple[int, int, str], list[dict]], variant: str, metric: str) -> dict[tuple, float]:
    """Held-out instance -> value of ``variant`` averaged over its seeds (NaN-aware).

    Args:
        results: (fold, seed, variant) -> the run's per-instance dicts.
    """
    acc: dict[tuple, list[float]] = {}
    for (fold, _seed, v), inst in results.items():
        if v != variant:
            continue
        for r, x in zip(inst, instance_values(inst, metric)):
            acc.setdefault(item_key(fold, r), []).append(float(x))
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in acc.items()}


def compare(results: dict[tuple[int, int, str], list[dict]], a: str, b: str, metric: str, n_boot: int = 2000) -> dict | None:
    """``a`` - ``b`` on the held-out instances both scored (seeds both ran), with the paired bootstrap.

    Only (fold, seed) pairs where both variants ran are used, so both means cover the same
    seeds. None when there is no common item.
    """
    both = {(f, s) for (f, s, v) in results if v == a} & {(f, s) for (f, s, v) in results if v == b}
    sub = {k: v for k, v in results.items() if (k[0], k[1]) in both and k[2] in (a, b)}
    va, vb = paired_items(sub, a, metric), paired_items(sub, b, metric)
    keys = sorted(k for k in va.keys() & vb.keys() if math.isfinite(va[k]) and math.isfinite(vb[k]))
    if not keys:
        return None
    x, y = np.array([va[k] for k in keys]), np.array([vb[k] for k in keys])
    mean, lo, hi = paired_bootstrap(x, y, n_boot=n_boot)
    return {"a": a, "b": b, "metric": metric, "items": len(keys), "mean_a": float(x.mean()), "mean_b": float(y.mean()),
            "difference": mean, "ci95": [lo, hi], "runs": sorted(both)}


def aggregate(results: dict[tuple[int, int, str], list[dict]], variants: Sequence[str]) -> dict:
    """Per variant: the pooled held-out summary over folds and seeds, per (fold, seed) summaries,
    and the comparisons of :data:`COMPARISONS` among ``variants``."""
    per_variant = {}
    for v in variants:
        runs = {k: inst for k, inst in results.items() if k[2] == v}
        if not runs:
            continue
        pooled = [r for inst in runs.values() for r in inst]
        per_variant[v] = {"pooled": summarise(pooled), "seeds": sorted({k[1] for k in runs}),
                          "runs": {f"fold{k[0]}_seed{k[1]}": summarise(inst) for k, inst in sorted(runs.items())}}
    comps = []
    for a, b in COMPARISONS:
        if a in variants and b in variants:
            for m in METRICS:
                c = compare(results, a, b, m)
                if c is not None:
                    comps.append(c)
    return {"variants": per_variant, "comparisons": comps}


def compare_works(works: dict[str, str | Path], variant: str = "mapping") -> dict:
    """Compare the same stage-2 variant across benches that started from different stage-1
    checkpoints (another backbone, a training ingredient left out): the runs already in each
    bench's work folder, paired over the held-out instances they share.

    Args:
        works: label -> work folder of a finished (or partial) ``featmap bench real-splits``;
            the first is the reference every other label is compared with.
        variant: the stage-2 variant to compare.

    Returns:
        A report of :func:`run_real_splits`'s layout (``variants`` keyed by label), comparisons
        ``label - first`` for every metric.

    Raises:
        InputError: a folder without runs of ``variant``, or folds whose training frames differ.
    """
    results: dict[tuple[int, int, str], list[dict]] = {}
    runs_meta, folds = [], {}
    for label, work in works.items():
        found = [(f, json.loads(f.read_text())) for f in sorted(Path(work).glob(f"fold*_seed*_{variant}/result_fold*.json"))]
        found = [(f, res) for f, res in found if res.get("variant") == variant]  # the glob's *_mapping also matches no_mapping
        if not found:
            raise InputError(f"{work}: no finished {variant!r} run (fold*_seed*_{variant}/result_fold*.json)")
        for f, res in found:
            k = int(res["fold"])
            fold = {"train": list(res["train_frames"]), "test": list(res["test_frames"])}
            if folds.setdefault(k, fold) != fold:
                raise InputError(f"{f}: fold {k} trains on {fold['train']}, another bench's fold {k} on {folds[k]['train']}")
            results[(k, int(res["seed"]), label)] = res["instances"]
            runs_meta.append({"fold": k, "seed": int(res["seed"]), "variant": label, "train_seconds": res["train_seconds"],
                              "summary": res["summary"], "bop": res.get("bop")})
    labels = list(works)
    report = aggregate(results, labels)
    report["comparisons"] = [c for b in labels[1:] for m in METRICS if (c := compare(results, b, labels[0], m)) is not None]
    report.update({"stage1": ", ".join(f"{k}: {v}" for k, v in works.items()), "variant": variant,
                   "folds": [folds[k] for k in sorted(folds)], "seeds": sorted({k[1] for k in results}), "runs": runs_meta})
    return report


# ----------------------------------------------------------------------------- the bench


def run_real_splits(stage1: str | Path, dataset_root: str | Path, train_sets: Sequence[Sequence[int]] | Sequence[Fold], seeds: Sequence[int],
                    work: str | Path, variants: Sequence[str] = VARIANTS, split: str = "test", overrides: Sequence[str] = (),
                    progress: bool = True, on_run_done: Callable[[dict], None] | None = None) -> dict:
    """Train and score every (seed, fold, variant) from the stage-1 checkpoint; returns the report.

    Args:
        stage1: a ``last.pt`` of ``featmap train object ... --stop-after <steps_stage1>`` (its
            step must be ``steps_stage1``; its resolved config is the base of every variant).
        dataset_root: BOP dataset folder (``models/``, ``<split>/``, ``test_targets_bop19.json``).
        train_sets: per fold, the image ids stage 2 trains on (every other frame is held out), or
            :class:`Fold` objects (e.g. :func:`viewpoint_folds`).
        seeds: stage-2 seeds (batches, augmentation, pair jitter; the synthetic crops stay stage 1's).
        work: folder of the runs.
        variants: subset of :data:`VARIANTS`.
        overrides: ``KEY=VALUE`` config changes for every variant (e.g. ``data.cache_dir=...``).
        on_run_done: called with each run's result (e.g. to write the report so far).
    """
    from tqdm import tqdm

    from featmap_ros.checkpoint import load_checkpoint
    from featmap_ros.estimators import ObjectPoseEstimator
    from featmap_ros.training import prepare
    from featmap_ros.training.config import TrainConfig
    from featmap_ros.training.loop import train

    stage1, root, work = Path(stage1), Path(dataset_root), Path(work)
    for v in variants:
        if v not in VARIANTS:
            raise InputError(f"--variants: {v!r} is not one of {', '.join(VARIANTS)}")
    ck = load_checkpoint(stage1, task="object")
    base = ck.get("config")
    if not base:
        raise InputError(f"{stage1}: no training config in the checkpoint (an exported copy? give the run's last.pt)")
    base_cfg = from_dict(TrainConfig, base, f"{stage1}: config")
    if int(ck["step"]) != base_cfg.steps_stage1:
        raise InputError(f"{stage1}: step {ck['step']} is not the end of stage 1 (steps_stage1 = {base_cfg.steps_stage1}); "
                         "train it with --stop-after steps_stage1")
    render_seed = base_cfg.seed if base_cfg.data.render_seed < 0 else base_cfg.data.render_seed
    del ck
    if train_sets and all(isinstance(f, Fold) for f in train_sets):
        folds = list(train_sets)
    else:
        folds = make_folds(train_sets, frames_with_images(root, split))
    targets = root / "test_targets_bop19.json"
    results: dict[tuple[int, int, str], list[dict]] = {}
    runs_meta = []
    plan = [(s, k, v) for s in seeds for k in range(len(folds)) for v in variants]
    for seed, k, variant in tqdm(plan, desc="real splits", disable=not progress, dynamic_ncols=True):
        fold = folds[k]
        out = work / run_name(k, seed, variant)
        res_path = out / f"result_fold{k}.json"
        if res_path.is_file():
            res = json.loads(res_path.read_text())
        else:
            cfg_dict = apply_overrides(to_dict(base_cfg), variant_overrides(variant, root, split, fold, seed, render_seed), overrides)
            cfg = from_dict(TrainConfig, cfg_dict, f"{out}: config")
            out.mkdir(parents=True, exist_ok=True)
            if not (out / "last.pt").exists():
                shutil.copyfile(stage1, out / "last.pt")
            t0 = time.perf_counter()
            data = prepare.prepare(cfg, out, progress=progress)
            if data.pairs is None:
                cfg.mapping = False
            result = train(cfg, data.synthetic, data.pairs, out, meta=data.meta, resume=True, progress=progress)
            times = out / "train_seconds.json"  # kept apart: a run shared by folds (synthetic_only) trains once
            if not times.is_file():
                atomic.write_json(times, {"seconds": time.perf_counter() - t0})
            train_s = float(json.loads(times.read_text())["seconds"])
            est = ObjectPoseEstimator.from_checkpoint(result.checkpoint, device="cpu")
            t1 = time.perf_counter()
            inst, ests = score_frames(est, root, split, fold.test, progress=progress)
            write_bop_results(out / "estimates.csv", ests)
            bop_report = None
            if targets.is_file():
                tf = filtered_targets(targets, fold.test, out / "targets_held_out.json")
                r = evaluate_bop(out / "estimates.csv", root, cfg.data.dataset, targets_path=tf, split=split)
                bop_report = {k2: r[k2] for k2 in ("targets", "AR_MSSD", "AR_MSPD", "AR", "ADD_10", "proj_5px")}
            res = {"fold": k, "seed": seed, "variant": variant, "train_frames": list(fold.train), "test_frames": list(fold.test),
                   "train_seconds": train_s, "eval_seconds": time.perf_counter() - t1, "summary": summarise(inst), "bop": bop_report,
                   "instances": inst}
            atomic.write_json(res_path, res)
        results[(k, seed, variant)] = res["instances"]
        runs_meta.append({key: res[key] for key in ("fold", "seed", "variant", "train_seconds", "eval_seconds", "summary", "bop")})
        if on_run_done is not None:
            on_run_done(res)
    report = {"stage1": str(stage1), "dataset_root": str(root), "split": split,
              "folds": [{"train": list(f.train), "test": list(f.test)} for f in folds],
              "fold_min_gap_deg": [round(g, 1) for g in fold_gaps_deg(root, split, folds)], "seeds": list(seeds),
              "variants": list(variants), "overrides": list(overrides), "runs": runs_meta}
    report.update(aggregate(results, variants))
    return report


def _fmt(v: float, metric: str) -> str:
    if not math.isfinite(v):
        return "n/a"
    if metric in ("proj2d_5px", "add_10"):
        return f"{100 * v:.1f} %"
    if metric == "corner_px":
        return f"{v:.1f} px"
    return f"{v:.3f}"


LABELS = {"proj2d_5px": "2D proj <= 5 px", "add_10": "ADD(-S) <= 10 %", "corner_px": "mean corner error",
          "ar_mspd": "AR_MSPD", "ar_mssd": "AR_MSSD"}


def format_markdown(report: dict) -> str:
    """The report as a Markdown table (pooled held-out instances) and the paired comparisons."""
    folds = "; ".join(f"train {f['train']} -> score {f['test']}" for f in report["folds"])
    lines = [f"Held-out real frames ({folds}), seeds {report['seeds']}, from {report['stage1']}:", "",
             "| stage 2 | runs | instances | " + " | ".join(LABELS[m] for m in METRICS) + " | BOP AR_MSPD / AR_MSSD (mean of runs) | stage-2 s (mean, with its pairs) |",
             "|---" * (len(METRICS) + 5) + "|"]
    for v, d in report["variants"].items():
        p = d["pooled"]
        runs = [r for r in report["runs"] if r["variant"] == v]
        bops = [r["bop"] for r in runs if r.get("bop")]
        bop = (f"{np.mean([b['AR_MSPD'] for b in bops]):.3f} / {np.mean([b['AR_MSSD'] for b in bops]):.3f}" if bops else "n/a")
        lines.append(f"| {v} | {len(runs)} | {p['instances']} | " + " | ".join(_fmt(p[m], m) for m in METRICS)
                     + f" | {bop} | {np.mean([r['train_seconds'] for r in runs]):.0f} |")
    if report["comparisons"]:
        lines += ["", "Paired differences over held-out instances (each averaged over seeds), 95 % paired bootstrap:", ""]
        for c in report["comparisons"]:
            sign = "lower is better" if c["metric"] == "corner_px" else "higher is better"
            lines.append(f"- {c['a']} - {c['b']}, {LABELS[c['metric']]} ({sign}): {_fmt_diff(c['difference'], c['metric'])} "
                         f"[{_fmt_diff(c['ci95'][0], c['metric'])} .. {_fmt_diff(c['ci95'][1], c['metric'])}], {c['items']} instances")
    return "\n".join(lines)


def _fmt_diff(v: float, metric: str) -> str:
    if metric in ("proj2d_5px", "add_10"):
        return f"{100 * v:+.1f} pt"
    if metric == "corner_px":
        return f"{v:+.1f} px"
    return f"{v:+.3f}"
