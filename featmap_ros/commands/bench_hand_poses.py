"""``featmap bench hand-poses``: how close each hand domain's poses are to real (NYU test) poses."""
from __future__ import annotations

from pathlib import Path

from featmap_ros import atomic
from featmap_ros.evaluation.hand_poses import compare_pose_samplers
from featmap_ros.render.depth_sensor import HAND_DOMAINS


def register(sub) -> None:
    p = sub.add_parser("hand-poses", help="nearest-pose distance (mm, after similarity alignment) from NYU test poses to each hand domain's sampler")
    p.add_argument("--nyu-labels", type=Path, required=True, help="nyu_test_groundtruth_label.txt (14 joints x u, v, d per line); read to compare, never to fit")
    p.add_argument("--domains", nargs="+", default=sorted(HAND_DOMAINS), choices=sorted(HAND_DOMAINS))
    p.add_argument("--frames", type=int, default=400, help="NYU frames, evenly spaced")
    p.add_argument("--samples", type=int, default=2000, help="poses drawn from each sampler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.set_defaults(func=run)


def run(args) -> int:
    r = compare_pose_samplers(args.nyu_labels, list(args.domains), args.frames, args.samples, args.seed)
    print(f"{r['frames']} NYU test frames, {r['samples']} poses per sampler: distance to the nearest pose (mm)")
    print(f"{'sampler':24s} {'mean':>7s} {'median':>7s} {'p90':>7s}   finger curl W1 to NYU, deg (pinky ring middle index thumb; mean)")
    rows = [(f"domain {k}", v) for k, v in r["domains"].items()] + [("NYU subject 2 (floor)", r["nyu_other_subject"])]
    for name, s in rows:
        w = s["curl_w1_deg"]
        print(f"{name:24s} {s['mean_mm']:7.1f} {s['median_mm']:7.1f} {s['p90_mm']:7.1f}   " + " ".join(f"{x:5.1f}" for x in w) + f"; {sum(w) / len(w):5.1f}")
    if args.json:
        atomic.write_json(args.json, r)
        print(f"wrote {args.json}")
    return 0
