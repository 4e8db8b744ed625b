"""Training and evaluation samples for the colour (LINEMOD) task, as torch datasets.

- :class:`SyntheticObjectDataset` (``IterableDataset``): the object rendered online at poses on
  the upper hemisphere over random backgrounds, cropped around it with BB8 jitter. Sample ``i`` is
  drawn from ``numpy.random.default_rng([seed, i])``, so the stream is the same for any number of
  DataLoader workers (worker ``w`` of ``n`` renders samples ``w, w + n, ...``, each worker with its
  own renderer).
- :class:`RealSynthPairs`: for each real training frame, the object rendered at its ground-truth
  pose and composited over the same real image (the paper's Fig. 3); both cropped with one window.
- :class:`BopCropDataset`: crops of BOP frames for evaluation (window from the ground truth or given).

Every sample is a dict of tensors::

    image      (3, S, S) float32 in [0, 1]     RGB crop
    corners_n  (8, 2) float32                  box corners, crop-normalised ([-1, 1] = window edges)
    R_m2c      (3, 3) float32                  rotation model -> camera
    t_m2c_m    (3,) float32                    translation, metres
    K          (3, 3) float32                  full-image intrinsics, pixels
    window     (3,) float32                    window centre u, v and side, full-image pixels

(pairs carry ``real`` and ``synth`` instead of ``image``). With ``coords_stride`` > 0 (the
``coords`` head's targets, :func:`featmap_ros.coords.coords_targets`) they also carry::

    coords_n   (3, S/s, S/s) float32           box-normalised model coordinates seen in each cell
    mask_visib (S/s, S/s) float32 in [0, 1]    visible fraction of each cell (pairs: the silhouette)
 The crop window of a pose is
:func:`featmap_ros.crops.object_window` (the one ground-truth window): the square around the projected
3D box corners, 1.1 times their extent; training jitters it by up to +-10 px and +-20 % of its side (BB8).

Pose sampling (:func:`sample_pose`): viewing direction uniform on the upper hemisphere of the model
frame (azimuth 0-360 deg, elevation 0-90 deg, uniform in area), in-plane rotation uniform in
+-``inplane_deg``, distance uniform in the dataset's range; the object's centre is then placed at a
uniformly drawn pixel (keeping a margin), rotating the whole pose so that the object is still seen
from the sampled direction relative to the line of sight.

Occlusion (both off by default, so that existing streams and caches are unchanged): with
``occluder_prob`` an occluder mesh (another object of the model, or a distractor shape) is
rendered in front of the target (:func:`add_occluder`), and with ``cutout_prob`` one or two
rectangles of photo, noise or flat colour are pasted over the crop (:func:`add_cutouts`). Either
is placed over an edge of the target's silhouette and redrawn while it would leave less than
:data:`MIN_VISIB_FRACT` of the target visible. The targets (box corners, pose) stay those of the
whole target object; samples carry ``visib_fract``, the share of its silhouette left visible.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from featmap_ros import crops, geometry
from featmap_ros.coords import coords_targets
from featmap_ros.crops import Window, ground_truth_window, object_window
from featmap_ros.data import bop
from featmap_ros.data.backgrounds import BackgroundSource, background_files
from featmap_ros.errors import InputError
from featmap_ros.render.renderer import Lighting, MeshRenderer, RenderOutput, composite, crop_intrinsics, random_lighting

#: BB8 training jitter.
JITTER_SHIFT_PX = 10.0
JITTER_SCALE_FRAC = 0.2
#: Occluders: depth of the occluder's centre as a fraction of the target's (in front of it).
OCCLUDER_DEPTH_FRAC = (0.55, 0.85)
#: An occluder or cut-out is redrawn (up to PLACEMENT_TRIES times, then dropped) while it would
#: hide more than 1 - MIN_VISIB_FRACT of the target: BOP scores instances visible >= 10 %, but a
#: crop mostly of something else teaches the box regression little.
MIN_VISIB_FRACT = 0.4
PLACEMENT_TRIES = 4
#: Cut-outs: 1 or 2 rectangles, each side this fraction of the crop side.
CUTOUT_SIDE_FRAC = (0.15, 0.45)

try:  # torch is a hard dependency of training, but this module's numpy parts work without it
    import torch
    from torch.utils.data import Dataset, IterableDataset, get_worker_info
except ImportError:  # pragma: no cover
    torch = None
    Dataset = IterableDataset = object  # type: ignore

    def get_worker_info():  # type: ignore
        return None


# ------------------------------------------------------------------------------------------
# Poses and windows


@dataclass(frozen=True)
class PoseSampling:
    """How synthetic poses are drawn.

    Attributes:
        distance_range_m: (min, max) camera-object distance, metres.
        elevation_range_deg: (min, max) elevation of the viewing direction above the model's xy plane.
        inplane_deg: in-plane rotation is uniform in [-inplane_deg, inplane_deg].
        margin_px: the object's centre is placed at least this far inside the image.
    """

    distance_range_m: tuple[float, float] = (0.6, 1.2)
    elevation_range_deg: tuple[float, float] = (0.0, 90.0)
    inplane_deg: float = 45.0
    margin_px: float = 80.0

    @classmethod
    def from_spec(cls, spec, **kw) -> "PoseSampling":
        """Distances from an :class:`featmap_ros.data.specs.ObjectDatasetSpec` (``depth_range_mm``)."""
        lo, hi = spec.depth_range_mm
        return cls(distance_range_m=(lo / 1000.0, hi / 1000.0), **kw)


def _rotation_z_to(ray: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the optical axis (0, 0, 1) onto the unit vector ``ray``."""
    z = np.array([0.0, 0.0, 1.0])
    r = ray / np.linalg.norm(ray)
    v = np.cross(z, r)
    s, c = np.linalg.norm(v), float(z @ r)
    if s < 1e-12:
        return np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * ((1 - c) / s**2)


def sample_pose(
    rng: np.random.Generator, K: np.ndarray, width: int, height: int, sampling: PoseSampling = PoseSampling(),
    center_m: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a pose (see the module docstring).

    Args:
        rng: random generator.
        K: (3, 3) intrinsics, pixels.
        width, height: image size.
        sampling: ranges.
        center_m: (3,) model-frame point placed at the drawn pixel (default: the origin).

    Returns:
        (R_m2c (3, 3), t_m2c_m (3,)) float64.
    """
    K = geometry.check_K(K)
    az = rng.uniform(0.0, 2 * np.pi)
    lo, hi = np.radians(sampling.elevation_range_deg)
    el = np.arcsin(rng.uniform(np.sin(lo), np.sin(hi)))  # uniform in area on the sphere band
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    inplane = np.radians(rng.uniform(-sampling.inplane_deg, sampling.inplane_deg))
    R0 = geometry.look_at_R_m2c(d, inplane)
    dist = rng.uniform(*sampling.distance_range_m)
    m = min(sampling.margin_px, width / 2 - 1, height / 2 - 1)
    u, v = rng.uniform(m, width - m), rng.uniform(m, height - m)
    ray = np.linalg.solve(K, np.array([u, v, 1.0]))
    ray /= np.linalg.norm(ray)
    R = _rotation_z_to(ray) @ R0
    c = np.zeros(3) if center_m is None else np.asarray(center_m, np.float64)
    t = ray * dist - R @ c
    return R, t


def _to_tensor_image(rgb: np.ndarray):
    # in numpy: tiny torch ops pay for thread-pool wake-ups in every DataLoader worker
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) * np.float32(1 / 255.0))


def _sample_dict(image_key_values: dict, corners_n, R, t, K, window: Window, **extra) -> dict:
    out = {k: _to_tensor_image(v) for k, v in image_key_values.items()}
    out.update({
        "corners_n": torch.as_tensor(np.asarray(corners_n), dtype=torch.float32),
        "R_m2c": torch.as_tensor(np.asarray(R), dtype=torch.float32),
        "t_m2c_m": torch.as_tensor(np.asarray(t), dtype=torch.float32),
        "K": torch.as_tensor(np.asarray(K), dtype=torch.float32),
        "window": torch.tensor([window.center_u, window.center_v, window.side], dtype=torch.float32),
    })
    for k, v in extra.items():
        out[k] = torch.as_tensor(v)
    return out


# ------------------------------------------------------------------------------------------
# Occlusion


def mesh_center_m(mesh) -> np.ndarray:
    """(3,) float64 centre of a mesh's axis-aligned bounding box, model frame, metres."""
    v = np.asarray(mesh.vertices_m, dtype=np.float64)
    return (v.min(axis=0) + v.max(axis=0)) / 2.0


def _edge_point(rng: np.random.Generator, mask: np.ndarray) -> tuple[float, float]:
    # a silhouette pixel pushed outwards from the centroid: whatever is centred there covers an
    # edge of the object, not all of it
    ys, xs = np.nonzero(mask)
    cu, cv = xs.mean(), ys.mean()
    k = int(rng.integers(len(xs)))
    f = rng.uniform(0.3, 1.0)
    return float(xs[k] + (xs[k] - cu) * f), float(ys[k] + (ys[k] - cv) * f)


def _visible_enough(target_mask: np.ndarray, hidden: np.ndarray, visible_px: int) -> bool:
    return int((target_mask & ~hidden).sum()) >= MIN_VISIB_FRACT * visible_px


def add_occluder(
    rng: np.random.Generator, renderer, image: np.ndarray, target: RenderOutput, hidden: np.ndarray,
    occluders: Sequence, centers_m: Sequence[np.ndarray], K: np.ndarray, window: Window, size: int,
    lighting: Lighting | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one occluder in front of the target of a crop.

    The occluder (drawn from ``occluders``, uniformly random rotation) is centred on the line of
    sight through a point near the target's silhouette edge, at :data:`OCCLUDER_DEPTH_FRAC` of
    the target's depth, and redrawn while it would leave less than :data:`MIN_VISIB_FRACT` of the
    target visible (after :data:`PLACEMENT_TRIES`, none is added).

    Args:
        rng: random generator (all randomness comes from it).
        renderer: a :class:`~featmap_ros.render.renderer.MeshRenderer`.
        image: (S, S, 3) uint8 crop with the target composited in.
        target: the target's render in the crop (``mask`` (S, S) bool, ``depth_m`` metres).
        hidden: (S, S) bool pixels of the target already hidden.
        occluders: meshes (metres) to draw from.
        centers_m: (3,) model-frame centre of each occluder (:func:`mesh_center_m`).
        K: (3, 3) full-image intrinsics; window: the crop window; size: S.
        lighting: light and material of the render.

    Returns:
        (image, hidden): new (S, S, 3) uint8 crop and (S, S) bool hidden pixels of the target
        (the inputs when no placement fitted).
    """
    target_mask = target.mask
    if not len(occluders) or not target_mask.any():
        return image, hidden
    n_px = int(target_mask.sum())
    K_crop = crop_intrinsics(K, window, size)
    target_z = float(np.median(target.depth_m[target_mask]))
    for _ in range(PLACEMENT_TRIES):
        k = int(rng.integers(len(occluders)))
        u, v = _edge_point(rng, target_mask)
        q = rng.normal(size=4)
        R = geometry.matrix_from_quat_xyzw(q / np.linalg.norm(q))  # uniform on SO(3)
        ray = np.linalg.solve(K_crop, np.array([u, v, 1.0]))
        t = ray / ray[2] * target_z * rng.uniform(*OCCLUDER_DEPTH_FRAC) - R @ np.asarray(centers_m[k], np.float64)
        occ = renderer.render_crop(occluders[k], R, t, K, window, size, lighting=lighting)
        now_hidden = hidden | (occ.mask & target_mask)
        if occ.mask.any() and _visible_enough(target_mask, now_hidden, n_px):
            return composite(occ, image), now_hidden
    return image, hidden


def add_cutouts(
    rng: np.random.Generator, image: np.ndarray, target_mask: np.ndarray, hidden: np.ndarray, backgrounds,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste one or two rectangles over edges of the target (random erasing).

    Each rectangle (sides :data:`CUTOUT_SIDE_FRAC` of the crop's) holds a photo crop from
    ``backgrounds``, uniform noise or a flat colour, is centred near the target's silhouette edge,
    and is redrawn while it would leave less than :data:`MIN_VISIB_FRACT` of the target visible.

    Args:
        rng: random generator.
        image: (S, S, 3) uint8 crop.
        target_mask: (S, S) bool silhouette of the target; hidden: (S, S) bool already hidden.
        backgrounds: :class:`~featmap_ros.data.backgrounds.BackgroundSource` for the photo content.

    Returns:
        (image, hidden): new crop and hidden pixels of the target.
    """
    if not target_mask.any():
        return image, hidden
    out = image.copy()
    h, w = out.shape[:2]
    n_px = int(target_mask.sum())
    for _ in range(int(rng.integers(1, 3))):
        for _ in range(PLACEMENT_TRIES):
            rw = max(1, int(round(rng.uniform(*CUTOUT_SIDE_FRAC) * w)))
            rh = max(1, int(round(rng.uniform(*CUTOUT_SIDE_FRAC) * h)))
            u, v = _edge_point(rng, target_mask)
            x0 = int(np.clip(round(u - rw / 2), 0, w - rw))
            y0 = int(np.clip(round(v - rh / 2), 0, h - rh))
            rect = np.zeros((h, w), bool)
            rect[y0:y0 + rh, x0:x0 + rw] = True
            if not _visible_enough(target_mask, hidden | (rect & target_mask), n_px):
                continue
            kind = int(rng.integers(3))
            if kind == 0:
                patch = backgrounds.sample(rng, rw, rh)
            elif kind == 1:
                patch = rng.integers(0, 256, (rh, rw, 3), dtype=np.uint8)
            else:
                patch = np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (rh, rw, 3))
            out[y0:y0 + rh, x0:x0 + rw] = patch
            hidden = hidden | (rect & target_mask)
            break
    return out, hidden


def add_truncation(rng: np.random.Generator, image: np.ndarray, target_mask: np.ndarray,
                   hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut the crop as the frame's edge cuts an object near it: one side of the crop, from the
    edge to a line through the target's silhouette, becomes black (a crop past the image border
    holds zeros, :func:`featmap_ros.crops.crop_image`), redrawn while it would leave less than
    :data:`MIN_VISIB_FRACT` of the target visible.

    Args:
        rng: random generator.
        image: (S, S, 3) uint8 crop.
        target_mask: (S, S) bool silhouette of the target; hidden: (S, S) bool already hidden.

    Returns:
        (image, hidden): new crop and hidden pixels of the target.
    """
    if not target_mask.any():
        return image, hidden
    ys, xs = np.nonzero(target_mask)
    n_px = int(target_mask.sum())
    S = image.shape[0]
    for _ in range(PLACEMENT_TRIES):
        side = int(rng.integers(4))  # left, right, top, bottom
        lo, hi = (xs.min(), xs.max()) if side < 2 else (ys.min(), ys.max())
        cut = int(round(lo + rng.uniform(0.1, 0.5) * (hi - lo))) if side in (0, 2) else int(round(hi - rng.uniform(0.1, 0.5) * (hi - lo)))
        band = np.zeros((S, S), bool)
        if side == 0:
            band[:, :cut] = True
        elif side == 1:
            band[:, cut + 1:] = True
        elif side == 2:
            band[:cut, :] = True
        else:
            band[cut + 1:, :] = True
        if _visible_enough(target_mask, hidden | (band & target_mask), n_px):
            out = image.copy()
            out[band] = 0
            return out, hidden | (band & target_mask)
    return image, hidden


# ------------------------------------------------------------------------------------------
# Synthetic


class SyntheticObjectDataset(IterableDataset):
    """Synthetic crops rendered online (see the module docstring).

    Args:
        mesh: object mesh (:class:`featmap_ros.data.bop.Mesh`, metres).
        info: its :class:`featmap_ros.data.bop.ModelInfo` (box corners).
        K: (3, 3) intrinsics of the simulated camera; width, height: its image size.
        crop_size: side S of the crops (128 default; the embedded demo uses 64).
        sampling: pose ranges.
        backgrounds: folder of background images, ``"photos"`` (the packages' photographs, see
            :mod:`featmap_ros.data.backgrounds`) or None (procedural).
        seed: base seed; sample i uses ``default_rng([seed, i])``.
        length: number of samples per pass (None: endless).
        random_lighting: randomise light and material (else the default :class:`Lighting`).
        jitter: apply the BB8 window jitter.
        start: index of the first sample (to continue a stream, e.g. after resuming).
        occluders: meshes (metres) that may be rendered in front of the target (other objects,
            distractor shapes); needed when ``occluder_prob`` > 0.
        occluder_prob: probability of one occluder per sample (:func:`add_occluder`).
        cutout_prob: probability of cut-outs per sample (:func:`add_cutouts`).
        coords_stride: > 0: also the ``coords`` head's targets at this stride (module docstring).
        truncation_prob: probability of a frame-edge cut per sample (:func:`add_truncation`).

    Workers: each DataLoader worker creates its own renderer when iteration starts. A Mesa EGL
    context does not survive ``fork``: if the main process has rendered anything before the
    DataLoader starts its workers, the forked workers hang; then pass
    ``multiprocessing_context="spawn"`` (or ``"forkserver"``) to the DataLoader.
    """

    def __init__(
        self,
        mesh,
        info,
        K: np.ndarray,
        width: int = 640,
        height: int = 480,
        crop_size: int = 128,
        sampling: PoseSampling = PoseSampling(),
        backgrounds: str | os.PathLike | None = None,
        seed: int = 0,
        length: int | None = None,
        random_lighting: bool = True,
        jitter: bool = True,
        start: int = 0,
        occluders: Sequence = (),
        occluder_prob: float = 0.0,
        cutout_prob: float = 0.0,
        coords_stride: int = 0,
        truncation_prob: float = 0.0,
    ):
        if crop_size <= 0:
            raise InputError(f"crop_size must be positive, got {crop_size}")
        for name, p in (("occluder_prob", occluder_prob), ("cutout_prob", cutout_prob), ("truncation_prob", truncation_prob)):
            if not 0.0 <= float(p) <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {p}")
        if occluder_prob > 0 and not len(occluders):
            raise InputError(f"occluder_prob is {occluder_prob} but no occluder meshes were given")
        self.mesh, self.info = mesh, info
        self.K = geometry.check_K(K)
        self.width, self.height = int(width), int(height)
        self.crop_size = int(crop_size)
        self.sampling = sampling
        self.backgrounds_dir = backgrounds
        self.seed, self.length, self.start = int(seed), length, int(start)
        self.random_lighting, self.jitter = bool(random_lighting), bool(jitter)
        self.occluders = list(occluders)
        self.occluder_centers_m = [mesh_center_m(m) for m in self.occluders]
        self.occluder_prob, self.cutout_prob = float(occluder_prob), float(cutout_prob)
        self.coords_stride = int(coords_stride)
        self.truncation_prob = float(truncation_prob)
        background_files(backgrounds)  # fail early, in the main process, on a bad folder

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("endless SyntheticObjectDataset has no length")
        return int(self.length)

    def make_sample(self, index: int, renderer, backgrounds) -> dict:
        """Render sample ``index`` with the given renderer and :class:`BackgroundSource`."""

        rng = np.random.default_rng([self.seed, int(index)])
        R, t = sample_pose(rng, self.K, self.width, self.height, self.sampling, self.info.center_m)
        corners_px = geometry.project_model_points(self.info.corners_m, R, t, self.K)
        window = object_window(corners_px)
        if self.jitter:
            window = crops.jitter_window(window, rng, JITTER_SHIFT_PX, JITTER_SCALE_FRAC)
        light = random_lighting(rng) if self.random_lighting else Lighting()
        r = renderer.render_crop(self.mesh, R, t, self.K, window, self.crop_size, lighting=light)
        bg = backgrounds.sample(rng, self.crop_size, self.crop_size)
        image = composite(r, bg)
        hidden = np.zeros_like(r.mask)
        # no draw when a probability is 0, so that streams without occlusion stay as they were
        if self.occluder_prob > 0 and rng.random() < self.occluder_prob:
            image, hidden = add_occluder(rng, renderer, image, r, hidden, self.occluders, self.occluder_centers_m,
                                         self.K, window, self.crop_size, light)
        if self.cutout_prob > 0 and rng.random() < self.cutout_prob:
            image, hidden = add_cutouts(rng, image, r.mask, hidden, backgrounds)
        if self.truncation_prob > 0 and rng.random() < self.truncation_prob:
            image, hidden = add_truncation(rng, image, r.mask, hidden)
        n_px = int(r.mask.sum())
        visib = 1.0 - float(hidden.sum()) / n_px if n_px else 0.0
        corners_n = crops.image_to_crop_normalised(corners_px, window)
        extra = {}
        if self.coords_stride > 0:
            extra["coords_n"], extra["mask_visib"] = coords_targets(
                r.depth_m, r.mask, r.mask & ~hidden, crop_intrinsics(self.K, window, self.crop_size), R, t,
                self.info.min_m, self.info.size_m, self.coords_stride)
        return _sample_dict({"image": image}, corners_n, R, t, self.K, window, index=int(index),
                            visib_fract=np.float32(visib), **extra)

    def __iter__(self):

        wi = get_worker_info()
        worker, n_workers = (0, 1) if wi is None else (wi.id, wi.num_workers)
        renderer = MeshRenderer(self.crop_size, self.crop_size)
        backgrounds = BackgroundSource(self.backgrounds_dir)
        try:
            i = self.start + worker
            end = None if self.length is None else self.start + self.length
            while end is None or i < end:
                yield self.make_sample(i, renderer, backgrounds)
                i += n_workers
        finally:
            renderer.close()


# ------------------------------------------------------------------------------------------
# Real frames


@dataclass(frozen=True)
class FrameRef:
    """One object instance in a BOP frame: where to find it and its ground truth."""

    scene_id: int
    im_id: int
    inst: int
    rgb_path: Path
    K: np.ndarray
    R_m2c: np.ndarray
    t_m2c_m: np.ndarray
    bbox_obj: tuple | None


def collect_frames(
    root: str | os.PathLike,
    split: str,
    obj_id: int,
    scene_ids: Sequence[int] | None = None,
    im_ids: Sequence[int] | None = None,
) -> list[FrameRef]:
    """Instances of ``obj_id`` in frames that have an image, sorted by (scene, im_id, inst).

    Args:
        root: BOP dataset folder.
        split: split folder (``train``, ``test``...).
        obj_id: the object.
        scene_ids: scenes to read (default: all of the split).
        im_ids: keep only these image ids (e.g. the LINEMOD training split), or None for all.
    """

    split_dir = Path(root) / split
    scenes = bop.list_scenes(split_dir) if scene_ids is None else [split_dir / f"{int(s):06d}" for s in scene_ids]
    keep = None if im_ids is None else set(int(i) for i in im_ids)
    out = []
    for sdir in scenes:
        for f in bop.read_scene(sdir):
            if f.rgb_path is None or (keep is not None and f.im_id not in keep):
                continue
            for i, g in enumerate(f.instances):
                if g.obj_id == obj_id:
                    out.append(FrameRef(f.scene_id, f.im_id, i, f.rgb_path, f.K, g.R_m2c, g.t_m2c_m, g.bbox_obj))
    return out


class RealSynthPairs(Dataset):
    """Real/synthetic pairs for Feature Mapping (the paper's Fig. 3).

    Item ``i``: real frame ``frames[i]``; the object rendered at its ground-truth pose and
    composited over the same real image; both cropped with the same window (the object window,
    jittered when ``jitter``; the jitter and the lighting are drawn from
    ``default_rng([seed, epoch, i])``, see :meth:`set_epoch`).

    Args:
        frames: from :func:`collect_frames`.
        mesh, info: the object's mesh (metres) and ModelInfo.
        crop_size: side S of the crops.
        seed: base seed.
        jitter: BB8 window jitter.
        random_lighting: randomise light/material of the render (else the default lighting).
        coords_stride: > 0: also the ``coords`` targets of the render (``mask_visib`` is then the
            rendered silhouette: right for the synthetic half, unknown occlusion in the real one).
    """

    def __init__(self, frames: Sequence[FrameRef], mesh, info, crop_size: int = 128, seed: int = 0,
                 jitter: bool = True, random_lighting: bool = False, coords_stride: int = 0):
        if not frames:
            raise InputError("RealSynthPairs: no frames")
        self.frames = list(frames)
        self.mesh, self.info = mesh, info
        self.crop_size, self.seed = int(crop_size), int(seed)
        self.jitter, self.random_lighting = bool(jitter), bool(random_lighting)
        self.epoch = 0
        self.coords_stride = int(coords_stride)
        self._renderer = None  # made on first use, in the process (DataLoader worker) that uses it

    def set_epoch(self, epoch: int) -> None:
        """Draw new jitter/lighting in each epoch (call before iterating, like DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.frames)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_renderer"] = None  # GL contexts do not cross processes
        return state

    def __getitem__(self, i: int) -> dict:

        fr = self.frames[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        real = bop.load_rgb(fr.rgb_path)
        corners_px = geometry.project_model_points(self.info.corners_m, fr.R_m2c, fr.t_m2c_m, fr.K)
        window = object_window(corners_px)
        if self.jitter:
            window = crops.jitter_window(window, rng, JITTER_SHIFT_PX, JITTER_SCALE_FRAC)
        if self._renderer is None:
            self._renderer = MeshRenderer(self.crop_size, self.crop_size)
        light = random_lighting(rng) if self.random_lighting else Lighting()
        real_crop = crops.crop_image(real, window, self.crop_size)
        r = self._renderer.render_crop(self.mesh, fr.R_m2c, fr.t_m2c_m, fr.K, window, self.crop_size, lighting=light)
        synth_crop = composite(r, real_crop)
        corners_n = crops.image_to_crop_normalised(corners_px, window)
        extra = {}
        if self.coords_stride > 0:
            extra["coords_n"], extra["mask_visib"] = coords_targets(
                r.depth_m, r.mask, r.mask, crop_intrinsics(fr.K, window, self.crop_size), fr.R_m2c, fr.t_m2c_m,
                self.info.min_m, self.info.size_m, self.coords_stride)
        return _sample_dict(
            {"real": real_crop, "synth": synth_crop}, corners_n, fr.R_m2c, fr.t_m2c_m, fr.K, window,
            scene_id=fr.scene_id, im_id=fr.im_id, **extra,
        )


class BopCropDataset(Dataset):
    """Crops of BOP frames for evaluation.

    Args:
        frames: from :func:`collect_frames`.
        info: the object's ModelInfo (box corners for the targets).
        crop_size: side S of the crops.
        window_from: ``"corners"`` (object window of the ground-truth pose, as in training),
            ``"bbox"`` (square around scene_gt_info's ``bbox_obj``, 1.2 x its larger side), or a
            callable ``(FrameRef) -> Window`` (e.g. detections).
    """

    def __init__(self, frames: Sequence[FrameRef], info, crop_size: int = 128,
                 window_from: str | Callable[[FrameRef], Window] = "corners"):
        if not callable(window_from) and window_from not in ("corners", "bbox"):
            raise InputError(f"window_from must be 'corners', 'bbox' or a callable, got {window_from!r}")
        self.frames, self.info = list(frames), info
        self.crop_size, self.window_from = int(crop_size), window_from

    def __len__(self) -> int:
        return len(self.frames)

    def window_of(self, fr: FrameRef) -> Window:
        if callable(self.window_from):
            return self.window_from(fr)
        if self.window_from == "bbox":
            if fr.bbox_obj is None or fr.bbox_obj[2] <= 0:
                raise InputError(f"scene {fr.scene_id} im {fr.im_id} inst {fr.inst}: no bbox_obj in scene_gt_info.json")
            return crops.window_from_bbox(fr.bbox_obj)
        return ground_truth_window(self.info.corners_m, fr.R_m2c, fr.t_m2c_m, fr.K)

    def __getitem__(self, i: int) -> dict:

        fr = self.frames[i]
        window = self.window_of(fr)
        image = crops.crop_image(bop.load_rgb(fr.rgb_path), window, self.crop_size)
        corners_px = geometry.project_model_points(self.info.corners_m, fr.R_m2c, fr.t_m2c_m, fr.K)
        return _sample_dict(
            {"image": image}, crops.image_to_crop_normalised(corners_px, window), fr.R_m2c, fr.t_m2c_m, fr.K,
            window, scene_id=fr.scene_id, im_id=fr.im_id,
        )
