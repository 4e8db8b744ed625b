"""Image in, poses out: the Feature Mapping estimators, with no ROS.

- :class:`ObjectPoseEstimator`: colour image + K (+ optional boxes) -> crops -> f, g, h ->
  8 box-corner projections per object -> PnP (OpenCV) (``head: bb8``), or a visible mask and
  model coordinates per cell -> PnP-RANSAC (``head: coords``, :mod:`featmap_ros.coords`) ->
  :class:`~featmap_ros.results.ObjectPose`; then, ``zoom_in`` times, a new crop at the estimated
  pose's training window and a new estimate (:meth:`ObjectPoseEstimator.zoom_windows`).
  Several objects and instances go through the network in one batch. Without boxes, the
  built-in localiser finds each object's window. With a registered depth image, each pose is
  then refined against it (:mod:`featmap_ros.depth_refine`, the model's surface points from the
  checkpoint's meshes).
- :class:`HandPoseEstimator`: depth map (metres) + K -> hand localisation (closest blob) ->
  DeepPrior crop -> f, g, h -> 14 joints in metres, camera optical frame.

Real images go through g (the mapping) when the model was trained with it (checkpoint
``config.mapping``); a model trained without mapping uses f, h directly.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from featmap_ros import coords, crops, geometry, hand_localiser
from featmap_ros.checkpoint import HandMeta, ObjectMeta, load_checkpoint, model_from_checkpoint, resolve_device
from featmap_ros.config import from_dict
from featmap_ros.data.bop import Mesh, load_mesh
from featmap_ros.depth_refine import (DepthRefineConfig, RefineModel, check_registered_depth, refine_model_from_mesh,
                                      refine_pose_with_depth)
from featmap_ros.errors import InputError
from featmap_ros.nets import FeatureMappingNet, LocaliserConfig, build_localiser
from featmap_ros.object_localiser import decode_heatmap
from featmap_ros.onnx_export import DEFAULT_RUNTIME, RUNTIMES, OrtRunner, check_ort_device, ort_or_torch
from featmap_ros.pose_covariance import CovarianceScales, depth_fit_covariance, pnp_covariance, scale_covariance
from featmap_ros.render.toy_object import TOY_NAME, make_toy_object
from featmap_ros.results import HandPose, ObjectPose

log = logging.getLogger(__name__)


#: Mesh source of the project's toy object: checkpoints trained on it (``data.models_root: toy``,
#: the bundled demo weights) store an empty mesh path.
TOY_MESH = "toy"
#: Surface points per object for depth refinement (``depth_refine.refine_model_from_mesh``).
REFINE_POINTS = 500
#: Zoom-in iterations a checkpoint runs with unless told otherwise, per head (docs/results.md,
#: "Zoom-in": measured per iteration on real LM-O frames).
DEFAULT_ZOOM_IN = {"bb8": 0, "coords": 1}


def mesh_sources(meta: ObjectMeta, config: dict | None = None) -> tuple[str, ...]:
    """Where each object's mesh is, for depth refinement: ``meta.mesh_paths``, with an empty
    path read as :data:`TOY_MESH` when the checkpoint's ``config.data`` says it was trained on
    the toy object (``models_root`` empty or ``toy``, no ``mesh``); else '' = unknown.

    Args:
        meta: the objects' facts.
        config: the checkpoint's ``config`` dict (training configuration), or None.
    """
    data = (config or {}).get("data", {}) or {}
    toy = str(data.get("models_root", "toy")) in ("", "toy") and not data.get("mesh")
    paths = list(meta.mesh_paths) + [""] * (len(meta.object_names) - len(meta.mesh_paths))
    return tuple(p if p else (TOY_MESH if toy and name == TOY_NAME else "") for p, name in zip(paths, meta.object_names))


class _Base:
    def __init__(self, model: FeatureMappingNet, use_mapping: bool, device: str, runtime: str = DEFAULT_RUNTIME) -> None:
        if runtime not in RUNTIMES:
            raise InputError(f"runtime: must be one of {list(RUNTIMES)}, got {runtime!r}")
        self.device = resolve_device(device)
        #: ``onnxruntime`` or ``torch``: what runs f, g, h (crops, PnP, localiser stay torch/numpy);
        #: ``torch`` after a fallback (``runtime_fallback`` says why)
        self.runtime = runtime
        #: why ONNX Runtime was asked for but torch runs the network ("" = no fallback)
        self.runtime_fallback = ""
        self._ort = None
        if runtime == "onnxruntime":  # export before the model is cast to fp16 below
            def make() -> OrtRunner:
                check_ort_device(self.device.type)
                return OrtRunner.from_model(model, use_mapping=use_mapping, device=self.device.type)

            self._ort, self.runtime_fallback = ort_or_torch(make, f"{model.cfg.task} network f, g, h")
            if self._ort is None:
                self.runtime = "torch"
        self.half = self.device.type == "cuda"
        self.model = model.eval().to(self.device)
        if self.half:
            self.model = self.model.half()
        self.use_mapping = use_mapping
        self.input_size = model.cfg.input_size

    @torch.no_grad()
    def _infer(self, crops_chw: np.ndarray) -> np.ndarray:
        if self._ort is not None:
            try:
                return self._ort.run(crops_chw)
            except Exception as e:  # noqa: BLE001 - a failing session: torch from now on, said once
                self._ort, self.runtime = None, "torch"
                self.runtime_fallback = f"ONNX Runtime failed on a batch ({type(e).__name__}: {e}): torch runs the network from now on"
                log.warning(self.runtime_fallback)
        x = torch.from_numpy(np.ascontiguousarray(crops_chw)).to(self.device)
        x = x.half() if self.half else x.float()
        y = self.model(x, real=self.use_mapping)
        return y.float().cpu().numpy()


class ObjectPoseEstimator(_Base):
    """6D object pose from a colour image (BB8 corners + PnP), Feature Mapping for real images.

    Args:
        model: f, g, h (an object model).
        meta: the objects' facts (:class:`~featmap_ros.checkpoint.ObjectMeta`, or a checkpoint's
            ``meta`` dict, parsed by :meth:`ObjectMeta.from_dict`).
        localiser: the built-in localiser or None (then boxes are required).
        use_mapping: pass real features through g.
        device: ``auto`` | ``cpu`` | ``cuda``.
        runtime: ``onnxruntime`` (default: f, g, h exported to ONNX and run by ONNX Runtime; torch
            where that fails, logged once) or ``torch``.
        mesh_sources: (n,) per object a mesh file (BOP PLY, millimetres), :data:`TOY_MESH`, or ''
            (no depth refinement); default ``meta.mesh_paths`` (see :func:`mesh_sources`).
        refine_config: thresholds of the depth refinement.
        mesh_root: folder against which relative mesh paths are resolved (checkpoints that name
            their meshes ``obj_000001.ply``: the BOP ``models/`` folder); None = the working directory.
        zoom_in: after the first estimate, crop again this many times at the training window of
            the estimated pose (:func:`~featmap_ros.crops.ground_truth_window`) and estimate again
            (0 = off; each iteration is one more network call over the image's windows).
    """

    def __init__(self, model: FeatureMappingNet, meta: ObjectMeta | dict, localiser: torch.nn.Module | None = None,
                 use_mapping: bool = True, device: str = "auto", runtime: str = DEFAULT_RUNTIME,
                 mesh_sources: Sequence[str] | None = None, refine_config: DepthRefineConfig | None = None,
                 mesh_root: str | Path | None = None, zoom_in: int = 0,
                 covariance_scales: CovarianceScales | None = None) -> None:
        if model.cfg.task != "object":
            raise InputError(f"model.task is {model.cfg.task!r}; ObjectPoseEstimator needs an object model")
        meta = meta if isinstance(meta, ObjectMeta) else ObjectMeta.from_dict(meta)
        if len(meta.object_names) != model.cfg.n_objects:
            raise InputError(f"meta.object_names has {len(meta.object_names)} names but the model predicts {model.cfg.n_objects} objects")
        if meta.head != model.cfg.head:
            raise InputError(f"meta.head is {meta.head!r} but model.head is {model.cfg.head!r}: the checkpoint's parts disagree")
        if int(zoom_in) < 0:
            raise InputError(f"zoom_in: iterations must be >= 0, got {zoom_in}")
        #: re-crops at the estimated pose's window after the first estimate
        self.zoom_in = int(zoom_in)
        self.head = model.cfg.head
        super().__init__(model, use_mapping, device, runtime)
        self.meta = meta
        names = list(meta.object_names)
        self._names = names
        self._index = {n: i for i, n in enumerate(names)}
        self.corners_m = meta.corners_m
        self.obj_ids = list(meta.obj_ids)
        self.extents_m = meta.extents_m
        self.center_m = meta.center_m
        self.window_scale = meta.window_scale
        self.localiser = None
        if localiser is not None:
            self.localiser = localiser.eval().to(self.device)
        sources = tuple(meta.mesh_paths) if mesh_sources is None else tuple(str(m) for m in mesh_sources)
        sources += ("",) * (len(names) - len(sources))
        if len(sources) != len(names):
            raise InputError(f"mesh_sources: {len(sources)} entries for {len(names)} objects")
        #: per object: mesh file, TOY_MESH or '' (depth refinement needs a mesh)
        self.mesh_sources = tuple(s if s in ("", TOY_MESH) or mesh_root is None or Path(s).is_absolute()
                                  else str(Path(mesh_root) / s) for s in sources)
        self.refine_config = DepthRefineConfig() if refine_config is None else refine_config
        #: calibration of the poses' covariances (``ObjectPose.covariance``; bb8 head only)
        self.covariance_scales = CovarianceScales() if covariance_scales is None else covariance_scales
        # built on first use (a colour-only user never pays for the meshes); name -> model or the reason there is none
        self._refine_models: dict[str, RefineModel | str] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", runtime: str = DEFAULT_RUNTIME,
                        mesh_root: str | Path | None = None, zoom_in: int | None = None,
                        covariance_scales: CovarianceScales | None = None) -> "ObjectPoseEstimator":
        """Load an object checkpoint written by ``featmap train object`` (or a bundled one).

        ``mesh_root``: where the meshes it names by relative path are (see the class).
        ``zoom_in``: zoom-in iterations; None = :data:`DEFAULT_ZOOM_IN` of the checkpoint's head.
        ``covariance_scales``: the poses' covariance calibration (default :class:`CovarianceScales`).

        Raises:
            InputError: missing file, a checkpoint of another task (names ``model.task``), or
                weights that do not fit the saved architecture.
        """
        ck = load_checkpoint(path, task="object")
        model = model_from_checkpoint(ck, str(path))
        loc = None
        if ck.get("localiser") is not None:
            lcfg = from_dict(LocaliserConfig, ck["localiser"]["config"], f"{path}: localiser.config")
            loc = build_localiser(replace(lcfg, pretrained=False))  # the weights come from the checkpoint
            loc.load_state_dict(ck["localiser"]["state"])
        meta = ObjectMeta.from_dict(ck.get("meta", {}), f"{path}: meta")
        zoom = DEFAULT_ZOOM_IN[model.cfg.head] if zoom_in is None else zoom_in
        return cls(model, meta, localiser=loc, use_mapping=bool(ck.get("config", {}).get("mapping", True)), device=device,
                   runtime=runtime, mesh_sources=mesh_sources(meta, ck.get("config")), mesh_root=mesh_root, zoom_in=zoom,
                   covariance_scales=covariance_scales)

    @property
    def object_names(self) -> list[str]:
        """Names of the objects the model knows, in head order."""
        return list(self._names)

    def warmup(self) -> None:
        """One dummy pass (allocations, cuDNN autotune) so the first real frame is not slow."""
        self._infer(np.zeros((1, 3, self.input_size, self.input_size), np.float32))
        if self.localiser is not None:
            self.localise(np.zeros((480, 640, 3), np.uint8))

    @torch.no_grad()
    def localise(self, image_rgb: np.ndarray, objects: dict[str, int] | None = None) -> list[tuple[str, crops.Window, float]]:
        """Windows of the objects the localiser finds.

        Args:
            image_rgb: (H, W, 3) uint8.
            objects: object name -> number of instances the image holds (BOP's targets): that
                many windows of each named object (the most likely, whatever their score) and
                none of the others. None = every object the localiser believes present.

        Returns:
            [(object name, window, presence probability)].

        Raises:
            InputError: no localiser in the checkpoint, or an object name it does not know.
        """
        if self.localiser is None:
            raise InputError("no boxes given and this checkpoint has no localiser; pass boxes=[(name, xywh), ...]")
        unknown = sorted(set(objects or {}) - set(self._names))
        if unknown:
            raise InputError(f"localise: unknown object(s) {unknown}; this model knows {self._names}")
        img = _check_image(image_rgb)
        H, W = img.shape[:2]
        lc = self.localiser.cfg
        if lc.kind == "heatmap":  # one scale for both axes: pad the frame (right or bottom) to the input's aspect ratio
            img = crops.pad_to_aspect(img, lc.input_width / lc.input_height)
            H, W = img.shape[:2]
        small = cv2.resize(img, (lc.input_width, lc.input_height), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(small).permute(2, 0, 1)[None].float().div(255).to(self.device)
        out = self.localiser(x)[0].float().cpu()
        counts = None if objects is None else {self._index[name]: int(c) for name, c in objects.items()}
        if lc.kind == "heatmap":
            return [(self._names[k], w, p) for k, w, p in decode_heatmap(out, W, H, counts)]
        found = []
        for i, name in enumerate(self._names):
            u, v, log_side, logit = out[i].numpy()
            p = float(1 / (1 + np.exp(-logit)))
            if (counts is None and p > 0.5) or (counts is not None and counts.get(i, 0) > 0):
                found.append((name, crops.Window(float(u * W), float(v * H), float(np.exp(log_side) * W)), p))
        return found

    def estimate(self, image_rgb: np.ndarray, K: np.ndarray,
                 boxes: Sequence[tuple[str, np.ndarray]] | None = None,
                 depth_m: np.ndarray | None = None, objects: dict[str, int] | None = None) -> list[ObjectPose]:
        """Poses of the objects in one image.

        Args:
            image_rgb: (H, W, 3) uint8 RGB.
            K: (3, 3) intrinsics, pixels.
            boxes: [(object name, (4,) x, y, w, h pixels)], several per object allowed: 2D
                detection boxes, each cropped with the checkpoint's ``window_scale`` margin; or
                [(object name, :class:`~featmap_ros.crops.Window`)]: crop windows used as they are
                (:func:`~featmap_ros.crops.ground_truth_window`; the pose's ``bbox_xywh`` is then
                the window's). None = find the objects with the built-in localiser.
            depth_m: optional (H, W) float depth along z, metres (NaN or 0 = invalid),
                registered to the colour image (same size and K): each pose is then refined
                with it (:meth:`refine_with_depth`).
            objects: with ``boxes=None``, the objects the image holds and their instance counts
                (:meth:`localise`; BOP's targets); None = whatever the localiser finds.

        Returns:
            One :class:`ObjectPose` per box (or per localised object); boxes of unknown
            object names raise InputError. Poses whose PnP fails are left out.

        Raises:
            InputError: bad arguments, naming them; a ``depth_m`` of another size than the
                image (not registered), checked before the network runs.
        """
        img = _check_image(image_rgb)
        K = geometry.check_K(K)
        if depth_m is not None:
            check_registered_depth(depth_m, img.shape[:2])
        poses = self._estimate_colour(img, K, boxes, objects)
        return poses if depth_m is None else self.refine_with_depth(poses, depth_m, K)

    def refine_model(self, name: str) -> RefineModel | str:
        """The surface points of object ``name`` for depth refinement, built once from its mesh
        source; or, when there is none or it is unusable (missing file, no faces), the reason
        (a string naming the mesh): the poses of that object then stay colour poses.

        Raises:
            InputError: an unknown object name.
        """
        if name not in self._index:
            raise InputError(f"unknown object {name!r}; this model knows {self._names}")
        if name not in self._refine_models:
            self._refine_models[name] = self._build_refine_model(name)
        return self._refine_models[name]

    def object_mesh(self, name: str) -> Mesh | str:
        """The mesh of object ``name`` in metres, read from its source (``meta.mesh_paths`` under
        the mesh root, BOP millimetres; the toy's generator), or why there is none (a string
        naming the mesh). Read anew on each call: callers keep what they need.

        Raises:
            InputError: an unknown object name.
        """
        if name not in self._index:
            raise InputError(f"unknown object {name!r}; this model knows {self._names}")
        k = self._index[name]
        src = self.mesh_sources[k]
        if not src:
            return f"no mesh for {name!r} (the checkpoint's meta.mesh_paths is empty)"
        if src == TOY_MESH:
            return make_toy_object(self.obj_ids[k])[0]
        if not Path(src).is_file():
            hint = "" if Path(src).is_absolute() else " (a relative path: set the mesh root, e.g. refine.mesh_root)"
            return f"mesh of {name!r} not found: {src} (meta.mesh_paths){hint}"
        try:
            return load_mesh(src, units="mm")
        except InputError as e:
            return f"mesh of {name!r} unusable: {e}"

    def _build_refine_model(self, name: str) -> RefineModel | str:
        mesh = self.object_mesh(name)
        if isinstance(mesh, str):
            return f"{mesh}: no depth refinement"
        try:
            return refine_model_from_mesh(mesh.vertices_m, mesh.faces, REFINE_POINTS, str(self.mesh_sources[self._index[name]]))
        except InputError as e:
            return f"mesh of {name!r} unusable for depth refinement: {e}"

    def refine_with_depth(self, poses: Sequence[ObjectPose], depth_m: np.ndarray, K: np.ndarray) -> list[ObjectPose]:
        """Refine colour poses with a registered depth image.

        A refined pose takes the refined ``R_m2c``/``t_m2c_m`` and, as its ``score``, the
        refinement's fitness (the fraction of its visible surface the depth confirms). A
        rejected one keeps the colour pose and score, with ``refine_reason`` saying why (no
        mesh, no valid depth in the window, low fitness, moved too far, ...).

        Args:
            poses: colour estimates (not changed).
            depth_m: (H, W) float depth along z, metres (NaN or 0 = invalid), registered to
                the image the poses come from.
            K: (3, 3) intrinsics of the (colour and depth) image, pixels.

        Returns:
            One new :class:`ObjectPose` per input pose, in order.
        """
        K = geometry.check_K(K)
        depth = check_registered_depth(depth_m)
        out = []
        for p in poses:
            model = self.refine_model(p.object_name)
            if isinstance(model, str):
                out.append(replace(p, refined=False, refine_fitness=0.0, refine_rmse_m=float("nan"), refine_reason=model))
                continue
            r = refine_pose_with_depth(p.R_m2c, p.t_m2c_m, depth, K, model, self.refine_config)
            cov = p.covariance  # a refusal keeps the colour pose and its covariance
            if r.accepted:
                sc = self.covariance_scales
                cov = scale_covariance(depth_fit_covariance(r.inlier_rmse_m, p.extents_m), sc.depth_t, sc.depth_rot)
            out.append(replace(
                p, R_m2c=r.R_m2c, t_m2c_m=r.t_m2c_m, score=r.fitness if r.accepted else p.score, refined=r.accepted,
                refine_fitness=r.fitness, refine_rmse_m=r.inlier_rmse_m, refine_reason=r.reason, covariance=cov,
            ))
        return out

    def estimate_images(self, items: Sequence[tuple[np.ndarray, np.ndarray, Sequence | None]]) -> list[list[ObjectPose]]:
        """Colour poses in several images (several cameras) with ONE network call over all their windows.

        Args:
            items: [(image_rgb (H, W, 3) uint8, K (3, 3) pixels, boxes or None)], each as for
                :meth:`estimate` (no depth: refine each image's poses with :meth:`refine_with_depth`).

        Returns:
            Per image, what :meth:`estimate` returns for it.
        """
        jobs, Ks = [], []
        for n, (image_rgb, K, boxes) in enumerate(items):
            img = _check_image(image_rgb)
            Ks.append(geometry.check_K(K))
            jobs.append((img, self._colour_jobs(img, boxes)))
        return self._estimate_jobs([img for img, _ in jobs], Ks, [js for _, js in jobs])

    def _estimate_colour(self, img: np.ndarray, K: np.ndarray, boxes, objects: dict[str, int] | None = None) -> list[ObjectPose]:
        return self._estimate_jobs([img], [K], [self._colour_jobs(img, boxes, objects)])[0]

    def _estimate_jobs(self, images: list[np.ndarray], Ks: list[np.ndarray], jobs: list[list], zoom_in: int | None = None) -> list[list[ObjectPose]]:
        """Poses of every job of every image: one network call per round over all their windows,
        the first round at the jobs' windows, then ``zoom_in`` rounds at the windows of the poses
        (a job whose zoomed estimate fails keeps its last pose)."""
        zoom = self.zoom_in if zoom_in is None else int(zoom_in)
        poses = self._infer_jobs(images, Ks, jobs, [[w for _, w, _, _ in js] for js in jobs])
        for _ in range(zoom):
            windows = [[self.zoom_window(p, K, w) for p, (_, w, _, _) in zip(ps, js)] for ps, js, K in zip(poses, jobs, Ks)]
            again = self._infer_jobs(images, Ks, jobs, windows)
            poses = [[b if b is not None else a for a, b in zip(ps, qs)] for ps, qs in zip(poses, again)]
        return [[p for p in ps if p is not None] for ps in poses]

    def zoom_window(self, pose: ObjectPose | None, K: np.ndarray, fallback: crops.Window) -> crops.Window:
        """The window a zoom-in round crops for ``pose``: the training window of the estimated
        pose (:func:`~featmap_ros.crops.ground_truth_window`); ``fallback`` (the previous window)
        when there is no pose or its window is degenerate (behind the camera, < 8 px, or more than
        4 times the previous window)."""
        if pose is None:
            return fallback
        try:
            w = crops.ground_truth_window(self.corners_m[self._index[pose.object_name]], pose.R_m2c, pose.t_m2c_m, K)
        except InputError:
            return fallback
        if pose.t_m2c_m[2] <= 0 or w.side < 8.0 or w.side > 4.0 * fallback.side:
            return fallback
        return w

    def _infer_jobs(self, images: list[np.ndarray], Ks: list[np.ndarray], jobs: list[list], windows: list[list]) -> list[list[ObjectPose | None]]:
        S = self.input_size
        batch = [_crop_window(img, w, S).astype(np.float32).transpose(2, 0, 1) / 255.0 for img, ws in zip(images, windows) for w in ws]
        pred = self._infer(np.stack(batch)) if batch else None
        out, start = [], 0
        for js, ws, K in zip(jobs, windows, Ks):
            cur = [(i, w, box, presence) for (i, _, box, presence), w in zip(js, ws)]
            out.append(self._job_poses(cur, pred[start:start + len(js)], K) if js else [])
            start += len(js)
        return out

    def _colour_jobs(self, img: np.ndarray, boxes, objects: dict[str, int] | None = None) -> list[tuple[int, crops.Window, np.ndarray, float]]:
        """[(object index, crop window, box xywh, presence)] of one image."""
        jobs: list[tuple[int, crops.Window, np.ndarray, float]] = []
        if boxes is None:
            for name, win, p in self.localise(img, objects):
                jobs.append((self._index[name], win, np.asarray(win.as_xywh()), p))
        else:
            for j, item in enumerate(boxes):
                try:
                    name, xywh = item
                except (TypeError, ValueError):
                    raise InputError(f"boxes[{j}]: expected (object name, xywh), got {item!r}") from None
                if name not in self._index:
                    raise InputError(f"boxes[{j}]: unknown object {name!r}; this model knows {self._names}")
                if isinstance(xywh, crops.Window):  # the crop window itself (e.g. the ground-truth window)
                    jobs.append((self._index[name], xywh, np.asarray(xywh.as_xywh(), dtype=np.float64), 1.0))
                    continue
                b = np.asarray(xywh, dtype=np.float64).reshape(-1)
                jobs.append((self._index[name], crops.window_from_bbox(b, scale=self.window_scale), b, 1.0))
        return jobs

    def _job_poses(self, jobs, pred, K: np.ndarray) -> list[ObjectPose | None]:
        """Poses from the network's output for an image's jobs (None where PnP fails): pred
        (len(jobs), n_objects, 8, 2) for ``head: bb8``, (len(jobs), n_objects, 4, h, w) for ``coords``."""
        results: list[ObjectPose | None] = []
        for k, (i, win, box, presence) in enumerate(jobs):
            cov = None  # the coords head's RANSAC keeps no residuals: its covariance is unknown
            try:
                if self.head == "coords":
                    cp = coords.pose_from_coords(pred[k, i], win, K, self.meta.coords_box_min_m[i], self.meta.coords_box_size_m[i])
                    R, t = cp.R_m2c, cp.t_m2c_m
                    corners_px = geometry.project_model_points(self.corners_m[i], R, t, K)
                    # RANSAC's agreement: the share of the confident cells the pose explains
                    score = presence * cp.n_inliers / max(cp.n_confident, 1)
                else:
                    corners_px = crops.crop_normalised_to_image(pred[k, i], win)
                    R, t = geometry.solve_pnp(self.corners_m[i], corners_px, K)
                    reproj = geometry.project_model_points(self.corners_m[i], R, t, K)
                    err = float(np.mean(np.linalg.norm(reproj - corners_px, axis=1)))
                    # consistency of the 16 numbers with a rigid box: small reprojection error = confident
                    score = presence * float(np.exp(-err / max(0.05 * win.side, 1e-6)))
                    sc = self.covariance_scales
                    cov = scale_covariance(pnp_covariance(self.corners_m[i], corners_px, R, t, K), sc.pnp_t, sc.pnp_rot)
            except InputError as e:
                log.debug("PnP failed for %s: %s", self._names[i], e)
                results.append(None)
                continue
            results.append(ObjectPose(
                object_name=self._names[i], obj_id=self.obj_ids[i], R_m2c=R, t_m2c_m=t, score=score,
                corners_px=corners_px, bbox_xywh=np.asarray(box, dtype=np.float64),
                extents_m=self.extents_m[i].copy(), center_m=self.center_m[i].copy(), covariance=cov,
            ))
        return results


class HandPoseEstimator(_Base):
    """3D hand joints from a depth map (DeepPrior crop, Feature Mapping for real depth).

    Args:
        model: f, g, h (a hand model).
        meta: :class:`~featmap_ros.checkpoint.HandMeta` (joint names, crop cube, localiser depth
            band), or a checkpoint's ``meta`` dict.
        use_mapping: pass real features through g.
        device: ``auto`` | ``cpu`` | ``cuda``.
        runtime: ``torch`` or ``onnxruntime`` (f, g, h exported to ONNX and run by ONNX Runtime;
            :meth:`from_checkpoint` loads the centre refiner with the same runtime).
    """

    def __init__(self, model: FeatureMappingNet, meta: HandMeta | dict, use_mapping: bool = True, device: str = "auto",
                 centre_refiner=None, runtime: str = DEFAULT_RUNTIME) -> None:
        if model.cfg.task != "hand":
            raise InputError(f"model.task is {model.cfg.task!r}; HandPoseEstimator needs a hand model")
        meta = meta if isinstance(meta, HandMeta) else HandMeta.from_dict(meta, model.cfg.n_joints)
        super().__init__(model, use_mapping, device, runtime)
        self.meta = meta
        self.joint_names = list(meta.joint_names)
        self.cube_mm = meta.cube_mm
        #: Optional learned centre refinement (featmap_ros.hand_localiser.HandCentreRefiner) applied
        #: after the closest-blob localiser: its centre lies ~25 mm (mean) from the palm, the
        #: refined one ~13 mm (featmap bench hand-centre).
        self.centre_refiner = centre_refiner

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", refine_centre: bool = True,
                        runtime: str = DEFAULT_RUNTIME) -> "HandPoseEstimator":
        """Load a hand checkpoint (``featmap train hand`` or bundled); InputError on a wrong task.

        Args:
            refine_centre: also load the bundled hand-centre refiner (featmap_ros/weights/hand_centre.pt).
            runtime: ``torch`` or ``onnxruntime`` (see the class).
        """
        ck = load_checkpoint(path, task="hand")
        model = model_from_checkpoint(ck, str(path))
        meta = HandMeta.from_dict(ck.get("meta", {}), model.cfg.n_joints, f"{path}: meta")
        refiner = None
        if refine_centre and meta.centre == "palm":  # the refiner's network runs where f, g, h run
            refiner = hand_localiser.HandCentreRefiner.from_file(runtime=runtime)
        return cls(model, meta, use_mapping=bool(ck.get("config", {}).get("mapping", True)),
                   device=device, centre_refiner=refiner, runtime=runtime)

    def warmup(self) -> None:
        """One dummy pass so the first real frame is not slow."""
        self._infer(np.zeros((1, 1, self.input_size, self.input_size), np.float32))

    def estimate(self, depth_m: np.ndarray, K: np.ndarray) -> HandPose | None:
        """Joints of the hand closest to the camera.

        Args:
            depth_m: (H, W) float32 depth, metres; 0 or NaN = invalid.
            K: (3, 3) intrinsics, pixels.

        Returns:
            :class:`HandPose` (joints (J, 3) metres, optical frame) or None when no hand is found.
        """
        res = self.estimate_batch([depth_m], K)
        return res[0]

    def estimate_batch(self, depths_m: Sequence[np.ndarray], K: np.ndarray,
                       centers_m: Sequence[np.ndarray | None] | None = None) -> list[HandPose | None]:
        """Several depth maps in one network batch (same camera).

        Args:
            depths_m: list of (H, W) float32 depth maps, metres.
            K: (3, 3) intrinsics.
            centers_m: optional known crop centres ((3,) metres, optical frame), e.g. from
                ground truth in evaluation; None entries are localised.
        """
        K = geometry.check_K(K)
        ds, centres = [], []
        for n, d in enumerate(depths_m):
            d = np.asarray(d, dtype=np.float32)
            if d.ndim != 2:
                raise InputError(f"depth_m: expected (H, W), got {d.shape}")
            ds.append(d)
            c = None if centers_m is None else centers_m[n]
            centres.append(_localise_hand(d, K, self.meta) if c is None else c)
        # the localised centres are refined together: one refiner call per round for the batch
        found = [n for n, c in enumerate(centres) if c is not None and (centers_m is None or centers_m[n] is None)]
        if self.meta.centre == "com":  # DeepPrior++: every centre (given or found) seeds the refined CoM
            centres = [None if c is None else _refined_com(d, K, c, self.cube_mm) for d, c in zip(ds, centres)]
        elif found and self.centre_refiner is not None:
            try:
                for n, c in zip(found, self.centre_refiner.refine_batch([ds[n] for n in found], K, [centres[n] for n in found])):
                    centres[n] = c
            except InputError as e:
                log.debug("centre refinement failed, keeping the blob centres: %s", e)
        prepared = []
        for d, c in zip(ds, centres):
            if c is None:
                prepared.append(None)
                continue
            try:
                crop, T = _crop_depth(d, K, np.asarray(c, dtype=np.float64), self.cube_mm, self.input_size)
            except InputError as e:  # e.g. a centre behind the camera: no hand, never a crash
                log.debug("hand crop failed: %s", e)
                prepared.append(None)
                continue
            prepared.append((crop, T))
        ok = [p for p in prepared if p is not None]
        out: list[HandPose | None] = []
        if ok:
            pred = self._infer(np.stack([p[0][None] for p in ok]).astype(np.float32))
        k = 0
        for p in prepared:
            if p is None:
                out.append(None)
                continue
            joints_m = crops.crop_to_joints(pred[k], p[1])
            k += 1
            out.append(HandPose(joint_names=list(self.joint_names), joints_m=joints_m, score=1.0, crop_center_m=np.asarray(p[1].center_c_m, dtype=np.float64).copy()))
        return out


# ----------------------------------------------------------------------------- depth helpers


def localiser_kwargs(meta: HandMeta) -> dict:
    """The keyword arguments of :func:`hand_localiser.localise_hand` for a checkpoint's ``meta``
    (its crop cube and, when set, its depth range)."""
    kw = {"cube_m": meta.cube_mm / 1000.0}
    if meta.depth_range_m is not None:
        kw["near_m"], kw["far_m"] = meta.depth_range_m
    return kw


def _localise_hand(depth_m: np.ndarray, K: np.ndarray, meta: HandMeta) -> np.ndarray | None:
    try:
        c = hand_localiser.localise_hand(depth_m, K, **localiser_kwargs(meta))
    except InputError as e:
        log.debug("no hand: %s", e)
        return None
    return None if c is None else np.asarray(c, dtype=np.float64).reshape(3)


def _refined_com(depth_m: np.ndarray, K: np.ndarray, seed_m: np.ndarray, cube_mm: float) -> np.ndarray | None:
    try:
        return hand_localiser.refined_com_m(depth_m, K, seed_m, cube_m=cube_mm / 1000.0)
    except InputError as e:
        log.debug("no hand centre: %s", e)
        return None


def _crop_depth(depth_m: np.ndarray, K: np.ndarray, center_m: np.ndarray, cube_mm: float, size: int):
    """(crop (size, size) float32 in [-1, 1], DepthCropTransform): :func:`crops.crop_depth`'s crop
    at the cost of the crop (:func:`hand_localiser.crop_depth_at`)."""
    return hand_localiser.crop_depth_at(depth_m, center_m, K, cube_m=cube_mm / 1000.0, size=size)


def _crop_window(image: np.ndarray, window: crops.Window, size: int) -> np.ndarray:
    """:func:`crops.crop_image` on the part of the image around the window only.

    ``crop_image`` anti-aliases a large window by blurring the image it is given; cutting the
    window's neighbourhood out first keeps that cost proportional to the window, not to the frame.
    """
    H, W = image.shape[:2]
    margin = 2.0 * max(window.side / size, 1.0) + 2.0  # covers the pre-blur kernel
    half = window.side / 2.0 + margin
    x0, y0 = max(int(np.floor(window.center_u - half)), 0), max(int(np.floor(window.center_v - half)), 0)
    x1, y1 = min(int(np.ceil(window.center_u + half)) + 1, W), min(int(np.ceil(window.center_v + half)) + 1, H)
    if x1 <= x0 or y1 <= y0:  # window entirely outside the image
        return crops.crop_image(image, window, size)
    sub = image[y0:y1, x0:x1]
    return crops.crop_image(sub, crops.Window(window.center_u - x0, window.center_v - y0, window.side), size)


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.shape[0] < 8 or img.shape[1] < 8:
        raise InputError(f"image_rgb: expected (H, W, 3) uint8, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise InputError(f"image_rgb: expected uint8, got {img.dtype}")
    return img[..., :3]


