"""Training data for ``featmap train``, the ablation and the demo: sources, caches, metadata.

The data layer (``featmap_ros.render``, ``featmap_ros.data``, ``featmap_ros.crops``) makes
samples; this module turns them into what :func:`featmap_ros.train.train` consumes:

- a *synthetic* source (crops rendered once into a seeded cache and sampled from it, or online);
- a *pairs* source (real crop + synthetic crop of the same pose and window + target);
- metadata the estimators need (object names, box corners, diameters; joint names, cube);
- for the ablation and the demo, a :class:`TaskCache` with real-like validation and test splits
  (never used in training) and the scoring of predictions on them.

Caches are keyed by every parameter that changes their content and written atomically, so the
ablation renders its data once and every run reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from featmap_ros import atomic, crops, geometry
from featmap_ros.errors import InputError

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def preload_torch_compiler() -> None:
    """Import torch's compiler stack (torch._dynamo, triton and its LLVM) before Mesa's llvmpipe.

    Seen here: a process that renders with pyrender (software Mesa, libLLVM) and then builds its
    first optimiser (AdamW imports torch._dynamo -> triton) segfaults in libLLVM; importing the
    compiler stack first avoids it. Called by every entry point that renders and then trains.
    """
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # an optional part of torch; training works without it
        pass


def bundled_weights(task: str) -> Path:
    """Path of the bundled demo checkpoint of ``task`` (object | hand)."""
    p = WEIGHTS_DIR / f"demo_{task}.pt"
    if not p.is_file():
        raise InputError(f"{p}: bundled weights missing (reinstall the package, or train them: see README 'The demo')")
    return p


def as_float(t: torch.Tensor) -> torch.Tensor:
    """Cached crops to float32: uint8 colour -> [0, 1]; float16 depth -> float32."""
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t.float()


class CachedSource:
    """:class:`featmap_ros.train.TensorSource` over a cache that stores crops compactly."""

    def __init__(self, tensors: dict[str, torch.Tensor], seed: int, stream: int) -> None:
        from featmap_ros.train import TensorSource

        self.inner = TensorSource(tensors, seed, stream)

    def batch(self, step: int, n: int) -> dict[str, torch.Tensor]:
        b = self.inner.batch(step, n)
        return {k: as_float(v) if k in ("image", "depth", "real", "synth") else v for k, v in b.items()}


@dataclass
class TaskCache:
    """Cached crops of one task for the ablation and the demo.

    Attributes:
        task: ``object`` or ``hand``.
        synth: synthetic crops: ``image`` (N, 3, S, S) uint8 or ``depth`` (N, 1, S, S) float16, target.
        pairs: ``real``, ``synth``, target (+ ``obj_index``).
        val, test: ``real``, target, and what scoring needs (object: ``window`` (N, 3), ``K``
            (N, 3, 3), ``R_m2c``, ``t_m2c_m``, ``obj_index``; hand: ``center_c_m`` (N, 3), ``joints_c_m``).
        meta: estimator metadata (see :mod:`featmap_ros.estimators`) plus ``model_points_m``.
        info: how the cache was made (counts, seeds, domain parameters).
    """

    task: str
    synth: dict
    pairs: dict
    val: dict
    test: dict
    meta: dict
    info: dict = field(default_factory=dict)

    @property
    def primary_metric(self) -> str:
        return "proj2d_5px" if self.task == "object" else "mean_mm"

    @property
    def higher_is_better(self) -> bool:
        return self.task == "object"

    @property
    def item_metrics(self) -> list[str]:
        return ["proj2d_5px", "add_10", "corner_px"] if self.task == "object" else ["mean_mm", "max_le_20mm", "max_le_40mm"]

    def describe(self) -> str:
        n = lambda d: next(iter(d.values())).shape[0]  # noqa: E731
        return (f"{n(self.synth)} synthetic crops, {n(self.pairs)} real-like training pairs, "
                f"{n(self.val)} real-like validation and {n(self.test)} real-like test crops "
                f"({self.info.get('size', '?')} px)")

    def score(self, split: dict, pred: np.ndarray) -> dict[str, np.ndarray]:
        """Per-item scores of model outputs on ``split``.

        Args:
            split: ``self.val`` or ``self.test``.
            pred: object (N, n_objects, 8, 2) crop-normalised corners; hand (N, J, 3).

        Returns:
            metric name -> (N,) float64 per item (fractions are 0/1 indicators).
        """
        if self.task == "object":
            return score_object(split, pred, self.meta)
        return score_hand(split, pred, float(self.meta["cube_mm"]) / 1000.0)


def score_object(split: dict, pred: np.ndarray, meta: dict) -> dict[str, np.ndarray]:
    from featmap_ros import metrics

    idx = split["obj_index"].numpy() if "obj_index" in split else np.zeros(len(pred), int)
    corners_m = np.asarray(meta["corners_m"], dtype=np.float64)
    pts = [np.asarray(p, dtype=np.float64) for p in meta["model_points_m"]]
    diam = np.asarray(meta["diameter_m"], dtype=np.float64)
    win = split["window"].numpy().astype(np.float64)
    K = split["K"].numpy().astype(np.float64)
    R_gt = split["R_m2c"].numpy().astype(np.float64)
    t_gt = split["t_m2c_m"].numpy().astype(np.float64)
    proj = np.zeros(len(pred))
    add = np.zeros(len(pred))
    cerr = np.zeros(len(pred))
    for n in range(len(pred)):
        k = int(idx[n])
        px = np.asarray(pred[n, k], dtype=np.float64) * (win[n, 2] / 2.0) + win[n, :2]
        gt_px = geometry.project_model_points(corners_m[k], R_gt[n], t_gt[n], K[n])
        cerr[n] = float(np.mean(np.linalg.norm(px - gt_px, axis=1)))
        try:
            R, t = geometry.solve_pnp(corners_m[k], px, K[n])
            proj[n] = metrics.proj2d_error(R, t, R_gt[n], t_gt[n], K[n], pts[k])
            add[n] = metrics.add_error(R, t, R_gt[n], t_gt[n], pts[k]) / diam[k]
        except InputError:
            proj[n] = add[n] = np.inf
    return {"proj2d_5px": (proj <= 5.0).astype(np.float64), "add_10": (add <= 0.10).astype(np.float64), "corner_px": cerr}


def score_hand(split: dict, pred: np.ndarray, cube_m: float) -> dict[str, np.ndarray]:
    centre = split["center_c_m"].numpy().astype(np.float64)
    gt = split["joints_c_m"].numpy().astype(np.float64)
    joints = np.asarray(pred, dtype=np.float64) * (cube_m / 2.0) + centre[:, None, :]
    err = np.linalg.norm(joints - gt, axis=2) * 1000.0
    worst = err.max(axis=1)
    return {"mean_mm": err.mean(axis=1), "max_le_20mm": (worst <= 20.0).astype(np.float64), "max_le_40mm": (worst <= 40.0).astype(np.float64)}


def _cache_path(cache_dir: Path, task: str, params: dict) -> Path:
    key = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{task}_{key}.pt"


def _load_or_build(path: Path, build: Callable[[], dict]) -> dict:
    if path.is_file():
        log.info("using cached data %s", path)
        return torch.load(path, map_location="cpu", weights_only=False)
    data = build()
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(data, tmp)
    return data


# ============================================================================= hands


HAND_CUBE_MM = 300.0


def hand_meta(cube_mm: float = HAND_CUBE_MM) -> dict:
    from featmap_ros.data.specs import hand_dataset

    return {"joint_names": list(hand_dataset("nyu").joint_names), "cube_mm": float(cube_mm), "depth_range_m": [0.25, 1.6]}


def _palm(joints14_c_m: np.ndarray) -> np.ndarray:
    return np.asarray(joints14_c_m, dtype=np.float64)[13]


def _hand_crop_item(depth_m: np.ndarray, joints14: np.ndarray, K: np.ndarray, centre: np.ndarray, size: int, cube_m: float) -> tuple[np.ndarray, np.ndarray]:
    crop, T = crops.crop_depth(depth_m, centre, K, cube_m=cube_m, size=size)
    return crop, crops.joints_to_crop(joints14, T)


def render_hand_synthetic(size: int, count: int, seed: int, offset_sigma_m: float = 0.005, progress: bool = True) -> dict:
    """``count`` clean synthetic hand crops (``sample_hand`` + ``render_hand_depth``), cropped at the
    palm centre plus N(0, offset_sigma_m) per axis: ``{"depth": (N, 1, S, S) float16, "joints_n": (N, 14, 3)}``."""
    from tqdm import tqdm

    from featmap_ros.data.nyu import eval_joints, nyu_K
    from featmap_ros.render.hand import sample_hand
    from featmap_ros.render.hand_depth import render_hand_depth

    K = nyu_K()
    cube_m = HAND_CUBE_MM / 1000.0
    rng = np.random.default_rng([seed, 1])
    xs, ys = [], []
    for _ in tqdm(range(count), desc="hand synthetic", disable=not progress, dynamic_ncols=True):
        h = sample_hand(rng, K, 640, 480)
        d = render_hand_depth(h, K, 640, 480)
        J = eval_joints(h.joints_c_m())
        c = _palm(J) + rng.normal(0.0, offset_sigma_m, 3)
        x, y = _hand_crop_item(d, J, K, c, size, cube_m)
        xs.append(x)
        ys.append(y)
    return {"depth": torch.from_numpy(np.stack(xs)[:, None]).half(), "joints_n": torch.from_numpy(np.stack(ys)).float()}


def build_hand_sets(size: int, n_synth: int, n_pairs: int, n_val: int, n_test: int, seed: int,
                    offset_sigma_m: float = 0.005, progress: bool = True) -> dict:
    """Render the hand sets: clean synthetic crops, real-like/synthetic pairs, real-like val/test.

    Synthetic crops: a random hand (``render.hand.sample_hand``) rendered clean
    (``render_hand_depth``), cropped at the palm centre plus N(0, offset_sigma) per axis.
    Pairs: ``render.depth_sensor.sample_pair`` (the same hand, clean and through the real-like
    sensor model with forearm, body, wall and clutter), both cropped at the same centre.
    Validation and test: real-like frames from other seeds, cropped at the ground-truth palm
    centre (so that the comparison measures the pose network, not hand detection).

    Returns:
        dict with ``synth``, ``pairs``, ``val``, ``test`` tensor dicts and ``info``.
    """
    from tqdm import tqdm

    from featmap_ros.data.nyu import eval_joints, nyu_K
    from featmap_ros.render.depth_sensor import sample_pair
    from featmap_ros.render.hand import sample_hand
    from featmap_ros.render.hand_depth import render_hand_depth

    K = nyu_K()
    cube_m = HAND_CUBE_MM / 1000.0
    out: dict = {}
    out["synth"] = render_hand_synthetic(size, n_synth, seed, offset_sigma_m, progress)

    def pairs(n: int, stream: int, jitter: bool, desc: str) -> dict:
        r = np.random.default_rng([seed, stream])
        reals, synths, ys, cs, js = [], [], [], [], []
        for _ in tqdm(range(n), desc=desc, disable=not progress, dynamic_ncols=True):
            h, s, real = sample_pair(r, K)
            J = eval_joints(h.joints_c_m())
            c = _palm(J) + (r.normal(0.0, offset_sigma_m, 3) if jitter else 0.0)
            xr, y = _hand_crop_item(real, J, K, c, size, cube_m)
            xs_, _ = _hand_crop_item(s, J, K, c, size, cube_m)
            reals.append(xr)
            synths.append(xs_)
            ys.append(y)
            cs.append(c)
            js.append(J)
        return {"real": torch.from_numpy(np.stack(reals)[:, None]).half(), "synth": torch.from_numpy(np.stack(synths)[:, None]).half(),
                "joints_n": torch.from_numpy(np.stack(ys)).float(), "center_c_m": torch.from_numpy(np.stack(cs)), "joints_c_m": torch.from_numpy(np.stack(js))}

    out["pairs"] = pairs(n_pairs, 2, True, "hand pairs")
    out["val"] = pairs(n_val, 3, False, "hand validation")
    out["test"] = pairs(n_test, 4, False, "hand test")
    out["info"] = {"size": size, "seed": seed, "cube_mm": HAND_CUBE_MM, "offset_sigma_m": offset_sigma_m,
                   "domain": "real-like: featmap_ros.render.depth_sensor defaults (SensorModel, SceneModel)"}
    return out


def hand_cache(cache_dir: Path, size: int, n_synth: int, n_pairs: int, n_val: int, n_test: int, seed: int = 0) -> TaskCache:
    """The hand :class:`TaskCache` (rendered once, then loaded)."""
    params = {"v": 1, "size": size, "n": [n_synth, n_pairs, n_val, n_test], "seed": seed}
    data = _load_or_build(_cache_path(cache_dir, "hand", params), lambda: build_hand_sets(size, n_synth, n_pairs, n_val, n_test, seed))
    return TaskCache("hand", data["synth"], data["pairs"], data["val"], data["test"], hand_meta(), data["info"])


def sample_hand_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One real-like hand depth frame (metres) and its K (for benchmarks)."""
    from featmap_ros.data.nyu import nyu_K
    from featmap_ros.render.depth_sensor import sample_pair

    K = nyu_K()
    _, _, real = sample_pair(np.random.default_rng(seed), K)
    return real.astype(np.float32), K


# ============================================================================= dispatch


def ablation_cache(cfg, cache_dir: str | Path, progress: bool = True) -> TaskCache:
    """The cached data set of ``cfg``'s task for the ablation and the demo.

    Args:
        cfg: :class:`featmap_ros.train.TrainConfig` (model.task, model.input_size, data counts).
        cache_dir: where caches live.
    """
    preload_torch_compiler()
    d = cfg.data
    size = cfg.model.input_size
    if cfg.model.task == "hand":
        cache = hand_cache(Path(cache_dir), size, d.synthetic_count, d.max_real, d.val_count, d.test_count)
    else:
        cache = object_cache(Path(cache_dir), cfg, progress=progress)
    preset = getattr(d, "domain_preset", "")
    if preset in ("", "default"):
        return cache
    if preset != "harsh":
        raise InputError(f"data.domain_preset: unknown preset {preset!r} (expected '' or 'harsh')")
    return harsh_domain_cache(cache, progress=progress)


def harsh_domain_cache(cache: TaskCache, seed: int = 12345, progress: bool = True) -> TaskCache:
    """The cache with every real-like crop (pairs, validation, test) moved to the harsh domain.

    Objects: ``render.real_like.harsh_crop_domain`` (another colour response, strong colour cast,
    heavy blur/noise/JPEG); hands: ``render.depth_sensor.harsh_crop_depth`` (missing edges and
    holes, flying pixels, strong noise, quantisation, lower resolution). The synthetic crops and
    the pairs' synthetic halves are unchanged. Deterministic for a seed; fast (no rendering).
    """
    from tqdm import tqdm

    rng = np.random.default_rng(seed)

    def move(x: torch.Tensor, desc: str) -> torch.Tensor:
        out = torch.empty_like(x)
        for i in tqdm(range(x.shape[0]), desc=desc, disable=not progress, dynamic_ncols=True):
            if cache.task == "object":
                from featmap_ros.render.real_like import harsh_crop_domain

                img = x[i].permute(1, 2, 0).contiguous().numpy()
                out[i] = torch.from_numpy(harsh_crop_domain(img, rng)).permute(2, 0, 1)
            else:
                from featmap_ros.render.depth_sensor import harsh_crop_depth

                out[i, 0] = torch.from_numpy(harsh_crop_depth(x[i, 0].float().numpy(), rng)).to(x.dtype)
        return out

    pairs = dict(cache.pairs, real=move(cache.pairs["real"], "harsh pairs"))
    val = dict(cache.val, real=move(cache.val["real"], "harsh validation"))
    test = dict(cache.test, real=move(cache.test["real"], "harsh test"))
    info = dict(cache.info, domain_preset="harsh", harsh_seed=seed)
    return TaskCache(cache.task, cache.synth, pairs, val, test, cache.meta, info)


# ============================================================================= objects


def object_models(cfg, object_name: str | None = None) -> tuple[list, list, list[str], list[int], list[str]]:
    """Meshes and model infos of the objects of ``cfg.data``.

    Sources, in order: ``data.mesh`` (a user's own mesh, one object), ``data.models_root: toy``
    (the project's toy object), else a BOP ``models/`` folder with ``models_info.json``.

    Returns:
        (meshes, infos, names, obj_ids, mesh_paths).

    Raises:
        InputError: missing mesh or models folder, object id absent from models_info.
    """
    from featmap_ros.data import bop
    from featmap_ros.data.specs import object_dataset

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
        from featmap_ros.render.toy_object import make_toy_object

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
                meshes: list | None = None, n_points: int = 1000) -> dict:
    """Estimator metadata of an object model (see :class:`~featmap_ros.estimators.ObjectPoseEstimator`)."""
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
    }
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
        if dst in ("image", "real", "synth"):
            t = (t * 255.0).round().clamp(0, 255).to(torch.uint8)
        out[dst] = t
    return out


def render_synthetic_objects(meshes, infos, K, size: int, count: int, seed: int, backgrounds: str | None, progress: bool = True) -> dict:
    """``count`` synthetic crops per object (SyntheticObjectDataset), as compact tensors."""
    from tqdm import tqdm

    from featmap_ros.data.backgrounds import BackgroundSource
    from featmap_ros.data.object_samples import SyntheticObjectDataset
    from featmap_ros.render.renderer import MeshRenderer

    parts = []
    with MeshRenderer(size, size) as renderer:
        bgs = BackgroundSource(backgrounds or None)
        for k, (mesh, info) in enumerate(zip(meshes, infos)):
            ds = SyntheticObjectDataset(mesh, info, K, crop_size=size, seed=seed * 100 + k, length=count, backgrounds=backgrounds or None)
            samples = [ds.make_sample(i, renderer, bgs) for i in tqdm(range(count), desc=f"synthetic crops obj {k}", disable=not progress, dynamic_ncols=True)]
            t = _stack_samples(samples, {"image": "image", "corners_n": "corners_n"})
            t["obj_index"] = torch.full((count,), k, dtype=torch.long)
            parts.append(t)
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def synthetic_object_cache(cache_dir: Path, meshes, infos, K, size: int, count: int, seed: int, backgrounds: str,
                           paths: list[str], progress: bool = True) -> dict:
    """:func:`render_synthetic_objects`, rendered once per parameter set and kept in ``cache_dir``."""
    key = {"v": 1, "size": size, "n": count, "seed": seed, "meshes": [m.name for m in meshes],
           "nv": [int(len(m.vertices_m)) for m in meshes], "bg": backgrounds, "paths": paths}
    return _load_or_build(_cache_path(Path(cache_dir), "object_synth", key),
                          lambda: render_synthetic_objects(meshes, infos, K, size, count, seed, backgrounds, progress))


def render_pairs(frames_per_object: list[list], meshes, infos, size: int, seed: int, epochs: int, progress: bool = True) -> dict:
    """Real/synthetic pairs (RealSynthPairs), ``epochs`` jittered versions of each real frame."""
    from tqdm import tqdm

    from featmap_ros.data.object_samples import RealSynthPairs

    samples, idx = [], []
    for k, frames in enumerate(frames_per_object):
        if not frames:
            continue
        ds = RealSynthPairs(frames, meshes[k], infos[k], crop_size=size, seed=seed + k, jitter=True)
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
    t = _stack_samples(samples, {"real": "real", "synth": "synth", "corners_n": "corners_n"})
    t["obj_index"] = torch.tensor(idx, dtype=torch.long)
    return t


def eval_crops(frames_per_object: list[list], infos, size: int, progress: bool = True) -> dict:
    """Evaluation crops (object window of the ground truth, as in training, no jitter)."""
    from tqdm import tqdm

    from featmap_ros.data.object_samples import BopCropDataset

    samples, idx = [], []
    for k, frames in enumerate(frames_per_object):
        ds = BopCropDataset(frames, infos[k], crop_size=size, window_from="corners")
        for i in tqdm(range(len(ds)), desc=f"eval crops obj {k}", disable=not progress, dynamic_ncols=True):
            samples.append(ds[i])
            idx.append(k)
    t = _stack_samples(samples, {"image": "real", "corners_n": "corners_n", "window": "window", "K": "K", "R_m2c": "R_m2c", "t_m2c_m": "t_m2c_m"})
    t["obj_index"] = torch.tensor(idx, dtype=torch.long)
    return t


def window_scale_from_frames(frames: list, infos_by_frame: list) -> float:
    """Median ratio of the training window side to the larger side of ``bbox_obj``.

    The estimator crops a given detection box with this factor so that its crops match the
    training windows (which are built from the projected box corners).
    """
    from featmap_ros.data.object_samples import object_window

    r = []
    for fr, info in zip(frames, infos_by_frame):
        if fr.bbox_obj is None or fr.bbox_obj[2] <= 0 or fr.bbox_obj[3] <= 0:
            continue
        w = object_window(geometry.project_model_points(info.corners_m, fr.R_m2c, fr.t_m2c_m, fr.K))
        r.append(w.side / max(fr.bbox_obj[2], fr.bbox_obj[3]))
    return float(np.median(r)) if r else 1.4


def real_like_dataset(cache_dir: Path, mesh, info, count: int, seed: int, dataset: str) -> Path:
    """A real-like BOP data set of the object (``render.real_like``), written once into the cache."""
    from featmap_ros.data.specs import object_dataset
    from featmap_ros.render.real_like import write_object_dataset

    key = hashlib.sha1(json.dumps({"v": 1, "n": count, "seed": seed, "ds": dataset, "mesh": mesh.name,
                                   "nv": int(len(mesh.vertices_m))}, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir) / f"object_reallike_{key}"
    if not (root / "train").is_dir():
        write_object_dataset(root, mesh, info, count, spec=object_dataset(dataset), domain="real-like", seed=seed, split="train", scene_id=1)
    return root


def object_cache(cache_dir: Path, cfg, progress: bool = True, seed: int = 0) -> TaskCache:
    """The object :class:`TaskCache`: synthetic crops, real-like pairs, validation and test crops.

    The real-like frames come from ``render.real_like`` (BOP layout, one set, split in order into
    ``max_real`` training frames, ``val_count`` validation and ``test_count`` test frames).
    """
    from featmap_ros.data.object_samples import collect_frames
    from featmap_ros.data.specs import object_dataset

    d = cfg.data
    size = cfg.model.input_size
    meshes, infos, names, obj_ids, paths = object_models(cfg)
    if len(meshes) != 1:
        raise InputError("data.object_ids: the ablation/demo cache handles one object")
    spec = object_dataset(d.dataset)
    K = np.array([[spec.fx, 0, spec.cx], [0, spec.fy, spec.cy], [0, 0, 1.0]])
    params = {"v": 1, "size": size, "n": [d.synthetic_count, d.max_real, d.val_count, d.test_count], "seed": seed,
              "mesh": meshes[0].name, "nv": int(len(meshes[0].vertices_m)), "bg": d.backgrounds, "ds": d.dataset}

    def build() -> dict:
        total = d.max_real + d.val_count + d.test_count
        root = real_like_dataset(Path(cache_dir), meshes[0], infos[0], total, seed + 7, d.dataset)
        frames = collect_frames(root, "train", obj_ids[0])
        if len(frames) < total:
            raise InputError(f"{root}: {len(frames)} real-like frames, {total} needed")
        tr, va, te = frames[:d.max_real], frames[d.max_real:d.max_real + d.val_count], frames[d.max_real + d.val_count:total]
        return {
            "synth": synthetic_object_cache(Path(cache_dir), meshes, infos, K, size, d.synthetic_count, seed, d.backgrounds, paths, progress),
            "pairs": render_pairs([tr], meshes, infos, size, seed, epochs=3, progress=progress),
            "val": eval_crops([va], infos, size, progress),
            "test": eval_crops([te], infos, size, progress),
            "window_scale": window_scale_from_frames(tr, [infos[0]] * len(tr)),
            "real_like_root": str(root),
        }

    data = _load_or_build(_cache_path(Path(cache_dir), "object", params), build)
    meta = object_meta(infos, names, obj_ids, paths, data["window_scale"], meshes)
    info = {"size": size, "seed": seed, "real_like_root": data["real_like_root"], "pair_epochs": 3}
    return TaskCache("object", data["synth"], data["pairs"], data["val"], data["test"], meta, info)


# ============================================================================= featmap train


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
    from featmap_ros.data.specs import object_dataset
    from featmap_ros.train import IterableSource

    preload_torch_compiler()
    d = cfg.data
    cache_dir = Path(d.cache_dir) if d.cache_dir else Path(out_dir) / "cache"
    size = cfg.model.input_size
    if cfg.model.task == "object":
        meshes, infos, names, obj_ids, paths = object_models(cfg, object_name)
        if cfg.model.n_objects != len(meshes):
            raise InputError(f"model.n_objects is {cfg.model.n_objects} but data.object_ids lists {len(meshes)} object(s)")
        spec = object_dataset(d.dataset)
        K = np.array([[spec.fx, 0, spec.cx], [0, spec.fy, spec.cy], [0, 0, 1.0]])
        if d.synthetic_count > 0:
            synth_t = synthetic_object_cache(cache_dir, meshes, infos, K, size, d.synthetic_count, cfg.seed, d.backgrounds, paths, progress)
            synthetic = CachedSource(synth_t, cfg.seed, 0)
        else:
            if len(meshes) != 1:
                raise InputError("data.synthetic_count: online rendering (0) supports one object; set a cache size for several")
            from featmap_ros.data.object_samples import SyntheticObjectDataset

            mesh, info = meshes[0], infos[0]
            synthetic = IterableSource(
                lambda s: SyntheticObjectDataset(mesh, info, K, crop_size=size, seed=s, backgrounds=d.backgrounds or None),
                cfg.seed, 0, d.num_workers, cfg.batch_size)
        pairs = None
        window_scale = 1.4
        per_obj: list = []
        if d.real_root:
            from featmap_ros.data.object_samples import collect_frames

            per_obj = []
            for oid, info in zip(obj_ids, infos):
                fr = collect_frames(d.real_root, d.real_split, oid)
                if d.max_real:
                    fr = fr[:d.max_real]
                per_obj.append(fr)
            if not any(per_obj):
                raise InputError(f"data.real_root: {d.real_root}/{d.real_split} has no frames of objects {obj_ids}")
            key = {"v": 1, "root": str(Path(d.real_root).resolve()), "split": d.real_split, "n": [len(f) for f in per_obj], "size": size, "seed": cfg.seed, "ids": obj_ids}
            pair_t = _load_or_build(_cache_path(cache_dir, "object_pairs", key), lambda: render_pairs(per_obj, meshes, infos, size, cfg.seed, 3, progress))
            pairs = CachedSource(pair_t, cfg.seed, 1)
            flat = [f for fr in per_obj for f in fr]
            flat_info = [infos[k] for k, fr in enumerate(per_obj) for _ in fr]
            window_scale = window_scale_from_frames(flat, flat_info)
        meta = object_meta(infos, names, obj_ids, paths, window_scale)
        loc = None
        if cfg.localiser_steps > 0:
            loc = {"meshes": meshes, "infos": infos, "K": K, "spec": spec, "cache_dir": cache_dir, "backgrounds": d.backgrounds,
                   "real_frames": [(f, k) for k, fr in enumerate(per_obj) for f in fr] if d.real_root else []}
        return PreparedData(synthetic, pairs, meta, localiser=loc)
    # hands
    from featmap_ros.data.hand_samples import NyuPairCrops, SyntheticHandCrops

    cube_m = HAND_CUBE_MM / 1000.0
    if d.synthetic_count > 0:
        key = {"v": 1, "size": size, "n": d.synthetic_count, "seed": cfg.seed}

        def build_synth() -> dict:
            return render_hand_synthetic(size, d.synthetic_count, cfg.seed, offset_sigma_m=0.01, progress=progress)

        synth_t = _load_or_build(_cache_path(cache_dir, "hand_synth", key), build_synth)
        synthetic = CachedSource(synth_t, cfg.seed, 0)
        pca = synth_t["joints_n"]
    else:
        synthetic = IterableSource(lambda s: SyntheticHandCrops(size=size, cube_m=cube_m, seed=s, augment=True), cfg.seed, 0, d.num_workers, cfg.batch_size)
        pca = None
    pairs = None
    if d.real_root:
        from tqdm import tqdm

        # pairs cropped at the ground-truth palm centre; robustness to the run-time localiser's
        # centre error comes from the synthetic crops' centre jitter (sigma 10 mm)
        ds = NyuPairCrops(d.real_root, d.real_split, size=size, cube_m=cube_m, augment=False, seed=cfg.seed)
        n = len(ds) if not d.max_real else min(len(ds), d.max_real)
        samples = [ds[i] for i in tqdm(range(n), desc="hand pairs", disable=not progress)]
        pairs = CachedSource({"real": torch.stack([s["real"] for s in samples]).half(), "synth": torch.stack([s["synth"] for s in samples]).half(),
                              "joints_n": torch.stack([s["joints_n"] for s in samples])}, cfg.seed, 1)
    return PreparedData(synthetic, pairs, hand_meta(), pca_targets=pca if cfg.model.pca_dim else None)


# ============================================================================= the localiser


def render_localiser_frames(meshes, infos, K, loc_cfg, count: int, seed: int, backgrounds: str | None,
                            real_frames: list | None = None, progress: bool = True) -> dict:
    """Low-resolution full frames for the localiser, with targets.

    Synthetic frames are rendered directly at the localiser's input size (intrinsics scaled),
    each object present with probability 0.8 at a pose of ``object_samples.sample_pose`` over a
    background; real frames (``FrameRef`` lists, e.g. the real-like training frames) are
    downscaled. Target per object: window centre (fractions of width/height), log(window side /
    width), presence.

    Returns:
        ``{"image": (N, 3, h, w) uint8, "target": (N, n_objects, 4) float32}``.
    """
    from tqdm import tqdm

    from featmap_ros.data import bop
    from featmap_ros.data.backgrounds import BackgroundSource
    from featmap_ros.data.object_samples import PoseSampling, object_window, sample_pose
    from featmap_ros.render.renderer import MeshRenderer, composite, random_lighting

    w, h = loc_cfg.input_width, loc_cfg.input_height
    W, H = 640, 480
    S = np.diag([w / W, h / H, 1.0])
    K_small = S @ K
    n_obj = len(meshes)
    images, targets = [], []
    rng = np.random.default_rng([seed, 77])
    bgs = BackgroundSource(backgrounds or None)
    with MeshRenderer(w, h) as renderer:
        for _ in tqdm(range(count), desc="localiser frames", disable=not progress, dynamic_ncols=True):
            img = bgs.sample(rng, w, h)
            tgt = np.zeros((n_obj, 4), np.float32)
            for k in range(n_obj):
                if rng.random() > 0.8:
                    continue
                R, t = sample_pose(rng, K, W, H, PoseSampling(margin_px=40.0), infos[k].center_m)
                r = renderer.render(meshes[k], R, t, K_small, lighting=random_lighting(rng))
                img = composite(r, img)
                win = object_window(geometry.project_model_points(infos[k].corners_m, R, t, K))
                tgt[k] = (win.center_u / W, win.center_v / H, np.log(win.side / W), 1.0)
            images.append(img)
            targets.append(tgt)
    for fr, k in real_frames or []:
        import cv2

        img = cv2.resize(bop.load_rgb(fr.rgb_path), (w, h), interpolation=cv2.INTER_AREA)
        tgt = np.zeros((n_obj, 4), np.float32)
        win = object_window(geometry.project_model_points(infos[k].corners_m, fr.R_m2c, fr.t_m2c_m, fr.K))
        tgt[k] = (win.center_u / W, win.center_v / H, np.log(win.side / W), 1.0)
        images.append(img)
        targets.append(tgt)
    return {"image": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), "target": torch.from_numpy(np.stack(targets))}


def train_and_attach_localiser(cfg, loc_data: dict, checkpoint: Path, device: str = "auto", real_frames: list | None = None, progress: bool = True) -> dict:
    """Render localiser frames (cached), train the localiser, add it to ``checkpoint``."""
    from featmap_ros.train import attach_localiser, train_localiser

    preload_torch_compiler()
    lcfg = cfg.localiser
    lcfg.n_objects = len(loc_data["meshes"])
    count = max(2 * cfg.localiser_steps, 64)
    key = {"v": 1, "n": count, "wh": [lcfg.input_width, lcfg.input_height], "seed": cfg.seed,
           "meshes": [m.name for m in loc_data["meshes"]], "nv": [int(len(m.vertices_m)) for m in loc_data["meshes"]],
           "real": len(real_frames or [])}
    data = _load_or_build(_cache_path(Path(loc_data["cache_dir"]), "localiser", key),
                          lambda: render_localiser_frames(loc_data["meshes"], loc_data["infos"], loc_data["K"], lcfg, count, cfg.seed,
                                                          loc_data["backgrounds"], real_frames, progress))
    src = CachedSource(data, cfg.seed, 5)
    loc, m = train_localiser(lcfg, src, cfg.localiser_steps, seed=cfg.seed, device=device, progress=progress)
    attach_localiser(checkpoint, loc, m)
    return m
