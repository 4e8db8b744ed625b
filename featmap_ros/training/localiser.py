"""The object localiser: its training frames (rendered over backgrounds), its loss, its loop, and
attaching it to an object checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from featmap_ros import geometry
from featmap_ros.checkpoint import load_checkpoint, resolve_device, save_checkpoint
from featmap_ros.config import to_dict
from featmap_ros.data import bop
from featmap_ros.data.backgrounds import BackgroundSource
from featmap_ros.data.object_samples import PoseSampling, object_window, sample_pose
from featmap_ros.nets import LocaliserConfig, build_localiser
from featmap_ros.render.renderer import MeshRenderer, composite, preload_torch_compiler, random_lighting
from featmap_ros.training.caches import cache_path, load_or_build
from featmap_ros.training.schedule import cosine_lr
from featmap_ros.training.sources import BatchSource, CachedSource


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

    dev = resolve_device(device)
    torch.manual_seed(seed)
    loc = build_localiser(loc_cfg).to(dev)
    opt = torch.optim.AdamW(loc.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for step in tqdm(range(steps), desc="train localiser", disable=not progress, dynamic_ncols=True):
        for grp in opt.param_groups:
            grp["lr"] = cosine_lr(lr, step, steps, 0.05)
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

    preload_torch_compiler()
    lcfg = cfg.localiser
    lcfg.n_objects = len(loc_data["meshes"])
    count = max(2 * cfg.localiser_steps, 64)
    key = {"v": 1, "n": count, "wh": [lcfg.input_width, lcfg.input_height], "seed": cfg.seed,
           "meshes": [m.name for m in loc_data["meshes"]], "nv": [int(len(m.vertices_m)) for m in loc_data["meshes"]],
           "real": len(real_frames or [])}
    data = load_or_build(cache_path(Path(loc_data["cache_dir"]), "localiser", key),
                          lambda: render_localiser_frames(loc_data["meshes"], loc_data["infos"], loc_data["K"], lcfg, count, cfg.seed,
                                                          loc_data["backgrounds"], real_frames, progress))
    src = CachedSource(data, cfg.seed, 5)
    loc, m = train_localiser(lcfg, src, cfg.localiser_steps, seed=cfg.seed, device=device, progress=progress)
    attach_localiser(checkpoint, loc, m)
    return m
