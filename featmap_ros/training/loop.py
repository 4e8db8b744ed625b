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

The loss of the pose head (``model.head``): ``bb8`` (and hands) the squared error of the pose
numbers (:func:`pose_loss`); ``coords`` the mask BCE + symmetry-aware coordinate L1 of
:func:`featmap_ros.coords.coords_loss` (real crops: coordinates only, their occlusion is unknown).

Batches come from *sources*: deterministic functions of (seed, stream, step), so a run
resumed from a checkpoint draws exactly the batches the uninterrupted run would have drawn.
Checkpoints are atomic and hold model config, weights, optimiser, scaler, RNG states, step,
metrics and the resolved config. DDP starts when ``WORLD_SIZE > 1`` (``torchrun``).
"""
from __future__ import annotations

import copy
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from featmap_ros.coords import SymmetryTables, coords_loss
from featmap_ros.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, resolve_device, rng_state, save_checkpoint, set_rng_state
from featmap_ros.config import to_dict
from featmap_ros.nets import FeatureMappingNet, build_model
from featmap_ros.training.augment import photometric_augment
from featmap_ros.training.config import TrainConfig
from featmap_ros.training.schedule import cosine_lr
from featmap_ros.training.sources import BatchSource, stream_seed

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- batch sources


# ----------------------------------------------------------------------------- augmentation


# ----------------------------------------------------------------------------- checkpoints


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


def feature_match_loss(f_real: torch.Tensor, f_target: torch.Tensor, norm: bool = True, centered: bool = False) -> torch.Tensor:
    """The Feature Mapping term: mean squared distance of mapped real features to the synthetic
    features of the same pose (stage 2 of :func:`train`, and ``featmap train adapt``).

    Args:
        f_real: (B, ...) g(f(x_r)), the mapped real features.
        f_target: (B, ...) the synthetic features of the pairs (already stop-gradient'ed by the
            caller when it should be).
        norm: divide by the mean squared target feature (a relative error, ``feature_match_norm``).
        centered: with ``norm``, divide by the targets' batch variance instead
            (``feature_match_centered``).

    Returns:
        () float32.
    """
    fm = torch.mean((f_real.float() - f_target.float()) ** 2)
    if norm and centered:
        # relative to the synthetic features' batch variance: neither shrinking f
        # nor adding a constant to every feature lowers the matching term
        return fm / (torch.mean(f_target.detach().float().var(dim=0, unbiased=False)) + 1e-6)
    if norm:
        # relative error: shrinking every feature no longer lowers the matching term
        return fm / (torch.mean(f_target.detach().float() ** 2) + 1e-6)
    return fm


def _target_key(task: str) -> str:
    return "corners_n" if task == "object" else "joints_n"


def _cat(a, b):
    """Concatenate two batches of targets (tensors, or dicts of tensors)."""
    if isinstance(a, dict):
        return {k: torch.cat([a[k], b[k]]) for k in a}
    return torch.cat([a, b])


def head_loss_fn(cfg: TrainConfig, meta: dict | None, device: torch.device) -> tuple[Callable, Callable]:
    """(targets of a batch, loss) of the pose head of ``cfg.model``.

    Returns:
        ``targets(batch) -> targets on device`` and ``loss(pred, targets, obj_index, real) -> scalar``
        (``real``: the crops are real, their visible mask unknown).
    """
    if cfg.model.head == "coords":
        sym = SymmetryTables.from_meta(meta or {}, "training meta").to(device)
        return ((lambda b: {"coords_n": b["coords_n"].to(device), "mask_visib": b["mask_visib"].to(device)}),
                (lambda pred, t, idx, real=False: coords_loss(pred, t["coords_n"], t["mask_visib"], idx, sym, with_mask=not real)))
    key = _target_key(cfg.model.task)
    return (lambda b: b[key].to(device)), (lambda pred, t, idx, real=False: pose_loss(pred, t, idx))


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
    dev = resolve_device(device)
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
        return cosine_lr(cfg.lr, s, total, cfg.lr_min_frac)

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

    in_key = _input_key(task)
    targets_of, head_loss = head_loss_fn(cfg, meta, dev)
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
        ys = targets_of(sb)
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
                xr, xp, yp = xr.to(dev), pb["synth"].to(dev), targets_of(pb)
                op_idx = pb.get("obj_index")
                use_pair_synth = cfg.mapping or cfg.baseline_pair_synth
                synth_in = torch.cat([xs, xp]) if use_pair_synth else xs
                pose_syn, pose_real, f_syn, f_real, f_real_raw = net(torch.cat([synth_in, xr]), n_synth=synth_in.shape[0], mapping=cfg.mapping)
                syn_targets = _cat(ys, yp) if use_pair_synth else ys
                syn_idx = None
                if os_idx is not None:
                    syn_idx = torch.cat([os_idx, op_idx]) if use_pair_synth else os_idx
                losses["pose_synth"] = head_loss(pose_syn, syn_targets, syn_idx)
                losses["pose_real"] = head_loss(pose_real, yp, op_idx, real=True)
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
                    fm = feature_match_loss(f_real, f_pair, cfg.feature_match_norm, cfg.feature_match_centered)
                    losses["feature_match"] = fm
                    losses["weighted_match"] = cfg.lambda_map * fm
            else:
                losses["pose_synth"] = head_loss(net(xs), ys, os_idx)
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
