"""``featmap bench render``: rendering and cropping speed, printed and written as JSON."""
from __future__ import annotations

import platform

from featmap_ros import atomic
from featmap_ros.evaluation.bench import run_hand_render_bench
from featmap_ros.evaluation.render_bench import run_object_render_bench


def register(sub) -> None:
    p = sub.add_parser("render", help="renders per second: object crops, full frames, hand depth, depth crops")
    p.add_argument("--seconds", type=float, default=5.0, help="time spent on each measurement")
    p.add_argument("--size", type=int, default=128, help="object crop side, pixels")
    p.add_argument("--only", choices=("object", "hand"), default=None, help="run one half only")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.set_defaults(func=run)


def run(args) -> int:
    report: dict = {"machine": platform.processor() or platform.machine(), "seconds_per_measurement": args.seconds}
    if args.only in (None, "object"):

        report["object"] = run_object_render_bench(seconds=args.seconds, size=args.size)
    if args.only in (None, "hand"):

        report["hand"] = run_hand_render_bench(seconds=args.seconds)
    for part in ("object", "hand"):
        if part in report:
            print(f"[{part}]")
            for k, v in report[part].items():
                print(f"  {k:32s} {v:.1f}" if isinstance(v, float) else f"  {k:32s} {v}")
    if args.json:
        atomic.write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0
