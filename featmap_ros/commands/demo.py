"""``featmap demo``: the embedded default, with no download and no ROS.

It generates the project's own samples — real-like colour frames of the toy object (BOP layout)
and real-like depth frames of hands (NYU layout), from seeds never used in training — runs the
estimators with the weights bundled in ``featmap_ros/weights/`` (trained by this project on its
synthetic and real-like domains: see README, "The demo"), evaluates them, and writes overlays,
curves and a metrics summary to the output folder.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from featmap_ros import atomic
from featmap_ros.checkpoint import bundled_weights
from featmap_ros.data.nyu import NyuSplitWriter, nyu_K
from featmap_ros.data.specs import hand_dataset, object_dataset
from featmap_ros.estimators import HandPoseEstimator, ObjectPoseEstimator
from featmap_ros.evaluation import plots
from featmap_ros.evaluation.datasets import evaluate_hand_dataset, evaluate_object_dataset
from featmap_ros.render.depth_sensor import sample_pair
from featmap_ros.render.real_like import write_object_dataset
from featmap_ros.render.toy_object import make_toy_object

#: Seeds of the demo's test frames (training used other seeds).
OBJECT_SEED = 90210
HAND_SEED = 4242


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the embedded demo: toy object and hands through the bundled estimators, with metrics and pictures")
    p.add_argument("--out", type=Path, default=Path("featmap_out/demo"), help="output folder (default: ./featmap_out/demo)")
    p.add_argument("--object-frames", type=int, default=24, help="real-like object frames to generate and evaluate")
    p.add_argument("--hand-frames", type=int, default=40, help="real-like hand frames to generate and evaluate")
    p.add_argument("--overlays", type=int, default=8, help="overlay pictures per task")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--object-checkpoint", default=None, help="use this object checkpoint instead of the bundled one")
    p.add_argument("--hand-checkpoint", default=None, help="use this hand checkpoint instead of the bundled one")
    p.set_defaults(func=run)


def make_object_frames(out: Path, count: int, seed: int = OBJECT_SEED) -> Path:
    """Real-like frames of the toy object in the BOP layout (``out/test/000001``)."""

    mesh, info = make_toy_object(1)
    write_object_dataset(out, mesh, info, count, spec=object_dataset("lm"), domain="real-like", seed=seed, split="test", scene_id=1, progress=False)
    return out


def make_hand_frames(out: Path, count: int, seed: int = HAND_SEED) -> Path:
    """Real-like hand depth frames (with their synthetic twins) in the NYU layout (``out/test``)."""

    spec = hand_dataset("nyu")
    K = nyu_K()
    rng = np.random.default_rng([seed, 11])
    with NyuSplitWriter(out / "test", K) as w:
        for _ in range(count):
            hand, synth_m, real_m = sample_pair(rng, K, spec.width, spec.height)
            w.add(hand.joints_c_m(), depth_mm=real_m * 1000.0, synth_mm=synth_m * 1000.0)
    return out


def run(args: argparse.Namespace) -> int:

    out = Path(args.out)
    t0 = time.perf_counter()
    summary: dict = {"what": "featmap demo: the project's own real-like samples through the bundled Feature Mapping estimators"}

    # ---------------------------------------------------------------- objects
    ck_obj = Path(args.object_checkpoint) if args.object_checkpoint else bundled_weights("object")
    print(f"[object] generating {args.object_frames} real-like frames of the toy object ...", flush=True)
    data_obj = make_object_frames(out / "object_data", args.object_frames)
    est = ObjectPoseEstimator.from_checkpoint(ck_obj, device=args.device)
    est.warmup()
    runs = {}
    for boxes in ("gt", "localiser") if est.localiser is not None else ("gt",):
        t = time.perf_counter()
        res = evaluate_object_dataset(est, data_obj, "test", boxes, 0, out / "object" / f"boxes_{boxes}", args.overlays)
        res["summary"]["seconds_per_frame"] = (time.perf_counter() - t) / max(args.object_frames, 1)
        runs[boxes] = res["summary"]
    labels = {"gt": "crops in ground-truth windows", "localiser": "built-in localiser (no boxes)"}
    plots.plot_object_curves({labels[k]: v for k, v in runs.items()}, out / "object" / "object_curves.png",
                                  title="toy object, real-like frames (bundled weights)")
    summary["object"] = {"checkpoint": str(ck_obj), "frames": args.object_frames,
                         **{f"boxes_{k}": {m: v[m] for m in ("instances", "proj2d_5px", "add_10", "5cm_5deg", "median_proj2d_px", "mean_corner_px", "median_rot_deg", "median_trans_mm", "seconds_per_frame")} for k, v in runs.items()}}

    # ---------------------------------------------------------------- hands
    ck_hand = Path(args.hand_checkpoint) if args.hand_checkpoint else bundled_weights("hand")
    print(f"[hand] generating {args.hand_frames} real-like depth frames ...", flush=True)
    data_hand = make_hand_frames(out / "hand_data", args.hand_frames)
    hest = HandPoseEstimator.from_checkpoint(ck_hand, device=args.device)
    hest.warmup()
    t = time.perf_counter()
    hs = evaluate_hand_dataset(hest, data_hand, "test", False, 0, out / "hand", args.overlays)
    hs["seconds_per_frame"] = (time.perf_counter() - t) / max(args.hand_frames, 1)
    c = hs["max_frame_curve"]
    plots.plot_max_frame_curves({f"bundled weights ({hs['mean_mm']:.1f} mm)": (np.array(c["thresholds_mm"]), np.array(c["fraction"]))},
                                  out / "hand" / "hand_curve.png", title="hands, real-like depth (hand localised, then f, g, h)")
    summary["hand"] = {"checkpoint": str(ck_hand), "frames": args.hand_frames,
                       **{m: hs[m] for m in ("mean_mm", "within_20mm", "within_40mm", "missed", "seconds_per_frame")}}
    summary["seconds"] = time.perf_counter() - t0
    atomic.write_json(out / "summary.json", summary)

    print()
    print("featmap demo — real-like test frames the bundled networks never saw in training")
    for k, v in runs.items():
        print(f"  object ({labels[k]:30s}) {v['instances']:3d} instances: 2D projection <= 5 px {100 * v['proj2d_5px']:5.1f} %   "
              f"ADD <= 10 % {100 * v['add_10']:5.1f} %   median rotation error {v['median_rot_deg']:.1f} deg")
    print(f"  hand   (localised, {hs['frames']} frames)            mean joint error {hs['mean_mm']:.1f} mm   "
          f"all joints within 40 mm {100 * hs['within_40mm']:.1f} % of frames   missed {hs['missed']}")
    print(f"  took {summary['seconds']:.0f} s")
    print()
    print(f"results in {out.resolve()}/")
    print(f"  summary.json                         metrics summary")
    print(f"  object/object_curves.png             accuracy vs 2D projection / ADD threshold")
    print(f"  object/boxes_*/overlays/*.png        projected boxes (green: ground truth, blue: estimate)")
    print(f"  hand/hand_curve.png                  frames with every joint within D mm")
    print(f"  hand/overlays/*.png                  skeletons on the depth map (green: ground truth, blue: estimate)")
    return 0
