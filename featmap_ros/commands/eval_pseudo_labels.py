"""``featmap eval pseudo-labels --checkpoint ADAPTED.pt --dataset-root BOP_ROOT``: the precision of
``featmap train adapt``'s pseudo-labels per round, where the frames it adapted on have ground
truth (:mod:`featmap_ros.evaluation.pseudo_labels`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from featmap_ros import atomic
from featmap_ros.checkpoint import adaptation_of, load_checkpoint
from featmap_ros.errors import InputError
from featmap_ros.evaluation.pseudo_labels import precision_by_round


def register(sub) -> None:
    p = sub.add_parser("pseudo-labels", help="precision of an adapted checkpoint's pseudo-labels per round, against ground truth")
    p.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint written by featmap train adapt")
    p.add_argument("--dataset-root", required=True, type=Path, help="the same frames as a BOP folder with ground truth (scene_gt.json)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rec = adaptation_of(load_checkpoint(args.checkpoint, task="object"), str(args.checkpoint))
    if rec is None:
        raise InputError(f"--checkpoint: {args.checkpoint} has no adaptation record (not written by featmap train adapt)")
    rows = precision_by_round(rec, args.dataset_root)
    for r in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
    if args.json is not None:
        atomic.write_json(args.json, {"checkpoint": str(args.checkpoint), "frames": rec.frames, "rounds": rows})
    return 0
