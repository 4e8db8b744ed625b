"""How good were the pseudo-labels of ``featmap train adapt``? (``featmap eval pseudo-labels``)

The adaptation chooses what it keeps without ground truth; where ground truth exists (real-like
data, the shared LM-O frames) this scores each round's estimates afterwards: per round, the
estimates and the kept ones, and among the kept ones (the *precision*) and among all (what the
score selects from) the share with ADD(-S) <= 10 % of the diameter and with the 2D projection
error <= 5 px (the thresholds of :mod:`featmap_ros.evaluation.metrics`). An estimate is matched to
the ground-truth instance of its object in its frame with the smallest ADD(-S); a frame or
object with no ground truth counts as wrong (a false detection).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from featmap_ros.checkpoint import AdaptationRecord, PseudoLabelRecord
from featmap_ros.data import bop
from featmap_ros.errors import InputError
from featmap_ros.evaluation import metrics
from featmap_ros.evaluation.records import add_points_m


def label_errors(labels: Sequence[PseudoLabelRecord], root: str | Path, split: str = "test") -> list[tuple[float, float]]:
    """(ADD(-S) / diameter, 2D projection error px) of each label against the ground truth of the
    BOP folder ``root`` (inf, inf when its frame has no instance of its object).

    Raises:
        InputError: a label whose scene or frame the folder does not have (naming it).
    """
    root = Path(root)
    infos = bop.load_models_info(root / "models" / "models_info.json")
    frames = {}
    for sdir in bop.list_scenes(root / split):
        for f in bop.read_scene(sdir, infos):
            frames[(f.scene_id, f.im_id)] = f
    points: dict[int, np.ndarray] = {}
    out = []
    for lab in labels:
        f = frames.get((lab.scene_id, lab.im_id))
        if f is None:
            raise InputError(f"{root / split}: no frame scene {lab.scene_id} im_id {lab.im_id} (the pseudo-label's frame); "
                             "score against the folder the checkpoint was adapted on")
        gts = f.instances_of(lab.obj_id)
        if not gts:
            out.append((float("inf"), float("inf")))
            continue
        if lab.obj_id not in points:
            points[lab.obj_id] = add_points_m(root, lab.obj_id)
        pts = points[lab.obj_id]
        info = infos[lab.obj_id]
        R = np.asarray(lab.R_m2c, np.float64).reshape(3, 3)
        t = np.asarray(lab.t_m2c_m, np.float64).reshape(3)
        err = metrics.adds_error if info.is_symmetric else metrics.add_error
        best = min(gts, key=lambda g: err(R, t, g.R_m2c, g.t_m2c_m, pts))
        out.append((err(R, t, best.R_m2c, best.t_m2c_m, pts) / info.diameter_m,
                    metrics.proj2d_error(R, t, best.R_m2c, best.t_m2c_m, f.K, pts)))
    return out


def precision_by_round(record: AdaptationRecord, root: str | Path) -> list[dict]:
    """Per round: estimates, kept, and the ADD <= 10 % / 2D <= 5 px shares among the kept ones
    (``precision_*``) and among all estimates (``all_*``); NaN where there are none."""
    rows = []
    for r in record.rounds:
        errs = np.array(label_errors(r.labels, root, record.split), dtype=np.float64).reshape(-1, 2)
        kept = np.array([lab.kept for lab in r.labels], bool)

        def share(sel: np.ndarray, col: int, thr: float) -> float:
            return float(np.mean(errs[sel, col] <= thr)) if sel.any() else float("nan")

        every = np.ones(len(kept), bool)
        rows.append({"round": r.round, "frames": r.frames, "estimates": r.estimates, "kept": r.kept,
                     "precision_add10": share(kept, 0, metrics.ADD_FRACTION), "precision_proj5px": share(kept, 1, metrics.PROJ2D_PX),
                     "all_add10": share(every, 0, metrics.ADD_FRACTION), "all_proj5px": share(every, 1, metrics.PROJ2D_PX),
                     "kept_median_proj_px": float(np.median(errs[kept, 1])) if kept.any() else float("nan"),
                     "all_median_proj_px": float(np.median(errs[:, 1])) if len(errs) else float("nan")})
    return rows
