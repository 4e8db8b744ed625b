"""Training the learned hand-centre refinement (:class:`featmap_ros.hand_localiser.HandCentreRefiner`)
on real-like depth frames: ``featmap train hand-centre --out featmap_ros/weights/hand_centre.pt``
(4-5 minutes on one CPU thread); ``featmap bench hand-centre`` measures it."""
from __future__ import annotations

import datetime
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featmap_ros.atomic import atomic_path
from featmap_ros.data.nyu import nyu_K
from featmap_ros.errors import InputError
from featmap_ros.hand_localiser import (
    CHECKPOINT_FORMAT,
    HandCentreNet,
    HandCentreNetConfig,
    HandCentreRefiner,
    crop_for_refiner,
    localise_hand,
)
from featmap_ros.render.depth_sensor import sample_pair
from featmap_ros.render.hand import PALM_CENTER


@dataclass(frozen=True)
class HandCentreTrainConfig:
    """How the bundled weights were trained (saved in the checkpoint).

    Attributes:
        seed: seed of the training frames' stream (validation frames: ``seed + 1``); the
            torch initialisation and shuffling use it too.
        frames: real-like training frames rendered.
        crops_per_frame: crops per frame, each at its own random start.
        val_frames: real-like validation frames (iterative refinement measured at the end).
        from_localiser_prob: probability that a start is the localiser's answer (else the
            true palm centre) before the random offset.
        start_sigma_m: per-axis standard deviation of the random start offset, metres; each
            crop scales it by U(0.2, 1.5).
        epochs: passes over the training crops.
        batch_size: crops per step.
        lr: Adam learning rate (cosine decay to 0).
        weight_decay: Adam weight decay.
        iterations: refinement iterations measured on the validation frames.
    """

    seed: int = 1000
    frames: int = 800
    crops_per_frame: int = 10
    val_frames: int = 60
    from_localiser_prob: float = 0.6
    start_sigma_m: float = 0.015
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    iterations: int = 3


def make_training_crops(
    n_frames: int,
    seed: int,
    net_cfg: HandCentreNetConfig,
    crops_per_frame: int = 8,
    from_localiser_prob: float = 0.6,
    start_sigma_m: float = 0.015,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of real-like frames at run-time-like starts, and their targets.

    Args:
        n_frames: frames rendered from the stream ``np.random.default_rng(seed)``.
        seed: the stream's seed.
        net_cfg: crop size and cube.
        crops_per_frame: starts per frame.
        from_localiser_prob: probability of starting from ``localise_hand``'s answer (when it
            has one) rather than the true palm centre, before the random offset.
        start_sigma_m: per-axis start offset sigma, metres, scaled per crop by U(0.2, 1.5).
        progress: show a tqdm bar.

    Returns:
        crops (N, S, S) float32 in [-1, 1], targets (N, 3) float32 = (palm - start) / (cube/2).
        Starts further than cube/2 from the palm (the hand mostly outside the crop) are left out.
    """
    from tqdm import tqdm

    K = nyu_K()
    rng = np.random.default_rng(seed)
    half = net_cfg.cube_m / 2.0
    crops, targets = [], []
    for _ in tqdm(range(n_frames), desc=f"hand-centre frames (seed {seed})", unit="frame", disable=not progress):
        hand, _, real = sample_pair(rng, K)
        palm = hand.joints_c_m()[PALM_CENTER]
        loc = localise_hand(real, K)
        for _ in range(crops_per_frame):
            base = loc if (loc is not None and rng.random() < from_localiser_prob) else palm
            start = base + rng.normal(0.0, start_sigma_m * rng.uniform(0.2, 1.5), size=3)
            if np.linalg.norm(palm - start) > half or start[2] < 0.1:
                continue
            crops.append(crop_for_refiner(real, K, start, net_cfg))
            targets.append((palm - start) / half)
    if not crops:
        raise InputError(f"no usable training crops from {n_frames} frames")
    return np.stack(crops).astype(np.float32), np.stack(targets).astype(np.float32)


def fit_refiner(X: np.ndarray, Y: np.ndarray, train_cfg: HandCentreTrainConfig, net_cfg: HandCentreNetConfig, progress: bool = True) -> tuple[HandCentreNet, float]:
    """Fit a fresh :class:`HandCentreNet` to crops and targets (CPU, seeded, global RNG untouched).

    Args:
        X: (N, S, S) float32 crops.
        Y: (N, 3) float32 targets, offset / (cube / 2).

    Returns:
        the network (eval mode) and the last epoch's mean training loss.
    """
    from tqdm import tqdm

    tc = train_cfg
    if X.ndim != 3 or X.shape[1:] != (net_cfg.crop_size, net_cfg.crop_size) or Y.shape != (len(X), 3):
        raise InputError(f"training crops: expected (N, {net_cfg.crop_size}, {net_cfg.crop_size}) and (N, 3), got {X.shape} and {Y.shape}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)
        net = HandCentreNet(net_cfg)
        gen = torch.Generator().manual_seed(tc.seed)
        opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        steps_per_epoch = max(1, len(X) // tc.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=tc.epochs * steps_per_epoch, pct_start=0.15)
        Xt, Yt = torch.from_numpy(X)[:, None], torch.from_numpy(Y)
        # smooth L1 in crop-normalised units; beta 0.02 = 3 mm for a 300 mm cube
        loss_fn = nn.SmoothL1Loss(beta=0.02)
        net.train()
        bar = tqdm(range(tc.epochs), desc="hand-centre training", unit="epoch", disable=not progress)
        last = float("nan")
        for _ in bar:
            perm = torch.randperm(len(X), generator=gen)
            tot = 0.0
            for b in range(steps_per_epoch):
                idx = perm[b * tc.batch_size : (b + 1) * tc.batch_size]
                loss = loss_fn(net(Xt[idx]), Yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += loss.item()
            last = tot / steps_per_epoch
            bar.set_postfix(loss=f"{last:.4f}")
    return net.eval(), last


def train(
    out: str | Path,
    train_cfg: HandCentreTrainConfig = HandCentreTrainConfig(),
    net_cfg: HandCentreNetConfig = HandCentreNetConfig(),
    progress: bool = True,
) -> dict:
    """Train the refiner on real-like frames and write its weights atomically to ``out``.

    The checkpoint holds ``format``, ``net_config``, ``train_config`` (the seeds included),
    ``state_dict``, ``metrics`` (final training loss, validation errors) and provenance.

    Returns:
        the checkpoint's ``metrics`` dict.
    """

    tc = train_cfg
    t0 = time.perf_counter()
    X, Y = make_training_crops(tc.frames, tc.seed, net_cfg, tc.crops_per_frame, tc.from_localiser_prob, tc.start_sigma_m, progress)
    t_data = time.perf_counter() - t0
    net, last = fit_refiner(X, Y, tc, net_cfg, progress)
    t_train = time.perf_counter() - t0 - t_data
    refiner = HandCentreRefiner(net, net_cfg)
    val = evaluate_centres(refiner, tc.val_frames, tc.seed + 1, tc.iterations, progress) if tc.val_frames > 0 else {}
    metrics = {
        "train_crops": int(len(X)),
        "final_train_loss": last,
        "seconds_data": t_data,
        "seconds_train": t_train,
        "seconds_total": time.perf_counter() - t0,
        "validation": val,
    }
    ck = {
        "format": CHECKPOINT_FORMAT,
        "net_config": {**asdict(net_cfg), "channels": list(net_cfg.channels)},
        "train_config": asdict(tc),
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "metrics": metrics,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
        "command": "featmap train hand-centre",
    }
    with atomic_path(out, suffix=".pt") as tmp:
        torch.save(ck, tmp)
    return metrics


def print_centre_stats(d: dict) -> None:
    print(f"frames {d['frames']} (seed {d['seed']}), found {d['found']}")
    print(f"{'':18s} {'mean mm':>8s} {'median':>8s} {'p90':>8s} {'<=15mm':>7s} {'<=25mm':>7s}")
    for k in ("unrefined", "refined"):
        if k in d:
            s = d[k]
            print(f"{k:18s} {s['mean_error_mm']:8.1f} {s['median_error_mm']:8.1f} {s['p90_error_mm']:8.1f} {s['within_15mm']:7.3f} {s['within_25mm']:7.3f}")


def evaluate_centres(refiner: HandCentreRefiner | None, n_frames: int, seed: int, iterations: int = 3, progress: bool = True) -> dict:
    """Localiser error on real-like frames, unrefined and (with ``refiner``) refined.

    Frames come from ``np.random.default_rng(seed)`` through ``sample_pair`` (the same stream
    as :func:`run_hand_detector_bench`); the error is the 3D distance to
    the palm-centre joint.

    Returns:
        dict: frames, found, ``unrefined`` and ``refined`` (when a refiner is given), each with
        mean / median / p90 error in mm over the found frames and the fractions of all frames
        within 15 mm and 25 mm.
    """
    from tqdm import tqdm

    K = nyu_K()
    rng = np.random.default_rng(seed)
    e0, e1 = [], []
    for _ in tqdm(range(n_frames), desc=f"hand-centre eval (seed {seed})", unit="frame", disable=not progress):
        hand, _, real = sample_pair(rng, K)
        palm = hand.joints_c_m()[PALM_CENTER]
        c = localise_hand(real, K)
        e0.append(np.inf if c is None else float(np.linalg.norm(c - palm)))
        if refiner is not None:
            r = None if c is None else refiner.refine(real, K, c, iterations)
            e1.append(np.inf if r is None else float(np.linalg.norm(r - palm)))
    out = {"frames": n_frames, "seed": seed, "unrefined": centre_error_stats(np.array(e0) * 1000.0)}
    out["found"] = out["unrefined"].pop("found")
    if refiner is not None:
        out["refined"] = centre_error_stats(np.array(e1) * 1000.0)
        out["refined"].pop("found")
        out["iterations"] = iterations
    return out


def centre_error_stats(errors_mm: np.ndarray) -> dict:
    """(N,) errors in mm (inf = not found) -> found, mean / median / p90 (found), within 15/25 mm (all)."""
    e = np.asarray(errors_mm, dtype=np.float64)
    found = np.isfinite(e)
    with np.errstate(invalid="ignore"):  # percentiles next to an inf (not found) are inf, as meant
        return _stats(e, found)


def _stats(e: np.ndarray, found: np.ndarray) -> dict:
    return {
        "found": int(found.sum()),
        "mean_error_mm": float(e[found].mean()) if found.any() else float("nan"),
        "median_error_mm": float(np.median(e)) if len(e) else float("nan"),
        "p90_error_mm": float(np.percentile(e, 90)) if len(e) else float("nan"),
        "within_15mm": float((e <= 15.0).mean()) if len(e) else float("nan"),
        "within_25mm": float((e <= 25.0).mean()) if len(e) else float("nan"),
    }
