"""From a config to what :func:`featmap_ros.training.loop.train` consumes: meshes and metadata,
synthetic crops (cached or online), real/synthetic pairs of the same pose (the paper's Fig. 3),
validation crops, the localiser's frames (``featmap train``)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from featmap_ros import crops, geometry
from featmap_ros.coords import COORDS_STRIDE
from featmap_ros.data import bop
from featmap_ros.data.backgrounds import PACKAGE_PHOTOS_KEY, BackgroundSource, background_files
from featmap_ros.data.hand_samples import NyuPairCrops, SyntheticHandCrops
from featmap_ros.data.nyu import eval_joints, nyu_K
from featmap_ros.data.object_samples import BopCropDataset, RealSynthPairs, SyntheticObjectDataset, collect_frames, object_window
from featmap_ros.data.specs import hand_dataset, object_dataset
from featmap_ros.errors import InputError
from featmap_ros.render.hand import sample_hand
from featmap_ros.render.hand_depth import render_capsules_depth, render_hand_depth
from featmap_ros.render.depth_sensor import hand_domain, sample_domain_hand
from featmap_ros.render.hand_pose_fit import load_table
from featmap_ros.hand_localiser import refined_com_m
from featmap_ros.render.real_like import make_distractor_bank, write_object_dataset
from featmap_ros.render.renderer import MeshRenderer, preload_torch_compiler
from featmap_ros.render.toy_object import make_toy_object
from featmap_ros.training.caches import cache_path, load_or_build
from featmap_ros.training.sources import CachedSource, IterableSource


def object_models(cfg, object_name: str | None = None) -> tuple[list, list, list[str], list[int], list[str]]:
    """Meshes and model infos of the objects of ``cfg.data``.

    Sources, in order: ``data.mesh`` (a user's own mesh, one object), ``data.models_root: toy``
    (the project's toy object), else a BOP ``models/`` folder with ``models_info.json``.

    Returns:
        (meshes, infos, names, obj_ids, mesh_paths).

    Raises:
        InputError: missing mesh or models folder, object id absent from models_info.
    """

    d = cfg.data
    if d.mesh:
        p = Path(d.mesh)
        if not p.is_file():
            raise InputError(f"data.mesh: {p}: file not found")
        mesh = bop.load_mesh(p, units=d.mesh_units)
        oid = int(d.object_ids[0]) if d.object_ids else 1
        info = bop.model_info_from_mesh(oid, mesh)
        return [mesh], [info], [object_name or p.stem], [oid], [str(p.resolve())]
    if d.models_root in ("", "toy"):

        mesh, info = make_toy_object(1)
        return [mesh], [info], ["toy"], [1], [""]
    root = Path(d.models_root)
    info_path = root / "models_info.json"
    if not info_path.is_file():
        raise InputError(f"data.models_root: {info_path} not found (a BOP models/ folder is expected)")
    infos_all = bop.load_models_info(info_path)
    spec_names = object_dataset(d.dataset).object_names if d.dataset in ("lm", "lmo") else {}
    meshes, infos, names, paths = [], [], [], []
    for oid in d.object_ids:
        if oid not in infos_all:
            raise InputError(f"data.object_ids: obj_id {oid} is not in {info_path}")
        mp = root / f"obj_{int(oid):06d}.ply"
        if not mp.is_file():
            raise InputError(f"data.object_ids: {mp} not found")
        meshes.append(bop.load_mesh(mp, units="mm"))
        infos.append(infos_all[oid])
        names.append(spec_names.get(int(oid), f"obj_{int(oid):06d}"))
        paths.append(str(mp.resolve()))
    return meshes, infos, names, [int(o) for o in d.object_ids], paths


def object_meta(infos: list, names: list[str], obj_ids: list[int], mesh_paths: list[str], window_scale: float,
                meshes: list | None = None, n_points: int = 1000, head: str = "bb8") -> dict:
    """Estimator metadata of an object model (see :class:`~featmap_ros.estimators.ObjectPoseEstimator`).

    ``head: coords`` adds each object's coordinate range (``coords_box_min_m``, ``coords_box_size_m``:
    the model box the predicted coordinates are normalised to) and its symmetries.
    """
    meta = {
        "object_names": list(names),
        "obj_ids": list(obj_ids),
        "corners_m": [np.asarray(i.corners_m).tolist() for i in infos],
        "extents_m": [np.asarray(i.size_m).tolist() for i in infos],
        "center_m": [np.asarray(i.center_m).tolist() for i in infos],
        "diameter_m": [float(i.diameter_m) for i in infos],
        "symmetric": [bool(i.is_symmetric) for i in infos],
        "window_scale": float(window_scale),
        "mesh_paths": list(mesh_paths),
        "head": head,
    }
    if head == "coords":
        meta["coords_box_min_m"] = [np.asarray(i.min_m, np.float64).tolist() for i in infos]
        meta["coords_box_size_m"] = [np.asarray(i.size_m, np.float64).tolist() for i in infos]
        meta["symmetries_discrete"] = [[np.asarray(T, np.float64).tolist() for T in i.symmetries_discrete] for i in infos]
        meta["symmetries_continuous"] = [[{"axis": np.asarray(c["axis"], np.float64).tolist(),
                                           "offset_m": np.asarray(c.get("offset_m", np.zeros(3)), np.float64).tolist()}
                                          for c in i.symmetries_continuous] for i in infos]
    if meshes is not None:
        pts = []
        for k, m in enumerate(meshes):
            v = np.asarray(m.vertices_m, dtype=np.float64)
            if len(v) > n_points:
                v = v[np.random.default_rng(k).choice(len(v), n_points, replace=False)]
            pts.append(v.tolist())
        meta["model_points_m"] = pts
    return meta


def _stack_samples(samples: list[dict], keys: dict[str, str]) -> dict:
    out = {}
    for src, dst in keys.items():
        t = torch.stack([s[src] for s in samples])
        if dst in ("image", "real", "synth", "coords_n", "mask_visib"):  # [0, 1] values kept as bytes (1/255 of the box)
            t = (t * 255.0).round().clamp(0, 255).to(torch.uint8)
        out[dst] = t
    return out


def occluders_for(meshes: list, k: int, seed: int) -> list:
    """Occluder meshes of object ``k``: the other objects, or distractor shapes when it is alone."""
    others = [m for j, m in enumerate(meshes) if j != k]
    return others or make_distractor_bank(np.random.default_rng([seed, 2**31 - 2]), 9)


def _keys(coords_stride: int, images: dict) -> dict:
    keys = dict(images, corners_n="corners_n")
    if coords_stride > 0:
        keys.update(coords_n="coords_n", mask_visib="mask_visib")
    return keys


def render_synthetic_objects(meshes, infos, K, size: int, count: int, seed: int, backgrounds: str | None, progress: bool = True,
                             occluder_prob: float = 0.0, cutout_prob: float = 0.0, coords_stride: int = 0,
                             truncation_prob: float = 0.0) -> dict:
    """``count`` synthetic crops per object (SyntheticObjectDataset), as compact tensors.

    With ``occluder_prob`` > 0 the other objects (:func:`occluders_for`) occlude each object;
    with ``coords_stride`` > 0 the crops carry the ``coords`` head's targets (uint8, 1/255 steps).
    """
    from tqdm import tqdm

    parts = []
    with MeshRenderer(size, size) as renderer:
        bgs = BackgroundSource(backgrounds or None)
        for k, (mesh, info) in enumerate(zip(meshes, infos)):
            occ = occluders_for(meshes, k, seed) if occluder_prob > 0 else ()
            ds = SyntheticObjectDataset(mesh, info, K, crop_size=size, seed=seed * 100 + k, length=count, backgrounds=backgrounds or None,
                                        occluders=occ, occluder_prob=occluder_prob, cutout_prob=cutout_prob, coords_stride=coords_stride,
                                        truncation_prob=truncation_prob)
            samples = [ds.make_sample(i, renderer, bgs) for i in tqdm(range(count), desc=f"synthetic crops obj {k}", disable=not progress, dynamic_ncols=True)]
            t = _stack_samples(samples, _keys(coords_stride, {"image": "image"}))
            t["obj_index"] = torch.full((count,), k, dtype=torch.long)
            parts.append(t)
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def render_pairs(frames_per_object: list[list], meshes, infos, size: int, seed: int, epochs: int, progress: bool = True,
                 coords_stride: int = 0) -> dict:
    """Real/synthetic pairs (RealSynthPairs), ``epochs`` jittered versions of each real frame
    (with the ``coords`` targets of the render when ``coords_stride`` > 0)."""
    from tqdm import tqdm

    samples, idx = [], []
    for k, frames in enumerate(frames_per_object):
        if not frames:
            continue
        ds = RealSynthPairs(frames, meshes[k], infos[k], crop_size=size, seed=seed + k, jitter=True, coords_stride=coords_stride)
        try:
            for e in range(epochs):
                ds.set_epoch(e)
                for i in tqdm(range(len(ds)), desc=f"pairs obj {k} epoch {e}", disable=not progress, dynamic_ncols=True):
                    samples.append(ds[i])
                    idx.append(k)
        finally:  # release the GL context now: an unreleased one can crash the process at exit (Mesa)
            if getattr(ds, "_renderer", None) is not None:
                ds._renderer.close()
                ds._renderer = None
    if not samples:
        raise InputError("no real training frames for the pairs")
    t = _stack_samples(samples, _keys(coords_stride, {"real": "real", "synth": "synth"}))
    t["obj_index"] = torch.tensor(idx, dtype=torch.long)
    return t


def eval_crops(frames_per_object: list[list], infos, size: int, progress: bool = True) -> dict:
    """Evaluation crops (object window of the ground truth, as in training, no jitter)."""
    from tqdm import tqdm

    samples, idx = [], []
    for k, frames in enumerate(frames_per_object):
        ds = BopCropDataset(frames, infos[k], crop_size=size, window_from="corners")
        for i in tqdm(range(len(ds)), desc=f"eval crops obj {k}", disable=not progress, dynamic_ncols=True):
            samples.append(ds[i])
            idx.append(k)
    t = _stack_samples(samples, {"image": "real", "corners_n": "corners_n", "window": "window", "K": "K", "R_m2c": "R_m2c", "t_m2c_m": "t_m2c_m"})
    t["obj_index"] = torch.tensor(idx, dtype=torch.long)
    return t


def check_frames_have_images(root: str | Path, split: str, im_ids, field: str) -> None:
    """Every image id of ``im_ids`` is a frame of ``root/split`` with an image.

    Raises:
        InputError: naming ``field``, the id and the image file that is missing (or the
            ``scene_camera.json`` that lacks the id).
    """
    scenes = bop.list_scenes(Path(root) / split)
    if not scenes:
        raise InputError(f"{field}: {Path(root) / split} has no scene folders")
    has_image: dict[int, bool] = {}  # im_id -> an image exists in some scene
    for sdir in scenes:
        for f in bop.read_scene(sdir):
            has_image[f.im_id] = has_image.get(f.im_id, False) or f.rgb_path is not None
    for i in im_ids:
        if int(i) not in has_image:
            cams = ", ".join(str(s / "scene_camera.json") for s in scenes)
            raise InputError(f"{field}: im_id {int(i)} is not a frame of {cams}")
        if not has_image[int(i)]:
            where = ", ".join(str(s / "rgb" / f"{int(i):06d}.png") for s in scenes)
            raise InputError(f"{field}: im_id {int(i)} has no image ({where} not found; also looked for .jpg/.tif and gray/)")


def window_scale_from_frames(frames: list, infos_by_frame: list) -> float:
    """Median ratio of the training window side to the larger side of ``bbox_obj``.

    The estimator crops a given detection box with this factor so that its crops match the
    training windows (which are built from the projected box corners).
    """

    r = []
    for fr, info in zip(frames, infos_by_frame):
        if fr.bbox_obj is None or fr.bbox_obj[2] <= 0 or fr.bbox_obj[3] <= 0:
            continue
        w = object_window(geometry.project_model_points(info.corners_m, fr.R_m2c, fr.t_m2c_m, fr.K))
        r.append(w.side / max(fr.bbox_obj[2], fr.bbox_obj[3]))
    return float(np.median(r)) if r else 1.4


def real_like_dataset(cache_dir: Path, mesh, info, count: int, seed: int, dataset: str) -> Path:
    """A real-like BOP data set of the object (``render.real_like``), written once into the cache."""

    key = hashlib.sha1(json.dumps({"v": 1, "n": count, "seed": seed, "ds": dataset, "mesh": mesh.name,
                                   "nv": int(len(mesh.vertices_m))}, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir) / f"object_reallike_{key}"
    if not (root / "train").is_dir():
        write_object_dataset(root, mesh, info, count, spec=object_dataset(dataset), domain="real-like", seed=seed, split="train", scene_id=1)
    return root


@dataclass
class PreparedData:
    """What ``featmap train`` needs besides the config."""

    synthetic: object
    pairs: object | None
    meta: dict
    validate: Callable | None = None
    localiser: object | None = None
    pca_targets: torch.Tensor | None = None


def prepare(cfg, out_dir: Path, object_name: str | None = None, progress: bool = True) -> PreparedData:
    """Sources and metadata for :func:`featmap_ros.train.train` from ``cfg.data``.

    Objects: synthetic crops of each object (a cached set of ``synthetic_count`` per object, or
    online rendering in DataLoader workers when 0, one object only); pairs from the BOP dataset
    ``real_root`` (``real_split``, at most ``max_real`` frames per object) rendered once with
    3 jittered windows per frame. Hands: synthetic crops (cached or online); pairs from the
    NYU-layout ``real_root``.
    """

    preload_torch_compiler()
    d = cfg.data
    cache_dir = Path(d.cache_dir) if d.cache_dir else Path(out_dir) / "cache"
    size = cfg.model.input_size
    if cfg.model.task == "object":
        meshes, infos, names, obj_ids, paths = object_models(cfg, object_name)
        if cfg.model.n_objects != len(meshes):
            raise InputError(f"model.n_objects is {cfg.model.n_objects} but data.object_ids lists {len(meshes)} object(s)")
        for name in ("occluder_prob", "cutout_prob", "truncation_prob"):
            if not 0.0 <= getattr(d, name) <= 1.0:
                raise InputError(f"data.{name} must be in [0, 1], got {getattr(d, name)}")
        spec = object_dataset(d.dataset)
        K = np.array([[spec.fx, 0, spec.cx], [0, spec.fy, spec.cy], [0, 0, 1.0]])
        cstride = COORDS_STRIDE if cfg.model.head == "coords" else 0
        if cstride:
            check_symmetries_known(infos, obj_ids, spec, d)
        if d.synthetic_count > 0:
            render_seed = cfg.seed if d.render_seed < 0 else d.render_seed
            synth_t = synthetic_object_cache(cache_dir, meshes, infos, K, size, d.synthetic_count, render_seed, d.backgrounds, paths, progress,
                                             d.occluder_prob, d.cutout_prob, cstride, d.truncation_prob)
            synthetic = CachedSource(synth_t, cfg.seed, 0)
        else:
            if len(meshes) != 1:
                raise InputError("data.synthetic_count: online rendering (0) supports one object; set a cache size for several")

            mesh, info = meshes[0], infos[0]
            occ = occluders_for(meshes, 0, cfg.seed) if d.occluder_prob > 0 else ()
            synthetic = IterableSource(
                lambda s: SyntheticObjectDataset(mesh, info, K, crop_size=size, seed=s, backgrounds=d.backgrounds or None,
                                                 occluders=occ, occluder_prob=d.occluder_prob, cutout_prob=d.cutout_prob,
                                                 coords_stride=cstride, truncation_prob=d.truncation_prob),
                cfg.seed, 0, d.num_workers, cfg.batch_size)
        pairs = None
        window_scale = 1.4
        per_obj: list = []
        if d.real_root:

            im_ids = [int(i) for i in d.real_im_ids] or None
            if im_ids is not None:
                check_frames_have_images(d.real_root, d.real_split, im_ids, "data.real_im_ids")
            per_obj = []
            for oid, info in zip(obj_ids, infos):
                fr = collect_frames(d.real_root, d.real_split, oid, im_ids=im_ids)
                if d.max_real:
                    fr = fr[:d.max_real]
                per_obj.append(fr)
            if not any(per_obj):
                raise InputError(f"data.real_root: {d.real_root}/{d.real_split} has no frames of objects {obj_ids}")
            key = {"v": 1, "root": str(Path(d.real_root).resolve()), "split": d.real_split, "n": [len(f) for f in per_obj], "size": size, "seed": cfg.seed, "ids": obj_ids}
            if im_ids is not None:  # only when used, so that existing caches keep their names
                key["im_ids"] = sorted(im_ids)
            if cstride:
                key["coords_stride"] = cstride
            pair_t = load_or_build(cache_path(cache_dir, "object_pairs", key),
                                   lambda: render_pairs(per_obj, meshes, infos, size, cfg.seed, 3, progress, cstride))
            pairs = CachedSource(pair_t, cfg.seed, 1)
            flat = [f for fr in per_obj for f in fr]
            flat_info = [infos[k] for k, fr in enumerate(per_obj) for _ in fr]
            window_scale = window_scale_from_frames(flat, flat_info)
        meta = object_meta(infos, names, obj_ids, paths, window_scale, head=cfg.model.head)
        loc = None
        if cfg.localiser_steps > 0:
            loc = {"meshes": meshes, "infos": infos, "names": names, "obj_ids": obj_ids, "K": K, "spec": spec, "cache_dir": cache_dir,
                   "backgrounds": d.backgrounds,
                   "real_frames": [(f, k) for k, fr in enumerate(per_obj) for f in fr] if d.real_root else []}
        return PreparedData(synthetic, pairs, meta, localiser=loc)
    # hands

    new_recipe = (d.hand_domain, d.hand_centre, float(d.hand_cube_mm)) != ("v1", "palm", HAND_CUBE_MM)
    hand_domain(d.hand_domain)  # an unknown name fails here, naming the valid ones
    cube_m = d.hand_cube_mm / 1000.0
    if d.synthetic_count > 0:
        key = {"v": 1, "size": size, "n": d.synthetic_count, "seed": cfg.seed}
        if new_recipe:  # only when used, so that existing caches keep their names
            key.update({"domain": d.hand_domain, "centre": d.hand_centre, "cube_mm": float(d.hand_cube_mm)})

        def build_synth() -> dict:
            return render_hand_synthetic(size, d.synthetic_count, cfg.seed, offset_sigma_m=0.01, progress=progress,
                                         domain=d.hand_domain, centre=d.hand_centre, cube_mm=d.hand_cube_mm)

        synth_t = load_or_build(cache_path(cache_dir, "hand_synth", key), build_synth)
        synthetic = CachedSource(synth_t, cfg.seed, 0)
        pca = synth_t["joints_n"]
    else:
        if new_recipe:
            raise InputError("data.synthetic_count: the hand_domain / hand_centre / hand_cube_mm options need a cached synthetic set (> 0)")
        synthetic = IterableSource(lambda s: SyntheticHandCrops(size=size, cube_m=cube_m, seed=s, augment=True), cfg.seed, 0, d.num_workers, cfg.batch_size)
        pca = None
    pairs = None
    if d.real_root:
        from tqdm import tqdm

        # pairs cropped at the ground-truth palm centre; robustness to the run-time localiser's
        # centre error comes from the synthetic crops' centre jitter (sigma 10 mm)
        ds = NyuPairCrops(d.real_root, d.real_split, size=size, cube_m=cube_m, augment=False, seed=cfg.seed, centre=d.hand_centre)
        n = len(ds) if not d.max_real else min(len(ds), d.max_real)
        samples = [ds[i] for i in tqdm(range(n), desc="hand pairs", disable=not progress)]
        pairs = CachedSource({"real": torch.stack([s["real"] for s in samples]).half(), "synth": torch.stack([s["synth"] for s in samples]).half(),
                              "joints_n": torch.stack([s["joints_n"] for s in samples])}, cfg.seed, 1)
    return PreparedData(synthetic, pairs, hand_meta(d.hand_cube_mm, d.hand_centre), pca_targets=pca if cfg.model.pca_dim else None)


HAND_CUBE_MM = 300.0


def hand_meta(cube_mm: float = HAND_CUBE_MM, centre: str = "palm") -> dict:
    """The hand checkpoint's ``meta`` (read back as :class:`featmap_ros.checkpoint.HandMeta`)."""
    meta = {"joint_names": list(hand_dataset("nyu").joint_names), "cube_mm": float(cube_mm), "depth_range_m": [0.25, 1.6]}
    if centre != "palm":  # absent = palm, as in every earlier checkpoint
        meta["centre"] = centre
    return meta


def _palm(joints14_c_m: np.ndarray) -> np.ndarray:
    return np.asarray(joints14_c_m, dtype=np.float64)[13]


def _hand_crop_item(depth_m: np.ndarray, joints14: np.ndarray, K: np.ndarray, centre: np.ndarray, size: int, cube_m: float) -> tuple[np.ndarray, np.ndarray]:
    crop, T = crops.crop_depth(depth_m, centre, K, cube_m=cube_m, size=size)
    return crop, crops.joints_to_crop(joints14, T)


def render_hand_synthetic(size: int, count: int, seed: int, offset_sigma_m: float = 0.005, progress: bool = True,
                          domain: str = "v1", centre: str = "palm", cube_mm: float = HAND_CUBE_MM) -> dict:
    """``count`` clean synthetic hand crops, cropped at the crop centre plus N(0, offset_sigma_m)
    per axis: ``{"depth": (N, 1, S, S) float16, "joints_n": (N, 14, 3)}``.

    ``domain`` ``v1`` with ``centre`` ``palm`` and a 300 mm cube is the first recipe
    (``sample_hand`` + ``render_hand_depth`` at the palm centre; same stream as before). Otherwise
    the hands of ``render.depth_sensor.HAND_DOMAINS[domain]`` rendered clean (forearm of the
    domain's ``synth_forearm_m`` length, sleeve when drawn), centred at the palm or at the
    refined centre of mass (seeded at the palm centre moved by N(0, 15 mm), as the run-time
    localiser's error).
    """
    from tqdm import tqdm

    K = nyu_K()
    cube_m = cube_mm / 1000.0
    rng = np.random.default_rng([seed, 1])
    dom = hand_domain(domain)
    table = load_table() if dom.poses == "table" else None
    first = (domain, centre, float(cube_mm)) == ("v1", "palm", HAND_CUBE_MM)
    xs, ys = [], []
    for _ in tqdm(range(count), desc="hand synthetic", disable=not progress, dynamic_ncols=True):
        if first:
            h = sample_hand(rng, K, 640, 480)
            d = render_hand_depth(h, K, 640, 480)
        else:
            h = sample_domain_hand(rng, K, 640, 480, dom, table)
            a, b, r, _ = h.surface_c(float(rng.uniform(*dom.synth_forearm_m)))
            d = render_capsules_depth(a, b, r, K, 640, 480)
        J = eval_joints(h.joints_c_m())
        c = _palm(J)
        if centre == "com":
            c = refined_com_m(d, K, c + rng.normal(0.0, 0.015, 3), cube_m)
        c = c + rng.normal(0.0, offset_sigma_m, 3)
        x, y = _hand_crop_item(d, J, K, c, size, cube_m)
        xs.append(x)
        ys.append(y)
    return {"depth": torch.from_numpy(np.stack(xs)[:, None]).half(), "joints_n": torch.from_numpy(np.stack(ys)).float()}


def check_symmetries_known(infos: list, obj_ids: list[int], spec, data_cfg) -> None:
    """The ``coords`` head needs every symmetric object's symmetries (its loss takes the best
    symmetric version of the target): an object the dataset spec calls symmetric but whose model
    info lists none (a mesh given without ``models_info.json``) is an error.

    Raises:
        InputError: naming the object and where its symmetries should come from.
    """
    symmetric = set(spec.symmetric_obj_ids)
    for oid, info in zip(obj_ids, infos):
        if int(oid) in symmetric and not info.is_symmetric:
            src = f"data.mesh {data_cfg.mesh}" if data_cfg.mesh else f"{data_cfg.models_root}/models_info.json"
            raise InputError(f"model.head coords: obj_id {oid} is symmetric in dataset {data_cfg.dataset!r} but {src} gives no "
                             f"symmetries_discrete/continuous for it; use a BOP models/ folder with its models_info.json")


def synthetic_object_cache(cache_dir: Path, meshes, infos, K, size: int, count: int, seed: int, backgrounds: str,
                           paths: list[str], progress: bool = True, occluder_prob: float = 0.0, cutout_prob: float = 0.0,
                           coords_stride: int = 0, truncation_prob: float = 0.0) -> dict:
    """:func:`render_synthetic_objects`, rendered once per parameter set and kept in ``cache_dir``."""
    key = {"v": 1, "size": size, "n": count, "seed": seed, "meshes": [m.name for m in meshes],
           "nv": [int(len(m.vertices_m)) for m in meshes], "bg": backgrounds, "paths": paths}
    # keys of the newer options only when used, so that existing caches keep their names
    if backgrounds == PACKAGE_PHOTOS_KEY:  # the photo set depends on what is installed
        key["bg_files"] = [f"{p.parent.name}/{p.name}" for p in background_files(backgrounds)]
    if occluder_prob > 0:
        key["occluder_prob"] = float(occluder_prob)
    if cutout_prob > 0:
        key["cutout_prob"] = float(cutout_prob)
    if coords_stride > 0:
        key["coords_stride"] = int(coords_stride)
    if truncation_prob > 0:
        key["truncation_prob"] = float(truncation_prob)
    return load_or_build(cache_path(Path(cache_dir), "object_synth", key),
                          lambda: render_synthetic_objects(meshes, infos, K, size, count, seed, backgrounds, progress,
                                                           occluder_prob, cutout_prob, coords_stride, truncation_prob))
