"""``featmap eval object`` and ``featmap eval hand``: a trained checkpoint over a dataset folder.

- ``featmap eval object --checkpoint CK --dataset-root BOP_ROOT [--split test] [--boxes gt|localiser]``:
  every ground-truth instance of an object the model knows, cropped in its ground-truth window
  (the training window: the square around the projected 3D box of the ground-truth pose,
  ``featmap_ros.crops.ground_truth_window``; the node's ``ground_truth`` ROI crops the same) or
  found by the built-in localiser; reports
  2D projection <= 5 px, ADD(-S) <= 10 % of the diameter, 5 cm 5 deg (the thresholds of evaluation.metrics) as JSON, the
  two accuracy curves as PNG, and overlays of the first frames.
- ``featmap eval hand --checkpoint CK --dataset-root NYU_LAYOUT [--split test]``: every frame,
  hand found by the estimator's localiser (or centred on the ground-truth palm with
  ``--gt-center``), mean joint error, per joint, the max-frame curve (JSON + PNG), overlays.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from featmap_ros import atomic
from featmap_ros.errors import InputError
from featmap_ros.estimators import HandPoseEstimator, ObjectPoseEstimator
from featmap_ros.evaluation import plots
from featmap_ros.evaluation.datasets import GOOD_WINDOW_CENTRE, GOOD_WINDOW_SIDE, evaluate_hand_dataset, evaluate_object_dataset
from featmap_ros.evaluation.published import write_bop_results


def register(sub) -> None:
    p = sub.add_parser("object", help="evaluate an object checkpoint on a BOP dataset (ADD, 2D projection, curves, overlays)")
    p.add_argument("--checkpoint", required=True, help="object checkpoint (.pt)")
    p.add_argument("--dataset-root", required=True, type=Path, help="BOP dataset folder (models/, <split>/)")
    p.add_argument("--split", default="test")
    p.add_argument("--boxes", choices=("gt", "localiser"), default="gt", help="crop windows: the ground-truth window (the training window of the ground-truth pose, as the node's ground_truth ROI), or the built-in localiser")
    p.add_argument("--max-frames", type=int, default=0, help="evaluate at most this many frames (0 = all)")
    p.add_argument("--im-ids", default=None, metavar="ID,ID,...",
                   help="score only these image ids (e.g. the frames held out from training); default: every frame with an image")
    p.add_argument("--overlays", type=int, default=8, help="overlay pictures to write")
    p.add_argument("--out", type=Path, default=Path("featmap_out/eval_object"))
    p.add_argument("--bop-csv", type=Path, default=None, metavar="OUT.csv",
                   help="also write every estimate as a BOP-19 results file (score it with featmap eval bop)")
    p.add_argument("--zoom-in", type=int, default=None, metavar="N",
                   help="zoom-in rounds after the first estimate (crop again at the estimated pose's training window); "
                        "default: the checkpoint head's (coords 1, bb8 0)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=run_object)

    h = sub.add_parser("hand", help="evaluate a hand checkpoint on an NYU-layout folder (mean mm, max-frame curve, overlays)")
    h.add_argument("--checkpoint", required=True)
    h.add_argument("--dataset-root", required=True, type=Path, help="folder with train/ and test/ in NYU layout")
    h.add_argument("--split", default="test")
    h.add_argument("--gt-center", action="store_true", help="centre crops on the ground-truth palm instead of localising the hand")
    h.add_argument("--max-frames", type=int, default=0)
    h.add_argument("--overlays", type=int, default=8)
    h.add_argument("--out", type=Path, default=Path("featmap_out/eval_hand"))
    h.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    h.set_defaults(func=run_hand)


def run_object(args: argparse.Namespace) -> int:

    if args.zoom_in is not None and args.zoom_in < 0:
        raise InputError(f"--zoom-in: rounds must be >= 0, got {args.zoom_in}")
    est = ObjectPoseEstimator.from_checkpoint(args.checkpoint, device=args.device, zoom_in=args.zoom_in)
    im_ids = None
    if args.im_ids is not None:
        from featmap_ros.evaluation.real_splits import parse_id_list

        im_ids = parse_id_list(args.im_ids, "--im-ids")
    res = evaluate_object_dataset(est, args.dataset_root, args.split, args.boxes, args.max_frames, args.out, args.overlays, im_ids=im_ids)
    s = res["summary"]
    report = {"checkpoint": str(args.checkpoint), "dataset_root": str(args.dataset_root), "split": args.split, "boxes": args.boxes,
              "im_ids": im_ids, "head": est.head, "zoom_in": est.zoom_in, "summary": s, "per_object": res["per_object"]}
    atomic.write_json(args.out / "object_metrics.json", report)
    if args.bop_csv is not None:
        write_bop_results(args.bop_csv, res["bop_estimates"])
        print(f"wrote {args.bop_csv} ({len(res['bop_estimates'])} estimates, BOP-19 format)")
    plots.plot_object_curves({Path(args.checkpoint).stem: s}, args.out / "object_curves.png", title=f"{args.dataset_root.name} {args.split}")
    print(f"instances {s['instances']}  2D proj <= 5 px {100 * s['proj2d_5px']:.1f} %  ADD(-S) <= 10 % {100 * s['add_10']:.1f} %  "
          f"5cm5deg {100 * s['5cm_5deg']:.1f} %  mean corner error {s['mean_corner_px']:.1f} px")
    if "localiser_windows" in s:
        lw = s["localiser_windows"]
        print(f"localiser windows: {100 * lw['good']:.1f} % good (centre within {GOOD_WINDOW_CENTRE:.2f} of the side, side within x{GOOD_WINDOW_SIDE}), "
              f"median centre error {lw['median_centre_error_of_side']:.3f} of the side, median side ratio {lw['median_side_ratio']:.2f}")
    for name, o in res["per_object"].items():
        print(f"  {name:16s} n={o['instances']:5d}  proj5 {100 * o['proj2d_5px']:5.1f} %  ADD10 {100 * o['add_10']:5.1f} %")
    print(f"wrote {args.out / 'object_metrics.json'}, {args.out / 'object_curves.png'}, {args.out / 'overlays'}/")
    return 0


def run_hand(args: argparse.Namespace) -> int:

    est = HandPoseEstimator.from_checkpoint(args.checkpoint, device=args.device)
    s = evaluate_hand_dataset(est, args.dataset_root, args.split, args.gt_center, args.max_frames, args.out, args.overlays)
    report = {"checkpoint": str(args.checkpoint), "dataset_root": str(args.dataset_root), "split": args.split, "gt_center": args.gt_center, "summary": s}
    atomic.write_json(args.out / "hand_metrics.json", report)
    c = s["max_frame_curve"]
    plots.plot_max_frame_curves({f"{Path(args.checkpoint).stem} ({s['mean_mm']:.1f} mm)": (np.array(c["thresholds_mm"]), np.array(c["fraction"]))},
                                  args.out / "hand_curve.png", title=f"{Path(args.dataset_root).name} {args.split}")
    print(f"frames {s['frames']}  mean joint error {s['mean_mm']:.2f} mm  max-frame <= 20 mm {100 * s['within_20mm']:.1f} %  "
          f"<= 40 mm {100 * s['within_40mm']:.1f} %  missed {s['missed']}")
    print(f"wrote {args.out / 'hand_metrics.json'}, {args.out / 'hand_curve.png'}, {args.out / 'overlays'}/")
    return 0
