"""A seeded model of a real structured-light depth camera (Kinect / PrimeSense class, as NYU's).

It turns a scene (hand, long forearm, upper body, a wall, optional floor and clutter) into the
depth such a sensor reports, next to the clean synthetic render of the same hand at the same
pose (hand and forearm stub only, no background: the counterpart of NYU's ``synthdepth``).

The effects, in the order they are applied, and why:

1. **Projector shadow.** The pattern projector sits ``baseline_m`` to the side of the IR camera;
   surfaces the projector cannot see (behind a depth edge) get no depth. A pixel is shadowed
   when a pixel to its right on the same row falls on a smaller projector column (a running
   minimum over the row).
2. **Grazing angles.** Surfaces seen at a grazing angle return little pattern: pixels whose
   normal makes an angle with the viewing ray above ``grazing_deg`` are dropped, and those
   within 15 degrees of it are dropped with a probability rising to 1.
3. **Silhouettes.** Pixels next to a depth step larger than ``edge_step_m`` are mixed; each is
   dropped with probability ``edge_drop_prob`` (one-pixel band).
4. **Disparity noise and quantisation.** Depth comes from disparity ``f b / z``: Gaussian noise
   of ``disparity_sigma_px`` plus a spatially smooth offset (the correlation window) is added
   to the disparity, which is then quantised to ``1 / disparity_subpixel`` px. The depth error
   therefore grows with the square of the distance (about 1.5 mm at 0.8 m with the defaults,
   steps of ~1.8 mm).
5. **Speckle holes.** A few small random blobs of missing pixels.
6. **Range.** Depth outside ``[min_range_m, max_range_m]`` is invalid; the result is rounded to
   whole millimetres, as the sensor's 16-bit output.

Everything random comes from the ``numpy.random.Generator`` passed in, so a seed reproduces a
frame exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from featmap_ros.data.nyu import NyuSplitWriter, nyu_K
from featmap_ros.data.specs import NYU_EVAL_JOINTS, hand_dataset
from featmap_ros.errors import InputError
from featmap_ros.geometry import check_K
from featmap_ros.render.hand import PART_SLEEVE, HandInstance, HandShape, anatomic_shape, sample_articulation, sample_hand
from featmap_ros.render.hand_depth import composite_nearest, render_capsules_depth, render_plane_depth
from featmap_ros.render.hand_pose_fit import PoseTable, load_table, sample_table_articulation


@dataclass(frozen=True)
class SensorModel:
    """Parameters of the real-like depth sensor (see the module docstring).

    Attributes:
        baseline_m: projector-camera baseline, metres (projector on the +x side).
        disparity_sigma_px: per-pixel disparity noise, pixels.
        smooth_sigma_px: amplitude of the spatially smooth disparity offset, pixels.
        smooth_cell_px: size of that offset's cells, pixels.
        disparity_subpixel: disparity quantisation steps per pixel.
        grazing_deg: angle between normal and viewing ray above which pixels vanish.
        edge_step_m: a depth step larger than this between neighbours is a silhouette.
        edge_drop_prob: probability that a silhouette pixel is dropped.
        speckle_count: mean number of small random holes per frame.
        min_range_m, max_range_m: working range.
        edge_band_px: width of the silhouette band whose pixels may drop (Kinect v1: 2).
        smooth_window_px: side of the edge-preserving (bilateral) smoothing of the disparity,
            the correlation window's effect on a block-matching sensor (0 = off).
        thin_px: foreground structures thinner than this (pixels; a grey opening of the
            nearness) lose their depth with probability ``thin_drop_prob``: the correlation
            window cannot resolve them (0 = off).
        thin_drop_prob: see ``thin_px``.
        dark_drop_prob: probability that a pixel of a dark material (``dark_mask``, e.g. a
            sleeve) returns no depth: the IR pattern is absorbed.

    The defaults are the sensor of the first real-like domain; :data:`KINECT_V1` is the
    Kinect v1 / PrimeSense model of the NYU frames.
    """

    baseline_m: float = 0.075
    disparity_sigma_px: float = 0.08
    smooth_sigma_px: float = 0.05
    smooth_cell_px: int = 24
    disparity_subpixel: int = 8
    grazing_deg: float = 78.0
    edge_step_m: float = 0.012
    edge_drop_prob: float = 0.5
    speckle_count: float = 6.0
    min_range_m: float = 0.4
    max_range_m: float = 4.0
    edge_band_px: int = 1
    smooth_window_px: int = 0
    thin_px: int = 0
    thin_drop_prob: float = 0.0
    dark_drop_prob: float = 0.0


@dataclass(frozen=True)
class SceneModel:
    """What surrounds the hand in a real-like frame.

    Attributes:
        forearm_length_m: forearm length in real-like frames (wrist to elbow).
        synth_forearm_length_m: forearm stub in the clean synthetic frames.
        upper_arm_length_m: the upper arm goes from the elbow back (away from the camera) and
            down towards the shoulder.
        body_prob: probability of an upper body (a large capsule) hanging from the shoulder.
        floor_prob: probability of a floor plane.
        floor_below_m: range of the floor's distance below the palm centre.
        wall_depth_m: range of the wall's distance (along z at the image centre).
        clutter_max: up to this many clutter spheres/capsules.
        clutter_gap_m: clutter stays at least this far behind the palm centre.
    """

    forearm_length_m: float = 0.27
    synth_forearm_length_m: float = 0.10
    upper_arm_length_m: float = 0.30
    body_prob: float = 0.7
    floor_prob: float = 0.5
    floor_below_m: tuple[float, float] = (0.7, 1.2)
    wall_depth_m: tuple[float, float] = (1.6, 3.5)
    clutter_max: int = 4
    clutter_gap_m: float = 0.25


#: The Kinect v1 / PrimeSense Carmine that recorded NYU: 7.5 cm baseline, disparity in 1/8 px
#: (depth steps of ~1.8 mm at 0.8 m), a 9x9-class correlation window (smoothing, thin parts lost),
#: two-pixel edge bands, holes on dark and oblique surfaces, more speckle.
KINECT_V1 = SensorModel(disparity_sigma_px=0.06, smooth_sigma_px=0.08, disparity_subpixel=8, grazing_deg=74.0,
                        edge_step_m=0.010, edge_drop_prob=0.6, speckle_count=12.0, edge_band_px=2,
                        smooth_window_px=5, thin_px=5, thin_drop_prob=0.7, dark_drop_prob=0.5)
#: sensor models by name (``featmap render hand --sensor``).
SENSORS = {"default": SensorModel(), "kinect_v1": KINECT_V1}


def _normals_cos(depth_m: np.ndarray, K: np.ndarray) -> np.ndarray:
    """|cos| of the angle between the surface normal and the viewing ray, per pixel; (H, W)."""
    H, W = depth_m.shape
    u = np.arange(W)[None, :]
    v = np.arange(H)[:, None]
    z = depth_m.astype(np.float64)
    x = (u - K[0, 2]) * z / K[0, 0]
    y = (v - K[1, 2]) * z / K[1, 1]
    P = np.stack([x, y, z], axis=-1)
    du = np.zeros_like(P)
    dv = np.zeros_like(P)
    du[:, 1:-1] = P[:, 2:] - P[:, :-2]
    dv[1:-1, :] = P[2:, :] - P[:-2, :]
    n = np.cross(du, dv)
    nn = np.linalg.norm(n, axis=-1)
    pn = np.linalg.norm(P, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.abs(np.sum(n * P, axis=-1)) / (nn * pn)
    return np.where(np.isfinite(c), c, 1.0)


def apply_sensor(depth_m: np.ndarray, K: np.ndarray, rng: np.random.Generator, sensor: SensorModel = SensorModel(),
                 dark_mask: np.ndarray | None = None) -> np.ndarray:
    """Turn a clean scene depth into what the sensor reports.

    Args:
        depth_m: (H, W) clean depth, metres, 0 = nothing (not modified).
        K: (3, 3) intrinsics.
        rng: random generator (all randomness comes from it).
        sensor: parameters.
        dark_mask: optional (H, W) bool, pixels of a dark material (``sensor.dark_drop_prob``).

    Returns:
        (H, W) float32 depth, metres, whole millimetres, 0 = invalid.
    """
    K = check_K(K)
    z = np.asarray(depth_m, dtype=np.float64)
    H, W = z.shape
    f = K[0, 0]
    valid = z > 0
    # 1. projector shadow: a point at pixel u, depth z lies on projector column u - f b / z; an
    # occluder on the same projector ray is nearer, hence further right in the image
    with np.errstate(divide="ignore"):
        up = np.where(valid, np.arange(W)[None, :] - f * sensor.baseline_m / np.where(valid, z, 1.0), np.inf)
    run = np.minimum.accumulate(up[:, ::-1], axis=1)[:, ::-1]
    right_min = np.concatenate([run[:, 1:], np.full((H, 1), np.inf)], axis=1)
    shadow = valid & (right_min < up - 0.25)
    # 2. grazing angles
    cos = _normals_cos(z, K)
    c0 = np.cos(np.radians(sensor.grazing_deg))
    c1 = np.cos(np.radians(max(sensor.grazing_deg - 15.0, 0.0)))
    p_graze = np.clip((c1 - cos) / max(c1 - c0, 1e-6), 0.0, 1.0)
    graze = valid & (rng.uniform(size=z.shape) < p_graze)
    # 3. silhouettes
    zz = np.where(valid, z, 1e3)
    step = np.zeros_like(z, dtype=bool)
    for dy, dx in ((0, 1), (1, 0)):
        a = zz[: H - dy, : W - dx]
        b = zz[dy:, dx:]
        e = np.abs(a - b) > sensor.edge_step_m
        step[: H - dy, : W - dx] |= e
        step[dy:, dx:] |= e
    if sensor.edge_band_px > 1:
        step = cv2.dilate(step.astype(np.uint8), np.ones((2 * sensor.edge_band_px - 1,) * 2, np.uint8)) > 0
    edge = valid & step & (rng.uniform(size=z.shape) < sensor.edge_drop_prob)
    # 3b. parts thinner than the correlation window, and dark materials
    thin = np.zeros_like(valid)
    if sensor.thin_px > 1:
        near = np.where(valid, -z, -1e3).astype(np.float32)
        opened = cv2.morphologyEx(near, cv2.MORPH_OPEN, np.ones((sensor.thin_px, sensor.thin_px), np.uint8))
        thin = valid & (near - opened > sensor.edge_step_m) & (rng.uniform(size=z.shape) < sensor.thin_drop_prob)
    dark = np.zeros_like(valid)
    if dark_mask is not None and sensor.dark_drop_prob > 0:
        dm = np.asarray(dark_mask, dtype=bool)
        if dm.shape != z.shape:
            raise InputError(f"dark_mask: expected shape {z.shape}, got {dm.shape}")
        # dropouts come in blobs, not single pixels: a smooth random field thresholded
        field = cv2.GaussianBlur(rng.uniform(size=z.shape).astype(np.float32), (0, 0), 3.0)
        field = (field - field.mean()) / max(float(field.std()), 1e-6)
        dark = valid & dm & (field < np.quantile(field, sensor.dark_drop_prob))
    # 4. disparity noise (white + smooth) and quantisation
    fb = f * sensor.baseline_m
    disp = np.where(valid, fb / np.where(valid, z, 1.0), 0.0)
    gh, gw = max(H // sensor.smooth_cell_px, 2), max(W // sensor.smooth_cell_px, 2)
    smooth = cv2.resize(rng.normal(0.0, sensor.smooth_sigma_px, size=(gh, gw)), (W, H), interpolation=cv2.INTER_CUBIC)
    disp = disp + rng.normal(0.0, sensor.disparity_sigma_px, size=z.shape) + smooth
    if sensor.smooth_window_px > 1:  # the correlation window averages the disparity, not across edges
        filt = cv2.bilateralFilter(disp.astype(np.float32), sensor.smooth_window_px, 0.5, sensor.smooth_window_px / 2.0)
        disp = np.where(valid, filt, 0.0)
    q = float(sensor.disparity_subpixel)
    disp = np.round(disp * q) / q
    with np.errstate(divide="ignore"):
        out = np.where(valid & (disp > 0), fb / np.where(disp > 0, disp, 1.0), 0.0)
    # 5. speckle holes
    holes = np.zeros((H, W), np.uint8)
    for _ in range(int(rng.poisson(sensor.speckle_count))):
        cu, cv_ = int(rng.integers(W)), int(rng.integers(H))
        cv2.ellipse(holes, (cu, cv_), (int(rng.integers(1, 5)), int(rng.integers(1, 4))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    drop = shadow | graze | edge | thin | dark | holes.astype(bool)
    out = np.where(drop, 0.0, out)
    # 6. range and millimetres
    out = np.where((out >= sensor.min_range_m) & (out <= sensor.max_range_m), np.round(out * 1000.0) / 1000.0, 0.0)
    return out.astype(np.float32)


def render_background(hand: HandInstance, K: np.ndarray, width: int, height: int, rng: np.random.Generator, scene: SceneModel = SceneModel()) -> np.ndarray:
    """Depth of the surroundings: wall, optional floor, upper arm, upper body, clutter.

    Returns:
        (H, W) float32 depth, metres (the hand and forearm are added by :func:`render_pair`).
    """
    K = check_K(K)
    center = hand.joints_c_m()[32]
    wall_z = max(rng.uniform(*scene.wall_depth_m), center[2] + 0.5)
    wall_n = np.array([rng.normal(0, 0.15), rng.normal(0, 0.1), -1.0])
    layers = [render_plane_depth(np.array([0.0, 0.0, wall_z]), wall_n, K, width, height)]
    if rng.uniform() < scene.floor_prob:
        floor_y = center[1] + rng.uniform(*scene.floor_below_m)  # below the hand (y down)
        layers.append(render_plane_depth(np.array([0.0, floor_y, 0.0]), np.array([0.0, -1.0, rng.normal(0, 0.05)]), K, width, height))
    # the arm: elbow at the end of the forearm, upper arm back and down to the shoulder
    fdir = hand.forearm_direction_c()
    elbow = hand.t_h2c_m + fdir * scene.forearm_length_m
    udir = 0.4 * fdir + np.array([rng.normal(0, 0.2), 0.3, 1.0])
    shoulder = elbow + scene.upper_arm_length_m * udir / np.linalg.norm(udir)
    a_list, b_list, r_list = [elbow], [shoulder], [0.038 * hand.shape.scale]
    if rng.uniform() < scene.body_prob:
        top = shoulder + np.array([rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.2), rng.uniform(0.0, 0.1), rng.uniform(0.1, 0.18)])
        a_list.append(top)
        b_list.append(top + np.array([0.0, 0.8, 0.05]))
        r_list.append(rng.uniform(0.14, 0.2))
    for _ in range(int(rng.integers(0, scene.clutter_max + 1))):
        z = rng.uniform(center[2] + scene.clutter_gap_m, wall_z)
        u, v = rng.uniform(0, width), rng.uniform(0, height)
        p = np.array([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z])
        d = rng.normal(size=3)
        d *= rng.uniform(0.0, 0.4) / np.linalg.norm(d)
        a_list.append(p)
        b_list.append(p + d)
        r_list.append(rng.uniform(0.03, 0.15))
    bg = composite_nearest(*layers)
    if a_list:
        bg = render_capsules_depth(np.array(a_list), np.array(b_list), np.array(r_list), K, width, height, depth_m=bg)
    return bg


def render_pair(hand: HandInstance, K: np.ndarray, width: int, height: int, rng: np.random.Generator, sensor: SensorModel = SensorModel(), scene: SceneModel = SceneModel()) -> tuple[np.ndarray, np.ndarray]:
    """Clean synthetic and real-like depth of the same hand at the same pose.

    Returns:
        (synth_m, real_m): two (H, W) float32 depth maps, metres, 0 = invalid. ``synth_m`` holds
        the hand and a forearm stub only; ``real_m`` the full scene through the sensor model
        (a sleeve, when the hand has one, is a dark material: ``sensor.dark_drop_prob``).
    """
    a, b, r, _ = hand.surface_c(scene.synth_forearm_length_m)
    synth = render_capsules_depth(a, b, r, K, width, height)
    bg = render_background(hand, K, width, height, rng, scene)
    a, b, r, part = hand.surface_c(scene.forearm_length_m)
    labels = np.zeros((height, width), np.int32)
    clean_scene = render_capsules_depth(a, b, r, K, width, height, depth_m=bg, labels=labels, label_ids=part)
    real = apply_sensor(clean_scene, K, rng, sensor, dark_mask=labels == PART_SLEEVE)
    return synth, real


def sample_pair(rng: np.random.Generator, K: np.ndarray, width: int = 640, height: int = 480, sensor: SensorModel = SensorModel(), scene: SceneModel = SceneModel(), **hand_kwargs) -> tuple[HandInstance, np.ndarray, np.ndarray]:
    """A random hand (``render.hand.sample_hand``) and its (synthetic, real-like) depth pair."""
    hand = sample_hand(rng, K, width, height, **hand_kwargs)
    synth, real = render_pair(hand, K, width, height, rng, sensor, scene)
    return hand, synth, real


# ============================================================================= hand domains


@dataclass(frozen=True)
class HandDomain:
    """A family of hands and frames: surface, proportions, poses, forearm and sleeve, sensor.

    Attributes:
        surface: ``capsules`` (the first hand) or ``anatomic`` (:func:`render.hand.anatomic_shape`).
        poses: ``base`` (hand-picked base poses + noise) or ``table`` (rows of the fitted angle
            table :data:`render.hand_pose_fit.BUNDLED_TABLE` + noise).
        pose_sequence: the table's source sequence to draw from (-1 = all; ICVL: 0 = A, 1 = B).
        pose_sigma_rad: noise added to every angle.
        base_pose_prob: with ``table``, the fraction of poses still drawn from the base poses.
        scale_range: overall hand size factor.
        finger_length_sigma: relative standard deviation of each finger's length.
        palm_width_range, thickness_range: factors on the palm's breadth and on every radius.
        sleeve_prob: probability of a sleeve over the forearm (anatomic only).
        sleeve_cuff_m: range of the cuff's distance behind the wrist.
        sleeve_radius_m: range of the sleeve's radius.
        sensor: name in :data:`SENSORS`.
        synth_forearm_m: range of the forearm length of the clean synthetic renders (training).
    """

    surface: str = "capsules"
    poses: str = "base"
    pose_sequence: int = -1
    pose_sigma_rad: float = 0.25
    base_pose_prob: float = 0.0
    scale_range: tuple[float, float] = (0.88, 1.12)
    finger_length_sigma: float = 0.0
    palm_width_range: tuple[float, float] = (1.0, 1.0)
    thickness_range: tuple[float, float] = (1.0, 1.0)
    sleeve_prob: float = 0.0
    sleeve_cuff_m: tuple[float, float] = (0.04, 0.12)
    sleeve_radius_m: tuple[float, float] = (0.042, 0.055)
    sensor: str = "default"
    synth_forearm_m: tuple[float, float] = (0.10, 0.10)

    def __post_init__(self) -> None:
        if self.surface not in ("capsules", "anatomic"):
            raise InputError(f"HandDomain.surface: expected 'capsules' or 'anatomic', got {self.surface!r}")
        if self.poses not in ("base", "table"):
            raise InputError(f"HandDomain.poses: expected 'base' or 'table', got {self.poses!r}")
        if self.sensor not in SENSORS:
            raise InputError(f"HandDomain.sensor: unknown {self.sensor!r}; valid: {sorted(SENSORS)}")


#: Named domains. ``v1``: the first real-like domain (capsule hand, base poses, the first sensor;
#: frames identical to earlier releases). ``kinect``: the anatomic hand with poses fitted to
#: ICVL's sequence B, varied proportions, sleeves, the Kinect v1 sensor (training).
#: ``kinect_hard``: the harder test: other proportions (wider ranges), poses of ICVL's *other*
#: sequence (A, never trained on), a sleeve and forearm in most frames, the Kinect v1 sensor.
HAND_DOMAINS: dict[str, HandDomain] = {
    "v1": HandDomain(),
    "kinect": HandDomain(surface="anatomic", poses="table", pose_sequence=1, pose_sigma_rad=0.10, base_pose_prob=0.2,
                         scale_range=(0.86, 1.12), finger_length_sigma=0.04, palm_width_range=(0.93, 1.07),
                         thickness_range=(0.92, 1.08), sleeve_prob=0.5, sensor="kinect_v1", synth_forearm_m=(0.10, 0.27)),
    "kinect_hard": HandDomain(surface="anatomic", poses="table", pose_sequence=0, pose_sigma_rad=0.06,
                              scale_range=(0.80, 1.18), finger_length_sigma=0.07, palm_width_range=(0.86, 1.14),
                              thickness_range=(0.85, 1.20), sleeve_prob=0.85, sleeve_cuff_m=(0.02, 0.09),
                              sensor="kinect_v1", synth_forearm_m=(0.10, 0.27)),
}


def hand_domain(name: str) -> HandDomain:
    """The named :data:`HAND_DOMAINS` entry; InputError listing the valid names."""
    if name not in HAND_DOMAINS:
        raise InputError(f"unknown hand domain {name!r}; valid: {sorted(HAND_DOMAINS)}")
    return HAND_DOMAINS[name]


def sample_domain_hand(rng: np.random.Generator, K: np.ndarray, width: int, height: int, domain: HandDomain,
                       table: PoseTable | None = None) -> HandInstance:
    """A random hand of ``domain`` whose palm centre projects inside the image.

    ``v1`` draws exactly as :func:`render.hand.sample_hand` (same stream). Other domains draw
    the shape and the articulation first, then place the hand as ``sample_hand`` does.

    Args:
        table: the fitted pose table (default: the bundled one, when ``domain.poses == 'table'``).
    """
    if domain.surface == "capsules" and domain.poses == "base" and domain.sleeve_prob == 0 and domain.finger_length_sigma == 0:
        return sample_hand(rng, K, width, height, scale_range=domain.scale_range, sigma_rad=domain.pose_sigma_rad)
    fl = 1.0 + domain.finger_length_sigma * rng.standard_normal(5)
    if domain.surface == "anatomic":
        shape = anatomic_shape(float(rng.uniform(*domain.scale_range)), np.clip(fl, 0.8, 1.2), float(rng.uniform(*domain.palm_width_range)),
                               float(rng.uniform(*domain.thickness_range)))
    else:
        shape = HandShape(scale=float(rng.uniform(*domain.scale_range)), lengths_m=HandShape().lengths_m * np.clip(fl, 0.8, 1.2)[:, None])
    if domain.poses == "table" and rng.uniform() >= domain.base_pose_prob:
        tab = load_table() if table is None else table
        angles = sample_table_articulation(rng, tab.subset(None if domain.pose_sequence < 0 else domain.pose_sequence), domain.pose_sigma_rad)
    else:
        angles = sample_articulation(rng, sigma_rad=0.25)
    sleeve = None
    if domain.surface == "anatomic" and rng.uniform() < domain.sleeve_prob:
        sleeve = (float(rng.uniform(*domain.sleeve_cuff_m)), float(rng.uniform(*domain.sleeve_radius_m)) * shape.scale)
    hand = sample_hand(rng, K, width, height, scale_range=(1.0, 1.0), shape=shape, angles_rad=angles)
    return replace(hand, sleeve=sleeve)


def sample_domain_pair(rng: np.random.Generator, K: np.ndarray, domain: HandDomain, width: int = 640, height: int = 480,
                       table: PoseTable | None = None, scene: SceneModel = SceneModel()) -> tuple[HandInstance, np.ndarray, np.ndarray]:
    """A hand of ``domain`` and its (synthetic, real-like) pair (:func:`render_pair` with the domain's sensor)."""
    hand = sample_domain_hand(rng, K, width, height, domain, table)
    synth, real = render_pair(hand, K, width, height, rng, SENSORS[domain.sensor], scene)
    return hand, synth, real


# ============================================================================= harsh crop domain (ablation only)


@dataclass(frozen=True)
class HarshCropSensor:
    """A harsher sensor for the ablation's harsh domain (``data.domain_preset: harsh``), applied to
    normalised depth crops (``crops.crop_depth``: [-1, 1] over the cube, +1 = back or invalid).

    Not used by the defaults the bundled weights were trained on. Values in cube units (the
    ablation's cube is 300 mm, so 0.01 = 1.5 mm).

    Attributes:
        shadow_px: (low, high) width of the structured-light shadow: foreground pixels missing along
            its left edges (the projector side), as thin parts vanish in NYU's Kinect frames.
        hole_prob: fraction of random missing blobs (seed density).
        hole_radius_px: (low, high) radius of those blobs.
        flying_prob: probability that an edge pixel takes a depth between fore- and background.
        noise_sigma: (low, high) per-frame std of the depth noise.
        quant_step: depth quantisation step.
        block: the sensor's effective resolution divisor (nearest down/up sampling).
    """

    shadow_px: tuple[int, int] = (1, 2)
    hole_prob: float = 0.004
    hole_radius_px: tuple[float, float] = (1.0, 3.0)
    flying_prob: float = 0.6
    noise_sigma: tuple[float, float] = (0.03, 0.07)
    quant_step: float = 0.04
    block: int = 2


def harsh_crop_depth(crop_n: np.ndarray, rng: np.random.Generator, sensor: HarshCropSensor = HarshCropSensor()) -> np.ndarray:
    """The ablation's harsh sensor on one normalised depth crop.

    Args:
        crop_n: (S, S) float depth crop in [-1, 1] (+1 = back of the cube or invalid).
        rng: random generator.
        sensor: parameters.

    Returns:
        (S, S) float32 crop in [-1, 1], a new array.
    """
    x = np.asarray(crop_n, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"harsh_crop_depth: expected (S, S), got {x.shape}")
    s = x.shape[0]
    fg = x < 0.99
    # flying pixels at depth edges: a mix of the two sides
    dil = cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    ero = cv2.erode(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    edge = dil & ~ero
    near = cv2.erode(np.where(fg, x, 1.0).astype(np.float32), np.ones((3, 3), np.uint8))
    fly = edge & (rng.random(x.shape) < sensor.flying_prob)
    a = rng.random(x.shape).astype(np.float32)
    y = np.where(fly, a * near + (1 - a) * 1.0, x)
    # noise and quantisation (noise grows with depth within the cube)
    sig = float(rng.uniform(*sensor.noise_sigma))
    y = y + rng.standard_normal(x.shape).astype(np.float32) * sig * (1.0 + 0.5 * (y + 1.0) / 2.0)
    y = np.round(y / sensor.quant_step) * sensor.quant_step
    # lower effective resolution
    if sensor.block > 1:
        small = y[::sensor.block, ::sensor.block]
        y = np.repeat(np.repeat(small, sensor.block, 0), sensor.block, 1)[:s, :s]
    # structured-light shadow: the foreground loses a band along its left edges
    w = int(rng.integers(sensor.shadow_px[0], sensor.shadow_px[1] + 1))
    fg2 = y < 0.99
    bg_left = np.zeros_like(fg2)
    for k in range(1, w + 1):
        bg_left[:, k:] |= ~fg2[:, :-k]
    missing = fg2 & bg_left
    # random holes
    seeds = rng.random(x.shape) < sensor.hole_prob
    if seeds.any():
        r = int(round(rng.uniform(*sensor.hole_radius_px)))
        holes = cv2.dilate(seeds.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
        missing |= holes
    y = np.where(missing, 1.0, y)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def write_hand_dataset(out: str | os.PathLike, count: int, seed: int, split: str = "test", previews: int = 0, domain: str = "v1") -> list:
    """Write ``count`` real-like hand frames (with their ``synthdepth_*`` twins) in the NYU layout.

    Args:
        out: dataset root; frames go to ``out/split`` (``joint_data.mat`` written last).
        count: frames, >= 1.
        seed: seed of the frame stream.
        split: split folder.
        previews: how many frames to return for a preview picture.
        domain: name in :data:`HAND_DOMAINS` (``v1``: the first real-like domain, as before).

    Returns:
        Up to ``previews`` tuples (real depth (H, W) m, synthetic depth (H, W) m, (14, 3) joints m).
    """
    from tqdm import tqdm

    if count < 1:
        raise InputError(f"--count must be >= 1, got {count}")
    spec = hand_dataset("nyu")
    K = nyu_K()
    dom = hand_domain(domain)
    table = load_table() if dom.poses == "table" else None
    rng = np.random.default_rng(seed)
    shown = []
    with NyuSplitWriter(Path(out) / split, K) as w:
        for _ in tqdm(range(count), desc=f"render hand {split} ({domain})", unit="frame"):
            if domain == "v1":
                hand, synth_m, real_m = sample_pair(rng, K, spec.width, spec.height)
            else:
                hand, synth_m, real_m = sample_domain_pair(rng, K, dom, spec.width, spec.height, table)
            J = hand.joints_c_m()
            w.add(J, depth_mm=real_m * 1000.0, synth_mm=synth_m * 1000.0)
            if len(shown) < previews:
                shown.append((real_m, synth_m, J[list(NYU_EVAL_JOINTS)]))
    return shown
