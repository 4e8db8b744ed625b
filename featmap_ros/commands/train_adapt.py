"""``featmap train adapt``: adapt a checkpoint's mapping g to a camera's own unlabelled frames.

Examples::

    featmap train adapt --checkpoint featmap_ros/weights/lmo.pt --frames my_frames --mesh-root <lmo>/models --out lmo_adapted.pt
    featmap train adapt --checkpoint lmo.pt --bag my_camera.bag --topic /camera/color/image_raw \\
        --mesh-root <lmo>/models --out lmo_adapted.pt --rounds 2 keep_fraction=0.4

The method and its scores: :mod:`featmap_ros.training.adapt`. The output loads like any object
checkpoint (``featmap eval object``, ``object_pose_node weights:=OUT.pt``) and records what it
was adapted on in ``ck["adaptation"]``; ``featmap eval pseudo-labels`` scores its pseudo-labels
where labels exist.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from featmap_ros.checkpoint import ObjectMeta, load_checkpoint, model_from_checkpoint, save_checkpoint
from featmap_ros.config import from_dict, load
from featmap_ros.errors import InputError
from featmap_ros.nets import LocaliserConfig, build_localiser
from featmap_ros.training.adapt import AdaptConfig, adapt, load_meshes, read_unlabelled_frames


def register(tasks) -> None:
    """Add ``adapt`` to the ``featmap train`` sub-commands."""
    a = tasks.add_parser("adapt", help="adapt g (the mapping) to a camera's own unlabelled frames: pseudo-pairs from confident estimates")
    a.add_argument("--checkpoint", type=Path, required=True, help="object checkpoint to adapt (e.g. featmap_ros/weights/lmo.pt)")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--frames", type=Path, help="BOP folder of unlabelled frames: <split>/<scene>/rgb/*.png, scene_camera.json, optional depth/ "
                                                 "(its scene_gt*.json and test_targets_bop19.json are never read)")
    src.add_argument("--bag", type=Path, help="rosbag2 of the camera (ros2 bag record of the node's image and camera_info topics)")
    a.add_argument("--topic", default="/camera/color/image_raw", help="with --bag: the image topic (default /camera/color/image_raw)")
    a.add_argument("--info-topic", default=None, help="with --bag: the camera_info topic (default: camera_info beside --topic)")
    a.add_argument("--depth-topic", default=None, help="with --bag: a registered depth topic (16UC1 mm or 32FC1 m), optional")
    a.add_argument("--every", type=int, default=1, help="with --bag: keep every n-th image (default 1)")
    a.add_argument("--mesh-root", type=Path, required=True, help="BOP models/ folder with the checkpoint's meshes (obj_XXXXXX.ply, models_info.json)")
    a.add_argument("--out", type=Path, required=True, help="the adapted checkpoint to write (atomically)")
    a.add_argument("--rounds", type=int, default=None, help="pseudo-label -> train rounds (default: config's rounds)")
    a.add_argument("--config", type=Path, default=None, help="YAML adaptation config (AdaptConfig fields; default: its typed defaults)")
    a.add_argument("--every-round", action="store_true", help="also write OUT_round<k>.pt after each round")
    a.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    a.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. keep_fraction=0.4 steps=300")
    a.set_defaults(func=run)


def _write(out: Path, ck: dict, model, record) -> None:
    payload = {k: v for k, v in ck.items() if k not in ("optimizer", "scaler", "rng", "weights_dtype")}
    payload["model"] = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    payload["config"] = {**(ck.get("config") or {}), "mapping": True}
    payload["adaptation"] = record.to_dict()
    save_checkpoint(out, payload)


def run(args: argparse.Namespace) -> int:
    cfg = load(AdaptConfig, args.config, list(args.overrides))
    if args.rounds is not None:
        cfg.rounds = int(args.rounds)
    cfg.check()
    ck = load_checkpoint(args.checkpoint, task="object")
    model = model_from_checkpoint(ck, str(args.checkpoint))
    meta = ObjectMeta.from_dict(ck.get("meta", {}), f"{args.checkpoint}: meta")
    if ck.get("localiser") is None:
        raise InputError(f"--checkpoint: {args.checkpoint} has no localiser; unlabelled frames need one "
                         "(featmap train localiser --checkpoint CK ..., or --copy-from a checkpoint of the same objects)")
    lcfg = from_dict(LocaliserConfig, ck["localiser"]["config"], f"{args.checkpoint}: localiser.config")
    loc = build_localiser(replace(lcfg, pretrained=False))
    loc.load_state_dict(ck["localiser"]["state"])
    meshes, infos = load_meshes(args.mesh_root, meta.obj_ids, meta.corners_m)
    est_kwargs = {"meta": meta, "localiser": loc, "device": args.device, "mesh_root": args.mesh_root,
                  "mesh_sources": [str(Path(args.mesh_root) / f"obj_{int(o):06d}.ply") for o in meta.obj_ids]}
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="featmap_adapt_") as work:
        if args.bag is not None:
            from featmap_ros.ros.bag import bag_to_bop_frames, default_info_topic

            root = Path(work) / "frames"
            s = bag_to_bop_frames(args.bag, root, args.topic, args.info_topic, args.depth_topic, every=args.every, split=cfg.split)
            info = args.info_topic or default_info_topic(args.topic)
            desc = f"bag:{Path(args.bag).resolve()} topic {args.topic} info {info}" + (f" depth {args.depth_topic}" if args.depth_topic else "")
            print(f"read {s.frames} frames from {args.bag} ({s.skipped_no_info} before any camera_info skipped, {s.with_depth} with depth)")
        else:
            root = Path(args.frames)
            desc = str(root.resolve())
        frames = read_unlabelled_frames(root, cfg.split, cfg.max_frames)
        rounds_ck: list = []

        def keep_round(r: int, m) -> None:
            rounds_ck.append((r, {k: v.detach().clone() for k, v in m.state_dict().items()}))

        data = dict((ck.get("config") or {}).get("data") or {})
        backgrounds = str(data.get("backgrounds", ""))
        if backgrounds.startswith("<") or (backgrounds and backgrounds != "photos" and not Path(backgrounds).is_dir()):
            print(f"note: the checkpoint's data.backgrounds {backgrounds!r} is not here; the synthetic stream uses procedural backgrounds")
            backgrounds = ""
        stage2 = {"config": ck.get("config") or {}, "meta": ck.get("meta") or {}, "backgrounds": backgrounds,
                  "occluder_prob": float(data.get("occluder_prob", 0.0)), "cutout_prob": float(data.get("cutout_prob", 0.0))}
        result = adapt(model, est_kwargs, frames, meshes, infos, cfg, source=str(Path(args.checkpoint).resolve()), frames_desc=desc,
                       on_round=keep_round if args.every_round else None, stage2=stage2)
    if args.every_round:
        for r, state in rounds_ck:
            m = model_from_checkpoint(ck, str(args.checkpoint))
            m.load_state_dict(state)
            rec = replace(result.record, rounds=result.record.rounds[:r + 1])
            _write(out.with_name(f"{out.stem}_round{r + 1}{out.suffix}"), ck, m, rec)
    _write(out, ck, result.model, result.record)
    for r in result.record.rounds:
        print(json.dumps({"round": r.round, "frames": r.frames, "estimates": r.estimates, "kept": r.kept,
                          "threshold": None if not np.isfinite(r.threshold) else round(r.threshold, 5), "refined": r.refined,
                          "train_steps": r.train_steps, "label_s": round(r.label_seconds, 1), "round_s": round(r.seconds, 1),
                          "loss_pose_real": round(r.loss_pose_real, 5), "loss_feature_match": round(r.loss_feature_match, 5)}))
    print(f"wrote {out} (adapted on {len(frames)} frames of {desc})")
    return 0
