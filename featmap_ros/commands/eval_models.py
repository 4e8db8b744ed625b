"""``featmap eval object`` and ``featmap eval hand``: a trained checkpoint over a dataset folder.

- ``featmap eval object --checkpoint CK --dataset-root BOP_ROOT [--split test] [--boxes gt|localiser]``:
  every ground-truth instance of an object the model knows, cropped from its ground-truth box
  (``bbox_obj``, as BB8's evaluation on LINEMOD) or found by the built-in localiser; reports
  2D projection <= 5 px, ADD(-S) <= 10 % of the diameter, 5 cm 5 deg (DESIGN §3) as JSON, the
  two accuracy curves as PNG, and overlays of the first frames.
- ``featmap eval hand --checkpoint CK --dataset-root NYU_LAYOUT [--split test]``: every frame,
  hand found by the estimator's localiser (or centred on the ground-truth palm with
  ``--gt-center``), mean joint error, per joint, the max-frame curve (JSON + PNG), overlays.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from featmap_ros import atomic
from featmap_ros.errors import InputError


def register(sub) -> None:
    p = sub.add_parser("object", help="evaluate an object checkpoint on a BOP dataset (ADD, 2D projection, curves, overlays)")
    p.add_argument("--checkpoint", required=True, help="object checkpoint (.pt)")
    p.add_argument("--dataset-root", required=True, type=Path, help="BOP dataset folder (models/, <split>/)")
    p.add_argument("--split", default="test")
    p.add_argument("--boxes", choices=("gt", "localiser"), default="gt", help="crop boxes: ground-truth bbox_obj, or the built-in localiser")
    p.add_argument("--max-frames", type=int, default=0, help="evaluate at most this many frames (0 = all)")
    p.add_argument("--overlays", type=int, default=8, help="overlay pictures to write")
    p.add_argument("--out", type=Path, default=Path("featmap_out/eval_object"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=run_object)

    h = sub.add_parser("hand", help="evaluate a hand checkpoint on an NYU-layout folder (mean mm, max-frame curve, overlays)")
    h.add_argument("--checkpoint", required=True)
    h.add_argument("--dataset-root", required=True, type=Path, help="folder with train/ and test/ in NYU layout")
    h.add_argument("--split", default="test")
    h.add_argument("--gt-center", action="store_true", help="centre crops on the ground-truth palm instead of localising the hand")
    h.add_argument("--max-frames", type=int, default=0)
    h.add_argument("--overlays", type=int, default=8)
    h.add_argument("--out", type=Path, default=Path("featmap_out/eval_hand"))
    h.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    h.set_defaults(func=run_hand)


def evaluate_object_dataset(est, root: Path, split: str, boxes: str, max_frames: int, out: Path | None, overlays: int) -> dict:
    """Run an :class:`~featmap_ros.estimators.ObjectPoseEstimator` over a BOP split.

    Returns:
        ``{"summary": {...}, "per_object": {name: {...}}, "records": [...]}``; overlays go to
        ``out/overlays`` when ``out`` is given.
    """
    from tqdm import tqdm

    from featmap_ros.data import bop
    from featmap_ros import model_eval

    root = Path(root)
    infos = bop.load_models_info(root / "models" / "models_info.json")
    id_to_k = {oid: k for k, oid in enumerate(est.obj_ids)}
    points = {}
    for oid in est.obj_ids:
        if oid not in infos:
            raise InputError(f"{root / 'models' / 'models_info.json'}: no entry for obj_id {oid} of the checkpoint")
        mesh = bop.load_mesh(bop.model_path(root, oid))
        pts = mesh.vertices_m
        if len(pts) > 3000:
            pts = pts[np.random.default_rng(0).choice(len(pts), 3000, replace=False)]
        points[oid] = pts
    scenes = bop.list_scenes(root / split)
    if not scenes:
        raise InputError(f"{root / split}: no scenes")
    frames = [f for s in scenes for f in bop.read_scene(s, infos) if f.rgb_path is not None]
    if max_frames:
        frames = frames[:max_frames]
    records = []
    written = 0
    for fr in tqdm(frames, desc="eval object", dynamic_ncols=True):
        gts = [g for g in fr.instances if g.obj_id in id_to_k]
        if not gts:
            continue
        img = bop.load_rgb(fr.rgb_path)
        if boxes == "gt":
            box_list = [(est.object_names[id_to_k[g.obj_id]], np.asarray(g.bbox_obj, dtype=np.float64)) for g in gts if g.bbox_obj is not None and g.bbox_obj[2] > 0]
            if len(box_list) != len(gts):
                raise InputError(f"{fr.rgb_path}: --boxes gt needs scene_gt_info.json bbox_obj for every instance")
            poses = est.estimate(img, fr.K, box_list)
        else:
            poses = est.estimate(img, fr.K)
        by_name: dict[str, list] = {}
        for p in poses:
            by_name.setdefault(p.object_name, []).append(p)
        frame_poses = []
        for gi, g in enumerate(gts):
            k = id_to_k[g.obj_id]
            name = est.object_names[k]
            cand = by_name.get(name, [])
            if boxes == "gt":  # one estimate per box, in box order
                match = next((p for p in poses if p.object_name == name and np.allclose(p.bbox_xywh, g.bbox_obj)), None)
            else:
                match = max(cand, key=lambda p: p.score) if cand else None
            info = infos[g.obj_id]
            rec = model_eval.object_record(
                name, None if match is None else match.R_m2c, None if match is None else match.t_m2c_m, g.R_m2c, g.t_m2c_m, fr.K,
                points[g.obj_id], info.diameter_m, info.is_symmetric, None if match is None else match.corners_px, est.corners_m[k],
            )
            records.append(rec)
            frame_poses.append((g, match, k))
        if out is not None and written < overlays:
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            from featmap_ros import geometry

            for g, match, k in frame_poses:
                gt_px = geometry.project_model_points(est.corners_m[k], g.R_m2c, g.t_m2c_m, fr.K)
                bgr = model_eval.draw_box(bgr, gt_px, est.corners_m[k], (0, 200, 0))
                if match is not None:
                    est_px = geometry.project_model_points(est.corners_m[k], match.R_m2c, match.t_m2c_m, fr.K)
                    bgr = model_eval.draw_box(bgr, est_px, est.corners_m[k], (255, 80, 0))
            cv2.putText(bgr, "green: ground truth   blue: estimate", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            model_eval.write_png(out / "overlays" / f"{fr.scene_id:06d}_{fr.im_id:06d}.png", bgr)
            written += 1
    summary = model_eval.object_summary(records)
    per_object = {}
    for name in est.object_names:
        rs = [r for r in records if r.object_name == name]
        if rs:
            s = model_eval.object_summary(rs)
            per_object[name] = {k: v for k, v in s.items() if not k.startswith("curve")}
    return {"summary": summary, "per_object": per_object, "records": [r.__dict__ for r in records]}


def run_object(args: argparse.Namespace) -> int:
    from featmap_ros.estimators import ObjectPoseEstimator
    from featmap_ros import model_eval

    est = ObjectPoseEstimator.from_checkpoint(args.checkpoint, device=args.device)
    res = evaluate_object_dataset(est, args.dataset_root, args.split, args.boxes, args.max_frames, args.out, args.overlays)
    s = res["summary"]
    report = {"checkpoint": str(args.checkpoint), "dataset_root": str(args.dataset_root), "split": args.split, "boxes": args.boxes,
              "summary": s, "per_object": res["per_object"]}
    atomic.write_json(args.out / "object_metrics.json", report)
    model_eval.plot_object_curves({Path(args.checkpoint).stem: s}, args.out / "object_curves.png", title=f"{args.dataset_root.name} {args.split}")
    print(f"instances {s['instances']}  2D proj <= 5 px {100 * s['proj2d_5px']:.1f} %  ADD(-S) <= 10 % {100 * s['add_10']:.1f} %  "
          f"5cm5deg {100 * s['5cm_5deg']:.1f} %  mean corner error {s['mean_corner_px']:.1f} px")
    for name, o in res["per_object"].items():
        print(f"  {name:16s} n={o['instances']:5d}  proj5 {100 * o['proj2d_5px']:5.1f} %  ADD10 {100 * o['add_10']:5.1f} %")
    print(f"wrote {args.out / 'object_metrics.json'}, {args.out / 'object_curves.png'}, {args.out / 'overlays'}/")
    return 0


def evaluate_hand_dataset(est, root: Path, split: str, gt_center: bool, max_frames: int, out: Path | None, overlays: int) -> dict:
    """Run a :class:`~featmap_ros.estimators.HandPoseEstimator` over an NYU-layout split.

    Frames where no hand is found are counted in ``missed`` and scored with every joint
    error set to 1000 mm (beyond every curve threshold), so a detector failure is never hidden.
    """
    from tqdm import tqdm

    from featmap_ros.data import nyu
    from featmap_ros import model_eval

    ds = nyu.NyuDataset(root, split)
    n = len(ds) if not max_frames else min(len(ds), max_frames)
    K = nyu.nyu_K()
    errors, missed = [], 0
    written = 0
    for i in tqdm(range(n), desc="eval hand", dynamic_ncols=True):
        fr = ds[i]
        depth_m = _frame_depth_m(fr)
        gt = nyu.eval_joints(fr)
        center = [_palm_center(gt)] if gt_center else None
        pose = est.estimate_batch([depth_m], K, centers_m=center)[0]
        if pose is None:
            missed += 1
            errors.append(np.full(len(gt), 1000.0))
            continue
        errors.append(np.linalg.norm(pose.joints_m - gt, axis=1) * 1000.0)
        if out is not None and written < overlays:
            pic = model_eval.colour_depth(depth_m)
            pic = model_eval.draw_hand(pic, gt, K, (0, 200, 0))
            pic = model_eval.draw_hand(pic, pose.joints_m, K, (255, 80, 255))
            pic = _zoom_on(pic, gt[13], K, half_m=0.2, out_px=400)
            cv2.putText(pic, f"green: ground truth  magenta: estimate  {errors[-1].mean():.1f} mm", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
            model_eval.write_png(out / "overlays" / f"{split}_{i + 1:07d}.png", pic)
            written += 1
    if not errors:
        raise InputError(f"{root / split}: no frames")
    summary = model_eval.hand_summary(np.stack(errors))
    summary["missed"] = missed
    return summary


def _zoom_on(image_bgr: np.ndarray, point_c_m: np.ndarray, K: np.ndarray, half_m: float, out_px: int) -> np.ndarray:
    """A square cut of ``image_bgr`` around a 3D point, ``2 * half_m`` wide at its depth, resized."""
    from featmap_ros import crops, geometry

    uv = geometry.project_points(np.asarray(point_c_m, dtype=np.float64)[None], K)[0]
    side = 2.0 * half_m * K[0, 0] / max(float(point_c_m[2]), 1e-3)
    return crops.crop_image(image_bgr, crops.Window(float(uv[0]), float(uv[1]), float(side)), out_px)


def _frame_depth_m(fr) -> np.ndarray:
    for attr in ("depth_m",):
        if hasattr(fr, attr):
            v = getattr(fr, attr)
            return np.asarray(v() if callable(v) else v, dtype=np.float32)
    from featmap_ros.data import nyu

    d = nyu.load_depth_mm(fr.depth_path).astype(np.float32) / 1000.0
    return d


def _palm_center(joints_m: np.ndarray) -> np.ndarray:
    return np.asarray(joints_m, dtype=np.float64)[13]


def run_hand(args: argparse.Namespace) -> int:
    from featmap_ros.estimators import HandPoseEstimator
    from featmap_ros import metrics

    est = HandPoseEstimator.from_checkpoint(args.checkpoint, device=args.device)
    s = evaluate_hand_dataset(est, args.dataset_root, args.split, args.gt_center, args.max_frames, args.out, args.overlays)
    report = {"checkpoint": str(args.checkpoint), "dataset_root": str(args.dataset_root), "split": args.split, "gt_center": args.gt_center, "summary": s}
    atomic.write_json(args.out / "hand_metrics.json", report)
    c = s["max_frame_curve"]
    metrics.plot_max_frame_curves({f"{Path(args.checkpoint).stem} ({s['mean_mm']:.1f} mm)": (np.array(c["thresholds_mm"]), np.array(c["fraction"]))},
                                  args.out / "hand_curve.png", title=f"{Path(args.dataset_root).name} {args.split}")
    print(f"frames {s['frames']}  mean joint error {s['mean_mm']:.2f} mm  max-frame <= 20 mm {100 * s['within_20mm']:.1f} %  "
          f"<= 40 mm {100 * s['within_40mm']:.1f} %  missed {s['missed']}")
    print(f"wrote {args.out / 'hand_metrics.json'}, {args.out / 'hand_curve.png'}, {args.out / 'overlays'}/")
    return 0
