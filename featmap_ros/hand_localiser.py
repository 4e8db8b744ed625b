"""Run-time hand localisation (inference only): the closest-blob localiser
(:func:`localise_hand`) and the learned centre refinement (DeepPrior++'s).

The run-time localiser (:func:`featmap_ros.hand_localiser.localise_hand`: closest blob, its free end,
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
the starts of every iteration at run time. The evaluation of ``featmap_ros.evaluation.bench``
draws its frames from other seeds (default 1) and refuses the training ones.

Reproduce the bundled weights (about 4-5 minutes on one CPU thread)::

    OMP_NUM_THREADS=1 nice -n 10 featmap train hand-centre --out featmap_ros/weights/hand_centre.pt

Measure refined vs unrefined::

    OMP_NUM_THREADS=1 featmap bench hand-centre --weights featmap_ros/weights/hand_centre.pt
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from featmap_ros.crops import crop_depth
from featmap_ros.errors import InputError
from featmap_ros.geometry import check_K

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
        """Load weights written by :func:`train` (``featmap train hand-centre``).

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
    """Run-time hand centre: :func:`featmap_ros.hand_localiser.localise_hand`, then the learned refinement.

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



def localise_hand(
    depth_m: np.ndarray,
    K: np.ndarray,
    near_m: float = 0.25,
    far_m: float = 1.6,
    cube_m: float = 0.3,
    min_pixels: int = 60,
    refine: bool = True,
    surface_offset_m: float = 0.020,
    hand_radius_m: float = 0.07,
    depth_band_m: float = 0.2,
    max_reach_m: float = 0.15,
) -> np.ndarray | None:
    """Run-time hand centre: the closest blob's centre of mass, refined.

    The closest surface (the ``min_pixels``-th smallest depth in range) starts a blob of
    pixels within ``depth_band_m`` behind it, split at depth steps over 20 mm; the component with
    the nearest pixels is the hand (with whatever forearm is within the range). Its 3D
    centre of mass is the coarse answer. The refinement finds the blob's free end along its
    principal axis (the end that does not leave the image, else the nearer one) and runs a
    mean shift with a ``hand_radius_m`` sphere from there, which settles on the palm. The
    result is pushed back by ``surface_offset_m`` along z (the palm centre lies inside the
    hand, behind the surface the camera sees).

    Args:
        depth_m: (H, W) depth, metres, 0 / non-finite = invalid.
        K: (3, 3) intrinsics.
        near_m, far_m: depth range searched.
        cube_m: cube side (kept for the callers' symmetry with :func:`crop_depth`).
        min_pixels: fewer valid pixels than this -> no hand.
        refine: run the refinement.
        surface_offset_m: added to z at the end.
        hand_radius_m: radius of the mean-shift sphere.
        depth_band_m: depth extent of the blob behind the closest surface (a hand is at most
            ~0.2 m deep; a body an arm's length behind stays out).
        max_reach_m: the mean shift ignores points further than this from the hand's end
            along the arm (forearm, for any hand size).

    Returns:
        (3,) float64 centre, camera optical frame, metres; None when nothing is in range.
    """

    K = check_K(K)
    d_full = np.asarray(depth_m, dtype=np.float64)
    if d_full.ndim != 2 or d_full.size == 0:
        raise InputError(f"depth_m: expected (H, W), got shape {d_full.shape}")
    H, W = d_full.shape
    with np.errstate(invalid="ignore"):  # NaN compares False: invalid, as 0 is
        valid = (d_full > near_m) & (d_full < far_m)
    vals = d_full[valid]
    if vals.size < min_pixels:
        return None
    dmin = float(np.partition(vals, min_pixels - 1)[min_pixels - 1])
    mask_full = valid & (d_full < dmin + depth_band_m)
    # Everything after this runs on the blob's bounding box plus one pixel (the depth steps
    # look at the neighbours), not the whole frame: the same numbers, a fraction of the work.
    rows, cols = np.flatnonzero(mask_full.any(axis=1)), np.flatnonzero(mask_full.any(axis=0))
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, H)
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, W)
    d = d_full[y0:y1, x0:x1]
    d = np.where(np.isfinite(d), d, 0.0)
    mask = mask_full[y0:y1, x0:x1]
    # split at depth steps so that an arm or body behind the hand is not the same blob
    step = 0.02
    dz = np.zeros(d.shape, bool)
    jump_u = np.abs(d[:, 1:] - d[:, :-1]) > step
    jump_v = np.abs(d[1:, :] - d[:-1, :]) > step
    dz[:, 1:] |= jump_u
    dz[:, :-1] |= jump_u
    dz[1:, :] |= jump_v
    dz[:-1, :] |= jump_v
    n_lab, lab = cv2.connectedComponents((mask & ~dz).astype(np.uint8), connectivity=4)
    if n_lab <= 1:
        return None
    # the hand's component: among those reaching the nearest 3 cm, the largest (a finger in
    # front of the palm is split off by the depth steps but is smaller than hand and arm)
    near = mask & (d <= dmin + 0.03) & (lab > 0)
    has_near = np.bincount(lab[near], minlength=n_lab) >= 5
    sizes = np.bincount(lab.ravel(), minlength=n_lab)
    sizes[0] = 0
    sizes[~has_near] = 0
    if sizes.max() < min_pixels // 2:
        return None
    blob = lab == int(np.argmax(sizes))
    v, u = np.nonzero(blob)
    z = d[v, u]
    u, v = u + x0, v + y0
    P = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)
    c = P.mean(axis=0)
    if refine and len(P) >= min_pixels:
        va, ua = np.nonzero(mask)
        za = d[va, ua]
        ua, va = ua + x0, va + y0
        P_all = np.stack([(ua - K[0, 2]) * za / K[0, 0], (va - K[1, 2]) * za / K[1, 1], za], axis=1)
        leaves = (ua <= 2) | (va <= 2) | (ua >= W - 3) | (va >= H - 3) | (za > dmin + depth_band_m - 0.03)
        c = _hand_end_centre(P, c, hand_radius_m, min_pixels, P_all, P_all[leaves], max_reach_m)
    c = c + np.array([0.0, 0.0, surface_offset_m])
    return c


def _sq_dist(P: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances of (N, 3) points to one (3,) point: (N,)."""
    D = P - c
    return np.einsum("ij,ij->i", D, D)


def _hand_end_centre(
    P: np.ndarray,
    c0: np.ndarray,
    radius_m: float,
    min_pixels: int,
    P_all: np.ndarray,
    cut: np.ndarray,
    max_reach_m: float = 0.15,
) -> np.ndarray:
    """Centre of the hand at the free end of an arm-shaped blob.

    The blob's principal axis runs along the forearm; the hand is the end furthest (in 3D)
    from the points ``cut`` where the in-range surface leaves the image or the depth band,
    since the arm goes on there (with no such points, the nearer end). Starting from the points within two
    radii of that end, a mean shift with a sphere of ``radius_m`` over all in-range points
    ``P_all`` (fingers split off by depth steps included) settles on the densest part of the
    hand, the palm; points further than ``max_reach_m`` from the end along the axis (forearm
    for any hand size) are left out of it.
    """
    X = P - c0
    _, _, Vt = np.linalg.svd(X[:: max(1, len(X) // 4000)], full_matrices=False)
    axis = Vt[0]
    s = X @ axis
    lo, hi = np.percentile(s, [3.0, 97.0])
    ends = []
    for sel in (s <= lo, s >= hi):
        tip_k = P[sel].mean(axis=0)
        gap = float(np.sqrt(np.min(_sq_dist(cut, tip_k)))) if len(cut) else np.inf
        ends.append((-gap, float(tip_k[2]), tip_k, float(np.mean(s[sel]))))
    # the free end: furthest from where the blob leaves the image or the depth band
    # (the arm continues there); without such places, the nearer end
    ends.sort(key=lambda e: (e[0], e[1]) if np.isfinite(e[0]) else (0.0, e[1]))
    tip = ends[0][2]
    inward = axis if ends[0][3] < 0 else -axis
    reach = (P_all - tip) @ inward
    P_all = P_all[reach < max_reach_m]
    near_tip = _sq_dist(P, tip) < (2.0 * radius_m) ** 2
    c = P[near_tip].mean(axis=0) if near_tip.sum() >= min_pixels // 2 else c0
    for _ in range(10):
        inside = _sq_dist(P_all, c) < radius_m**2
        if inside.sum() < min_pixels // 2:
            break
        c_new = P_all[inside].mean(axis=0)
        done = np.linalg.norm(c_new - c) < 2e-4
        c = c_new
        if done:
            break
    return c
