"""Adaptation to a camera's own unlabelled frames (``featmap train adapt``): pseudo-pairs for g.

Feature Mapping needs real/synthetic pairs at the same pose. A user can record hours of frames of
their camera without labels; this module makes pairs from them:

1. **Estimate** every object in every frame with the checkpoint's estimator (localiser, pose,
   ``zoom_in`` re-crops at the estimated pose's window).
2. **Score** each estimate without ground truth (:func:`score_estimate`):

   - ``pnp``: the estimator's own score (localiser presence x agreement of the 16 BB8 numbers with
     a rigid box after PnP);
   - ``zoom``: a re-crop at the estimated pose's training window and a new estimate; the mean
     distance of the two poses' projected box corners, relative to the window side (a wrong pose
     moves when it is looked at again);
   - ``edge``: the mesh's silhouette rendered at the pose against the image's edges (Canny): the
     share of the silhouette's contour within :attr:`AdaptConfig.edge_tol_px` of an edge, minus
     the same share with the contour shifted by 15 % of the window in four directions (clutter
     has edges everywhere; only a contour that sits *on* the object's outline loses them when
     moved);
   - ``depth``: the depth refinement's fitness when the frames have depth.

   ``score = pnp * exp(-zoom / 0.05) * max(edge, 0)`` (``* depth fitness`` with depth).
3. **Keep** the top :attr:`AdaptConfig.keep_fraction` of the estimates by score (a rank rule: no
   threshold is tuned on labels), then **refine** them: with depth when it exists (the
   estimator's depth refinement), else by render-and-compare of the silhouette against the
   edges (:func:`refine_on_edges`, a local search over the 6 pose parameters).
4. **Pairs**: the frame and the mesh rendered at the kept pose over it, cropped with the same
   jittered window (:class:`~featmap_ros.data.object_samples.RealSynthPairs`, the pairs of
   ``featmap train object``).
5. **Train** on the pairs (:attr:`AdaptConfig.train`): ``stage2`` (default) runs stage 2 of
   ``featmap train object`` — the one training loop, :func:`featmap_ros.training.loop.train` —
   from the checkpoint's weights on its synthetic stream (re-rendered at the frames' camera)
   plus the pseudo-pairs, with the checkpoint's loss options and a matching target fixed over the
   rounds (the adapted checkpoint's f, frozen) (:func:`train_stage2`); ``g`` trains g alone with
   f and h frozen on the pose loss through h and the Feature Mapping term
   (:func:`featmap_ros.training.loop.feature_match_loss`) (:func:`train_mapping`). The localiser is
   not retrained (not done). Repeat for :attr:`AdaptConfig.rounds` rounds, each with the
   estimator of the model the round before left.

What it measured (docs/results.md, "Adaptation to unlabelled frames"): the scores select well on
real-like frames, but neither training gained on held-out frames, even from true poses at the
scales tried; on the real LM-O frames the synthetic-only estimates were all wrong.

The frames' ground truth is never read (:func:`read_unlabelled_frames` opens no
``scene_gt*.json`` or ``test_targets_bop19.json``). The pseudo-labels of each round go into the
output checkpoint (:class:`~featmap_ros.checkpoint.AdaptationRecord`); where labels exist,
:mod:`featmap_ros.evaluation.pseudo_labels` scores their precision afterwards.
"""
from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np
import torch

from featmap_ros import crops, geometry
from featmap_ros.checkpoint import CHECKPOINT_FORMAT, AdaptationRecord, AdaptRound, PseudoLabelRecord, rng_state, save_checkpoint
from featmap_ros.config import from_dict, to_dict
from featmap_ros.data import bop
from featmap_ros.data.object_samples import FrameRef
from featmap_ros.errors import InputError
from featmap_ros.estimators import ObjectPoseEstimator
from featmap_ros.nets import FeatureMappingNet
from featmap_ros.results import ObjectPose
from featmap_ros.training.augment import photometric_augment
from featmap_ros.training.config import TrainConfig
from featmap_ros.training.loop import feature_match_loss, pose_loss, train
from featmap_ros.training.schedule import cosine_lr
from featmap_ros.training.sources import CachedSource, TensorSource, as_float, stream_seed

log = logging.getLogger(__name__)

#: ``zoom`` disagreement (box-corner distance / window side) at which the consistency factor is 1/e.
ZOOM_SCALE = 0.05
#: contour shift of the edge score's baseline, as a fraction of the compared window.
EDGE_SHIFT_FRAC = 0.15


@dataclass
class AdaptConfig:
    """Typed defaults of ``featmap train adapt`` (``config/adapt.yaml``; ``KEY=VALUE`` overrides).

    Attributes:
        split: the split folder of the frames (``<frames>/<split>/<scene>/rgb``).
        rounds: pseudo-label -> train rounds.
        zoom_in: zoom-in iterations of the estimator that makes the pseudo-labels.
        keep_fraction: share of the scored estimates kept each round, by rank of the score.
        refine: ``auto`` (depth when the frames have it, else the silhouette search), ``depth``,
            ``silhouette`` or ``none``.
        refine_iters: step halvings of the silhouette search.
        compare_size: side of the window crops the edge score and the silhouette search compare, px.
        edge_tol_px: a contour pixel within this distance of an image edge agrees (at ``compare_size``).
        pair_epochs: jittered pairs per kept estimate.
        steps: g training steps per round.
        batch_size: pairs per step.
        lr: AdamW learning rate of g (cosine decay over the round).
        lambda_map: weight of the Feature Mapping term (relative error, as ``feature_match_norm``);
            < 0 = the checkpoint's own ``lambda_map`` (its training config). A larger weight than the
            one the checkpoint was trained with hurt: with true poses on 96 real-like toy frames,
            the demo recipe's 0.1 gained, 3.0 lost 14 points of 2D projection <= 5 px.
        pose_weight: weight of the pose loss on the mapped real crops (targets: the pseudo-labels).
        train: what learns from the pairs: ``stage2`` = stage 2 of ``featmap train object``
            (:func:`featmap_ros.training.loop.train`: f, g, h on the checkpoint's synthetic stream
            plus the pseudo-pairs, the matching target a frozen copy of the adapted checkpoint's f);
            ``g`` = g alone, f and h frozen (:func:`train_mapping`).
        synthetic_count: synthetic crops per object rendered for the ``stage2`` stream (at the
            frames' camera).
        identity_weight: weight of ``feature_match_loss(g(f(x_s)), f(x_s))`` on the pairs' synthetic
            halves: g must leave synthetic features where they are (a few pseudo-pairs otherwise let
            g drift to whatever fits them).
        augment: photometric augmentation of the real crops (``training.augment`` levels).
        max_frames: use at most this many frames (evenly spaced; 0 = all).
        seed: seed of the pairs' jitter and the batches.
    """

    split: str = "test"
    rounds: int = 2
    zoom_in: int = 1
    keep_fraction: float = 0.5
    refine: Literal["auto", "depth", "silhouette", "none"] = "auto"
    refine_iters: int = 3
    compare_size: int = 96
    edge_tol_px: float = 2.0
    pair_epochs: int = 3
    steps: int = 150
    batch_size: int = 32
    lr: float = 3e-4
    lambda_map: float = -1.0
    pose_weight: float = 1.0
    train: Literal["stage2", "g"] = "stage2"
    synthetic_count: int = 500
    identity_weight: float = 0.0
    augment: Literal["none", "photometric", "strong", "simreal"] = "photometric"
    max_frames: int = 0
    seed: int = 0

    def check(self) -> None:
        """Raises InputError naming the field of a value out of range."""
        if self.rounds < 1:
            raise InputError(f"rounds: must be >= 1, got {self.rounds}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise InputError(f"keep_fraction: must be in (0, 1], got {self.keep_fraction}")
        for name in ("steps", "batch_size", "pair_epochs", "compare_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.zoom_in < 0 or self.refine_iters < 0 or self.max_frames < 0:
            raise InputError("zoom_in, refine_iters, max_frames: must be >= 0")


@dataclass(frozen=True)
class UnlabelledFrame:
    """One camera frame without labels.

    Attributes:
        scene_id, im_id: BOP numbering.
        rgb_path: the colour image.
        K: (3, 3) float64 intrinsics, pixels.
        depth_path: registered depth PNG or None.
        depth_scale: depth PNG value x depth_scale = millimetres.
    """

    scene_id: int
    im_id: int
    rgb_path: Path
    K: np.ndarray
    depth_path: Path | None = None
    depth_scale: float = 1.0


def read_unlabelled_frames(root: str | Path, split: str = "test", max_frames: int = 0) -> list[UnlabelledFrame]:
    """The frames of a BOP folder that have an image, without reading any ground truth.

    Only ``<root>/<split>/<scene>/scene_camera.json`` and the image folders are read; a
    ``scene_gt.json``, ``scene_gt_info.json`` or ``test_targets_bop19.json`` beside them is never
    opened.

    Args:
        root: BOP dataset folder.
        split: split folder.
        max_frames: at most this many, evenly spaced in (scene, im_id) order (0 = all).

    Returns:
        Frames sorted by (scene_id, im_id).

    Raises:
        InputError: no split folder, no scene, or no frame with an image (naming the folder).
    """
    split_dir = Path(root) / split
    scenes = bop.list_scenes(split_dir)
    if not scenes:
        raise InputError(f"--frames: {split_dir} has no scene folders (expected {split_dir}/<scene>/rgb/*.png and scene_camera.json)")
    out = []
    for sdir in scenes:
        for f in bop.read_scene(sdir, ground_truth=False):
            if f.rgb_path is not None:
                out.append(UnlabelledFrame(f.scene_id, f.im_id, f.rgb_path, f.K, f.depth_path, f.depth_scale))
    if not out:
        raise InputError(f"--frames: no frame of {split_dir} has an image (rgb/<im_id:06d>.png)")
    if max_frames and len(out) > max_frames:
        out = [out[int(i)] for i in np.linspace(0, len(out) - 1, max_frames).round()]
    return out


# ----------------------------------------------------------------------------- scoring without labels


@dataclass(frozen=True)
class EdgeView:
    """An image window prepared for silhouette-to-edge comparisons.

    Attributes:
        window: the image window compared, pixels.
        size: its side in the comparison, px.
        dist_px: (size, size) float32 distance of each pixel to the nearest Canny edge, px.
    """

    window: crops.Window
    size: int
    dist_px: np.ndarray


def edge_view(image_rgb: np.ndarray, window: crops.Window, size: int) -> EdgeView:
    """Canny edges of ``image_rgb`` inside ``window`` resized to ``size``, as a distance map.

    The Canny thresholds follow the crop's median intensity (0.66x and 1.33x), so that dark and
    bright frames give edges alike.
    """
    crop = crops.crop_image(image_rgb, window, size)
    gray = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    med = float(np.median(gray))
    edges = cv2.Canny(gray, max(5.0, 0.66 * med), max(10.0, min(255.0, 1.33 * med)))
    dist = cv2.distanceTransform((edges == 0).astype(np.uint8), cv2.DIST_L2, 3)
    return EdgeView(window, int(size), dist.astype(np.float32))


def silhouette_contour(renderer, mesh, R_m2c: np.ndarray, t_m2c_m: np.ndarray, K: np.ndarray, view: EdgeView) -> np.ndarray:
    """(N, 2) int (row, col) pixels of the silhouette's outline in the view's window (N may be 0)."""
    if float(np.asarray(t_m2c_m).reshape(3)[2]) <= 0.05:
        return np.zeros((0, 2), int)
    mask = renderer.render_crop(mesh, R_m2c, t_m2c_m, K, view.window, view.size, depth_only=True).mask
    m8 = mask.astype(np.uint8)
    inner = cv2.erode(m8, np.ones((3, 3), np.uint8), borderValue=0)
    return np.argwhere((m8 > 0) & (inner == 0))


def _share_near(view: EdgeView, rc: np.ndarray, tol_px: float) -> float:
    if len(rc) == 0:
        return 0.0
    inside = (rc[:, 0] >= 0) & (rc[:, 0] < view.size) & (rc[:, 1] >= 0) & (rc[:, 1] < view.size)
    near = np.zeros(len(rc), bool)
    near[inside] = view.dist_px[rc[inside, 0], rc[inside, 1]] <= tol_px
    return float(near.mean())


def edge_score(view: EdgeView, contour_rc: np.ndarray, tol_px: float) -> tuple[float, float]:
    """(agreement, peak) of a silhouette outline with the image edges.

    agreement: share of the outline within ``tol_px`` of an edge; peak: agreement minus its mean
    over the outline shifted by :data:`EDGE_SHIFT_FRAC` of the window right, left, down and up
    (in [-1, 1]; high only where the outline sits on edges that a shifted outline misses).
    An outline of fewer than 8 pixels scores (0, 0).
    """
    if len(contour_rc) < 8:
        return 0.0, 0.0
    at = _share_near(view, contour_rc, tol_px)
    d = max(1, int(round(EDGE_SHIFT_FRAC * view.size)))
    base = np.mean([_share_near(view, contour_rc + np.array(s), tol_px) for s in ((0, d), (0, -d), (d, 0), (-d, 0))])
    return at, at - float(base)


def chamfer_cost(view: EdgeView, contour_rc: np.ndarray, cap_px: float = 5.0) -> float:
    """Symmetric chamfer distance of a silhouette outline and the image edges near it, px.

    The mean of (a) each outline pixel's distance to the nearest edge, capped at ``cap_px``
    (outline pixels outside the window count ``cap_px``) and (b) each edge pixel's distance to
    the outline, over the edges within ``cap_px`` of it. (a) alone lets a silhouette shrink onto
    the object's inner edges; (b) holds it to the outer ones. ``cap_px`` when there is no outline.
    """
    if len(contour_rc) < 8:
        return float(cap_px)
    n = view.size
    inside = (contour_rc[:, 0] >= 0) & (contour_rc[:, 0] < n) & (contour_rc[:, 1] >= 0) & (contour_rc[:, 1] < n)
    d = np.full(len(contour_rc), float(cap_px))
    d[inside] = np.minimum(view.dist_px[contour_rc[inside, 0], contour_rc[inside, 1]], cap_px)
    line = np.ones((n, n), np.uint8)
    line[contour_rc[inside, 0], contour_rc[inside, 1]] = 0
    to_outline = cv2.distanceTransform(line, cv2.DIST_L2, 3)
    near_edges = (view.dist_px == 0) & (to_outline <= cap_px)
    back = float(to_outline[near_edges].mean()) if near_edges.any() else float(cap_px)
    return 0.5 * (float(d.mean()) + back)


def _axis_rotation(axis: int, angle_rad: float) -> np.ndarray:
    w = np.zeros(3)
    w[axis] = angle_rad
    return cv2.Rodrigues(w)[0]


def refine_on_edges(renderer, mesh, R_m2c: np.ndarray, t_m2c_m: np.ndarray, K: np.ndarray, view: EdgeView,
                    iters: int = 3, step_px: float = 4.0, step_deg: float = 6.0, step_depth: float = 0.04) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Render-and-compare refinement of a pose on the silhouette's agreement with the image edges.

    A steepest-descent search over the 6 pose parameters (image-plane shift, depth, rotation about
    the three camera axes through the object's origin), each tried in both directions: the best
    move is taken while it lowers :func:`chamfer_cost` (at most 3 per step size); the step sizes
    halve ``iters`` times.

    Args:
        renderer: a :class:`~featmap_ros.render.renderer.MeshRenderer`.
        mesh: the object's mesh (metres).
        R_m2c, t_m2c_m: (3, 3), (3,) the start pose, metres.
        K: (3, 3) full-image intrinsics.
        view: the window the outline is compared in (:func:`edge_view`).
        iters: step halvings.
        step_px: first image-plane step, pixels of the view (``view.size``).
        step_deg: first rotation step, degrees.
        step_depth: first depth step, fraction of the depth.

    Returns:
        (R_m2c, t_m2c_m, cost before, cost after); cost in px of the view.
    """
    R, t = np.array(R_m2c, np.float64), np.array(t_m2c_m, np.float64).reshape(3)
    cost0 = best = chamfer_cost(view, silhouette_contour(renderer, mesh, R, t, K, view))
    px_to_img = view.window.side / view.size
    for it in range(iters):
        scale = 0.5 ** it
        for _ in range(3):  # steepest descent at this step size: the best of the 12 moves, while one helps
            cands = []
            for sign in (1.0, -1.0):
                du = sign * step_px * scale * px_to_img * t[2] / K[0, 0]
                dv = sign * step_px * scale * px_to_img * t[2] / K[1, 1]
                dz = sign * step_depth * scale * t[2]
                cands += [(R, t + np.array([du, 0, 0])), (R, t + np.array([0, dv, 0])), (R, t + np.array([0, 0, dz]))]
                cands += [(_axis_rotation(a, np.radians(sign * step_deg * scale)) @ R, t) for a in range(3)]
            costs = [chamfer_cost(view, silhouette_contour(renderer, mesh, R2, t2, K, view)) for R2, t2 in cands]
            k = int(np.argmin(costs))
            if costs[k] >= best - 1e-6:
                break
            (R, t), best = cands[k], costs[k]
    return R, t, cost0, best


@dataclass
class Estimate:
    """One pseudo-label candidate: an estimate and its label-free scores.

    Attributes:
        frame: the frame it comes from.
        pose: the estimate (after refinement when ``refined``).
        obj_index: the object's head index.
        pnp: the estimator's score (presence x rigid-box agreement), [0, 1].
        zoom: box-corner disagreement with a re-crop's estimate / window side.
        edge_agreement, edge_peak: :func:`edge_score` at the (unrefined) estimate.
        depth_fitness: depth refinement fitness (None without depth).
        score: the combined score (module docstring).
        kept: among the kept estimates.
        refined: '' | 'depth' | 'silhouette'.
    """

    frame: UnlabelledFrame
    pose: ObjectPose
    obj_index: int
    pnp: float
    zoom: float
    edge_agreement: float
    edge_peak: float
    depth_fitness: float | None = None
    score: float = 0.0
    kept: bool = False
    refined: str = ""


def combined_score(pnp: float, zoom: float, edge_peak: float, depth_fitness: float | None) -> float:
    """``pnp * exp(-zoom / ZOOM_SCALE) * max(edge_peak, 0)`` (``* depth_fitness`` when given)."""
    s = float(pnp) * float(np.exp(-float(zoom) / ZOOM_SCALE)) * max(float(edge_peak), 0.0)
    return s * float(depth_fitness) if depth_fitness is not None else s


def _pose_window(pose: ObjectPose) -> crops.Window:
    x, y, w, h = (float(v) for v in pose.bbox_xywh)
    return crops.Window(x + w / 2.0, y + h / 2.0, max(w, h, 8.0))


def score_frame(est: ObjectPoseEstimator, frame: UnlabelledFrame, meshes: Sequence, renderer, cfg: AdaptConfig) -> list[Estimate]:
    """Estimate every object of one frame and score each estimate without labels.

    Args:
        est: the estimator (its ``zoom_in`` is used as it is).
        frame: the frame.
        meshes: per head index the object's mesh (metres).
        renderer: a MeshRenderer.
        cfg: comparison sizes.
    """
    img = bop.load_rgb(frame.rgb_path)
    K = frame.K
    poses = est.estimate(img, K)
    if not poses:
        return []
    index = {n: i for i, n in enumerate(est.object_names)}
    windows = [est.zoom_window(p, K, _pose_window(p)) for p in poses]
    # the re-crop's estimates, matched back by their window (a failed PnP leaves one out)
    again = est.estimate(img, K, boxes=[(p.object_name, w) for p, w in zip(poses, windows)])
    depth_fit: list[float | None] = [None] * len(poses)
    if frame.depth_path is not None:
        depth_m = bop.load_depth_m(frame.depth_path, frame.depth_scale)
        refined = est.refine_with_depth(poses, depth_m, K)
        depth_fit = [float(r.refine_fitness) for r in refined]
    out = []
    for n, p in enumerate(poses):
        k = index[p.object_name]
        corners = est.corners_m[k]
        a = geometry.project_model_points(corners, p.R_m2c, p.t_m2c_m, K)
        win = windows[n]
        q = next((q for q in again if q.object_name == p.object_name and np.allclose(q.bbox_xywh, win.as_xywh())), None)
        zoom = float(np.mean(np.linalg.norm(geometry.project_model_points(corners, q.R_m2c, q.t_m2c_m, K) - a, axis=1)) / win.side) if q is not None else 1.0
        view = edge_view(img, crops.Window(win.center_u, win.center_v, win.side * 1.2), cfg.compare_size)
        agree, peak = edge_score(view, silhouette_contour(renderer, meshes[k], p.R_m2c, p.t_m2c_m, K, view), cfg.edge_tol_px)
        e = Estimate(frame, p, k, float(p.score), zoom, agree, peak, depth_fit[n])
        e.score = combined_score(e.pnp, e.zoom, e.edge_peak, e.depth_fitness)
        out.append(e)
    return out


def keep_top(estimates: list[Estimate], keep_fraction: float) -> float:
    """Mark the top ``keep_fraction`` of ``estimates`` by score as kept (never a score <= 0).

    Returns:
        The score threshold used (the lowest kept score; inf when none is kept).
    """
    order = sorted(range(len(estimates)), key=lambda i: -estimates[i].score)
    n_keep = int(np.ceil(keep_fraction * len(estimates)))
    kept = [i for i in order[:n_keep] if estimates[i].score > 0]
    keep = set(kept)
    for i, e in enumerate(estimates):
        e.kept = i in keep
    return float(min(estimates[i].score for i in kept)) if kept else float("inf")


def refine_kept(est: ObjectPoseEstimator, estimates: list[Estimate], meshes: Sequence, renderer, cfg: AdaptConfig) -> None:
    """Refine the kept estimates in place: depth (frames with depth) or the silhouette search."""
    for e in estimates:
        if not e.kept or cfg.refine == "none":
            continue
        has_depth = e.frame.depth_path is not None
        if has_depth and cfg.refine in ("auto", "depth"):
            depth_m = bop.load_depth_m(e.frame.depth_path, e.frame.depth_scale)
            r = est.refine_with_depth([e.pose], depth_m, e.frame.K)[0]
            if r.refined:
                e.pose, e.refined = r, "depth"
            continue
        if cfg.refine in ("auto", "silhouette"):
            img = bop.load_rgb(e.frame.rgb_path)
            win = est.zoom_window(e.pose, e.frame.K, _pose_window(e.pose))
            view = edge_view(img, crops.Window(win.center_u, win.center_v, win.side * 1.2), cfg.compare_size)
            R, t, c0, c1 = refine_on_edges(renderer, meshes[e.obj_index], e.pose.R_m2c, e.pose.t_m2c_m, e.frame.K, view, cfg.refine_iters)
            if c1 < c0:
                e.pose, e.refined = replace(e.pose, R_m2c=R, t_m2c_m=t), "silhouette"


# ----------------------------------------------------------------------------- training g on the pairs


def pseudo_frame_refs(estimates: Sequence[Estimate], n_objects: int) -> list[list[FrameRef]]:
    """Per head index, the kept estimates as the frames :class:`RealSynthPairs` renders pairs of."""
    out: list[list[FrameRef]] = [[] for _ in range(n_objects)]
    for j, e in enumerate(x for x in estimates if x.kept):
        out[e.obj_index].append(FrameRef(e.frame.scene_id, e.frame.im_id, j, e.frame.rgb_path, e.frame.K,
                                         np.asarray(e.pose.R_m2c, np.float64), np.asarray(e.pose.t_m2c_m, np.float64), None))
    return out


@torch.no_grad()
def pair_features(model: FeatureMappingNet, pairs: dict, augment: str, seed: int, chunk: int = 64) -> dict[str, torch.Tensor]:
    """f's features of the pairs, computed once (f is frozen): the real crops photometrically
    augmented once each (seeded), the synthetic ones as they are.

    Args:
        model: f, g, h (f in eval mode is used).
        pairs: ``real``, ``synth`` (N, 3, S, S) uint8 or float in [0, 1], ``corners_n`` (N, 8, 2),
            ``obj_index`` (N,) (:func:`featmap_ros.training.prepare.render_pairs`).
        augment: ``training.augment`` level of the real crops.
        seed: seed of the augmentation.

    Returns:
        ``f_real`` (N, ...) and ``f_synth`` (N, ...) float32, ``corners_n``, ``obj_index``.
    """
    model.eval()
    fr, fs = [], []
    n = len(pairs["real"])
    for a in range(0, n, chunk):
        gen = torch.Generator().manual_seed(stream_seed(seed, 31, a))
        xr = photometric_augment(as_float(pairs["real"][a:a + chunk]), gen, augment)
        fr.append(model.f(xr).float())
        fs.append(model.f(as_float(pairs["synth"][a:a + chunk])).float())
    return {"f_real": torch.cat(fr), "f_synth": torch.cat(fs), "corners_n": pairs["corners_n"].float(),
            "obj_index": pairs["obj_index"].long()}


def train_mapping(model: FeatureMappingNet, features: dict[str, torch.Tensor], cfg: AdaptConfig, step0: int = 0,
                  progress: bool = True) -> dict:
    """Train g alone on pseudo-pairs, f and h frozen (in place).

    Loss per step: ``pose_weight * pose(h(g(f(x_r))), pseudo corners)
    + lambda_map * feature_match_loss(g(f(x_r)), f(x_s))``, the Feature Mapping term of stage 2
    (:func:`featmap_ros.training.loop.feature_match_loss`, relative error). f's features come
    precomputed (:func:`pair_features`): f is frozen, so they do not change.

    Args:
        model: f, g, h with a ``bb8`` head; only g's parameters change.
        features: :func:`pair_features`'s output.
        cfg: steps, batch size, learning rate, weights.
        step0: global step of the first step (the batches are drawn from it).
        progress: show tqdm.

    Returns:
        ``{"pose_real": mean of the last 20 steps, "feature_match": ..., "steps": n}``.
    """
    from tqdm import tqdm

    if model.cfg.head != "bb8":
        raise InputError(f"model.head is {model.cfg.head!r}: featmap train adapt trains the bb8 head's g only")
    source = TensorSource(features, cfg.seed, 41)
    lam = cfg.lambda_map if cfg.lambda_map >= 0 else 1.0
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    for p in model.g.parameters():
        p.requires_grad_(True)
    model.g.train()
    opt = torch.optim.AdamW(model.g.parameters(), lr=cfg.lr, weight_decay=1e-4)
    hist: dict[str, list[float]] = {"pose_real": [], "feature_match": []}
    try:
        for s in tqdm(range(cfg.steps), desc="adapt g", disable=not progress, dynamic_ncols=True):
            for grp in opt.param_groups:
                grp["lr"] = cosine_lr(cfg.lr, s, cfg.steps, 0.05)
            b = source.batch(step0 + s, cfg.batch_size)
            f_real = model.g(b["f_real"])
            lp = pose_loss(model.pose_from_features(f_real), b["corners_n"], b["obj_index"])
            fm = feature_match_loss(f_real, b["f_synth"], norm=True)
            loss = cfg.pose_weight * lp + lam * fm
            if cfg.identity_weight > 0:
                loss = loss + cfg.identity_weight * feature_match_loss(model.g(b["f_synth"]), b["f_synth"], norm=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hist["pose_real"].append(lp.item())
            hist["feature_match"].append(fm.item())
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.eval()
    return {"pose_real": float(np.mean(hist["pose_real"][-20:])), "feature_match": float(np.mean(hist["feature_match"][-20:])),
            "steps": int(cfg.steps)}


def train_stage2(model: FeatureMappingNet, train_config: dict, pairs: dict, synthetic: dict, teacher_f: dict, cfg: AdaptConfig,
                 work: Path, meta: dict, progress: bool = True) -> tuple[FeatureMappingNet, dict]:
    """Stage 2 of ``featmap train object`` (:func:`featmap_ros.training.loop.train`, the one
    training loop) from ``model``'s weights, on the pseudo-pairs and the synthetic stream.

    The checkpoint's own training config is kept (loss options, ``lambda_map`` unless
    ``cfg.lambda_map >= 0``, ``match_target``, ``augment``, batch sizes) with ``steps_stage1=0``,
    ``steps_stage2=cfg.steps``, ``lr`` and ``seed`` from ``cfg`` and ``mapping`` on; ``teacher_f`` (the state of a
    frozen f, the matching target of ``match_target: stage1``) is the same in every round.

    Args:
        model: the model to start from (not changed).
        train_config: the checkpoint's ``config`` dict (a :class:`TrainConfig`).
        pairs: :func:`featmap_ros.training.prepare.render_pairs` tensors of the kept estimates.
        synthetic: :func:`featmap_ros.training.prepare.render_synthetic_objects` tensors.
        teacher_f: state dict of the frozen f.
        cfg: steps, learning rate, lambda, seed.
        work: an empty folder for the loop's checkpoint.
        meta: the checkpoint's meta (saved by the loop).

    Returns:
        (the trained model, the loop's metrics).
    """
    tc = from_dict(TrainConfig, {k: v for k, v in train_config.items()}, "checkpoint config")
    tc.model = replace(model.cfg, pretrained=False)
    tc.steps_stage1, tc.steps_stage2 = 0, int(cfg.steps)
    tc.lr, tc.seed, tc.mapping = float(cfg.lr), int(cfg.seed), True
    if cfg.lambda_map >= 0:
        tc.lambda_map = float(cfg.lambda_map)
    tc.checkpoint_every, tc.tensorboard, tc.eval_every, tc.localiser_steps = 0, False, 0, 0
    tc.batch_size = min(tc.batch_size, cfg.batch_size)
    tc.pair_batch_size = min(tc.pair_batch_size, cfg.batch_size)
    start = copy.deepcopy(model)
    opt = torch.optim.AdamW(start.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    save_checkpoint(Path(work) / "last.pt", {
        "format": CHECKPOINT_FORMAT, "task": "object", "model_config": to_dict(tc.model), "config": to_dict(tc),
        "model": start.state_dict(), "optimizer": opt.state_dict(), "scaler": torch.amp.GradScaler("cuda", enabled=False).state_dict(),
        "rng": rng_state(), "step": 0, "metrics": {"history": []}, "meta": meta, "teacher_f": teacher_f})
    res = train(tc, CachedSource(synthetic, tc.seed, 0), CachedSource(pairs, tc.seed, 1), work, meta=meta, resume=True,
                device="cpu", progress=progress)
    return res.model, res.metrics


# ----------------------------------------------------------------------------- the rounds


@dataclass
class AdaptResult:
    """What :func:`adapt` returns: the adapted model and what each round did."""

    model: FeatureMappingNet
    record: AdaptationRecord
    rounds: list[list[Estimate]] = field(default_factory=list)


def load_meshes(mesh_root: str | Path, obj_ids: Sequence[int], corners_m: np.ndarray) -> tuple[list, list]:
    """The meshes and model infos of ``obj_ids`` from a BOP ``models/`` folder.

    Raises:
        InputError: a missing mesh or ``models_info.json`` entry, or a mesh whose box differs
            from the checkpoint's (``meta.corners_m``, naming the file): another object.
    """
    root = Path(mesh_root)
    if not root.is_dir():
        raise InputError(f"--mesh-root: {root}: folder not found")
    info_path = root / "models_info.json"
    infos_all = bop.load_models_info(info_path) if info_path.is_file() else {}
    meshes, infos = [], []
    for k, oid in enumerate(obj_ids):
        mp = root / f"obj_{int(oid):06d}.ply"
        if not mp.is_file():
            raise InputError(f"--mesh-root: {mp} not found (the checkpoint estimates obj_id {int(oid)})")
        mesh = bop.load_mesh(mp, units="mm")
        info = infos_all.get(int(oid)) or bop.model_info_from_mesh(int(oid), mesh)
        err = float(np.abs(np.asarray(info.corners_m) - corners_m[k]).max())
        if err > 2e-3:
            raise InputError(f"--mesh-root: {mp} (and {info_path.name}) has a box {err * 1000:.1f} mm off the checkpoint's "
                             f"meta.corners_m for obj_id {int(oid)}: not the mesh the checkpoint was trained on")
        meshes.append(mesh)
        infos.append(info)
    return meshes, infos


def adapt(model: FeatureMappingNet, est_kwargs: dict, frames: Sequence[UnlabelledFrame], meshes: Sequence, infos: Sequence,
          cfg: AdaptConfig, source: str, frames_desc: str, progress: bool = True, on_round=None,
          stage2: dict | None = None) -> AdaptResult:
    """Rounds of pseudo-labelling and g training (module docstring).

    Args:
        model: f, g, h to adapt (a copy is adapted; the argument is not changed).
        est_kwargs: keyword arguments of :class:`ObjectPoseEstimator` besides the model and
            ``zoom_in`` (``meta``, ``localiser``, ``mesh_sources``, ``mesh_root``, ``device``).
        frames: the unlabelled frames.
        meshes, infos: per head index the object's mesh (metres) and model info.
        cfg: the adaptation config (checked).
        source: the checkpoint adapted (recorded).
        frames_desc: where the frames came from (recorded), e.g. the folder or ``bag:...``.
        progress: tqdm bars.
        on_round: optional ``callback(round_index, model)`` after each round's training.
        stage2: for ``cfg.train == "stage2"``: ``config`` (the checkpoint's training config dict),
            ``meta`` (its meta dict), ``backgrounds``, ``occluder_prob``, ``cutout_prob`` (of the
            synthetic stream).

    Returns:
        :class:`AdaptResult`.
    """
    from tqdm import tqdm

    from featmap_ros.render.renderer import MeshRenderer
    from featmap_ros.training.prepare import render_pairs, render_synthetic_objects

    cfg.check()
    if not frames:
        raise InputError("adapt: no frames")
    model = copy.deepcopy(model).eval()
    if cfg.train == "stage2" and stage2 is None:
        raise InputError("adapt: train 'stage2' needs the checkpoint's training config (stage2=...)")
    teacher = {k: v.detach().clone() for k, v in model.f.state_dict().items()}  # the matching target of every round
    synthetic = None
    rounds: list[AdaptRound] = []
    all_estimates: list[list[Estimate]] = []
    step = 0
    with MeshRenderer(cfg.compare_size, cfg.compare_size) as renderer:
        for r in range(cfg.rounds):
            t0 = time.perf_counter()
            est = ObjectPoseEstimator(model, use_mapping=True, zoom_in=cfg.zoom_in, **est_kwargs)
            estimates: list[Estimate] = []
            for fr in tqdm(frames, desc=f"round {r + 1}/{cfg.rounds}: pseudo-labels", unit="frame", disable=not progress, dynamic_ncols=True):
                estimates += score_frame(est, fr, meshes, renderer, cfg)
            threshold = keep_top(estimates, cfg.keep_fraction)
            refine_kept(est, estimates, meshes, renderer, cfg)
            t_label = time.perf_counter() - t0
            kept = [e for e in estimates if e.kept]
            train_m: dict = {"steps": 0}
            if kept:
                refs = pseudo_frame_refs(estimates, model.cfg.n_objects)
                tensors = render_pairs(refs, meshes, infos, model.cfg.input_size, cfg.seed * 1000 + r, cfg.pair_epochs, progress=False)
                if cfg.train == "g":
                    feats = pair_features(model, tensors, cfg.augment, cfg.seed * 1000 + r)
                    train_m = train_mapping(model, feats, cfg, step0=step, progress=progress)
                else:
                    if synthetic is None:
                        synthetic = render_synthetic_objects(meshes, infos, frames[0].K, model.cfg.input_size, cfg.synthetic_count, cfg.seed,
                                                             stage2["backgrounds"], progress, stage2["occluder_prob"], stage2["cutout_prob"])
                    with tempfile.TemporaryDirectory(prefix="featmap_adapt_stage2_") as work:
                        model, m = train_stage2(model, stage2["config"], tensors, synthetic, teacher, cfg, Path(work), stage2["meta"], progress)
                    last = m["history"][-1] if m.get("history") else {}
                    train_m = {"steps": cfg.steps, "pose_real": last.get("pose_real", float("nan")),
                               "feature_match": last.get("feature_match", float("nan"))}
                step += cfg.steps
            else:
                log.warning("round %d: no estimate kept; g is not trained this round", r + 1)
            rounds.append(AdaptRound(
                round=r + 1, frames=len(frames), estimates=len(estimates), kept=len(kept), threshold=threshold,
                refined=sum(1 for e in kept if e.refined), train_steps=int(train_m["steps"]),
                label_seconds=t_label, seconds=time.perf_counter() - t0,
                loss_pose_real=float(train_m.get("pose_real", float("nan"))), loss_feature_match=float(train_m.get("feature_match", float("nan"))),
                labels=tuple(_label_record(e) for e in estimates)))
            all_estimates.append(estimates)
            log.info("round %d: %d estimates, %d kept (score >= %.4f), %d refined", r + 1, len(estimates), len(kept), threshold,
                     rounds[-1].refined)
            if on_round is not None:
                on_round(r, model)
    record = AdaptationRecord(source_checkpoint=str(source), frames=str(frames_desc), split=cfg.split, n_frames=len(frames),
                              config=_config_dict(cfg), rounds=tuple(rounds))
    return AdaptResult(model, record, all_estimates)


def _config_dict(cfg: AdaptConfig) -> dict:
    return to_dict(cfg)


def _label_record(e: Estimate) -> PseudoLabelRecord:
    return PseudoLabelRecord(scene_id=e.frame.scene_id, im_id=e.frame.im_id, obj_id=int(e.pose.obj_id),
                             R_m2c=tuple(float(x) for x in np.asarray(e.pose.R_m2c).ravel()),
                             t_m2c_m=tuple(float(x) for x in np.asarray(e.pose.t_m2c_m).ravel()),
                             score=float(e.score), pnp=float(e.pnp), zoom=float(e.zoom), edge_peak=float(e.edge_peak),
                             depth_fitness=float("nan") if e.depth_fitness is None else float(e.depth_fitness),
                             kept=bool(e.kept), refined=e.refined)
