"""``featmap bench ...``: benchmarks that print what they measured (and write JSON).

Parts: bench_render.py (``render``), bench_node.py (``node``), bench_models.py (the paper's
comparisons, inference latency), bench_refine.py (``refine``: depth refinement, ``tracking``: the
pose filter).
"""
from featmap_ros.cli import register_parts


def register(sub) -> None:
    p = sub.add_parser("bench", help="speed and accuracy benchmarks")
    parts = p.add_subparsers(dest="bench_command", metavar="WHAT")
    parts.required = True
    register_parts(parts, "bench", ("bench_render", "bench_node", "bench_models", "bench_replay", "bench_hand_centre", "bench_hand_poses", "bench_refine", "bench_real_splits", "bench_hand_path", "bench_gpu", "bench_ros"))
