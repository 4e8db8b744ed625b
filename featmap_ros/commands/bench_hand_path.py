"""``featmap bench hand-path``: the hand estimator's time per frame and its stages (localiser,
learned centre refinement, the rest: crop, f, g, h), on real-like depth frames."""
from __future__ import annotations

import os

from featmap_ros import atomic, checkpoint
from featmap_ros.estimators import HandPoseEstimator
from featmap_ros.evaluation.bench import run_hand_path_bench
from featmap_ros.onnx_export import DEFAULT_RUNTIME, RUNTIMES


def register(sub) -> None:
    p = sub.add_parser("hand-path", help="hand estimator time per frame by stage (localiser, centre refinement, crop + f, g, h)")
    p.add_argument("--checkpoint", default=None, help="hand checkpoint (default: the bundled demo weights)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=RUNTIMES,
                   help="what runs f, g, h and the centre refiner (onnxruntime: exported to ONNX)")
    p.add_argument("--frames", type=int, default=30, help="real-like 640x480 frames")
    p.add_argument("--rounds", type=int, default=3, help="passes over the frames")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the figures here")
    p.set_defaults(func=run)


def run(args) -> int:
    est = HandPoseEstimator.from_checkpoint(args.checkpoint or checkpoint.bundled_weights("hand"), device=args.device, runtime=args.runtime)
    r = run_hand_path_bench(est, args.frames, args.seed, args.rounds)
    print(f"hand estimator, {r['frames']} real-like frames x {r['rounds']} rounds (seed {r['seed']}, hand found in "
          f"{r['found']}), device {est.device}, runtime {est.runtime}, torch threads {r['torch_threads']}")
    print(f"{'':24s} {'wall ms':>24s} {'CPU ms (process)':>24s}")
    print(f"{'':24s} " + " ".join(f"{h:>7s}" for h in ("p50", "p95", "mean") * 2))
    for key, name in (("localise", "localise_hand"), ("refine", "centre refinement"),
                      ("crop_and_network", "crop, f, g, h"), ("estimate", "whole estimate()")):
        w, c = r[f"{key}_ms"], r[f"{key}_cpu_ms"]
        print(f"{name:24s} " + " ".join(f"{x[q]:7.2f}" for x in (w, c) for q in ("p50", "p95", "mean")))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (1 min)")
    if args.json:
        atomic.write_json(args.json, {**r, "runtime": est.runtime, "device": str(est.device)})
        print(f"wrote {args.json}")
    return 0
