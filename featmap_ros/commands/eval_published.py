"""``featmap eval hands`` and ``featmap eval bop``: scoring published predictions and BOP results.

- hands: published (u, v, d) prediction files against their ground truth (NYU, ICVL, MSRA);
- bop: a BOP-19 results CSV against a BOP dataset folder (LINEMOD, LINEMOD-Occluded).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from featmap_ros import metrics
from featmap_ros.atomic import write_json
from featmap_ros.data import hand_predictions
from featmap_ros.data.specs import HAND_DATASETS, hand_dataset

#: Thresholds (mm) of the curve reported in tables and JSON.
HAND_TABLE_THRESHOLDS_MM = tuple(range(0, 81, 10))


def register(sub) -> None:
    p = sub.add_parser(
        "hands",
        help="score published hand predictions (u v d per joint, one frame per line)",
        description="Mean 3D joint error, per joint, per subject, and the fraction of frames whose "
        "maximum joint error is within D mm, from files in the published format.",
    )
    p.add_argument("pred", type=Path, help="predictions: one frame per line, J x (u v d), d in mm")
    p.add_argument("gt", type=Path, help="ground truth in the same format")
    p.add_argument("--dataset", required=True, choices=sorted(HAND_DATASETS), help="intrinsics and joints")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the metrics as JSON")
    p.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="write the curve as a PNG")
    p.set_defaults(func=run_hands)

    b = sub.add_parser(
        "bop",
        help="score a BOP-19 results CSV (MSSD/MSPD average recall, ADD(-S), 2D projection)",
        description="Scores pose estimates in the BOP-19 CSV format (scene_id,im_id,obj_id,score,R,t,time) "
        "against a BOP dataset folder, with the BOP-19 target selection and greedy matching.",
    )
    b.add_argument("results", type=Path, help="BOP-19 CSV: scene_id,im_id,obj_id,score,R,t,time (R row-major, t in mm)")
    b.add_argument("--dataset-root", type=Path, required=True, help="BOP dataset folder (models_eval/ or models/, test/)")
    b.add_argument("--dataset", required=True, choices=["lm", "lmo"], help="BOP dataset name")
    b.add_argument("--targets", type=Path, default=None, help="targets file (default: DIR/test_targets_bop19.json)")
    b.add_argument("--split", default="test", help="split folder under the dataset root (default: test)")
    b.add_argument(
        "--visib-gt-min", type=float, default=-1.0,
        help="ground truth with visib_fract below this is not a target; -1 (default, the toolkit's): "
        "the inst_count most visible instances of each target are",
    )
    b.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the scores as JSON")
    b.set_defaults(func=run_bop)


# --------------------------------------------------------------------------------------------
# hands
# --------------------------------------------------------------------------------------------

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


def run_hands(args: argparse.Namespace) -> int:
    report = evaluate_hands(args.pred, args.gt, args.dataset)
    print(format_hand_table(report))
    if args.json is not None:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    if args.plot is not None:
        curve = report["max_frame_curve"]
        metrics.plot_max_frame_curves(
            {f"{Path(args.pred).stem} ({report['mean_mm']:.2f} mm)": (np.array(curve["thresholds_mm"]), np.array(curve["fraction"]))},
            args.plot,
            title=f"{report['dataset'].upper()}: {report['frames']} frames",
        )
        print(f"wrote {args.plot}")
    return 0


def run_bop(args: argparse.Namespace) -> int:
    raise NotImplementedError
