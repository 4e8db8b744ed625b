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
from featmap_ros.data.specs import object_dataset
from featmap_ros.errors import InputError
from featmap_ros.evaluation.metrics import MIN_VISIBLE_FRACTION
from featmap_ros.nets import LocaliserConfig, build_localiser
from featmap_ros.object_localiser import heatmap_loss
from featmap_ros.training.augment import photometric_augment
from featmap_ros.render.renderer import MeshRenderer, composite, preload_torch_compiler, random_lighting
from featmap_ros.training.caches import cache_path, load_or_build
from featmap_ros.training.schedule import cosine_lr
from featmap_ros.training.sources import BatchSource, CachedSource, as_float, stream_seed


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
    loc.train()
    opt = torch.optim.AdamW([q for q in loc.parameters() if q.requires_grad], lr=lr, weight_decay=1e-4)
    losses = []
    bar = tqdm(range(steps), desc="train localiser", disable=not progress, dynamic_ncols=True)
    for step in bar:
        for grp in opt.param_groups:
            grp["lr"] = cosine_lr(lr, step, steps, 0.05)
        b = source.batch(step, batch_size)
        out = loc(b["image"].to(dev))
        if loc_cfg.kind == "heatmap":
            parts = heatmap_loss(out, b["target"])
            loss = parts["loss"]
            if step % 25 == 0:
                bar.set_postfix({k: f"{float(v.detach()):.3f}" for k, v in parts.items()})
        else:
            loss = localiser_loss(out, b["target"].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    loc.eval()
    return loc, {"loss": float(np.mean(losses[-20:])) if losses else float("nan")}


def attach_localiser(checkpoint: str | Path, loc: nn.Module, metrics: dict | None = None, out: str | Path | None = None) -> None:
    """Add the localiser's config and weights to an object checkpoint, written atomically to
    ``out`` (default: the checkpoint itself). A bundled checkpoint (``weights_dtype: float16``)
    gets float16 localiser weights too."""
    ck = load_checkpoint(checkpoint, task="object")
    half = ck.get("weights_dtype") == "float16"
    state = {k: (v.half() if half and torch.is_floating_point(v) else v).cpu() for k, v in loc.state_dict().items()}
    ck["localiser"] = {"config": to_dict(loc.cfg), "state": state, "metrics": metrics or {}}
    save_checkpoint(out or checkpoint, ck)


def input_camera(loc_cfg: LocaliserConfig, K: np.ndarray) -> tuple[int, int, int, int, np.ndarray]:
    """(input width, height, frame width, height, (3, 3) intrinsics scaled to the input) for
    rendering localiser frames directly at the network's input size from a 640 x 480 camera ``K``."""
    w, h, W, H = loc_cfg.input_width, loc_cfg.input_height, 640, 480
    return w, h, W, H, np.diag([w / W, h / H, 1.0]) @ K


def frame_tensors(images: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Localiser frames ((h, w, 3) uint8 each) and targets ((n, 4) each) as the cached tensors
    ``{"image": (N, 3, h, w) uint8, "target": (N, n, 4) float32}``."""
    return {"image": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            "target": torch.from_numpy(np.stack(targets).astype(np.float32))}


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

    w, h, W, H, K_small = input_camera(loc_cfg, K)
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
    return frame_tensors(images, targets)


#: Heatmap localiser frames: each object is in a synthetic frame with this probability.
SCENE_OBJECT_PROB = 0.7
#: Share of real frames in a heatmap localiser batch (when there are real frames).
REAL_FRACTION = 0.25
#: Scale augmentation of localiser frames: zoom in [1 / SCALE_JITTER, SCALE_JITTER].
SCALE_JITTER = 1.3


def render_scene_frames(meshes, infos, K, loc_cfg, count: int, seed: int, backgrounds: str | None, sampling: PoseSampling,
                        progress: bool = True) -> dict:
    """Synthetic full frames for the heatmap localiser: several objects in one scene.

    Each object is present with probability :data:`SCENE_OBJECT_PROB` (at least one per frame)
    at its own pose (``sampling``); all are rendered together (so they occlude each other),
    over a photo, and half the frames get one or two photo rectangles pasted over an object
    (cut-outs). An object is a target when :data:`MIN_VISIBLE_FRACTION` of it stays visible.
    Rendered directly at the localiser's input size (intrinsics scaled from the 640 x 480 K).

    Returns:
        ``{"image": (N, 3, h, w) uint8, "target": (N, n_objects, 4) float32}`` (compact targets of
        :mod:`featmap_ros.object_localiser`).
    """
    from tqdm import tqdm

    w, h, W, H, K_small = input_camera(loc_cfg, K)
    n_obj = len(meshes)
    images, targets = [], []
    rng = np.random.default_rng([seed, 78])
    bgs = BackgroundSource(backgrounds or None)
    with MeshRenderer(w, h) as renderer:
        for _ in tqdm(range(count), desc="localiser frames", disable=not progress, dynamic_ncols=True):
            img = bgs.sample(rng, w, h)
            chosen = [k for k in range(n_obj) if rng.random() < SCENE_OBJECT_PROB] or [int(rng.integers(n_obj))]
            poses = [sample_pose(rng, K, W, H, sampling, infos[k].center_m) for k in chosen]
            joint = renderer.render([meshes[k] for k in chosen], np.stack([R for R, _ in poses]), np.stack([t for _, t in poses]),
                                    K_small, lighting=random_lighting(rng))
            img = composite(joint, img)
            tgt = np.zeros((n_obj, 4), np.float32)
            for k, (R, t) in zip(chosen, poses):
                alone = renderer.render(meshes[k], R, t, K_small, depth_only=True)
                own = alone.mask
                seen = own & joint.mask & (np.abs(joint.depth_m - alone.depth_m) < 1e-3)
                if own.sum() == 0:
                    continue
                if rng.random() < 0.25:  # a cut-out over part of this object
                    ys, xs = np.nonzero(own)
                    cy, cx = int(rng.choice(ys)), int(rng.choice(xs))
                    rh, rw = (int(rng.integers(4, max(5, (ys.max() - ys.min()) // 2 + 5))) for _ in range(2))
                    y0, x0 = max(cy - rh // 2, 0), max(cx - rw // 2, 0)
                    patch = bgs.sample(rng, w, h)
                    img[y0:y0 + rh, x0:x0 + rw] = patch[y0:y0 + rh, x0:x0 + rw]
                    seen[y0:y0 + rh, x0:x0 + rw] = False
                win = object_window(geometry.project_model_points(infos[k].corners_m, R, t, K))
                visible = seen.sum() / own.sum() >= MIN_VISIBLE_FRACTION
                tgt[k] = (win.center_u / W, win.center_v / H, np.log(win.side / W), float(visible))
            images.append(img)
            targets.append(tgt)
    return frame_tensors(images, targets)


def real_scene_frames(root: str | Path, split: str, obj_ids: list[int], infos, loc_cfg, im_ids=None) -> dict:
    """Real BOP frames for the heatmap localiser, resized to its input, with every instance of
    the localiser's objects as a target (visible fraction >= :data:`MIN_VISIBLE_FRACTION` when
    ``scene_gt_info.json`` gives it).

    Args:
        root, split: the BOP dataset (``<root>/<split>/<scene>/``).
        obj_ids: the localiser's objects, in its order; ``infos`` their model infos.
        im_ids: only these image ids (None = every frame with an image).

    Returns:
        Same layout as :func:`render_scene_frames` (N may be 0).
    """
    import cv2

    w, h = loc_cfg.input_width, loc_cfg.input_height
    k_of = {oid: k for k, oid in enumerate(obj_ids)}
    images, targets = [], []
    all_infos = bop.load_models_info(Path(root) / "models" / "models_info.json")
    for scene in bop.list_scenes(Path(root) / split):
        for fr in bop.read_scene(scene, all_infos):
            if fr.rgb_path is None or (im_ids is not None and fr.im_id not in set(im_ids)):
                continue
            rgb = bop.load_rgb(fr.rgb_path)
            H, W = rgb.shape[:2]
            tgt = np.zeros((len(obj_ids), 4), np.float32)
            for g in fr.instances:
                if g.obj_id not in k_of:
                    continue
                k = k_of[g.obj_id]
                win = object_window(geometry.project_model_points(infos[k].corners_m, g.R_m2c, g.t_m2c_m, fr.K))
                visible = g.visib_fract is None or g.visib_fract >= MIN_VISIBLE_FRACTION
                tgt[k] = (win.center_u / W, win.center_v / H, np.log(win.side / W), float(visible))
            images.append(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA))
            targets.append(tgt)
    if not images:
        return {"image": torch.zeros((0, 3, h, w), dtype=torch.uint8), "target": torch.zeros((0, len(obj_ids), 4))}
    return frame_tensors(images, targets)


class SceneFrameSource:
    """Batches of localiser frames: synthetic and (a :data:`REAL_FRACTION` share) real frames,
    zoomed and shifted at random (targets moved with them; a centre pushed out of the frame is
    no target) and photometrically augmented (:func:`featmap_ros.training.augment.photometric_augment`).

    ``batch(step, n)`` -> ``{"image": (n, 3, h, w) float32 in [0, 1], "target": (n, n_objects, 4)}``;
    a function of (seed, step).
    """

    def __init__(self, synthetic: dict, real: dict | None, seed: int, augment: str = "photometric") -> None:
        self.synthetic, self.real = synthetic, real if real is not None and len(real["image"]) else None
        self.seed, self.augment = seed, augment

    def batch(self, step: int, n: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(stream_seed(self.seed, 6, step))
        n_real = int(round(REAL_FRACTION * n)) if self.real is not None else 0
        parts = []
        for src, m in ((self.synthetic, n - n_real), (self.real, n_real)):
            if m > 0:
                idx = torch.randint(0, len(src["image"]), (m,), generator=g)
                parts.append((src["image"][idx], src["target"][idx]))
        img = as_float(torch.cat([p[0] for p in parts]))
        tgt = torch.cat([p[1] for p in parts]).clone()
        B = img.shape[0]
        # zoom s about a random centre c (normalised coords): x_out = s (x_in - c)
        s = torch.exp((torch.rand(B, generator=g) * 2 - 1) * float(np.log(SCALE_JITTER)))
        c = (torch.rand(B, 2, generator=g) * 2 - 1) * 0.2
        theta = torch.zeros(B, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / s
        theta[:, :, 2] = c
        grid = torch.nn.functional.affine_grid(theta, list(img.shape), align_corners=False)
        img = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        for j in range(2):
            x = tgt[..., j] * 2 - 1
            tgt[..., j] = (s[:, None] * (x - c[:, None, j]) + 1) / 2
        tgt[..., 2] += torch.log(s)[:, None]
        inside = (tgt[..., 0] >= 0) & (tgt[..., 0] < 1) & (tgt[..., 1] >= 0) & (tgt[..., 1] < 1)
        tgt[..., 3] *= inside.float()
        img = photometric_augment(img, g, self.augment)
        return {"image": img, "target": tgt}


def localiser_inputs(cfg, obj_ids: list[int] | None = None) -> dict:
    """What the localiser is trained from, read from a training config's ``data``: the meshes and
    infos of its objects (``data.models_root``; ``obj_ids`` overrides ``data.object_ids``, e.g.
    a checkpoint's objects), the dataset's intrinsics and pose ranges, backgrounds, cache folder."""
    from featmap_ros.training.prepare import object_models

    d = cfg.data
    if obj_ids is not None:
        d.object_ids = list(obj_ids)
    meshes, infos, names, ids, _ = object_models(cfg, None)
    spec = object_dataset(d.dataset)
    K = np.array([[spec.fx, 0, spec.cx], [0, spec.fy, spec.cy], [0, 0, 1.0]])
    return {"meshes": meshes, "infos": infos, "names": names, "obj_ids": ids, "K": K, "spec": spec,
            "cache_dir": d.cache_dir or "featmap_out/cache", "backgrounds": d.backgrounds}


def train_and_attach_localiser(cfg, loc_data: dict, checkpoint: Path, device: str = "auto", real_frames: list | None = None,
                               progress: bool = True, out: Path | None = None) -> dict:
    """Render localiser frames (cached), train the localiser, add it to ``checkpoint`` (written
    to ``out``, default the checkpoint itself).

    ``kind: heatmap`` reads its real frames from ``cfg.data.real_root`` (``real_split``,
    ``real_im_ids``: every instance of the objects in each frame); ``kind: global`` takes
    ``real_frames`` ([(FrameRef, object index)]).
    """
    preload_torch_compiler()
    lcfg = cfg.localiser
    lcfg.n_objects = len(loc_data["meshes"])
    count = max(2 * cfg.localiser_steps, 64)
    key = {"v": 1, "n": count, "wh": [lcfg.input_width, lcfg.input_height], "seed": cfg.seed,
           "meshes": [m.name for m in loc_data["meshes"]], "nv": [int(len(m.vertices_m)) for m in loc_data["meshes"]],
           "real": len(real_frames or [])}
    cache_dir = Path(loc_data["cache_dir"])
    if lcfg.kind == "heatmap":
        count = cfg.localiser_frames or count
        sampling = PoseSampling.from_spec(loc_data["spec"], margin_px=20.0)
        key = {"v": 2, "kind": "heatmap", "n": count, "wh": [lcfg.input_width, lcfg.input_height], "seed": cfg.seed,
               "meshes": key["meshes"], "nv": key["nv"], "bg": str(loc_data["backgrounds"]), "sampling": [sampling.distance_range_m, sampling.margin_px]}
        synth = load_or_build(cache_path(cache_dir, "localiser", key),
                              lambda: render_scene_frames(loc_data["meshes"], loc_data["infos"], loc_data["K"], lcfg, count, cfg.seed,
                                                          loc_data["backgrounds"], sampling, progress))
        real = None
        d = cfg.data
        if d.real_root:
            im_ids = [int(i) for i in d.real_im_ids] or None
            real = real_scene_frames(d.real_root, d.real_split, loc_data["obj_ids"], loc_data["infos"], lcfg, im_ids)
            if not len(real["image"]):
                raise InputError(f"data.real_root: {d.real_root}/{d.real_split} has no frame with an image"
                                 + (f" among data.real_im_ids {im_ids}" if im_ids else ""))
        src = SceneFrameSource(synth, real, cfg.seed, cfg.augment)
        loc, m = train_localiser(lcfg, src, cfg.localiser_steps, batch_size=cfg.localiser_batch_size, lr=1e-3, seed=cfg.seed,
                                 device=device, progress=progress)
        m["real_frames"] = 0 if real is None else int(len(real["image"]))
        m["synthetic_frames"] = int(count)
    else:
        data = load_or_build(cache_path(cache_dir, "localiser", key),
                             lambda: render_localiser_frames(loc_data["meshes"], loc_data["infos"], loc_data["K"], lcfg, count, cfg.seed,
                                                             loc_data["backgrounds"], real_frames, progress))
        src = CachedSource(data, cfg.seed, 5)
        loc, m = train_localiser(lcfg, src, cfg.localiser_steps, seed=cfg.seed, device=device, progress=progress)
    attach_localiser(checkpoint, loc, m, out)
    return m
