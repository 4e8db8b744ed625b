"""``featmap bag bop|nyu DATASET_ROOT --out BAG``: a dataset as a rosbag2 bag (no ROS needed).

    featmap bag bop /data/bop/lm --out lm_scene2.bag --scene 2 --range 0:500 --storage mcap
    featmap bag nyu /data/nyu --out nyu_test --split test --distro humble

The bag holds what ``dataset_player_node`` publishes (see :mod:`featmap_ros.ros.bag`), so
``ros2 bag play BAG --clock`` can replace the player in ``linemod.launch.py``/``nyu.launch.py``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from featmap_ros.data import player
from featmap_ros.errors import InputError
from featmap_ros.ros.bag import write_bag


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{name}: expected comma-separated integers, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser("bag", help="convert a BOP or NYU dataset into a rosbag2 bag (sqlite3 or mcap)")
    kinds = p.add_subparsers(dest="bag_kind", metavar="DATASET")
    kinds.required = True
    for kind, helptext in (("bop", "a BOP dataset (LINEMOD, LM-O, generated)"), ("nyu", "an NYU-layout hand dataset")):
        k = kinds.add_parser(kind, help=helptext)
        k.add_argument("dataset_root", type=Path, help="dataset folder")
        k.add_argument("--out", type=Path, required=True, help="bag folder to create (replaced only by a complete bag)")
        k.add_argument("--split", default="test", help="split folder (default test)")
        k.add_argument("--range", dest="frame_range", default=None, metavar="A:B",
                       help="frame positions A (inclusive) to B (exclusive) after the scene/object selection")
        k.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
        k.add_argument("--distro", choices=("humble", "jazzy"), default="jazzy",
                       help="metadata for this ROS 2 distro's ros2 bag (humble: version 8, jazzy: version 9)")
        k.add_argument("--rate", type=float, default=30.0, help="stamp spacing, frames per second (default 30)")
        if kind == "bop":
            k.add_argument("--scene", default=None, help="scene ids, comma-separated (default all)")
            k.add_argument("--object", default=None, help="obj_ids whose ground truth is written, comma-separated; "
                                                         "frames without them are skipped (default all)")
            k.add_argument("--dataset", default="lm", help="dataset spec for object names (default lm)")
            k.add_argument("--no-depth", action="store_true", help="leave the depth images out")
            k.add_argument("--strict", action="store_true", help="a frame listed in scene_camera.json without its image is "
                                                                "an error (default: skipped with a warning)")
        else:
            k.add_argument("--synthetic", action="store_true", help="write synthdepth_* instead of the real depth_*")
        k.add_argument("--no-progress", action="store_true")
        k.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    if args.bag_kind == "nyu":
        src = player.NyuSource(args.dataset_root, args.split, synthetic=args.synthetic)
    else:
        scenes = _ints(args.scene, "--scene") if args.scene else None
        objects = _ints(args.object, "--object") if args.object else None
        src = player.BopSource(args.dataset_root, args.split, scenes, objects, args.dataset, depth=not args.no_depth,
                               strict=args.strict)
    positions = player.parse_range(args.frame_range, len(src))
    s = write_bag(src, positions, args.out, args.storage, args.distro, step_ns=player.period_ns(args.rate),
                  progress=not args.no_progress,
                  custom_data={"featmap_ros.dataset_root": str(Path(args.dataset_root).resolve()), "featmap_ros.kind": args.bag_kind,
                               "featmap_ros.split": args.split, "featmap_ros.range": args.frame_range or ":"})
    print(f"wrote {s.path} ({s.storage}, rosbag2 metadata version {s.version} for {s.distro}): {s.frames} frames")
    for topic, n in s.messages.items():
        print(f"  {topic:32s} {n:7d} messages")
    return 0
