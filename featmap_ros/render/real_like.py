"""A "real-like" object domain: frames that differ from the synthetic renders the way camera images do.

Real LINEMOD training images are not available in this environment, so Feature Mapping's real
domain is simulated. Every frame is drawn from ``numpy.random.default_rng([seed, frame_index])``
and written with full ground truth in the BOP layout (:func:`write_object_dataset`). The synthetic
domain (``domain="synthetic"``) uses the training renderer's settings; the real-like domain differs
in every stage listed below (defaults of :class:`RealLikeConfig`; each range is sampled uniformly
per frame):

Scene
  - pose: as the synthetic samples (upper hemisphere, the dataset's distances,
    :func:`featmap_ros.data.object_samples.sample_pose`);
  - background: a photo from ``backgrounds_dir`` or procedural clutter, plus ``distractors``
    (2-6) random coloured boxes, cylinders and spheres (3-12 cm) rendered *behind* the object
    under the same light, so edges and colours around the object are real 3D clutter;
  - partial occlusion: with probability ``occlusion_prob`` (0.4) one box or cylinder is placed
    between the camera and the object (at 55-85 % of its distance) overlapping the silhouette's
    edge, redrawn (up to 4 times, else left out) while it would hide more than 60 % of the object
    (``min_visib_fract`` 0.4); the visible mask and ``visib_fract`` account for it.

Shading (the synthetic renders use a directional light, matte material):
  - a point light near the camera (offset +-``light_offset_m`` 0.4 m sideways, -0.1-0.4 m in z),
    intensity 6-20 W scaled by the squared distance, with a colour-temperature tint (+-25 % red vs
    blue), weak ambient (0.05-0.25);
  - a glossier material: metallic 0.1-0.5, roughness 0.25-0.6 (specular highlights);
  - a different albedo response: per-channel gain 0.75-1.15 (scanned colours vs the real surface).

Camera (applied to the composed image, :func:`camera_effects`):
  - white-balance cast: per-channel gains 0.85-1.15; saturation x 0.7-1.2;
  - tone curve: gamma 0.8-1.25 and an S-curve of strength 0-0.3; vignetting 0-35 % at the corners;
  - optics: defocus (Gaussian sigma 0.4-1.4 px) and, with probability 0.3, linear motion blur of
    2-7 px; with probability 0.3 a resolution loss (down- and up-sampling by 0.5-0.8);
  - sensor noise: signal-dependent shot noise (variance = ``shot_gain`` 0.5-2 x intensity) plus
    read noise (sigma 1-4 grey levels), then 8-bit quantisation;
  - JPEG compression at quality 55-90.

Depth (``depth/``, millimetres, registered to the colour image: same size and K, as BOP and
LINEMOD ship it and RealSense's ``aligned_depth_to_color`` publishes it): the rendered scene (clutter,
object, occluder) in front of a backdrop plane (a wall or table ``backdrop_behind_m`` 0.4-0.8 m
behind the object, tilted by ``backdrop_tilt``), seen through the structured-light sensor model
of :func:`featmap_ros.render.depth_sensor.apply_sensor` (the hand domain's sensor,
``depth_sensor``: projector shadows beside depth edges, dropouts at grazing angles and at
silhouettes, disparity noise and quantisation, hence an error growing with the square of the
distance: about 1.4 mm at 0.8 m, in steps of ~1.9 mm, speckle holes, whole millimetres; 0 =
invalid). The synthetic domain's depth is exact.

Ground truth (``scene_gt.json``, ``scene_gt_info.json``, ``mask/``, ``mask_visib/``) is exact: masks
come from the renderer (``bbox_obj``/``px_count_all`` from the full silhouette, also outside the
image). The dataset root also gets ``train.txt``/``test.txt``: a LINEMOD-style split,
``train_fraction`` (15 %) of the frames chosen with far-apart viewpoints
(:func:`featmap_ros.data.bop.farthest_view_split`).

Sequences (:func:`write_object_sequence`, ``featmap render object --sequence``): one scene
(:class:`SceneLayout`) seen by a camera that rests and moves smoothly (:func:`camera_motion`),
for measuring pose filters; camera effects and sensor noise are drawn anew for every frame.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from featmap_ros import atomic, geometry
from featmap_ros.data import bop
from featmap_ros.data.backgrounds import BackgroundSource
from featmap_ros.data.bop import Mesh
from featmap_ros.data.object_samples import PoseSampling, sample_pose
from featmap_ros.data.specs import object_dataset
from featmap_ros.errors import InputError
from featmap_ros.render.depth_sensor import SensorModel, apply_sensor
from featmap_ros.render.hand_depth import composite_nearest, render_plane_depth
from featmap_ros.render.renderer import Lighting, MeshRenderer, composite, fill_depth_holes, random_lighting, render_silhouette


@dataclass(frozen=True)
class RealLikeConfig:
    """Parameters of the real-like domain (see the module docstring). Ranges are (low, high)."""

    distractors: tuple[int, int] = (2, 6)
    distractor_size_m: tuple[float, float] = (0.03, 0.12)
    occlusion_prob: float = 0.4
    occluder_depth_frac: tuple[float, float] = (0.55, 0.85)
    min_visib_fract: float = 0.4
    light_offset_m: float = 0.4
    light_power: tuple[float, float] = (6.0, 20.0)
    light_tint: float = 0.25
    ambient: tuple[float, float] = (0.05, 0.25)
    metallic: tuple[float, float] = (0.1, 0.5)
    roughness: tuple[float, float] = (0.25, 0.6)
    albedo_gain: tuple[float, float] = (0.75, 1.15)
    wb_gain: tuple[float, float] = (0.85, 1.15)
    saturation: tuple[float, float] = (0.7, 1.2)
    gamma: tuple[float, float] = (0.8, 1.25)
    s_curve: tuple[float, float] = (0.0, 0.3)
    vignetting: tuple[float, float] = (0.0, 0.35)
    defocus_sigma_px: tuple[float, float] = (0.4, 1.4)
    motion_blur_prob: float = 0.3
    motion_blur_px: tuple[float, float] = (2.0, 7.0)
    downsample_prob: float = 0.3
    downsample: tuple[float, float] = (0.5, 0.8)
    shot_gain: tuple[float, float] = (0.5, 2.0)
    read_noise: tuple[float, float] = (1.0, 4.0)
    jpeg_quality: tuple[int, int] = (55, 90)
    train_fraction: float = 0.15
    #: The depth camera (structured light, :mod:`featmap_ros.render.depth_sensor`); None = exact depth.
    depth_sensor: SensorModel | None = SensorModel()
    #: A plane (wall, table) this far behind the object's far side, metres, fills the depth image's background.
    backdrop_behind_m: tuple[float, float] = (0.4, 0.8)
    #: Its normal's tilt from the optical axis, radians (std per axis).
    backdrop_tilt: float = 0.15


def _u(rng: np.random.Generator, lo_hi) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def camera_effects(rgb: np.ndarray, rng: np.random.Generator, cfg: RealLikeConfig = RealLikeConfig()) -> np.ndarray:
    """The camera stage of the real-like domain (colour cast, tone, optics, noise, JPEG).

    Args:
        rgb: (H, W, 3) uint8 RGB.
        rng: random generator.
        cfg: parameters.

    Returns:
        (H, W, 3) uint8 RGB, a new image.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"camera_effects: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    x = img.astype(np.float32) / 255.0
    # optics first (they act on light, before the sensor)
    if rng.random() < cfg.downsample_prob:
        f = _u(rng, cfg.downsample)
        small = cv2.resize(x, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    x = cv2.GaussianBlur(x, (0, 0), _u(rng, cfg.defocus_sigma_px))
    if rng.random() < cfg.motion_blur_prob:
        length = _u(rng, cfg.motion_blur_px)
        ang = rng.uniform(0, np.pi)
        k = int(np.ceil(length)) | 1
        kern = np.zeros((k, k), np.float32)
        c = k // 2
        dx, dy = np.cos(ang) * length / 2, np.sin(ang) * length / 2
        cv2.line(kern, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1, cv2.LINE_AA)
        x = cv2.filter2D(x, -1, kern / max(kern.sum(), 1e-6))
    # vignetting
    v = _u(rng, cfg.vignetting)
    if v > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        x *= (1.0 - v * np.clip(r2 / 2.0, 0, 1))[..., None]
    # sensor: white balance, noise in linear-ish space
    x *= rng.uniform(cfg.wb_gain[0], cfg.wb_gain[1], 3).astype(np.float32)
    shot = _u(rng, cfg.shot_gain) / 255.0
    read = _u(rng, cfg.read_noise) / 255.0
    noise_sigma = np.sqrt(np.clip(x, 0, None) * shot + read**2)
    x = x + rng.standard_normal(x.shape).astype(np.float32) * noise_sigma
    x = np.clip(x, 0.0, 1.0)
    # colour processing: saturation, gamma, S-curve
    grey = x.mean(axis=2, keepdims=True)
    x = np.clip(grey + _u(rng, cfg.saturation) * (x - grey), 0.0, 1.0)
    x = x ** np.float32(_u(rng, cfg.gamma))
    s = _u(rng, cfg.s_curve)
    x = (1 - s) * x + s * (x * x * (3 - 2 * x))
    out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def make_distractor_bank(rng: np.random.Generator, count: int = 8, size_m=(0.03, 0.12)) -> list:
    """Random coloured boxes, cylinders and spheres (metres, centred), used as clutter and occluders."""
    from trimesh import creation

    bank = []
    for i in range(count):
        kind = i % 3
        s = rng.uniform(*size_m, 3)
        if kind == 0:
            tm = creation.box(extents=s)
        elif kind == 1:
            tm = creation.cylinder(radius=s[0] / 2, height=s[1], sections=20)
        else:
            tm = creation.icosphere(subdivisions=2, radius=s[0] / 2)
        grey = rng.uniform(30, 230)
        col = grey + rng.uniform(0.0, 1.0) * (rng.uniform(0, 255, 3) - grey)
        v = np.asarray(tm.vertices, np.float64)
        # a shading gradient across the part so it is not a flat blob
        colors = np.clip(col[None, :] * (0.8 + 0.4 * (v[:, 2:3] - v[:, 2].min()) / max(np.ptp(v[:, 2]), 1e-6)), 0, 255)
        bank.append(Mesh(v, np.asarray(tm.faces, np.int64), colors.astype(np.uint8), f"distractor{i}"))
    return bank


def real_like_lighting(rng: np.random.Generator, distance_m: float, cfg: RealLikeConfig = RealLikeConfig()):
    """The real-like light and material (point light near the camera, glossy, other albedo response)."""

    o = cfg.light_offset_m
    pos = (rng.uniform(-o, o), rng.uniform(-o, o), rng.uniform(-0.1, 0.4))
    d2 = (distance_m - pos[2]) ** 2 + pos[0] ** 2 + pos[1] ** 2
    tint = rng.uniform(-cfg.light_tint, cfg.light_tint)
    return Lighting(
        ambient=_u(rng, cfg.ambient),
        light_intensity=_u(rng, cfg.light_power) * d2,
        point_light_c_m=tuple(float(p) for p in pos),
        light_color=(float(min(1.0, 1 + tint)), 1.0 - abs(tint) * 0.2, float(min(1.0, 1 - tint))),
        metallic=_u(rng, cfg.metallic),
        roughness=_u(rng, cfg.roughness),
        color_gain=tuple(float(g) for g in rng.uniform(cfg.albedo_gain[0], cfg.albedo_gain[1], 3)),
    )


def _random_pose_at(rng, K, u, v, depth_m):
    from scipy.spatial.transform import Rotation

    ray = np.linalg.solve(K, np.array([u, v, 1.0]))
    return Rotation.random(random_state=int(rng.integers(2**31))).as_matrix(), ray / ray[2] * depth_m


@dataclass
class SceneLayout:
    """What a real-like frame shows, in its reference camera frame (metres), before rendering.

    A sequence renders one layout from a moving camera; a single frame is one layout, rendered once.

    Attributes:
        R_m2c, t_m2c_m: (3, 3), (3,) the object's pose.
        background: (H, W, 3) uint8 backdrop photo (fixed in the image: a picture at infinity).
        light: its lighting (a point light on the camera, moving with it).
        parts: [(Mesh, R (3, 3), t (3,))] clutter behind the object.
        occluder: (Mesh, R, t) between the camera and the object, or None.
        backdrop: (point (3,), normal (3,)) of the plane behind everything in the depth image (a
            wall or table), or None (drawn per frame).
    """

    R_m2c: np.ndarray
    t_m2c_m: np.ndarray
    background: np.ndarray
    light: Lighting
    parts: list = field(default_factory=list)
    occluder: tuple | None = None
    backdrop: tuple | None = None


def sample_layout(renderer, rng: np.random.Generator, mesh, info, K: np.ndarray, width: int, height: int, sampling,
                  backgrounds, domain: str = "real-like", cfg: RealLikeConfig = RealLikeConfig(),
                  bank: list | None = None) -> SceneLayout:
    """Draw a frame's scene (see :func:`render_frame` for the arguments); the occluder placement
    renders the object and candidate occluders to check how much they hide."""
    if domain not in ("real-like", "synthetic"):
        raise InputError(f"domain must be 'real-like' or 'synthetic', got {domain!r}")
    K = geometry.check_K(K)
    R, t = sample_pose(rng, K, width, height, sampling, info.center_m)
    image = backgrounds.sample(rng, width, height)
    if domain == "synthetic":
        return SceneLayout(R, t, image, random_lighting(rng))
    if not bank:
        raise InputError("render_frame: the real-like domain needs a distractor bank")
    z = float(t[2])
    light = real_like_lighting(rng, z, cfg)
    n = int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
    parts = []
    for _ in range(n):
        dm = bank[int(rng.integers(len(bank)))]
        Rd, td = _random_pose_at(rng, K, rng.uniform(0, width), rng.uniform(0, height),
                                 z + info.diameter_m / 2 + rng.uniform(0.08, 0.35))
        parts.append((dm, Rd, td))
    layout = SceneLayout(R, t, image, light, parts)
    if rng.random() < cfg.occlusion_prob:
        obj = renderer.render(mesh, R, t, K, lighting=light)
        if obj.mask.any():
            ys, xs = np.nonzero(obj.mask)
            cu, cv = xs.mean(), ys.mean()
            n_obj = int(obj.mask.sum())
            for _ in range(4):  # placements that hide too much of the object are redrawn
                k = int(rng.integers(len(xs)))
                # aim at a silhouette pixel pushed outwards, so the occluder covers an edge, not all
                u = xs[k] + (xs[k] - cu) * rng.uniform(0.3, 1.0)
                v = ys[k] + (ys[k] - cv) * rng.uniform(0.3, 1.0)
                occ_mesh = bank[int(rng.integers(len(bank)))]
                Ro, to = _random_pose_at(rng, K, u, v, z * _u(rng, cfg.occluder_depth_frac))
                occ = renderer.render(occ_mesh, Ro, to, K, lighting=light)
                if (obj.mask & ~occ.mask).sum() >= cfg.min_visib_fract * n_obj:
                    layout.occluder = (occ_mesh, Ro, to)
                    break
    return layout


def sample_backdrop(rng: np.random.Generator, t_m2c_m: np.ndarray, diameter_m: float,
                    cfg: RealLikeConfig = RealLikeConfig()) -> tuple[np.ndarray, np.ndarray]:
    """A plane behind the scene for the depth image: ``backdrop_behind_m`` beyond the object's
    far side along z, its normal tilted by ``backdrop_tilt`` (radians, std per axis)."""
    t = np.asarray(t_m2c_m, dtype=np.float64).reshape(3)
    point = np.array([0.0, 0.0, t[2] + diameter_m / 2 + _u(rng, cfg.backdrop_behind_m)])
    normal = np.array([rng.normal(0, cfg.backdrop_tilt), rng.normal(0, cfg.backdrop_tilt), -1.0])
    return point, normal


def render_layout(renderer, layout: SceneLayout, rng: np.random.Generator, mesh, info, K: np.ndarray, width: int,
                  height: int, domain: str = "real-like", cfg: RealLikeConfig = RealLikeConfig(),
                  motion: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Render a layout, optionally from a moved camera; ``rng`` draws this frame's camera effects
    and depth sensor noise. ``motion`` = (dR (3, 3), dt (3,)) maps the reference camera frame to
    this frame's: ``p' = dR p + dt``. Returns what :func:`render_frame` returns."""
    K = geometry.check_K(K)
    dR, dt = (np.eye(3), np.zeros(3)) if motion is None else (np.asarray(motion[0], np.float64), np.asarray(motion[1], np.float64))

    def moved(R, t):
        return dR @ R, dR @ np.asarray(t, np.float64) + dt

    R, t = moved(layout.R_m2c, layout.t_m2c_m)
    image = layout.background
    occluded = np.zeros((height, width), bool)
    if domain == "synthetic":
        obj = renderer.render(mesh, R, t, K, lighting=layout.light)
        image = composite(obj, image)
        depth = obj.depth_m
    else:
        depth = np.zeros((height, width), np.float32)
        if layout.parts:
            Rs, ts = zip(*(moved(Rp, tp) for _, Rp, tp in layout.parts))
            back = renderer.render([m for m, _, _ in layout.parts], np.stack(Rs), np.stack(ts), K, lighting=layout.light)
            image = composite(back, image)
            depth = back.depth_m.copy()
        obj = renderer.render(mesh, R, t, K, lighting=layout.light)
        image = composite(obj, image)
        depth[obj.mask] = obj.depth_m[obj.mask]
        if layout.occluder is not None:
            occ = renderer.render(layout.occluder[0], *moved(*layout.occluder[1:]), K, lighting=layout.light)
            image = composite(occ, image)
            depth[occ.mask] = occ.depth_m[occ.mask]
            occluded = occ.mask
        image = camera_effects(image, rng, cfg)
    # masks from the supersampled centre test, so mask, mask_visib and px_count_all agree; the
    # object's depth covers exactly its visible mask
    sil = render_silhouette(renderer, mesh, R, t, K)
    mask = sil.full_mask(width, height)
    visible = mask & ~occluded
    depth[visible] = fill_depth_holes(obj.depth_m, mask)[visible]
    if domain == "real-like" and cfg.depth_sensor is not None:
        if layout.backdrop is None:
            point, normal = sample_backdrop(rng, t, info.diameter_m, cfg)
        else:
            point, normal = dR @ layout.backdrop[0] + dt, dR @ layout.backdrop[1]
        depth = composite_nearest(depth, render_plane_depth(point, normal, K, width, height))
        depth = apply_sensor(depth, K, rng, cfg.depth_sensor)
    return {
        "rgb": image, "depth_m": depth, "mask": mask, "mask_visib": visible,
        "R_m2c": R, "t_m2c_m": t, "silhouette": sil,
    }


def render_frame(
    renderer,
    rng: np.random.Generator,
    mesh,
    info,
    K: np.ndarray,
    width: int,
    height: int,
    sampling,
    backgrounds,
    domain: str = "real-like",
    cfg: RealLikeConfig = RealLikeConfig(),
    bank: list | None = None,
) -> dict:
    """One full frame with ground truth (:func:`sample_layout`, then :func:`render_layout`).

    Args:
        renderer: :class:`featmap_ros.render.renderer.MeshRenderer` of size (width, height).
        rng: random generator of this frame.
        mesh, info: the object (metres) and its ModelInfo.
        K: (3, 3) intrinsics; width, height: image size.
        sampling: :class:`featmap_ros.data.object_samples.PoseSampling`.
        backgrounds: :class:`featmap_ros.data.backgrounds.BackgroundSource`.
        domain: ``"real-like"`` or ``"synthetic"`` (training-render look, no clutter/occlusion/camera
            effects, exact depth).
        cfg: real-like parameters.
        bank: distractor meshes (:func:`make_distractor_bank`), required for ``"real-like"``.

    Returns:
        dict with ``rgb`` (H, W, 3) uint8, ``depth_m`` (H, W) float32 (real-like: what the depth
        sensor reports, 0 = invalid; synthetic: exact), ``mask``/``mask_visib`` (H, W) bool,
        ``R_m2c``, ``t_m2c_m``, ``silhouette`` (full, :class:`Silhouette`).
    """
    layout = sample_layout(renderer, rng, mesh, info, K, width, height, sampling, backgrounds, domain, cfg, bank)
    return render_layout(renderer, layout, rng, mesh, info, K, width, height, domain, cfg)


def _frame_instance(fr: dict, obj_id: int) -> "bop.GtInstance":
    sil = fr["silhouette"]
    return bop.GtInstance(obj_id, fr["R_m2c"], fr["t_m2c_m"], bbox_obj=tuple(sil.bbox_xywh()), px_count_all=sil.px_count)


def _dataset_setup(spec, cfg, sampling, backgrounds_dir, seed):
    spec = spec or object_dataset("lm")
    cfg = cfg or RealLikeConfig()
    sampling = sampling or PoseSampling.from_spec(spec)
    K = np.array([[spec.fx, 0.0, spec.cx], [0.0, spec.fy, spec.cy], [0.0, 0.0, 1.0]])
    bank = make_distractor_bank(np.random.default_rng([seed, 2**31 - 1]), 9, cfg.distractor_size_m)
    return spec, cfg, sampling, K, BackgroundSource(backgrounds_dir), bank


def write_object_dataset(
    out: str | os.PathLike,
    mesh,
    info,
    count: int,
    spec=None,
    domain: str = "real-like",
    seed: int = 0,
    backgrounds_dir: str | os.PathLike | None = None,
    split: str = "train",
    scene_id: int = 1,
    real_like: RealLikeConfig | None = None,
    sampling=None,
    progress: bool = True,
) -> Path:
    """Write ``count`` frames of one object in the BOP layout (atomically), with a training split.

    Args:
        out: dataset folder (replaced when complete).
        mesh, info: the object (metres) and its ModelInfo (its ``obj_id`` is used).
        count: number of frames.
        spec: :class:`featmap_ros.data.specs.ObjectDatasetSpec` for camera and distances (default ``lm``).
        domain: ``"real-like"`` or ``"synthetic"``.
        seed: frame i is drawn from ``default_rng([seed, i])``.
        backgrounds_dir: folder of background photos or None (procedural).
        split, scene_id: where the frames go (``<out>/<split>/<scene_id:06d>``).
        real_like: parameters (default :class:`RealLikeConfig`).
        sampling: pose ranges (default from ``spec``).
        progress: show a tqdm bar.

    Returns:
        The dataset folder.
    """
    from tqdm import tqdm

    if count <= 0:
        raise InputError(f"count must be positive, got {count}")
    spec, cfg, sampling, K, backgrounds, bank = _dataset_setup(spec, real_like, sampling, backgrounds_dir, seed)
    obj_id = int(info.obj_id)
    ids, Rs, ts = [], [], []
    with MeshRenderer(spec.width, spec.height) as renderer, bop.BopWriter(out, split=split) as writer:
        writer.write_models({obj_id: mesh}, {obj_id: info})
        for i in tqdm(range(count), desc=f"render {domain}", unit="frame", disable=not progress):
            rng = np.random.default_rng([seed, i])
            fr = render_frame(renderer, rng, mesh, info, K, spec.width, spec.height, sampling, backgrounds, domain, cfg, bank)
            writer.add_frame(scene_id, i, K, [_frame_instance(fr, obj_id)], rgb=fr["rgb"], depth_m=fr["depth_m"],
                             masks=[fr["mask"]], masks_visib=[fr["mask_visib"]])
            ids.append(i)
            Rs.append(fr["R_m2c"])
            ts.append(fr["t_m2c_m"])
        train, test = bop.farthest_view_split(ids, np.stack(Rs), np.stack(ts), cfg.train_fraction)
        writer.write_split("train.txt", train)
        writer.write_split("test.txt", test)
    return Path(out)


# ============================================================================= sequences


@dataclass(frozen=True)
class SequenceConfig:
    """Camera motion of a real-like sequence (:func:`write_object_sequence`).

    The camera alternates rest periods and moves; a move goes, with a minimum-jerk profile
    (``10 s^3 - 15 s^4 + 6 s^5``: zero speed and acceleration at both ends), to a new camera pose:
    turned about the object's centre by up to ``max_turn_deg`` from the first pose (slerp), the
    object shifted by up to ``max_shift_m`` (x, y, z, camera frame). Sensor noise and camera
    effects are independent per frame.
    """

    fps: float = 30.0
    rest_s: tuple[float, float] = (1.0, 2.0)
    move_s: tuple[float, float] = (1.0, 2.0)
    max_turn_deg: float = 25.0
    max_shift_m: tuple[float, float, float] = (0.03, 0.03, 0.08)


#: ``default_rng([seed, stream])`` streams of a sequence's scene and motion (frame i uses ``[seed, i]``).
SEQUENCE_LAYOUT_STREAM = 2**31 - 2
SEQUENCE_MOTION_STREAM = 2**31 - 3


def _min_jerk(s: np.ndarray) -> np.ndarray:
    return s**3 * (10.0 - 15.0 * s + 6.0 * s * s)


def camera_motion(rng: np.random.Generator, count: int, centre_c_m: np.ndarray,
                  cfg: SequenceConfig = SequenceConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth camera motion with rest periods, as the object's motion in the camera frame.

    Args:
        rng: random generator.
        count: frames.
        centre_c_m: (3,) the object's centre in the first frame's camera frame, metres (the turn's pivot).
        cfg: motion parameters.

    Returns:
        (dR (N, 3, 3), dt (N, 3) metres, moving (N,) bool): frame i sees a point ``p`` of the
        first frame's camera frame at ``dR[i] p + dt[i]``; ``moving`` is False in rest periods
        (the pose is exactly the previous frame's). The sequence starts at rest.
    """
    from scipy.spatial.transform import Rotation, Slerp

    if count <= 0:
        raise InputError(f"count must be positive, got {count}")
    c = np.asarray(centre_c_m, dtype=np.float64).reshape(3)
    turns = [Rotation.identity()]
    shifts = [np.zeros(3)]
    rot = np.zeros((count, 3))
    shift = np.zeros((count, 3))
    moving = np.zeros(count, bool)
    i, resting = 0, True
    while i < count:
        if resting:
            n = max(1, int(round(_u(rng, cfg.rest_s) * cfg.fps)))
            rot[i:i + n] = turns[-1].as_rotvec()
            shift[i:i + n] = shifts[-1]
        else:
            n = max(2, int(round(_u(rng, cfg.move_s) * cfg.fps)))
            axis = rng.normal(size=3)
            target = Rotation.from_rotvec(np.radians(rng.uniform(0.4, 1.0) * cfg.max_turn_deg) * axis / np.linalg.norm(axis))
            target_shift = rng.uniform(-1.0, 1.0, 3) * np.asarray(cfg.max_shift_m)
            s = _min_jerk(np.arange(1, n + 1) / n)[: count - i]
            key = Rotation.concatenate([turns[-1], target])
            rot[i:i + len(s)] = Slerp([0.0, 1.0], key)(s).as_rotvec()
            shift[i:i + len(s)] = shifts[-1] + s[:, None] * (target_shift - shifts[-1])
            moving[i:i + len(s)] = True
            turns.append(target)
            shifts.append(target_shift)
        i += n
        resting = not resting
    dR = Rotation.from_rotvec(rot).as_matrix()
    dt = c - dR @ c + shift
    return dR, dt, moving


def rest_periods(moving: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame indices of each run of ``moving == False``."""
    m = np.asarray(moving, bool)
    out, start = [], None
    for i, mv in enumerate(m):
        if not mv and start is None:
            start = i
        if mv and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(m) - 1))
    return out


def write_object_sequence(
    out: str | os.PathLike,
    mesh,
    info,
    count: int,
    spec=None,
    domain: str = "real-like",
    seed: int = 0,
    backgrounds_dir: str | os.PathLike | None = None,
    split: str = "test",
    scene_id: int = 1,
    real_like: RealLikeConfig | None = None,
    sampling=None,
    sequence: SequenceConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write a BOP sequence of one static scene seen by a moving camera (atomically).

    One layout (:func:`sample_layout`, stream :data:`SEQUENCE_LAYOUT_STREAM`) is rendered along
    :func:`camera_motion`; frame i's camera effects and depth noise come from
    ``default_rng([seed, i])`` (independent per frame). Besides the BOP files, ``sequence.json``
    at the root holds ``fps``, ``split``, ``scene_id``, per frame ``moving`` and the
    ``rest_periods`` ([first, last] frame indices); ``test.txt`` lists every frame.

    Args: as :func:`write_object_dataset`, plus ``sequence`` (default :class:`SequenceConfig`).

    Returns:
        The dataset folder.
    """
    from tqdm import tqdm

    if count <= 0:
        raise InputError(f"count must be positive, got {count}")
    spec, cfg, sampling, K, backgrounds, bank = _dataset_setup(spec, real_like, sampling, backgrounds_dir, seed)
    seq = sequence or SequenceConfig()
    obj_id = int(info.obj_id)
    with MeshRenderer(spec.width, spec.height) as renderer, bop.BopWriter(out, split=split) as writer:
        writer.write_models({obj_id: mesh}, {obj_id: info})
        layout_rng = np.random.default_rng([seed, SEQUENCE_LAYOUT_STREAM])
        layout = sample_layout(renderer, layout_rng, mesh, info, K, spec.width, spec.height, sampling, backgrounds,
                               domain, cfg, bank)
        layout.backdrop = sample_backdrop(layout_rng, layout.t_m2c_m, info.diameter_m, cfg)
        centre = layout.R_m2c @ np.asarray(info.center_m, np.float64) + layout.t_m2c_m
        dR, dt, moving = camera_motion(np.random.default_rng([seed, SEQUENCE_MOTION_STREAM]), count, centre, seq)
        for i in tqdm(range(count), desc=f"render {domain} sequence", unit="frame", disable=not progress):
            fr = render_layout(renderer, layout, np.random.default_rng([seed, i]), mesh, info, K, spec.width, spec.height,
                               domain, cfg, motion=(dR[i], dt[i]))
            writer.add_frame(scene_id, i, K, [_frame_instance(fr, obj_id)], rgb=fr["rgb"], depth_m=fr["depth_m"],
                             masks=[fr["mask"]], masks_visib=[fr["mask_visib"]])
        writer.write_split("test.txt", range(count))
        atomic.write_json(writer.tmp_root / "sequence.json", {
            "fps": float(seq.fps), "split": split, "scene_id": int(scene_id), "frames": int(count),
            "moving": [bool(m) for m in moving], "rest_periods": [list(r) for r in rest_periods(moving)],
        })
    return Path(out)


# ============================================================================= harsh crop domain (ablation only)

#: A far camera preset for the ablation's harsh domain (``data.domain_preset: harsh``), applied to
#: 48-128 px crops of the real-like frames. Not used by the defaults the bundled weights were
#: trained on.
HARSH_CROP_CAMERA = RealLikeConfig(
    wb_gain=(0.6, 1.5),
    saturation=(0.5, 1.4),
    gamma=(0.55, 1.7),
    s_curve=(0.2, 0.6),
    vignetting=(0.2, 0.6),
    defocus_sigma_px=(0.6, 1.3),
    motion_blur_prob=0.4,
    motion_blur_px=(1.5, 3.5),
    downsample_prob=0.5,
    downsample=(0.45, 0.7),
    shot_gain=(2.0, 6.0),
    read_noise=(4.0, 10.0),
    jpeg_quality=(15, 40),
)

#: The harsh domain's material/albedo response: a fixed colour mixing (rows: output R, G, B) that
#: turns the object's colours into others, as a different material under a different light would
#: (the first study's real-like domain had "other material and light", DESIGN §1).
HARSH_COLOUR_RESPONSE = np.array([[0.15, 0.35, 0.70],
                                  [0.65, 0.20, 0.25],
                                  [0.25, 0.75, 0.10]], dtype=np.float32)


def harsh_crop_domain(rgb: np.ndarray, rng: np.random.Generator, camera: RealLikeConfig = HARSH_CROP_CAMERA,
                      response: np.ndarray = HARSH_COLOUR_RESPONSE) -> np.ndarray:
    """The ablation's harsh real-like domain, applied to an already real-like crop.

    A fixed colour response (``response``, another material/albedo response), a strong random
    colour cast, then :func:`camera_effects` with the heavy blur/noise/JPEG ``camera`` preset.

    Args:
        rgb: (H, W, 3) uint8 RGB crop.
        rng: random generator.
        camera: camera preset (default :data:`HARSH_CROP_CAMERA`).
        response: (3, 3) float colour mixing applied to linear RGB.

    Returns:
        (H, W, 3) uint8 RGB, a new image.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"harsh_crop_domain: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    lin = (img.astype(np.float32) / 255.0) ** 2.2
    lin = lin @ np.asarray(response, dtype=np.float32).T
    cast = rng.uniform(0.5, 1.5, 3).astype(np.float32)
    x = np.clip(lin * cast, 0.0, 1.0) ** (1 / 2.2)
    return camera_effects(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8), rng, camera)
