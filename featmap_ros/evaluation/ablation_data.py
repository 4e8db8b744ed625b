"""The fixed data sets of the ablation, the demo and the benches (:class:`TaskCache`): synthetic
crops, real-like training pairs, and real-like validation/test splits never trained on, rendered
once into seeded caches; and the scoring of predictions on them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from featmap_ros.data.nyu import eval_joints, nyu_K
from featmap_ros.data.object_samples import collect_frames
from featmap_ros.data.specs import object_dataset
from featmap_ros.errors import InputError
from featmap_ros.evaluation.records import score_hand, score_object
from featmap_ros.render.depth_sensor import harsh_crop_depth, sample_pair
from featmap_ros.render.real_like import harsh_crop_domain
from featmap_ros.render.renderer import preload_torch_compiler
from featmap_ros.training.caches import cache_path, load_or_build
from featmap_ros.training.prepare import (
    HAND_CUBE_MM,
    _hand_crop_item,
    _palm,
    eval_crops,
    hand_meta,
    object_meta,
    object_models,
    real_like_dataset,
    render_hand_synthetic,
    render_pairs,
    synthetic_object_cache,
    window_scale_from_frames,
)


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
    data = load_or_build(cache_path(cache_dir, "hand", params), lambda: build_hand_sets(size, n_synth, n_pairs, n_val, n_test, seed))
    return TaskCache("hand", data["synth"], data["pairs"], data["val"], data["test"], hand_meta(), data["info"])


def sample_hand_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One real-like hand depth frame (metres) and its K (for benchmarks)."""

    K = nyu_K()
    _, _, real = sample_pair(np.random.default_rng(seed), K)
    return real.astype(np.float32), K


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

                img = x[i].permute(1, 2, 0).contiguous().numpy()
                out[i] = torch.from_numpy(harsh_crop_domain(img, rng)).permute(2, 0, 1)
            else:

                out[i, 0] = torch.from_numpy(harsh_crop_depth(x[i, 0].float().numpy(), rng)).to(x.dtype)
        return out

    pairs = dict(cache.pairs, real=move(cache.pairs["real"], "harsh pairs"))
    val = dict(cache.val, real=move(cache.val["real"], "harsh validation"))
    test = dict(cache.test, real=move(cache.test["real"], "harsh test"))
    info = dict(cache.info, domain_preset="harsh", harsh_seed=seed)
    return TaskCache(cache.task, cache.synth, pairs, val, test, cache.meta, info)


def object_cache(cache_dir: Path, cfg, progress: bool = True, seed: int = 0) -> TaskCache:
    """The object :class:`TaskCache`: synthetic crops, real-like pairs, validation and test crops.

    The real-like frames come from ``render.real_like`` (BOP layout, one set, split in order into
    ``max_real`` training frames, ``val_count`` validation and ``test_count`` test frames).
    """

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

    data = load_or_build(cache_path(Path(cache_dir), "object", params), build)
    meta = object_meta(infos, names, obj_ids, paths, data["window_scale"], meshes)
    info = {"size": size, "seed": seed, "real_like_root": data["real_like_root"], "pair_epochs": 3}
    return TaskCache("object", data["synth"], data["pairs"], data["val"], data["test"], meta, info)
