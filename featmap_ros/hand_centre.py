"""Learned refinement of the run-time hand centre (DeepPrior++'s centre refinement).

The run-time localiser (:func:`featmap_ros.crops.localise_hand`: closest blob, its free end,
mean shift, a fixed push back along z) lands some 15-25 mm from the palm-centre joint that the
pose network's crops are centred on in training, mostly along depth. As DeepPrior++ does, a
small CNN looks at a depth crop (``crop_size`` pixels, ``cube_m`` metric cube, the DeepPrior
crop of :func:`featmap_ros.crops.crop_depth`) around the current estimate and regresses the
offset from the crop centre to the palm centre, in crop-normalised metric units
(offset / (cube / 2), camera frame). Applied iteratively: re-crop at the new centre, predict
again.

Training data are real-like frames (:func:`featmap_ros.render.depth_sensor.sample_pair`:
hand, forearm, upper arm, body, wall, floor, clutter, sensor noise) from the seed stream
``HandCentreTrainConfig.seed`` (validation: ``seed + 1``); the crop centres are the
localiser's answer or the true palm centre, plus a random 3D offset, so that the network sees
the starts of every iteration at run time. The evaluation of ``featmap_ros.render.hand_bench``
draws its frames from other seeds (default 1) and refuses the training ones.

Reproduce the bundled weights (about 4-5 minutes on one CPU thread)::

    OMP_NUM_THREADS=1 nice -n 10 python -m featmap_ros.hand_centre train \\
        --out featmap_ros/weights/hand_centre.pt

Measure refined vs unrefined::

    OMP_NUM_THREADS=1 python -m featmap_ros.hand_centre eval --weights featmap_ros/weights/hand_centre.pt
"""
from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featmap_ros.errors import InputError

#: value of the checkpoint's ``format`` field.
CHECKPOINT_FORMAT = "featmap_ros.hand_centre/1"
#: where the bundled weights live.
BUNDLED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "hand_centre.pt"


@dataclass(frozen=True)
class HandCentreNetConfig:
    """Architecture and crop of the refiner (saved in the checkpoint; a mismatch names the field).

    Attributes:
        crop_size: crop side, pixels (a multiple of ``2 ** len(channels)``).
        cube_m: cube side, metres (the crop's metric extent and depth range).
        first_stride: stride of the first conv (2 halves the cost of a CPU training run).
        channels: output channels of the 3x3 conv + BN + ReLU + 2x2 max-pool stages.
        hidden: width of the fully connected layer before the 3 outputs.
    """

    crop_size: int = 64
    cube_m: float = 0.3
    first_stride: int = 2
    channels: tuple[int, ...] = (16, 32, 32, 64)
    hidden: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.crop_size, int) or self.crop_size < 8:
            raise InputError(f"net_config.crop_size: expected an int >= 8, got {self.crop_size!r}")
        if not (isinstance(self.cube_m, (int, float)) and 0.05 <= float(self.cube_m) <= 1.0):
            raise InputError(f"net_config.cube_m: expected metres in [0.05, 1], got {self.cube_m!r}")
        ch = tuple(self.channels)
        if not ch or not all(isinstance(c, int) and c > 0 for c in ch):
            raise InputError(f"net_config.channels: expected positive ints, got {self.channels!r}")
        if self.first_stride not in (1, 2):
            raise InputError(f"net_config.first_stride: expected 1 or 2, got {self.first_stride!r}")
        if self.crop_size % (self.first_stride * 2 ** len(ch)):
            raise InputError(f"net_config.crop_size: {self.crop_size} is not a multiple of {self.first_stride}*2**{len(ch)} (net_config.first_stride, one halving per stage of net_config.channels)")
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise InputError(f"net_config.hidden: expected a positive int, got {self.hidden!r}")
        object.__setattr__(self, "channels", ch)
        object.__setattr__(self, "cube_m", float(self.cube_m))


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


class HandCentreNet(nn.Module):
    """(B, 1, S, S) float32 DeepPrior depth crop -> (B, 3) offset / (cube / 2), camera frame."""

    def __init__(self, cfg: HandCentreNetConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(cfg.channels):
            stride = cfg.first_stride if i == 0 else 1
            layers += [nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = cfg.crop_size // (cfg.first_stride * 2 ** len(cfg.channels))
        # flattened, not pooled: where the hand is in the crop is the answer
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def crop_for_refiner(depth_m: np.ndarray, K: np.ndarray, center_c_m: np.ndarray, cfg: HandCentreNetConfig) -> np.ndarray:
    """The refiner's input: the DeepPrior crop around ``center_c_m``.

    Returns:
        (S, S) float32 in [-1, 1].

    Raises:
        InputError: bad depth map, intrinsics or centre.
    """
    from featmap_ros.crops import crop_depth

    crop, _ = crop_depth(depth_m, center_c_m, K, cfg.cube_m, cfg.crop_size)
    return crop


class HandCentreRefiner:
    """A trained :class:`HandCentreNet` and how to apply it to depth frames (CPU)."""

    def __init__(self, net: HandCentreNet, cfg: HandCentreNetConfig, meta: dict | None = None) -> None:
        self.net = net.eval()
        self.cfg = cfg
        self.meta = dict(meta or {})

    @classmethod
    def from_file(cls, path: str | Path = BUNDLED_WEIGHTS) -> "HandCentreRefiner":
        """Load weights written by :func:`train` (``python -m featmap_ros.hand_centre train``).

        Raises:
            InputError: missing or unreadable file, another kind of checkpoint (names
                ``format``), a bad ``net_config`` field, or weights of another architecture
                (names the ``state_dict`` entry and the ``net_config`` it disagrees with).
        """
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such hand-centre weights file")
        try:
            ck = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many kinds for a bad file
            raise InputError(f"{p}: unreadable hand-centre weights ({e.__class__.__name__}: {e})") from None
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            got = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
            raise InputError(f"{p}: field 'format' is {got!r}, expected {CHECKPOINT_FORMAT!r} (not hand-centre weights)")
        raw = ck.get("net_config")
        if not isinstance(raw, dict):
            raise InputError(f"{p}: field 'net_config' missing or not a mapping")
        known = {f.name for f in dataclasses.fields(HandCentreNetConfig)}
        for key in raw:
            if key not in known:
                raise InputError(f"{p}: field net_config.{key} is unknown (known: {sorted(known)})")
        cfg = HandCentreNetConfig(**{k: (tuple(v) if k == "channels" else v) for k, v in raw.items()})
        state = ck.get("state_dict")
        if not isinstance(state, dict):
            raise InputError(f"{p}: field 'state_dict' missing or not a mapping")
        net = HandCentreNet(cfg)
        want = net.state_dict()
        for key, t in want.items():
            if key not in state:
                raise InputError(f"{p}: field state_dict.{key} is missing (weights of another architecture than net_config {asdict(cfg)})")
            if not isinstance(state[key], torch.Tensor) or tuple(state[key].shape) != tuple(t.shape):
                got = tuple(state[key].shape) if isinstance(state[key], torch.Tensor) else type(state[key]).__name__
                raise InputError(f"{p}: field state_dict.{key} has shape {got}, but net_config {asdict(cfg)} needs {tuple(t.shape)} (weights of another architecture)")
        extra = sorted(set(state) - set(want))
        if extra:
            raise InputError(f"{p}: field state_dict.{extra[0]} is not part of net_config {asdict(cfg)} (weights of another architecture)")
        net.load_state_dict(state)
        meta = {k: v for k, v in ck.items() if k not in ("state_dict",)}
        return cls(net, cfg, meta)

    def predict_offsets(self, crops: np.ndarray) -> np.ndarray:
        """(B, S, S) float32 crops -> (B, 3) float64 offsets / (cube / 2), clipped to [-1, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)[:, None])
        with torch.no_grad():
            y = self.net(x).numpy().astype(np.float64)
        return np.clip(y, -1.0, 1.0)

    def refine(self, depth_m: np.ndarray, K: np.ndarray, center_c_m: np.ndarray, iterations: int = 3) -> np.ndarray:
        """Move a hand-centre estimate to the palm centre.

        Args:
            depth_m: (H, W) depth, metres, 0 / non-finite = invalid.
            K: (3, 3) intrinsics, pixels.
            center_c_m: (3,) start, camera optical frame, metres (e.g. ``localise_hand``).
            iterations: crop-predict-move rounds (0 returns the start).

        Returns:
            (3,) float64 refined centre, camera optical frame, metres. A round whose new
            centre is not in front of the camera stops the refinement at the last good centre.

        Raises:
            InputError: bad depth map, intrinsics, centre or iteration count.
        """
        if not isinstance(iterations, (int, np.integer)) or iterations < 0:
            raise InputError(f"iterations: expected an int >= 0, got {iterations!r}")
        c = np.asarray(center_c_m, dtype=np.float64).reshape(-1)
        if c.size != 3 or not np.all(np.isfinite(c)):
            raise InputError(f"center_c_m: expected 3 finite values, got {c.tolist()}")
        crop = crop_for_refiner(depth_m, K, c, self.cfg)  # validates depth, K and the start
        half = self.cfg.cube_m / 2.0
        for k in range(int(iterations)):
            if k > 0:
                crop = crop_for_refiner(depth_m, K, c, self.cfg)
            c_new = c + self.predict_offsets(crop[None])[0] * half
            if not (np.all(np.isfinite(c_new)) and c_new[2] > 0.05):
                break
            c = c_new
        return c


def localise_and_refine(depth_m: np.ndarray, K: np.ndarray, refiner: HandCentreRefiner | None = None, iterations: int = 3, **localise_kwargs) -> np.ndarray | None:
    """Run-time hand centre: :func:`featmap_ros.crops.localise_hand`, then the learned refinement.

    Args:
        depth_m: (H, W) depth, metres, 0 / non-finite = invalid.
        K: (3, 3) intrinsics, pixels.
        refiner: a loaded refiner; None loads the bundled weights.
        iterations: refinement rounds.
        **localise_kwargs: passed to ``localise_hand`` (near_m, far_m, ...).

    Returns:
        (3,) float64 centre, camera optical frame, metres; None when no hand is in range.

    Raises:
        InputError: bad depth map or intrinsics, bad bundled weights.
    """
    from featmap_ros.crops import localise_hand

    c = localise_hand(depth_m, K, **localise_kwargs)
    if c is None:
        return None
    if refiner is None:
        refiner = HandCentreRefiner.from_file(BUNDLED_WEIGHTS)
    try:
        return refiner.refine(depth_m, K, c, iterations)
    except InputError:
        return c  # a start the crop cannot use: keep the localiser's answer


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


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

    from featmap_ros.crops import localise_hand
    from featmap_ros.data.nyu import nyu_K
    from featmap_ros.render.depth_sensor import sample_pair
    from featmap_ros.render.hand import PALM_CENTER

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


def evaluate_centres(refiner: HandCentreRefiner | None, n_frames: int, seed: int, iterations: int = 3, progress: bool = True) -> dict:
    """Localiser error on real-like frames, unrefined and (with ``refiner``) refined.

    Frames come from ``np.random.default_rng(seed)`` through ``sample_pair`` (the same stream
    as ``hand_bench.run_hand_detector_bench(frames, seed)``); the error is the 3D distance to
    the palm-centre joint.

    Returns:
        dict: frames, found, ``unrefined`` and ``refined`` (when a refiner is given), each with
        mean / median / p90 error in mm over the found frames and the fractions of all frames
        within 15 mm and 25 mm.
    """
    from tqdm import tqdm

    from featmap_ros.crops import localise_hand
    from featmap_ros.data.nyu import nyu_K
    from featmap_ros.render.depth_sensor import sample_pair
    from featmap_ros.render.hand import PALM_CENTER

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
    from featmap_ros.atomic import atomic_path

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
        "command": "python -m featmap_ros.hand_centre train",
    }
    with atomic_path(out, suffix=".pt") as tmp:
        torch.save(ck, tmp)
    return metrics


def _print_stats(d: dict) -> None:
    print(f"frames {d['frames']} (seed {d['seed']}), found {d['found']}")
    print(f"{'':18s} {'mean mm':>8s} {'median':>8s} {'p90':>8s} {'<=15mm':>7s} {'<=25mm':>7s}")
    for k in ("unrefined", "refined"):
        if k in d:
            s = d[k]
            print(f"{k:18s} {s['mean_error_mm']:8.1f} {s['median_error_mm']:8.1f} {s['p90_error_mm']:8.1f} {s['within_15mm']:7.3f} {s['within_25mm']:7.3f}")


def main(argv: list[str] | None = None) -> int:
    """``python -m featmap_ros.hand_centre train|eval ...``."""
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(prog="python -m featmap_ros.hand_centre", description="train / evaluate the learned hand-centre refinement")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on real-like frames and write the weights")
    t.add_argument("--out", required=True, help="weights file to write (atomically)")
    for f in dataclasses.fields(HandCentreTrainConfig):
        t.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default, help=f"(default {f.default})")
    e = sub.add_parser("eval", help="unrefined vs refined centre error on real-like frames")
    e.add_argument("--weights", default=str(BUNDLED_WEIGHTS))
    e.add_argument("--frames", type=int, default=300)
    e.add_argument("--seed", type=int, default=1, help="evaluation seed (must differ from the training ones)")
    e.add_argument("--iterations", type=int, default=3)
    e.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "train":
            tc = HandCentreTrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(HandCentreTrainConfig)})
            m = train(a.out, tc)
            print(json.dumps({k: v for k, v in m.items() if k != "validation"}, indent=1))
            if m["validation"]:
                print("validation (seed %d):" % (tc.seed + 1))
                _print_stats(m["validation"])
            print(f"wrote {a.out} ({Path(a.out).stat().st_size / 1024:.0f} KiB)")
        else:
            r = HandCentreRefiner.from_file(a.weights)
            check_eval_seed(r, a.seed)
            d = evaluate_centres(r, a.frames, a.seed, a.iterations)
            _print_stats(d)
            if a.json:
                from featmap_ros.atomic import write_json

                write_json(a.json, d)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def check_eval_seed(refiner: HandCentreRefiner, seed: int) -> None:
    """Raise InputError when ``seed`` is one of the refiner's training or validation seeds."""
    tc = refiner.meta.get("train_config") or {}
    used = {tc.get("seed"), None if tc.get("seed") is None else tc["seed"] + 1} - {None}
    if seed in used:
        raise InputError(f"seed: {seed} was used to train these weights (train_config.seed = {tc.get('seed')}; training and validation use seed and seed + 1)")


if __name__ == "__main__":
    raise SystemExit(main())
