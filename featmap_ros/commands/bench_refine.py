"""``featmap bench refine`` and ``featmap bench tracking``: depth refinement and the pose filter,
measured on real-like RGB-D frames of the toy object (bundled weights), printed and written as JSON.

- ``featmap bench refine [--frames 60] [--json F]``: colour-only vs colour + depth on real-like
  test frames rendered here, ``--frames`` of each object of the checkpoint (the toy for the
  bundled demo weights; with ``--checkpoint featmap_ros/weights/lmo.pt --mesh-root
  <lmo>/models``, the LM-O meshes over the real-like domain), or on ``--data DIR`` (a BOP dataset
  with depth).
- ``featmap bench tracking [--frames 300] [--json F]``: per-frame vs filtered poses on a
  real-like sequence rendered here (or ``--data DIR`` from ``featmap render object --sequence``).

The logic lives in :mod:`featmap_ros.evaluation.refine_bench`.

Figures (bundled toy weights, ground-truth windows, defaults; 2 CPU cores):

=========================  ============  ==============
``featmap bench refine``   colour only   colour + depth
=========================  ============  ==============
ADD(-S) <= 10 %            13.3 %        95.0 %
5 cm 5 deg                 30.0 %        91.7 %
median translation error   42.9 mm       1.3 mm
median rotation error      5.98 deg      1.14 deg
added per object           -             5.5 ms median (p95 7.7 ms), single runs
=========================  ============  ==============

(60 frames, 57 refinements accepted, none of them wrong; refused: 2 for fitness, 1 colour pose
more than 0.5 m off. The time with the cores otherwise quiet (load 1.3); with other jobs on them
(load 5) 17 ms median.) With ``--checkpoint featmap_ros/weights/lmo.pt --mesh-root <lmo>/models
--frames 15`` (the eight LM-O meshes over the real-like domain, 120 instances): ADD(-S) 0.8 % ->
25.8 %, median translation 390 -> 300 mm, 6.0 ms per object: the LM-O weights' colour poses on
these frames are far off (median 57 deg, none within 5 px), beyond what the refinement can
correct (47 refused as more than 0.5 m off, 20 as turned more than 30 deg, 18 for fitness).

``featmap bench tracking`` (300 frames at 30 Hz, three rest periods, the first second of each
left out; the estimator once, then each filter on the same poses), colour + depth: the Kalman
filter (default) 0.74 mm / 1.20 deg raw -> 0.16 mm / 0.28 deg (4.7x / 4.3x less jitter) at
0.16 / 0.54 frames of lag, 95.3 % of the truths within 2 sigma of its covariance; the One-Euro
filter 6.3x / 4.7x at 1.81 / 1.85 frames (docs/benchmarks.md has the table, colour only too).
"""
from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from featmap_ros import atomic
from featmap_ros.checkpoint import bundled_weights
from featmap_ros.data import bop
from featmap_ros.data.specs import object_dataset
from featmap_ros.errors import InputError
from featmap_ros.estimators import TOY_MESH, ObjectPoseEstimator
from featmap_ros.evaluation.refine_bench import DEFAULT_SETTLE_S, run_refine_bench, run_tracking_bench
from featmap_ros.render.real_like import SequenceConfig, write_object_dataset, write_object_sequence
from featmap_ros.render.toy_object import make_toy_object

#: Seeds of the benches' frames (training used 7, the demo 90210).
REFINE_SEED = 31337
TRACKING_SEED = 4711
#: The tracking bench's motion: rest periods long enough to measure jitter after the filter settles.
TRACKING_SEQUENCE = SequenceConfig(rest_s=(2.0, 3.0), move_s=(1.0, 2.0))


def _common(p) -> None:
    p.add_argument("--data", type=Path, default=None, help="use this BOP dataset (with depth) instead of rendering frames")
    p.add_argument("--out", type=Path, default=None, help="where rendered frames go (default featmap_out/bench_<what>)")
    p.add_argument("--seed", type=int, default=None, help="seed of the rendered frames")
    p.add_argument("--checkpoint", default=None, help="object checkpoint (default: the bundled toy weights)")
    p.add_argument("--mesh-root", type=Path, default=None,
                   help="folder of the meshes the checkpoint names by relative path (BOP models/; default: "
                        "<data>/models with --data)")
    p.add_argument("--boxes", choices=("gt", "localiser"), default="gt",
                   help="image windows: the ground-truth windows (pose accuracy alone) or the built-in localiser")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", default=None, help="also write the figures here")


def register(sub) -> None:
    p = sub.add_parser("refine", help="depth refinement: colour-only vs colour + depth on real-like RGB-D frames")
    _common(p)
    p.add_argument("--frames", type=int, default=60, help="real-like test frames to render per object")
    p.add_argument("--objects", default="", help="comma-separated object names to render (default: all of the checkpoint)")
    p.set_defaults(func=run_refine)
    t = sub.add_parser("tracking", help="pose filter: jitter at rest and lag in motion on a real-like sequence")
    _common(t)
    t.add_argument("--frames", type=int, default=300, help="sequence frames to render")
    t.add_argument("--fps", type=float, default=TRACKING_SEQUENCE.fps, help="frame rate of the rendered sequence")
    t.add_argument("--rest-s", type=float, nargs=2, default=TRACKING_SEQUENCE.rest_s, metavar=("MIN", "MAX"),
                   help="rest period lengths of the rendered sequence, seconds")
    t.add_argument("--move-s", type=float, nargs=2, default=TRACKING_SEQUENCE.move_s, metavar=("MIN", "MAX"),
                   help="motion lengths of the rendered sequence, seconds")
    t.add_argument("--settle-s", type=float, default=DEFAULT_SETTLE_S,
                   help="seconds at the start of each rest period left out of the jitter (the filter settling)")
    t.add_argument("--source", choices=("depth", "rgb"), default="depth",
                   help="whose figures are the top-level keys: colour + depth (default) or colour-only poses")
    t.set_defaults(func=run_tracking)


def _estimator(args) -> ObjectPoseEstimator:
    ck = Path(args.checkpoint) if args.checkpoint else bundled_weights("object")
    root = args.mesh_root or (args.data / "models" if args.data else None)
    est = ObjectPoseEstimator.from_checkpoint(ck, device=args.device, mesh_root=root)
    est.warmup()
    return est


def _machine() -> dict:
    return {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def _write(args, report: dict) -> None:
    if args.json:
        atomic.write_json(args.json, report)
        print(f"wrote {args.json}")


def _mesh_of(est: ObjectPoseEstimator, name: str):
    """The mesh and ModelInfo of one of the checkpoint's objects, for rendering its frames."""
    k = est.object_names.index(name)
    src, oid = est.mesh_sources[k], est.obj_ids[k]
    if src == TOY_MESH:
        return make_toy_object(oid)
    if not src or not Path(src).is_file():
        raise InputError(f"--checkpoint: no mesh file for {name!r} ({src!r}); pass --mesh-root (the BOP models/ folder)")
    mesh = bop.load_mesh(src)
    infos_path = Path(src).parent / "models_info.json"
    infos = bop.load_models_info(infos_path) if infos_path.is_file() else {}
    return mesh, infos.get(oid) or bop.model_info_from_mesh(oid, mesh)


def run_refine(args: argparse.Namespace) -> int:
    if args.frames <= 0:
        raise InputError(f"--frames must be positive, got {args.frames}")
    est = _estimator(args)
    seed = REFINE_SEED if args.seed is None else args.seed
    split = "test"
    if args.data is not None:
        roots = [args.data]
    else:
        names = [n.strip() for n in args.objects.split(",") if n.strip()] or est.object_names
        unknown = [n for n in names if n not in est.object_names]
        if unknown:
            raise InputError(f"--objects: {unknown} not in the checkpoint; valid: {est.object_names}")
        out = args.out or Path("featmap_out/bench_refine")
        roots = [out] if len(names) == 1 else [out / n for n in names]
        for name, root in zip(names, roots):
            mesh, info = _mesh_of(est, name)
            print(f"[refine] rendering {args.frames} real-like RGB-D frames of {name} (seed {seed}) ...", flush=True)
            write_object_dataset(root, mesh, info, args.frames, spec=object_dataset("lm"), domain="real-like", seed=seed,
                                 split=split, scene_id=1)
    r = run_refine_bench(est, roots, split, boxes=args.boxes)
    report = {**r, "data": [str(x) for x in roots], "seed": None if args.data else seed, **_machine()}
    print(f"\nbench refine — {r['instances']} instances in {r['frames']} real-like RGB-D frames, windows: {args.boxes}")
    print(f"  {'':18s} {'ADD(-S)<=10%':>13s} {'5cm 5deg':>9s} {'2D<=5px':>8s} {'median t':>10s} {'median R':>9s}")
    for key, label in (("rgb", "colour only"), ("depth", "colour + depth")):
        print(f"  {label:18s} {100 * r[f'add10_{key}']:12.1f}% {100 * r[f'5cm5deg_{key}']:8.1f}% "
              f"{100 * r[f'proj2d_5px_{key}']:7.1f}% {r[f'median_trans_mm_{key}']:7.1f} mm {r[f'median_rot_deg_{key}']:5.2f} deg")
    print(f"  refinement: {r['added_ms_per_object']:.2f} ms per object (median, p95 {r['added_ms_per_object_p95']:.2f} ms; "
          f"{report['cpu_count']} CPUs, torch {report['torch_threads']} threads), "
          f"accepted {100 * r['refined_fraction']:.1f} %, rejected: {r['rejections'] or 'none'}")
    if len(r["per_object"]) > 1:
        for n, f in r["per_object"].items():
            print(f"  {n:14s} {f['instances']:4d} inst.: ADD(-S)<=10% {100 * f['add10_rgb']:5.1f}% -> {100 * f['add10_depth']:5.1f}%, "
                  f"median t {f['median_trans_mm_rgb']:6.1f} -> {f['median_trans_mm_depth']:5.1f} mm")
    _write(args, report)
    return 0


def run_tracking(args: argparse.Namespace) -> int:
    if args.frames <= 1:
        raise InputError(f"--frames must be at least 2, got {args.frames}")
    if not args.fps > 0:
        raise InputError(f"--fps must be positive, got {args.fps}")
    for name, (lo, hi) in (("--rest-s", args.rest_s), ("--move-s", args.move_s)):
        if not 0 < lo <= hi:
            raise InputError(f"{name}: expected 0 < MIN <= MAX, got {lo} {hi}")
    if args.settle_s < 0:
        raise InputError(f"--settle-s must be >= 0, got {args.settle_s}")
    est = _estimator(args)
    seed = TRACKING_SEED if args.seed is None else args.seed
    root = args.data
    seq = SequenceConfig(fps=args.fps, rest_s=tuple(args.rest_s), move_s=tuple(args.move_s))
    if root is None:
        root = args.out or Path("featmap_out/bench_tracking")
        mesh, info = make_toy_object(est.obj_ids[0])
        print(f"[tracking] rendering a {args.frames}-frame real-like RGB-D sequence of the toy object (seed {seed}) ...",
              flush=True)
        write_object_sequence(root, mesh, info, args.frames, spec=object_dataset("lm"), seed=seed, sequence=seq)
    r = run_tracking_bench(est, root, boxes=args.boxes, settle_s=args.settle_s)
    main = r[args.source]
    report = {**main, "source": args.source, **r, "data": str(root), "seed": None if args.data else seed,
              "sequence": None if args.data else asdict(seq), **_machine()}
    print(f"\nbench tracking — {r['frames']} frames at {r['fps']:g} fps, rest periods {r['rest_periods']} "
          f"(first {r['settle_s']:g} s of each left out of the jitter), windows: {args.boxes}; "
          f"top-level JSON keys: {next(iter(r['filters']))}, {args.source}")
    print(f"  {'':26s} {'jitter raw':>18s} {'jitter filtered':>20s} {'less':>11s} {'lag (frames) t / R':>30s} "
          f"{'RMS error in motion raw -> filtered':>38s}")
    for kind, figs in r["filters"].items():
        for key, label in (("rgb", "colour only"), ("depth", "colour + depth")):
            f = figs[key]
            print(f"  {kind + ', ' + label:26s} {f['jitter_mm_raw']:6.2f} mm {f['jitter_deg_raw']:5.2f} deg "
                  f"{f['jitter_mm_filtered']:8.2f} mm {f['jitter_deg_filtered']:5.2f} deg "
                  f"{f['jitter_ratio_mm']:4.1f}x {f['jitter_ratio_deg']:4.1f}x "
                  f"{f['lag_frames']:8.2f} / {f['lag_frames_rot']:5.2f} (raw {f['lag_frames_raw']:.2f} / {f['lag_frames_rot_raw']:.2f}) "
                  f"{f['motion_rms_mm_raw']:7.2f} -> {f['motion_rms_mm_filtered']:6.2f} mm, "
                  f"{f['motion_rms_deg_raw']:5.2f} -> {f['motion_rms_deg_filtered']:5.2f} deg")
    print("  truth within the 2-sigma bound of the published covariance (6-D; per axis x y z rx ry rz):")
    for kind, figs in r["filters"].items():
        for key, label in (("rgb", "colour only"), ("depth", "colour + depth")):
            for which in ("raw", "filtered"):
                c = figs[key].get(f"coverage_2sigma_{which}")
                if c is None or not c["n"]:
                    continue
                if which == "raw" and kind != next(iter(r["filters"])):
                    continue  # the per-frame poses are the same for every filter
                name = "per frame" if which == "raw" else kind
                print(f"  {name + ', ' + label:26s} {100 * c['joint']:5.1f} % of {c['n']}  "
                      f"({' '.join(f'{100 * a:.0f}' for a in c['per_axis'])} %)")
    _write(args, report)
    return 0
