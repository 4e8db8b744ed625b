"""``featmap render object`` and ``featmap render gt``.

- ``featmap render object (--mesh PLY | --toy) --count N --out DIR [--domain synthetic|real-like]``
  writes N frames with ground truth in the BOP layout (readable by :mod:`featmap_ros.data.bop`);
  with ``--sequence``, one scene seen by a camera that rests and moves smoothly (for pose
  filters; ``sequence.json`` says which frames move), sensor noise new in every frame.
- ``featmap render gt DATASET_ROOT --scene S [--frames ...] --out DIR`` renders the ground-truth
  objects of a BOP scene: an overlay PNG per frame that has an image (silhouette outline +
  projected 3D box), and ``silhouettes.json`` for every ground-truth frame:
  ``{"<im_id>": [{"obj_id", "bbox": [x, y, w, h], "px_count"}, ...]}``, instances in scene_gt
  order, each the full (unoccluded) silhouette of that instance rendered alone, including parts
  outside the image, with bop_toolkit's conventions (``w = x_max - x_min``, unclipped) so the
  numbers compare directly with ``scene_gt_info.json``. By default pixels follow bop_toolkit's
  renderer (``--pixel-center bop``: pixel ``i`` spans ``[i, i + 1)`` in the coordinates of ``K``,
  half a pixel off OpenCV's integer pixel centres), since that is how the datasets' own
  silhouettes were computed; ``--pixel-center opencv`` uses this project's convention. When the scene has
  ``scene_gt_info.json``, the agreement with its ``bbox_obj``/``px_count_all`` is printed and
  written to ``silhouettes_check.json``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from featmap_ros import atomic
from featmap_ros.data import bop
from featmap_ros.data.specs import object_dataset
from featmap_ros.draw.boxes import color_for, draw_pose
from featmap_ros.draw.images import write_png
from featmap_ros.errors import InputError
from featmap_ros.render.real_like import RealLikeConfig, SequenceConfig, write_object_dataset, write_object_sequence
from featmap_ros.render.renderer import MeshRenderer, render_silhouette
from featmap_ros.render.toy_object import make_toy_object

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("object", help="render an object data set (synthetic or real-like) in BOP format")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--mesh", type=Path, help="object mesh (PLY; see --units)")
    src.add_argument("--toy", action="store_true", help="use the project's own toy object")
    p.add_argument("--units", choices=("mm", "m"), default="mm", help="unit of --mesh coordinates (BOP: mm)")
    p.add_argument("--obj-id", type=int, default=1, help="obj_id written to the data set")
    p.add_argument("--count", type=int, required=True, help="number of frames")
    p.add_argument("--out", type=Path, required=True, help="output dataset folder (replaced atomically)")
    p.add_argument("--domain", choices=("synthetic", "real-like"), default="synthetic")
    p.add_argument("--dataset", default="lm", help="dataset spec for camera and distances (featmap_ros.data.specs)")
    p.add_argument("--backgrounds", type=Path, default=None, help="folder of background images (default: procedural)")
    p.add_argument("--split", default="train", help="split folder name in the output")
    p.add_argument("--scene", type=int, default=1, help="scene id in the output")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sequence", action="store_true",
                   help="one scene from a smoothly moving camera with rest periods (BOP sequence + sequence.json)")
    p.add_argument("--fps", type=float, default=SequenceConfig.fps, help="--sequence: frames per second of the motion")
    p.set_defaults(func=run_object)

    g = sub.add_parser("gt", help="overlay ground-truth objects of a BOP scene and write silhouettes.json")
    g.add_argument("dataset_root", type=Path, help="BOP dataset folder (with models/ and <split>/)")
    g.add_argument("--scene", type=int, required=True, help="scene id")
    g.add_argument("--split", default="test", help="split folder (test, train, ...)")
    g.add_argument("--frames", type=int, nargs="*", default=None, help="image ids (default: all)")
    g.add_argument("--out", type=Path, required=True, help="output folder")
    g.add_argument("--models", default="models", help="models folder name under the root")
    g.add_argument("--units", choices=("mm", "m"), default="mm", help="unit of the model files")
    g.add_argument("--size", type=int, nargs=2, default=None, metavar=("W", "H"),
                   help="image size when no image is on disk (default: from the images, else 640 480)")
    g.add_argument("--pixel-center", choices=("bop", "opencv"), default="bop",
                   help="silhouette pixel convention: 'bop' = bop_toolkit's renderer (pixel i covers [i, i+1) "
                   "in K's coordinates, as the datasets' scene_gt_info.json was computed), 'opencv' = pixel "
                   "centres at integers (this project's geometry and crops)")
    g.add_argument("--supersample", type=int, default=3, help="odd supersampling factor of the silhouette renders")
    g.set_defaults(func=run_gt)


# ------------------------------------------------------------------------------------------
# render gt


def _bbox_iou(a, b) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


def run_gt(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    root = Path(args.dataset_root)
    infos = bop.load_models_info(root / args.models / "models_info.json")
    scene_dir = root / args.split / f"{args.scene:06d}"
    frames = bop.read_scene(scene_dir, infos)
    if args.frames:
        wanted = set(args.frames)
        missing = sorted(wanted - {f.im_id for f in frames})
        if missing:
            raise InputError(f"{scene_dir}: no frames {missing} in scene_camera.json")
        frames = [f for f in frames if f.im_id in wanted]
    if args.size:
        width, height = args.size
    else:
        first = next((f.rgb_path for f in frames if f.rgb_path is not None), None)
        height, width = (bop.load_rgb(first).shape[:2]) if first is not None else (480, 640)
    meshes = {}
    for oid in sorted({g.obj_id for f in frames for g in f.instances}):
        meshes[oid] = bop.load_mesh(bop.model_path(root, oid, args.models), units=args.units)
    out = Path(args.out)
    atomic.make_dir(out)
    silhouettes: dict[str, list] = {}
    ious, ratios, worst = [], [], []
    n_overlays = 0
    skipped = 0
    with MeshRenderer(width, height) as renderer:
        for f in tqdm(frames, desc=f"render gt scene {args.scene}", unit="frame"):
            image = bop.load_rgb(f.rgb_path) if f.rgb_path is not None else None
            if image is not None and image.shape[:2] != (height, width):
                raise InputError(f"{f.rgb_path}: size {image.shape[1]}x{image.shape[0]} differs from {width}x{height}")
            recs = []
            overlay = image
            for i, g in enumerate(f.instances):
                sil = render_silhouette(
                    renderer, meshes[g.obj_id], g.R_m2c, g.t_m2c_m, f.K,
                    supersample=args.supersample, pixel_center=0.5 if args.pixel_center == "bop" else 0.0,
                )
                bbox, px = sil.bbox_xywh(), sil.px_count
                recs.append({"obj_id": int(g.obj_id), "bbox": bbox, "px_count": px})
                # bop_toolkit writes bbox_obj = -1s for fully occluded instances: nothing to compare
                if g.bbox_obj is not None and g.px_count_all and g.bbox_obj[2] >= 0:
                    iou = _bbox_iou(bbox, g.bbox_obj)
                    ratio = px / g.px_count_all
                    ious.append(iou)
                    ratios.append(ratio)
                    worst.append((min(iou, 1 - abs(ratio - 1)), f.im_id, i, g.obj_id, iou, ratio))
                elif g.bbox_obj is not None:
                    skipped += 1
                if overlay is not None:
                    overlay = draw_pose(
                        overlay, infos[g.obj_id].corners_m, g.R_m2c, g.t_m2c_m, f.K, color_for(g.obj_id),
                        mask=sil.full_mask(width, height), label=f"obj {g.obj_id}",
                    )
            silhouettes[str(f.im_id)] = recs
            if overlay is not None:
                write_png(out / f"overlay_{f.im_id:06d}.png", overlay)
                n_overlays += 1
        backend = renderer.backend
    atomic.write_json(out / "silhouettes.json", silhouettes)
    print(f"rendered {sum(len(v) for v in silhouettes.values())} instances in {len(frames)} frames "
          f"({n_overlays} overlays) with {backend}; wrote {out / 'silhouettes.json'}")
    if ious:
        ious_a, ratios_a = np.array(ious), np.array(ratios)
        dev = np.abs(ratios_a - 1.0)
        check = {
            "instances": len(ious),
            "skipped_fully_occluded": skipped,
            "bbox_iou_min": float(ious_a.min()), "bbox_iou_mean": float(ious_a.mean()),
            "bbox_iou_below_0.95": int((ious_a < 0.95).sum()),
            "px_count_rel_dev_max": float(dev.max()), "px_count_rel_dev_mean": float(dev.mean()),
            "px_count_rel_dev_above_0.03": int((dev > 0.03).sum()),
            "worst": [
                {"im_id": w[1], "inst": w[2], "obj_id": w[3], "bbox_iou": w[4], "px_ratio": w[5]}
                for w in sorted(worst)[:5]
            ],
        }
        atomic.write_json(out / "silhouettes_check.json", check)
        print(f"vs scene_gt_info.json over {len(ious)} instances ({skipped} fully occluded, bbox_obj -1, skipped): bbox IoU min {ious_a.min():.4f} "
              f"mean {ious_a.mean():.4f} ({check['bbox_iou_below_0.95']} below 0.95); px_count |rel. dev.| "
              f"max {dev.max():.4f} mean {dev.mean():.4f} ({check['px_count_rel_dev_above_0.03']} above 3 %)")
    return 0


# ------------------------------------------------------------------------------------------
# render object


def run_object(args: argparse.Namespace) -> int:

    if args.count <= 0:
        raise InputError(f"--count must be positive, got {args.count}")
    if args.toy:
        mesh, info = make_toy_object(args.obj_id)
    else:
        mesh = bop.load_mesh(args.mesh, units=args.units)
        info = bop.model_info_from_mesh(args.obj_id, mesh)
    spec = object_dataset(args.dataset)
    cfg = RealLikeConfig() if args.domain == "real-like" else None
    common = dict(spec=spec, domain=args.domain, seed=args.seed, backgrounds_dir=args.backgrounds, split=args.split,
                  scene_id=args.scene, real_like=cfg)
    if args.sequence:
        if not args.fps > 0:
            raise InputError(f"--fps must be positive, got {args.fps}")
        write_object_sequence(args.out, mesh, info, args.count, sequence=SequenceConfig(fps=args.fps), **common)
        what = f"{args.domain} sequence ({args.fps:g} fps, rest periods in sequence.json)"
    else:
        write_object_dataset(args.out, mesh, info, args.count, **common)
        what = f"{args.domain} frames"
    print(f"wrote {args.count} {what} of obj {args.obj_id} to {args.out} (BOP layout, split {args.split})")
    return 0
