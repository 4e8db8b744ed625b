"""``featmap bench hand-centre``: run-time hand centre error, localiser alone vs learned refinement."""
from __future__ import annotations

from featmap_ros import atomic
from featmap_ros.evaluation.bench import run_hand_centre_bench


def register(sub) -> None:
    p = sub.add_parser("hand-centre", help="hand centre error on real-like frames: unrefined vs refined (mm)")
    p.add_argument("--weights", default=None, help="hand-centre weights (default: the bundled featmap_ros/weights/hand_centre.pt)")
    p.add_argument("--frames", type=int, default=300, help="real-like frames")
    p.add_argument("--seed", type=int, default=1, help="their seed (the weights' training seeds are refused)")
    p.add_argument("--iterations", type=int, default=3, help="refinement rounds")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.set_defaults(func=run)


def run(args) -> int:

    r = run_hand_centre_bench(args.frames, args.seed, args.weights, args.iterations)
    print(f"frames {r['frames']} (seed {r['seed']}), found {r['found']}, {r['iterations']} refinement rounds")
    print(f"{'':10s} {'mean mm':>8s} {'median':>8s} {'p90':>8s} {'<=15mm':>7s} {'<=25mm':>7s}")
    for part in ("unrefined", "refined"):
        s = r[part]
        print(f"{part:10s} {s['mean_error_mm']:8.1f} {s['median_error_mm']:8.1f} {s['p90_error_mm']:8.1f} {s['within_15mm']:7.3f} {s['within_25mm']:7.3f}")
    if args.json:
        atomic.write_json(args.json, r)
        print(f"wrote {args.json}")
    return 0
