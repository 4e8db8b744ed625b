"""Training f, g, h: stage 1 on synthetic crops, stage 2 with real/synthetic pairs.

Stage 1 (``steps_stage1``): pose loss on synthetic crops, f and h only.

Stage 2 (``steps_stage2``), with mapping (the paper)::

    L = pose(h(f(x_s)))                      synthetic crops (online batch and the pairs' synthetic halves)
      + pose(h(g(f(x_r))))                   real crops through the mapping
      + lambda * mean((g(f(x_r)) - sg(f(x_s')))^2)   on pairs (x_r, x_s') of the same pose

``sg`` = stop-gradient when ``detach_synth_features`` (the default): the synthetic feature
space is the target the real features are moved into; letting the matching loss also pull
f(x_s') towards the real features would shrink the synthetic features and blur the pose
information the head reads from them (the pose loss on synthetic crops still trains f).
The feature-matching term is the mean over batch and feature dimensions divided by the mean
squared synthetic feature (``feature_match_norm``, default on), so lambda depends neither on
``feature_dim`` nor on the scale of the features. Without that normalisation a first trial
collapsed: at lambda = 10 the matching term dominated the pose loss and the cheapest way to lower
it was to shrink every feature of f towards zero, which took the pose estimates down with it
(synthetic pose loss 0.004 -> 0.14 within 100 steps).

Where g maps and onto what (``model.map_level``, ``match_target``): the paper maps the FC
feature vector onto f(x_s) of the f being trained (``fc``, ``current``). With a CNN trained from
scratch on pose alone those FC features hold little besides the pose, and the matching term
adds nothing the pose loss does not; mapping the conv feature maps (``conv``: pixel-aligned pairs,
far more to match) onto a frozen copy of the stage-1 f (``stage1``: a target the matching term
cannot move) is what gave the gain in the ablation (README, "Does the mapping help?").

Stage 2 without mapping (``mapping: false``, the paper's baseline): the same f, h trained on
real + synthetic crops, no g: ``L = pose(h(f(x_s))) + pose(h(f(x_r)))``. Controls for the
ablation: ``baseline_pair_synth`` (the baseline also gets the pairs' synthetic halves),
``lambda_map: 0`` (g without the matching loss), ``augment: strong`` (photometric augmentation).

Batches come from *sources*: deterministic functions of (seed, stream, step), so a run
resumed from a checkpoint draws exactly the batches the uninterrupted run would have drawn.
Checkpoints are atomic and hold model config, weights, optimiser, scaler, RNG states, step,
metrics and the resolved config. DDP starts when ``WORLD_SIZE > 1`` (``torchrun``).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np
import torch
from torch import nn

from featmap_ros import atomic
from featmap_ros.config import from_dict, to_dict
from featmap_ros.errors import InputError
from featmap_ros.nets import FeatureMappingNet, LocaliserConfig, ModelConfig, build_model

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "featmap_ros.checkpoint/1"


@dataclass
class DataConfig:
    """Where training data comes from.

    Attributes:
        dataset: dataset spec name (``lm``, ``lmo`` for objects; ``nyu`` for hands).
        object_ids: objects of the colour model, in head order.
        models_root: BOP ``models/`` folder holding the meshes (objects); ``toy`` = the project's own mesh.
        mesh: a user's own mesh (.ply/.obj) instead of ``models_root`` (one object).
        mesh_units: unit of ``mesh`` coordinates (``mm`` or ``m``).
        real_root: real training frames (BOP dataset root for objects, NYU-layout folder for
            hands) used as pairs in stage 2; empty = no real frames (no mapping possible).
        real_split: split folder of ``real_root``.
        max_real: cap on real training frames (0 = all).
        synthetic_count: size of the pre-rendered synthetic set (rendered once to
            ``cache_dir``, reused across runs); 0 renders online in DataLoader workers.
        cache_dir: where pre-rendered sets are kept ('' = none).
        backgrounds: folder of background images for synthetic renders ('' = procedural).
        domain_preset: the ablation's real-like domain: '' = the default real-like domain;
            ``harsh`` = a far domain (``render.real_like.harsh_crop_domain`` /
            ``render.depth_sensor.harsh_crop_depth``) on the real-like crops, used by the ablation
            configs only.
        num_workers: DataLoader workers for online rendering.
        val_count: real-like validation crops of the ablation/demo caches (never trained on).
        test_count: real-like test crops of the ablation/demo caches (never trained on).
    """

    dataset: str = "lm"
    object_ids: list[int] = field(default_factory=lambda: [1])
    models_root: str = ""
    mesh: str = ""
    mesh_units: Literal["mm", "m"] = "mm"
    real_root: str = ""
    real_split: str = "train"
    max_real: int = 0
    synthetic_count: int = 0
    cache_dir: str = ""
    backgrounds: str = ""
    num_workers: int = 2
    val_count: int = 200
    test_count: int = 500
    domain_preset: str = ""


@dataclass
class TrainConfig:
    """Everything one training run needs (saved, resolved, in each checkpoint).

    Attributes:
        model: architecture (see :class:`featmap_ros.nets.ModelConfig`).
        data: data sources.
        localiser: the object localiser's architecture (objects only).
        localiser_steps: training steps of the localiser (0 = none).
        seed: seed of everything (weights, batches, augmentation).
        batch_size: synthetic crops per step.
        pair_batch_size: real/synthetic pairs per step in stage 2.
        steps_stage1: steps on synthetic crops only.
        steps_stage2: steps with pairs.
        lr: Adam learning rate.
        weight_decay: AdamW weight decay.
        lr_min_frac: cosine decay to lr * lr_min_frac at the last step.
        mapping: train g with the matching loss (False = the paper's baseline).
        lambda_map: weight of the feature-matching loss.
        detach_synth_features: stop the matching loss's gradient into f(x_s).
        feature_match_norm: divide the matching term by the mean squared synthetic feature
            (a relative error), so that it cannot be lowered by shrinking all features.
        feature_match_centered: with ``feature_match_norm``, divide by the synthetic features'
            batch variance instead of their mean square, so that the term cannot be lowered by
            growing a constant feature component either (seen at lambda >= 1 on the hand
            ablation: the mean-square version let f collapse to a near-constant).
        match_target: the synthetic features the real ones are mapped onto: ``current`` = f(x_s)
            of the f being trained (the paper's joint loss); ``stage1`` = a frozen copy of f as it
            was at the end of stage 1 (a fixed synthetic feature space the matching cannot move;
            kept in checkpoints as ``teacher_f``).
        match_grad: what the matching term trains: ``f_and_g`` (the paper) or ``g`` only (f
            then learns from the pose losses alone).
        baseline_pair_synth: without mapping, also give the pairs' synthetic halves (control).
        augment: photometric augmentation of synthetic (and real) crops: none|photometric|strong.
        augment_real: also augment the real crops.
        amp: mixed precision on GPU.
        checkpoint_every: steps between checkpoints (0 = only at the end).
        log_every: steps between logged scalars.
        tensorboard: write TensorBoard scalars under ``out/tb``.
        eval_every: steps between validation passes when a validation source is given (0 = end only).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    localiser: LocaliserConfig = field(default_factory=LocaliserConfig)
    localiser_steps: int = 0
    seed: int = 0
    batch_size: int = 64
    pair_batch_size: int = 32
    steps_stage1: int = 20000
    steps_stage2: int = 20000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_min_frac: float = 0.05
    mapping: bool = True
    lambda_map: float = 10.0
    detach_synth_features: bool = True
    feature_match_norm: bool = True
    feature_match_centered: bool = False
    match_target: Literal["current", "stage1"] = "current"
    match_grad: Literal["f_and_g", "g"] = "f_and_g"
    baseline_pair_synth: bool = False
    augment: Literal["none", "photometric", "strong"] = "photometric"
    augment_real: bool = False
    amp: bool = True
    checkpoint_every: int = 1000
    log_every: int = 50
    tensorboard: bool = True
    eval_every: int = 0


# ----------------------------------------------------------------------------- batch sources


class BatchSource(Protocol):
    """Deterministic batches: ``batch(step, n)`` gives the same tensors for the same step."""

    def batch(self, step: int, n: int) -> dict[str, torch.Tensor]: ...


def stream_seed(seed: int, stream: int, step: int) -> int:
    """A 63-bit seed for (run seed, stream id, step), stable across processes and resumes."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(2, dtype=np.uint32).astype(np.uint64).dot([1, 2**32]) % (2**63 - 1))


class TensorSource:
    """Batches sampled (with replacement) from in-memory tensors of equal first dimension.

    Args:
        tensors: name -> (N, ...) tensor (e.g. ``image`` (N, 3, S, S), ``target`` (N, K, 2)).
        seed: run seed.
        stream: stream id (distinct streams draw independent indices).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], seed: int, stream: int) -> None:
        sizes = {k: v.shape[0] for k, v in tensors.items()}
        if len(set(sizes.values())) != 1 or 0 in sizes.values():
            raise InputError(f"training source: tensors must share a non-zero first dimension, got {sizes}")
        self.tensors = tensors
        self.seed, self.stream = seed, stream
        self.size = next(iter(sizes.values()))

    def batch(self, step: int, n: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(stream_seed(self.seed, self.stream, step))
        idx = torch.randint(0, self.size, (n,), generator=g)
        return {k: v[idx] for k, v in self.tensors.items()}


class IterableSource:
    """Batches from an online IterableDataset (rendered in DataLoader workers).

    ``make_dataset(seed)`` must return a dataset that yields dicts of tensors; the source
    rebuilds it with a seed derived from the step it resumes at, so a resumed run renders
    fresh (not repeated) samples. Exactness across resumes holds for :class:`TensorSource` only.
    """

    def __init__(self, make_dataset: Callable[[int], Any], seed: int, stream: int, num_workers: int, batch_size: int) -> None:
        self.make_dataset, self.seed, self.stream = make_dataset, seed, stream
        self.num_workers, self.batch_size = num_workers, batch_size
        self._it = None
        self._next_step = -1

    def batch(self, step: int, n: int) -> dict[str, torch.Tensor]:
        if self._it is None or step != self._next_step:
            ds = self.make_dataset(stream_seed(self.seed, self.stream, step))
            loader = torch.utils.data.DataLoader(ds, batch_size=n, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
            self._it = iter(loader)
        self._next_step = step + 1
        return next(self._it)


# ----------------------------------------------------------------------------- augmentation


def photometric_augment(x: torch.Tensor, generator: torch.Generator, strength: str) -> torch.Tensor:
    """Random brightness, contrast, colour cast, blur and noise on colour crops in [0, 1].

    Args:
        x: (B, 3, S, S) float32 in [0, 1] (depth crops (B, 1, S, S) get noise and offset only).
        generator: CPU generator (seeded per step).
        strength: ``photometric`` or ``strong``.

    Returns:
        A new tensor, same shape; the input is not modified.
    """
    if strength == "none":
        return x
    B, C = x.shape[:2]
    k = 1.0 if strength == "photometric" else 2.0

    def U(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * (hi - lo) + lo).to(x.device)

    if C == 1:  # depth: a small global offset and sensor-like noise, stays in [-1, 1]
        y = x + U(-0.05, 0.05, B, 1, 1, 1) * k
        y = y + torch.randn(x.shape, generator=generator).to(x.device) * 0.01 * k
        return y.clamp(-1, 1)
    y = x * U(1 - 0.3 * k, 1 + 0.3 * k, B, 1, 1, 1)  # brightness
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * U(1 - 0.3 * k, 1 + 0.3 * k, B, 1, 1, 1) + mean  # contrast
    y = y * U(1 - 0.1 * k, 1 + 0.1 * k, B, C, 1, 1)  # colour cast
    if strength == "strong":
        grey = y.mean(dim=1, keepdim=True)
        sat = U(0.3, 1.3, B, 1, 1, 1)
        y = grey + (y - grey) * sat
        blur = torch.rand(B, generator=generator) < 0.5
        if blur.any():
            kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device)
            kernel = (kernel[:, None] * kernel[None, :] / 16.0).expand(C, 1, 3, 3)
            blurred = torch.nn.functional.conv2d(y, kernel, padding=1, groups=C)
            y = torch.where(blur.to(x.device).view(B, 1, 1, 1), blurred, y)
    y = y + torch.randn(x.shape, generator=generator).to(x.device) * (0.02 * k) * U(0, 1, B, 1, 1, 1)
    return y.clamp(0, 1)


# ----------------------------------------------------------------------------- checkpoints


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write a checkpoint dict atomically (temporary sibling, then ``os.replace``)."""
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, task: str | None = None, model_cfg: ModelConfig | None = None) -> dict:
    """Read a checkpoint and check it is for ``task`` and (optionally) the architecture ``model_cfg``.

    Raises:
        InputError: missing/unreadable file, not a featmap_ros checkpoint, or a task/architecture
            mismatch; the message names the file and the field.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: checkpoint not found")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"{p}: unreadable checkpoint ({e.__class__.__name__}: {e})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{p}: not a featmap_ros checkpoint (field 'format' is {ck.get('format') if isinstance(ck, dict) else None!r}, expected {CHECKPOINT_FORMAT!r})")
    saved = ck["model_config"]
    if task is not None and saved.get("task") != task:
        raise InputError(f"{p}: field model.task is {saved.get('task')!r}, expected {task!r} (a checkpoint for the other task)")
    if model_cfg is not None:
        want = to_dict(model_cfg)
        defaults = to_dict(ModelConfig())  # fields added after a checkpoint was written take their defaults
        for key in want:
            if saved.get(key, defaults[key]) != want[key] and key not in ("pretrained",):
                raise InputError(f"{p}: field model.{key} is {saved.get(key)!r} in the checkpoint but {want[key]!r} in the config")
    return ck


def model_from_checkpoint(ck: dict, where: str = "checkpoint") -> FeatureMappingNet:
    """Rebuild f, g, h from a loaded checkpoint (no ImageNet download attempted)."""
    cfg = from_dict(ModelConfig, dict(ck["model_config"], pretrained=False), f"{where}: model_config")
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    if missing or unexpected:
        raise InputError(f"{where}: weights do not match model_config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


# ----------------------------------------------------------------------------- the loop


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def pose_loss(pred: torch.Tensor, target: torch.Tensor, obj_index: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of pose numbers.

    Args:
        pred: object (B, n_objects, 8, 2) or hand (B, J, 3).
        target: object (B, 8, 2) or hand (B, J, 3), crop-normalised.
        obj_index: (B,) int64 head index per sample (objects); None = head 0.
    """
    if pred.dim() == 4:
        idx = torch.zeros(pred.shape[0], dtype=torch.long, device=pred.device) if obj_index is None else obj_index.to(pred.device)
        pred = pred[torch.arange(pred.shape[0], device=pred.device), idx]
    return torch.mean((pred.float() - target.to(pred.device).float()) ** 2)


def _target_key(task: str) -> str:
    return "corners_n" if task == "object" else "joints_n"


def _input_key(task: str) -> str:
    return "image" if task == "object" else "depth"


@dataclass
class TrainResult:
    """What :func:`train` returns: the model (unwrapped), the final checkpoint path, metrics."""

    model: FeatureMappingNet
    checkpoint: Path
    metrics: dict


def train(
    cfg: TrainConfig,
    synthetic: BatchSource,
    pairs: BatchSource | None,
    out_dir: str | Path,
    meta: dict | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    validate: Callable[[FeatureMappingNet], dict] | None = None,
    device: str = "auto",
    progress: bool = True,
    pca_targets: torch.Tensor | None = None,
) -> TrainResult:
    """Run (or resume) stage 1 and stage 2 and write ``out_dir/last.pt``.

    Args:
        cfg: resolved config.
        synthetic: source of synthetic batches: ``image``/``depth`` and ``corners_n``/``joints_n``
            (+ optional ``obj_index``).
        pairs: source of pairs: ``real``, ``synth`` and the target; None = stage 1 only
            (stage 2 then continues on synthetic crops, there is nothing to map).
        out_dir: output folder (``last.pt``, ``tb/``).
        meta: task facts saved in the checkpoint for the estimators (object names, box
            corners, diameters; joint names, cube size).
        resume: continue from ``out_dir/last.pt`` when it exists.
        stop_after: stop (after checkpointing) once this global step is reached, as if killed.
        validate: called with the model (eval mode) for metrics at ``eval_every`` and at the end.
        device: ``auto`` | ``cpu`` | ``cuda``.
        progress: show tqdm.
        pca_targets: (N, 42) training targets to fit the PCA prior of a hand head.

    Returns:
        :class:`TrainResult`.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    world, rank, local_rank = _dist_info()
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
    task = cfg.model.task
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    random.seed(cfg.seed)
    model = build_model(cfg.model)
    if pca_targets is not None:
        model.h.set_pca(pca_targets.reshape(pca_targets.shape[0], -1))
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    total = cfg.steps_stage1 + cfg.steps_stage2
    step = 0
    metrics: dict = {"history": []}
    ckpt_path = out / "last.pt"
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, task=task, model_cfg=cfg.model)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        step = int(ck["step"])
        metrics = ck.get("metrics", metrics)
        log.info("resumed %s at step %d/%d", ckpt_path, step, total)
    teacher: nn.Module | None = None  # f as it was at the end of stage 1 (match_target: stage1)
    if resume and ckpt_path.exists() and ck.get("teacher_f") is not None:
        teacher = _frozen_copy(model.f)
        teacher.load_state_dict(ck["teacher_f"])
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)

    def lr_at(s: int) -> float:
        frac = s / max(total, 1)
        return cfg.lr * (cfg.lr_min_frac + (1 - cfg.lr_min_frac) * 0.5 * (1 + math.cos(math.pi * frac)))

    writer = None
    if cfg.tensorboard and rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
        except Exception as e:  # tensorboard missing: scalars still go to the checkpoint
            log.info("TensorBoard unavailable (%s); scalars kept in the checkpoint only", e)

    def checkpoint() -> None:
        if rank != 0:
            return
        save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT,
            "task": task,
            "model_config": to_dict(cfg.model),
            "config": to_dict(cfg),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "step": step,
            "metrics": metrics,
            "meta": meta or {},
            "teacher_f": None if teacher is None else teacher.state_dict(),
        })

    in_key, tgt_key = _input_key(task), _target_key(task)
    seed = cfg.seed * 1000 + rank
    bar = tqdm(total=total, initial=step, disable=not progress or rank != 0, desc=f"train {task}", dynamic_ncols=True)
    end = total if stop_after is None else min(total, stop_after)
    t0 = time.perf_counter()
    running: dict[str, float] = {}
    while step < end:
        net.train()
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step)
        gen = torch.Generator().manual_seed(stream_seed(seed, 99, step))
        sb = synthetic.batch(step, cfg.batch_size)
        xs = photometric_augment(sb[in_key], gen, cfg.augment).to(dev)
        ys = sb[tgt_key].to(dev)
        os_idx = sb.get("obj_index")
        stage2 = step >= cfg.steps_stage1 and pairs is not None
        if stage2 and cfg.mapping and cfg.match_target == "stage1" and teacher is None:
            teacher = _frozen_copy(model.f)  # before this step's forward updates BatchNorm statistics
        with torch.autocast(dev.type, enabled=use_amp):
            losses: dict[str, torch.Tensor] = {}
            if stage2:
                pb = pairs.batch(step, cfg.pair_batch_size)
                xr = pb["real"]
                if cfg.augment_real:
                    xr = photometric_augment(xr, gen, cfg.augment)
                xr, xp, yp = xr.to(dev), pb["synth"].to(dev), pb[tgt_key].to(dev)
                op_idx = pb.get("obj_index")
                use_pair_synth = cfg.mapping or cfg.baseline_pair_synth
                synth_in = torch.cat([xs, xp]) if use_pair_synth else xs
                pose_syn, pose_real, f_syn, f_real, f_real_raw = net(torch.cat([synth_in, xr]), n_synth=synth_in.shape[0], mapping=cfg.mapping)
                syn_targets = torch.cat([ys, yp]) if use_pair_synth else ys
                syn_idx = None
                if os_idx is not None:
                    syn_idx = torch.cat([os_idx, op_idx]) if use_pair_synth else os_idx
                losses["pose_synth"] = pose_loss(pose_syn, syn_targets, syn_idx)
                losses["pose_real"] = pose_loss(pose_real, yp, op_idx)
                if cfg.mapping:
                    if cfg.match_target == "stage1":
                        with torch.no_grad():
                            f_pair = teacher(xp)
                    else:
                        f_pair = f_syn[xs.shape[0]:]
                    if cfg.detach_synth_features:
                        f_pair = f_pair.detach()
                    if cfg.match_grad == "g":
                        # the matching term trains g only; f learns from the pose losses
                        f_real = model.g(f_real_raw.detach())
                    fm = torch.mean((f_real.float() - f_pair.float()) ** 2)
                    if cfg.feature_match_norm and cfg.feature_match_centered:
                        # relative to the synthetic features' batch variance: neither shrinking f
                        # nor adding a constant to every feature lowers the matching term
                        fm = fm / (torch.mean(f_pair.detach().float().var(dim=0, unbiased=False)) + 1e-6)
                    elif cfg.feature_match_norm:
                        # relative error: shrinking every feature no longer lowers the matching term
                        fm = fm / (torch.mean(f_pair.detach().float() ** 2) + 1e-6)
                    losses["feature_match"] = fm
                    losses["weighted_match"] = cfg.lambda_map * fm
            else:
                losses["pose_synth"] = pose_loss(net(xs), ys, os_idx)
            loss = sum(v for k, v in losses.items() if k != "feature_match")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        step += 1
        bar.update(1)
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        running["n"] = running.get("n", 0.0) + 1
        if step % cfg.log_every == 0 or step == end:
            n = running.pop("n")
            scalars = {k: v / n for k, v in running.items()}
            scalars["lr"] = lr_at(step)
            running = {}
            metrics["history"].append({"step": step, **scalars})
            metrics["history"] = metrics["history"][-200:]
            bar.set_postfix({k: f"{v:.4f}" for k, v in scalars.items() if k != "lr"})
            if writer is not None:
                for k, v in scalars.items():
                    writer.add_scalar(f"train/{k}", v, step)
        if validate is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < end:
            metrics.setdefault("validation", []).append({"step": step, **_validate(model, validate)})
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < end:
            checkpoint()
    bar.close()
    if validate is not None and step == total:
        v = _validate(model, validate)
        metrics["final_validation"] = v
        if writer is not None:
            for k, val in v.items():
                if isinstance(val, (int, float)):
                    writer.add_scalar(f"val/{k}", val, step)
    metrics["seconds"] = metrics.get("seconds", 0.0) + time.perf_counter() - t0
    checkpoint()
    if writer is not None:
        writer.close()
    model.eval()
    return TrainResult(model=model, checkpoint=ckpt_path, metrics=metrics)


def _frozen_copy(f: nn.Module) -> nn.Module:
    """A frozen copy of f in eval mode (BatchNorm on its running statistics): the fixed synthetic
    feature space of ``match_target: stage1``."""
    return copy.deepcopy(f).eval().requires_grad_(False)


def _validate(model: FeatureMappingNet, validate: Callable[[FeatureMappingNet], dict]) -> dict:
    was = model.training
    model.eval()
    with torch.no_grad():
        v = validate(model)
    model.train(was)
    return v


def resolved_config(cfg: TrainConfig) -> dict:
    """The config as plain dicts (what goes into checkpoints and reports)."""
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------- the localiser


def localiser_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of the object localiser.

    Args:
        out: (B, n_objects, 4) network output: u, v (fractions of the image size), log side
            (fraction of the width), presence logit.
        target: (B, n_objects, 4) same layout, presence 0/1 (box terms ignored when absent).
    """
    present = target[..., 3]
    box = ((out[..., :3] - target[..., :3]) ** 2).sum(-1)
    box = (box * present).sum() / present.sum().clamp(min=1.0)
    cls = torch.nn.functional.binary_cross_entropy_with_logits(out[..., 3], present)
    return box + 0.1 * cls


def train_localiser(loc_cfg: LocaliserConfig, source: BatchSource, steps: int, batch_size: int = 32, lr: float = 2e-3,
                    seed: int = 0, device: str = "auto", progress: bool = True) -> tuple[nn.Module, dict]:
    """Train the object localiser on batches ``{"image": (B, 3, h, w), "target": (B, n, 4)}``.

    Returns:
        (localiser in eval mode, {"loss": last mean loss}).
    """
    from tqdm import tqdm

    from featmap_ros.nets import build_localiser

    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    torch.manual_seed(seed)
    loc = build_localiser(loc_cfg).to(dev)
    opt = torch.optim.AdamW(loc.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for step in tqdm(range(steps), desc="train localiser", disable=not progress, dynamic_ncols=True):
        for grp in opt.param_groups:
            grp["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
        b = source.batch(step, batch_size)
        loss = localiser_loss(loc(b["image"].to(dev)), b["target"].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    loc.eval()
    return loc, {"loss": float(np.mean(losses[-20:])) if losses else float("nan")}


def attach_localiser(checkpoint: str | Path, loc: nn.Module, metrics: dict | None = None) -> None:
    """Add the localiser's config and weights to an object checkpoint (atomically)."""
    ck = load_checkpoint(checkpoint, task="object")
    ck["localiser"] = {"config": to_dict(loc.cfg), "state": {k: v.cpu() for k, v in loc.state_dict().items()}, "metrics": metrics or {}}
    save_checkpoint(checkpoint, ck)


def convert_map_level(src: str | Path, dst: str | Path, level: str) -> None:
    """Re-label a checkpoint for the other ``map_level`` (written atomically to ``dst``).

    The two levels compute the same h(f(x)) from the same weights; only the FC layers move
    between f (``f.fc.*``, level ``fc``) and h (``h.pre.*``, level ``conv``). g cannot be
    carried over (it maps a different space): the new g starts at its identity initialisation,
    so this is meant for stage-1 checkpoints (g untrained). Optimiser moments follow their
    parameters; those of g are dropped.
    """
    ck = load_checkpoint(src)
    old_cfg = from_dict(ModelConfig, dict(ck["model_config"], pretrained=False), f"{src}: model_config")
    new_cfg = from_dict(ModelConfig, dict(ck["model_config"], pretrained=False, map_level=level), f"{src}: model_config")
    old_model, new_model = build_model(old_cfg), build_model(new_cfg)
    to_new = {"conv": ("f.fc.", "h.pre."), "fc": ("h.pre.", "f.fc.")}[level]
    rename = lambda n: n.replace(*to_new)  # noqa: E731
    state = {rename(k): v for k, v in ck["model"].items() if not k.startswith("g.")}
    state.update({k: v for k, v in new_model.state_dict().items() if k.startswith("g.")})
    new_model.load_state_dict(state)
    old_names = [n for n, _ in old_model.named_parameters()]
    new_names = [n for n, _ in new_model.named_parameters()]
    opt = copy.deepcopy(ck["optimizer"])
    opt["state"] = {new_names.index(rename(old_names[i])): st for i, st in opt["state"].items() if not old_names[i].startswith("g.")}
    if len(opt["param_groups"]) != 1:
        raise InputError(f"{src}: expected one optimiser parameter group, found {len(opt['param_groups'])}")
    opt["param_groups"][0]["params"] = list(range(len(new_names)))
    out = dict(ck, model=new_model.state_dict(), optimizer=opt, teacher_f=None,
               model_config=dict(ck["model_config"], map_level=level))
    out["config"] = dict(ck.get("config", {}), model=out["model_config"])
    save_checkpoint(dst, out)


def export_checkpoint(src: str | Path, dst: str | Path) -> None:
    """A slim copy of a checkpoint for inference (weights, configs, metadata, metrics; half the
    size or less: no optimiser, scaler or RNG state). Written atomically."""
    ck = load_checkpoint(src)
    slim = {k: v for k, v in ck.items() if k not in ("optimizer", "scaler", "rng", "teacher_f")}
    slim["exported_from_step"] = ck.get("step")
    save_checkpoint(dst, slim)
