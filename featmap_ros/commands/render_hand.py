"""``featmap render hand``: synthetic / real-like hand depth pairs in NYU's own format.

``featmap render hand --count N --out DIR [--split train|test] [--seed S]`` writes
``DIR/<split>/depth_1_0000001.png`` (real-like: the sensor model over a scene with arm, body,
wall and clutter), ``synthdepth_1_0000001.png`` (clean synthetic render of the same hand at the
same pose) and ``joint_data.mat`` (36 joints, NYU's y-up mm), exactly as NYU lays them out, so
:class:`featmap_ros.data.nyu.NyuDataset` reads them like the real dataset. The split folder
appears only when complete. ``DIR/<split>_preview.png`` shows the first pairs with their
skeletons.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from featmap_ros.data.nyu import nyu_K
from featmap_ros.draw.images import write_png
from featmap_ros.draw.skeleton import hand_overlay
from featmap_ros.render.depth_sensor import HAND_DOMAINS, write_hand_dataset
from featmap_ros.render.hand_pose_fit import BUNDLED_TABLE, fit_icvl_file, write_table


def register(sub) -> None:
    p = sub.add_parser("hand", help="render hand depth pairs (real-like + synthetic) in NYU's format")
    p.add_argument("--count", type=int, required=True, help="number of frames")
    p.add_argument("--out", type=Path, required=True, help="output folder (gets <split>/ inside)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--seed", type=int, default=0, help="random seed (frames are reproducible)")
    p.add_argument("--domain", choices=sorted(HAND_DOMAINS), default="v1",
                   help="v1: the first real-like domain (capsule hand, base poses); kinect: anatomic hand, poses fitted to ICVL "
                        "sequence B, Kinect v1 sensor, sleeves (training); kinect_hard: other proportions, ICVL sequence A poses, "
                        "sleeve and forearm in most frames (the harder test)")
    p.add_argument("--no-preview", action="store_true", help="skip <split>_preview.png")
    p.set_defaults(func=run)
    q = sub.add_parser("hand-poses", help="fit the hand's joint angles to ICVL labels (inverse kinematics): the pose table training draws from")
    q.add_argument("--icvl", type=Path, required=True, help="ICVL label file (icvl_test_groundtruth_label.txt: 16 joints x u, v, d per line)")
    q.add_argument("--out", type=Path, default=BUNDLED_TABLE, help="table to write (.npz, atomically); default: the bundled one")
    q.add_argument("--max-frames", type=int, default=0, help="fit only the first N frames (0 = all)")
    q.set_defaults(func=run_poses)


def run_poses(args: argparse.Namespace) -> int:
    """``featmap render hand-poses``: the bundled table (about 3 minutes on one thread for ICVL's 1596 frames)."""
    table = fit_icvl_file(args.icvl, max_frames=args.max_frames)
    write_table(table, args.out)
    e = table["direction_error_deg"]
    print(f"fitted {len(e)} frames: bone-direction error median {np.median(e):.1f} deg, p90 {np.percentile(e, 90):.1f} deg")
    print(f"wrote {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:

    previews = write_hand_dataset(args.out, args.count, args.seed, args.split, previews=0 if args.no_preview else 8, domain=args.domain)
    print(f"wrote {args.count} frames to {Path(args.out) / args.split}")
    if previews:
        _write_preview(Path(args.out) / f"{args.split}_preview.png", previews, nyu_K())
    return 0


def _write_preview(path: Path, previews: list, K: np.ndarray) -> None:

    tiles = []
    for real_m, synth_m, J in previews:
        c = J[13]
        a = hand_overlay(real_m, K, gt_c_m=J, crop_to=c)
        b = hand_overlay(synth_m, K, gt_c_m=J, crop_to=c)
        a = cv2.resize(a, (200, 200), interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, (200, 200), interpolation=cv2.INTER_AREA)
        tiles.append(np.concatenate([a, b], axis=0))
    write_png(path, np.concatenate(tiles, axis=1))
    print(f"wrote {path} (top: real-like depth_1, bottom: synthdepth_1; green: ground-truth skeleton)")
