"""Scoring the estimators on datasets on disk: a BOP folder (objects, ground-truth boxes or the
built-in localiser) and an NYU-layout folder (hands); what ``featmap eval object|hand`` and the demo run.
Overlays are drawn by :mod:`featmap_ros.draw`."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from featmap_ros import crops, geometry
from featmap_ros.data import bop, nyu
from featmap_ros.draw import boxes as draw_boxes, images, skeleton
from featmap_ros.draw.colours import ESTIMATE_RGB, GROUND_TRUTH_RGB
from featmap_ros.errors import InputError
from featmap_ros.evaluation import metrics
from featmap_ros.evaluation.published import BopEstimate
from featmap_ros.evaluation.records import add_points_m, hand_summary, object_record, object_summary


def ground_truth_boxes(est, gts, K: np.ndarray) -> list[tuple[str, crops.Window]]:
    """``boxes`` for ``est.estimate`` from ground truth: each instance's ground-truth window
    (:func:`featmap_ros.crops.ground_truth_window`, the training window), as the node's
    ``ground_truth`` ROI source crops.

    Args:
        est: an ObjectPoseEstimator (object names, obj_ids, box corners).
        gts: ground-truth instances (``obj_id``, ``R_m2c``, ``t_m2c_m``) of the estimator's objects.
        K: (3, 3) intrinsics, pixels.
    """
    k_of = {oid: k for k, oid in enumerate(est.obj_ids)}
    return [(est.object_names[k_of[g.obj_id]], crops.ground_truth_window(est.corners_m[k_of[g.obj_id]], g.R_m2c, g.t_m2c_m, K))
            for g in gts]


def pose_in_window(poses, name: str, window: crops.Window):
    """The estimate of ``name`` made in ``window`` (one per window given as a box), or None
    (its PnP failed)."""
    return next((p for p in poses if p.object_name == name and np.allclose(p.bbox_xywh, window.as_xywh())), None)


#: A localiser window is "good" when its centre is within this fraction of the ground-truth
#: window's side and its side within this ratio (either way) of the ground truth's.
GOOD_WINDOW_CENTRE, GOOD_WINDOW_SIDE = 0.15, 1.25


def window_error(gt: crops.Window, xywh) -> tuple[float, float] | None:
    """(centre distance / ground-truth side, estimated side / ground-truth side) of the window
    ``xywh`` (x, y, w, h pixels; None = no window for that instance)."""
    if xywh is None:
        return None
    x, y, w, h = (float(v) for v in xywh)
    d = float(np.hypot(x + w / 2 - gt.center_u, y + h / 2 - gt.center_v))
    return d / gt.side, max(w, h) / gt.side


def window_summary(errors: list[tuple[float, float] | None]) -> dict:
    """How well the localiser placed the crop windows, against the ground-truth windows:
    ``instances``, ``with_window`` (fraction that got one), ``good`` (fraction with a window
    within :data:`GOOD_WINDOW_CENTRE` / :data:`GOOD_WINDOW_SIDE`), median centre error and side
    ratio of those with a window."""
    got = [e for e in errors if e is not None]
    good = [e for e in got if e[0] <= GOOD_WINDOW_CENTRE and 1 / GOOD_WINDOW_SIDE <= e[1] <= GOOD_WINDOW_SIDE]
    n = max(len(errors), 1)
    return {"instances": len(errors), "with_window": len(got) / n, "good": len(good) / n,
            "median_centre_error_of_side": float(np.median([e[0] for e in got])) if got else float("nan"),
            "median_side_ratio": float(np.median([e[1] for e in got])) if got else float("nan")}


def image_targets(root: Path, boxes: str, frames) -> dict[tuple[int, int], dict[int, int]]:
    """(scene_id, im_id) -> {obj_id: instance count} the localiser is told to find (BOP-19
    localisation: each image's objects and counts are known): ``<root>/test_targets_bop19.json``
    when present, else every ground-truth instance at least 10 % visible (what that file lists
    for LM-O). Empty for ``boxes == "gt"``."""
    if boxes != "localiser":
        return {}
    path = Path(root) / "test_targets_bop19.json"
    out: dict[tuple[int, int], dict[int, int]] = {(f.scene_id, f.im_id): {} for f in frames}
    if path.is_file():
        for t in bop.load_test_targets(path):
            if (t.scene_id, t.im_id) in out:
                out[(t.scene_id, t.im_id)][t.obj_id] = t.inst_count
        return out
    for f in frames:
        for g in f.instances:
            if g.visib_fract is None or g.visib_fract >= metrics.MIN_VISIBLE_FRACTION:
                out[(f.scene_id, f.im_id)][g.obj_id] = out[(f.scene_id, f.im_id)].get(g.obj_id, 0) + 1
    return out


def evaluate_object_dataset(est, root: Path, split: str, boxes: str, max_frames: int, out: Path | None, overlays: int,
                            im_ids=None) -> dict:
    """Run an :class:`~featmap_ros.estimators.ObjectPoseEstimator` over a BOP split.

    ``im_ids``: score only these image ids (e.g. frames held out from training); each must be a
    frame with an image (InputError naming the missing file). None = every frame with an image.

    Returns:
        ``{"summary": {...}, "per_object": {name: {...}}, "records": [...], "bop_estimates": [...]}``
        (every pose the estimator returned, as :class:`~featmap_ros.evaluation.published.BopEstimate`
        with the image's estimation time); overlays go to ``out/overlays`` when ``out`` is given:
        the frame with the boxes, and below it a zoom of each instance labelled with its name and
        2D projection error (:func:`featmap_ros.draw.boxes.with_zoom_strip`).
    """
    from tqdm import tqdm

    root = Path(root)
    if boxes == "localiser" and est.localiser is None:
        raise InputError("--boxes localiser: this checkpoint has no localiser (objects "
                         f"{est.object_names}); use --boxes gt (the ground-truth windows)")
    infos = bop.load_models_info(root / "models" / "models_info.json")
    id_to_k = {oid: k for k, oid in enumerate(est.obj_ids)}
    points = {}
    for oid in est.obj_ids:
        if oid not in infos:
            raise InputError(f"{root / 'models' / 'models_info.json'}: no entry for obj_id {oid} of the checkpoint")
        points[oid] = add_points_m(root, oid)
    scenes = bop.list_scenes(root / split)
    if not scenes:
        raise InputError(f"{root / split}: no scenes")
    frames = [f for s in scenes for f in bop.read_scene(s, infos)]
    if im_ids is not None:
        keep = {int(i) for i in im_ids}
        missing = sorted(keep - {f.im_id for f in frames})
        if missing:
            raise InputError(f"--im-ids: image id(s) {missing} are not in {root / split}/*/scene_camera.json")
        frames = [f for f in frames if f.im_id in keep]
        for f in frames:
            if f.rgb_path is None:
                raise InputError(f"{root / split / f'{f.scene_id:06d}' / 'rgb' / f'{f.im_id:06d}.png'}: image of im_id {f.im_id} not found")
    frames = [f for f in frames if f.rgb_path is not None]
    targets = image_targets(root, boxes, frames)
    if max_frames:
        frames = frames[:max_frames]
    records = []
    window_errors: list[tuple[float, float] | None] = []
    bop_estimates: list[BopEstimate] = []
    written = 0
    for fr in tqdm(frames, desc="eval object", dynamic_ncols=True):
        gts = [g for g in fr.instances if g.obj_id in id_to_k]
        if not gts:
            continue
        img = bop.load_rgb(fr.rgb_path)
        if boxes == "gt":  # the ground-truth window: the training window of each instance, as the node's ground_truth ROI
            box_list = ground_truth_boxes(est, gts, fr.K)
            t0 = time.perf_counter()
            poses = est.estimate(img, fr.K, box_list)
        else:  # the built-in localiser, told which objects the image holds and how many (BOP-19)
            wanted = {est.object_names[id_to_k[o]]: c for o, c in targets[(fr.scene_id, fr.im_id)].items() if o in id_to_k}
            t0 = time.perf_counter()
            poses = est.estimate(img, fr.K, objects=wanted)
        dt = time.perf_counter() - t0
        name_to_id = dict(zip(est.object_names, est.obj_ids))
        bop_estimates += [BopEstimate(fr.scene_id, fr.im_id, name_to_id[p.object_name], float(p.score), p.R_m2c,
                                      np.asarray(p.t_m2c_m, np.float64) * 1000.0, dt, 0) for p in poses]
        by_name: dict[str, list] = {}
        for p in poses:
            by_name.setdefault(p.object_name, []).append(p)
        frame_poses = []
        for gi, g in enumerate(gts):
            k = id_to_k[g.obj_id]
            name = est.object_names[k]
            cand = by_name.get(name, [])
            if boxes == "gt":  # one estimate per window (none where PnP failed)
                match = pose_in_window(poses, name, box_list[gi][1])
            else:
                match = max(cand, key=lambda p: p.score) if cand else None
                gt_win = crops.ground_truth_window(est.corners_m[k], g.R_m2c, g.t_m2c_m, fr.K)
                window_errors.append(window_error(gt_win, None if match is None else match.bbox_xywh))
            info = infos[g.obj_id]
            rec = object_record(
                name, None if match is None else match.R_m2c, None if match is None else match.t_m2c_m, g.R_m2c, g.t_m2c_m, fr.K,
                points[g.obj_id], info.diameter_m, info.is_symmetric, est.corners_m[k],
            )
            records.append(rec)
            frame_poses.append((g, match, k, rec))
        if out is not None and written < overlays:
            pic = img
            tiles = []
            for g, match, k, rec in frame_poses:
                pic = draw_boxes.draw_pose(pic, est.corners_m[k], g.R_m2c, g.t_m2c_m, fr.K, color=GROUND_TRUTH_RGB, thickness=2)
                poses = [(est.corners_m[k], g.R_m2c, g.t_m2c_m, GROUND_TRUTH_RGB)]
                if match is not None:
                    pic = draw_boxes.draw_pose(pic, est.corners_m[k], match.R_m2c, match.t_m2c_m, fr.K, color=ESTIMATE_RGB, thickness=2)
                    poses.append((est.corners_m[k], match.R_m2c, match.t_m2c_m, ESTIMATE_RGB))
                # a zoom per instance below the frame: a 60-px object can't be judged at 640 x 480
                gt_corners = geometry.project_model_points(est.corners_m[k], g.R_m2c, g.t_m2c_m, fr.K)
                label = f"{rec.object_name} {rec.proj2d_px:.1f} px" if rec.found else f"{rec.object_name} not found"
                tiles.append(draw_boxes.zoom_tile(img, fr.K, draw_boxes.zoom_window(gt_corners), poses, label, thickness=2))
            pic = draw_boxes.draw_label(pic, "green: ground truth   blue: estimate", (8, 8))
            pic = draw_boxes.with_zoom_strip(pic, tiles)
            images.write_png(out / "overlays" / f"{fr.scene_id:06d}_{fr.im_id:06d}.png", pic)
            written += 1
    summary = object_summary(records)
    if boxes == "localiser":
        summary["localiser_windows"] = window_summary(window_errors)
    per_object = {}
    for name in est.object_names:
        rs = [r for r in records if r.object_name == name]
        if rs:
            s = object_summary(rs)
            per_object[name] = {k: v for k, v in s.items() if not k.startswith("curve")}
    return {"summary": summary, "per_object": per_object, "records": [r.__dict__ for r in records], "bop_estimates": bop_estimates}


def evaluate_hand_dataset(est, root: Path, split: str, gt_center: bool, max_frames: int, out: Path | None, overlays: int) -> dict:
    """Run a :class:`~featmap_ros.estimators.HandPoseEstimator` over an NYU-layout split.

    Frames where no hand is found are counted in ``missed`` and scored with every joint
    error set to 1000 mm (beyond every curve threshold), so a detector failure is never hidden.
    """
    from tqdm import tqdm

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
            pic = skeleton.hand_overlay(depth_m, K, gt_c_m=gt, pred_c_m=pose.joints_m, crop_to=gt[13], scale=2)
            pic = draw_boxes.draw_label(pic, f"green: ground truth  blue: estimate  {errors[-1].mean():.1f} mm", (4, 4))
            images.write_png(out / "overlays" / f"{split}_{i + 1:07d}.png", pic)
            written += 1
    if not errors:
        raise InputError(f"{root / split}: no frames")
    summary = hand_summary(np.stack(errors))
    summary["missed"] = missed
    return summary


def _frame_depth_m(fr) -> np.ndarray:
    for attr in ("depth_m",):
        if hasattr(fr, attr):
            v = getattr(fr, attr)
            return np.asarray(v() if callable(v) else v, dtype=np.float32)

    d = nyu.load_depth_mm(fr.depth_path).astype(np.float32) / 1000.0
    return d


def _palm_center(joints_m: np.ndarray) -> np.ndarray:
    return np.asarray(joints_m, dtype=np.float64)[13]
