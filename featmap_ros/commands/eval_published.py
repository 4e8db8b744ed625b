"""``featmap eval hands`` and ``featmap eval bop``: scoring published predictions and BOP results.

- hands: published (u, v, d) prediction files against their ground truth (NYU, ICVL, MSRA);
- bop: a BOP-19 results CSV against a BOP dataset folder (LINEMOD, LINEMOD-Occluded).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from featmap_ros.atomic import write_json
from featmap_ros.data.specs import HAND_DATASETS, OBJECT_DATASETS
from featmap_ros.evaluation import plots
from featmap_ros.evaluation.published import evaluate_bop, evaluate_hands, format_bop_table, format_hand_table


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
    p.add_argument("--compare", type=Path, nargs="+", default=[], metavar="PRED2",
                   help="more prediction files, scored against the same GT and drawn on the same plot")
    p.set_defaults(func=run_hands)

    b = sub.add_parser(
        "bop",
        help="score a BOP-19 results CSV (MSSD/MSPD average recall, ADD(-S), 2D projection)",
        description="Scores pose estimates in the BOP-19 CSV format (scene_id,im_id,obj_id,score,R,t,time) "
        "against a BOP dataset folder, with the BOP-19 target selection and greedy matching.",
    )
    b.add_argument("results", type=Path, help="BOP-19 CSV: scene_id,im_id,obj_id,score,R,t,time (R row-major, t in mm)")
    b.add_argument("--dataset-root", type=Path, required=True, help="BOP dataset folder (models_eval/ or models/, test/)")
    b.add_argument("--dataset", required=True, choices=sorted(OBJECT_DATASETS), help="BOP dataset name")
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


def run_hands(args: argparse.Namespace) -> int:
    report = evaluate_hands(args.pred, args.gt, args.dataset)
    others = [evaluate_hands(p, args.gt, args.dataset) for p in args.compare]
    print(format_hand_table(report))
    for other in others:
        print(f"{other['pred']}: mean {other['mean_mm']:.3f} mm, "
              f"{100 * other['max_frame_fraction']['20']:.1f}% of frames within 20 mm")
    if others:
        report["compare"] = [
            {k: o[k] for k in ("pred", "mean_mm", "per_joint_mm", "max_frame_fraction", "per_subject_mm")} for o in others
        ]
    if args.json is not None:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    if args.plot is not None:
        curves = {}
        for r in [report, *others]:
            c = r["max_frame_curve"]
            curves[f"{Path(r['pred']).stem} ({r['mean_mm']:.2f} mm)"] = (np.array(c["thresholds_mm"]), np.array(c["fraction"]))
        plots.plot_max_frame_curves(curves, args.plot, title=f"{report['dataset'].upper()}: {report['frames']} frames")
        print(f"wrote {args.plot}")
    return 0


# --------------------------------------------------------------------------------------------
# bop
# --------------------------------------------------------------------------------------------


def run_bop(args: argparse.Namespace) -> int:
    report = evaluate_bop(args.results, args.dataset_root, args.dataset, args.targets, args.split, args.visib_gt_min)
    print(format_bop_table(report))
    if args.json is not None:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0
