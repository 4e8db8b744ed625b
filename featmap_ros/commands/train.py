"""``featmap train object|hand|localiser|adapt|hand-centre``: train f, g, h (and the object localiser) from a config.

Examples::

    featmap train localiser --config config/lmo.yaml --checkpoint runs/lmo/last.pt data.models_root=<lmo>/models \
        data.real_root=<lmo> localiser_steps=1500

    featmap train object --config config/linemod.yaml data.models_root=/data/lm/models data.real_root=/data/lm
    featmap train object --config config/demo_object.yaml --mesh my_part.ply --mesh-units mm --out runs/my_part
    featmap train hand --config config/nyu.yaml data.real_root=/data/nyu --no-mapping --out runs/nyu_baseline

Writes ``OUT/last.pt`` (resumable: run the same command again to continue) and, for objects,
``OUT/object_node.yaml`` (``checkpoint``, ``object_names``, ``mesh``) for ``object_pose_node``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import yaml

from featmap_ros import atomic
from featmap_ros.checkpoint import export_checkpoint
from featmap_ros.config import load
from featmap_ros.errors import InputError
from featmap_ros.commands import train_adapt
from featmap_ros.training import localiser, prepare
from featmap_ros.training.config import TrainConfig
from featmap_ros.training import hand_centre
from featmap_ros.training.hand_centre import HandCentreTrainConfig
from featmap_ros.training.loop import train

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("train", help="train Feature Mapping networks (object: colour, BB8; hand: depth)")
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for task, default_cfg in (("object", "config/linemod.yaml"), ("hand", "config/nyu.yaml")):
        t = tasks.add_parser(task, help=f"train the {task} model")
        t.add_argument("--config", default=default_cfg, help=f"YAML training config (default {default_cfg})")
        t.add_argument("--out", type=Path, default=None, help="output folder (default runs/<task>)")
        t.add_argument("--no-mapping", action="store_true", help="the paper's baseline: f, h on real + synthetic, no g")
        t.add_argument("--real", default=None, help="real training frames: BOP dataset root (object) or NYU-layout folder (hand)")
        t.add_argument("--fresh", action="store_true", help="ignore an existing OUT/last.pt instead of resuming")
        t.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) at this step")
        t.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
        t.add_argument("--export", type=Path, default=None, help="also write a slim copy (weights, config, metadata; no optimiser) here")
        t.add_argument("--export-bundled", action="store_true",
                       help="with --export: the bundled weights' form (float16 weights, meshes by file name, no local paths)")
        if task == "object":
            t.add_argument("--mesh", default=None, help="your own object's mesh (.ply/.obj) instead of data.models_root")
            t.add_argument("--mesh-units", choices=("mm", "m"), default=None, help="unit of --mesh coordinates (default mm)")
            t.add_argument("--name", default=None, help="object name for --mesh (default: the file stem)")
        t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. steps_stage1=1000 model.backbone=resnet18")
        t.set_defaults(func=run)
    lo = tasks.add_parser("localiser", help="train the object localiser (full frame -> windows) for an existing object checkpoint")
    lo.add_argument("--config", default="config/lmo.yaml", help="YAML training config: its localiser, localiser_* and data sections (default config/lmo.yaml)")
    lo.add_argument("--checkpoint", type=Path, required=True, help="object checkpoint whose objects the localiser finds")
    lo.add_argument("--out", type=Path, default=None, help="write the checkpoint with its localiser here (default: replace --checkpoint, atomically)")
    lo.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    lo.add_argument("--copy-from", type=Path, default=None, metavar="CK",
                    help="no training: take the localiser of checkpoint CK as it is (same objects; a new pose network, same finder)")
    lo.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. localiser_steps=1500 data.real_root=<lmo>")
    lo.set_defaults(func=run_localiser)
    train_adapt.register(tasks)
    h = tasks.add_parser("hand-centre", help="train the learned hand-centre refinement on real-like depth frames")
    h.add_argument("--out", type=Path, required=True, help="weights file to write (atomically), e.g. featmap_ros/weights/hand_centre.pt")
    for f in dataclasses.fields(HandCentreTrainConfig):
        h.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default, help=f"(default {f.default})")
    h.set_defaults(func=run_hand_centre)


def run_hand_centre(args: argparse.Namespace) -> int:
    """``featmap train hand-centre``: the bundled ``hand_centre.pt`` (4-5 minutes on one CPU thread)."""

    tc = HandCentreTrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(HandCentreTrainConfig)})
    m = hand_centre.train(args.out, tc)
    print(json.dumps({k: v for k, v in m.items() if k != "validation"}, indent=1))
    if m["validation"]:
        print(f"validation (seed {tc.seed + 1}):")
        hand_centre.print_centre_stats(m["validation"])
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")
    return 0


def run_localiser(args: argparse.Namespace) -> int:
    """``featmap train localiser``: a localiser for the objects of ``--checkpoint`` (its
    ``meta.obj_ids``), meshes from ``data.models_root``, real frames from ``data.real_root``."""
    from featmap_ros.checkpoint import ObjectMeta, load_checkpoint, save_checkpoint

    if args.copy_from is not None:
        ck = load_checkpoint(args.checkpoint, task="object")
        src = load_checkpoint(args.copy_from, task="object")
        if src.get("localiser") is None:
            raise InputError(f"--copy-from: {args.copy_from} has no localiser")
        ids, src_ids = ck.get("meta", {}).get("obj_ids"), src.get("meta", {}).get("obj_ids")
        if ids != src_ids:
            raise InputError(f"--copy-from: {args.copy_from} localises objects {src_ids}, {args.checkpoint} estimates {ids}")
        ck["localiser"] = src["localiser"]
        save_checkpoint(args.out or args.checkpoint, ck)
        print(f"wrote {args.out or args.checkpoint} (localiser of {args.copy_from})")
        return 0
    cfg = load(TrainConfig, args.config, list(args.overrides))
    if cfg.localiser_steps <= 0:
        raise InputError(f"{args.config}: localiser_steps is {cfg.localiser_steps}; give the steps, e.g. localiser_steps=1500")
    if not Path(args.checkpoint).is_file():
        raise InputError(f"--checkpoint: {args.checkpoint}: file not found")
    meta = ObjectMeta.from_dict(load_checkpoint(args.checkpoint, task="object").get("meta", {}), f"{args.checkpoint}: meta")
    loc_data = localiser.localiser_inputs(cfg, obj_ids=list(meta.obj_ids))
    m = localiser.train_and_attach_localiser(cfg, loc_data, args.checkpoint, device=args.device, out=args.out)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}))
    print(f"wrote {args.out or args.checkpoint} (localiser of {list(meta.object_names)})")
    return 0


def run(args: argparse.Namespace) -> int:

    overrides = list(args.overrides)
    cfg = load(TrainConfig, args.config, overrides)
    if cfg.model.task != args.task:
        raise InputError(f"{args.config}: model.task is {cfg.model.task!r} but the command trains {args.task!r}")
    if args.no_mapping:
        cfg.mapping = False
    if args.real is not None:
        cfg.data.real_root = args.real
    mesh_name = None
    if args.task == "object" and args.mesh is not None:
        if not Path(args.mesh).is_file():
            raise InputError(f"--mesh: {args.mesh}: file not found")
        cfg.data.mesh = str(Path(args.mesh).resolve())
        if args.mesh_units:
            cfg.data.mesh_units = args.mesh_units
        mesh_name = args.name or Path(args.mesh).stem
    if args.export_bundled and args.export is None:
        raise InputError("--export-bundled: give the file to write with --export")
    out = args.out or Path("runs") / args.task
    if args.fresh and (out / "last.pt").exists():
        (out / "last.pt").unlink()
    data = prepare.prepare(cfg, out, object_name=mesh_name)
    if data.pairs is None and cfg.mapping:
        print("note: no real training frames (data.real_root / --real): stage 2 has no pairs, so no mapping g is trained; "
              "real images will go through f and h directly (see README, 'Your own object').")
        cfg.mapping = False
    result = train(cfg, data.synthetic, data.pairs, out, meta=data.meta, resume=not args.fresh, stop_after=args.stop_after,
                   validate=data.validate, device=args.device, pca_targets=data.pca_targets)
    if args.stop_after is not None and args.stop_after < cfg.steps_stage1 + cfg.steps_stage2:
        print(f"stopped at step {args.stop_after}; run the same command again to resume from {result.checkpoint}")
        return 0
    if args.task == "object" and cfg.localiser_steps > 0 and data.localiser is not None:
        m = localiser.train_and_attach_localiser(cfg, data.localiser, result.checkpoint, device=args.device,
                                                     real_frames=data.localiser.get("real_frames"))
        print(f"localiser trained (final loss {m['loss']:.4f})")
    final = result.metrics.get("final_validation")
    if final:
        print("validation:", {k: round(v, 4) for k, v in final.items() if isinstance(v, float)})
    print(f"checkpoint: {result.checkpoint}")
    if args.export is not None:

        export_checkpoint(result.checkpoint, args.export, bundled=args.export_bundled)
        print(f"exported {args.export}")
    if args.task == "object":
        node_cfg = {
            "checkpoint": str(Path(result.checkpoint).resolve()),
            "object_names": list(data.meta["object_names"]),
            "mesh": data.meta.get("mesh_paths", [""])[0] if data.meta.get("mesh_paths") else "",
        }
        atomic.write_text(out / "object_node.yaml", yaml.safe_dump(node_cfg, sort_keys=False))
        print(f"node config: {out / 'object_node.yaml'}")
    return 0
