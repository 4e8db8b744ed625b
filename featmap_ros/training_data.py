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
    rng = np.random.default_rng([seed, 1])
    xs, ys = [], []
    for _ in tqdm(range(n_synth), desc="hand synthetic", disable=not progress, dynamic_ncols=True):
        h = sample_hand(rng, K, 640, 480)
        d = render_hand_depth(h, K, 640, 480)
        J = eval_joints(h.joints_c_m())
        c = _palm(J) + rng.normal(0.0, offset_sigma_m, 3)
        x, y = _hand_crop_item(d, J, K, c, size, cube_m)
        xs.append(x)
        ys.append(y)
    out["synth"] = {"depth": torch.from_numpy(np.stack(xs)[:, None]).half(), "joints_n": torch.from_numpy(np.stack(ys)).float()}

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
    d = cfg.data
    size = cfg.model.input_size
    if cfg.model.task == "hand":
        return hand_cache(Path(cache_dir), size, d.synthetic_count, d.max_real, d.val_count, d.test_count)
    return object_cache(Path(cache_dir), cfg, progress=progress)
