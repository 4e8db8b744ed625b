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

import copy
import dataclasses
import io
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from featmap_ros.crops import DepthCropTransform, depth_crop_transform
from featmap_ros.errors import InputError
from featmap_ros.geometry import check_K
from featmap_ros.onnx_export import DEFAULT_RUNTIME, INPUT_NAME, OPSET, OUTPUT_NAME, RUNTIMES, OrtRunner, ort_or_torch

log = logging.getLogger(__name__)

#: value of the checkpoint's ``format`` field.
CHECKPOINT_FORMAT = "featmap_ros.hand_centre/1"
#: where the bundled weights live.
BUNDLED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "hand_centre.pt"
#: :func:`localise_hand` samples every LOCALISE_STRIDE-th row and column of the depth map.
LOCALISE_STRIDE = 2


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


def crop_depth_at(depth_m: np.ndarray, center_c_m: np.ndarray, K: np.ndarray, cube_m: float = 0.3,
                  size: int = 128) -> tuple[np.ndarray, DepthCropTransform]:
    """:func:`featmap_ros.crops.crop_depth` (no rotation), at the cost of the crop, not of the frame.

    ``crop_depth`` replaces invalid values (non-finite, <= 0) in the whole frame before its
    nearest-neighbour warp; a nearest-neighbour warp only copies values, so warping first and
    cleaning the (size, size) result gives the same crop (``test_hand_centre`` checks they are
    equal) without a pass over the frame. The run-time hand path crops four times per frame.

    Args:
        depth_m: (H, W) depth along z, metres, 0 (or non-finite) = invalid.
        center_c_m: (3,) cube centre, camera optical frame, metres.
        K: (3, 3) intrinsics, pixels.
        cube_m: cube side, metres.
        size: crop side, pixels.

    Returns:
        crop (size, size) float32 in [-1, 1] (+1 = back of the cube or invalid) and its
        :class:`~featmap_ros.crops.DepthCropTransform`.

    Raises:
        InputError: bad depth map, intrinsics, centre, cube or size.
    """
    d = np.asarray(depth_m)
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] == 0:
        raise InputError(f"depth_m: expected (H, W), got shape {d.shape}")
    T = depth_crop_transform(center_c_m, K, cube_m, size)
    if d.dtype != np.float32:  # crop_depth warps float32 values too
        d = d.astype(np.float32)
    elif not d.flags.c_contiguous:
        d = np.ascontiguousarray(d)
    warped = cv2.warpAffine(d, T.M_img2crop, (T.size, T.size), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    with np.errstate(invalid="ignore"):  # NaN compares False: invalid
        ok = (warped > 0) & np.isfinite(warped)
    n = (warped - np.float32(T.center_c_m[2])) / np.float32(T.cube_m / 2.0)
    return np.where(ok, np.clip(n, -1.0, 1.0), 1.0).astype(np.float32), T


def crop_for_refiner(depth_m: np.ndarray, K: np.ndarray, center_c_m: np.ndarray, cfg: HandCentreNetConfig) -> np.ndarray:
    """The refiner's input: the DeepPrior crop around ``center_c_m`` (:func:`crop_depth_at`).

    Returns:
        (S, S) float32 in [-1, 1].

    Raises:
        InputError: bad depth map, intrinsics or centre.
    """

    crop, _ = crop_depth_at(depth_m, center_c_m, K, cfg.cube_m, cfg.crop_size)
    return crop


def fold_batch_norm(net: HandCentreNet) -> HandCentreNet:
    """An inference copy of ``net`` with each BatchNorm folded into the convolution before it
    (the running statistics become the convolution's scale and bias): the same function in
    eval mode, up to float rounding, with a third fewer layers to call per crop."""
    out = copy.deepcopy(net).eval()
    layers, new = list(out.features), []
    for m in layers:
        if isinstance(m, nn.BatchNorm2d) and new and isinstance(new[-1], nn.Conv2d):
            new[-1] = fuse_conv_bn_eval(new[-1], m)
        else:
            new.append(m)
    out.features = nn.Sequential(*new)
    return out


def refiner_onnx_bytes(net: HandCentreNet, cfg: HandCentreNetConfig) -> bytes:
    """``net`` (an eval copy) as a serialised ONNX graph: input ``crops`` (N, 1, S, S) float32
    with a dynamic N, output ``pose`` (N, 3), as :mod:`featmap_ros.onnx_export` names them."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(copy.deepcopy(net).float().cpu().eval(), (torch.zeros(1, 1, cfg.crop_size, cfg.crop_size),), buf,
                          dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, do_constant_folding=True)
    return buf.getvalue()


class HandCentreRefiner:
    """A trained :class:`HandCentreNet` and how to apply it to depth frames (CPU).

    Inference runs a copy of ``net`` made here, with its BatchNorms folded
    (:func:`fold_batch_norm`), in torch or, with ``runtime="onnxruntime"``, exported to ONNX and
    run by ONNX Runtime (the default; where it is missing or fails, torch, logged once): a
    refiner made from a net is not affected by later changes to that net.
    """

    def __init__(self, net: HandCentreNet, cfg: HandCentreNetConfig, meta: dict | None = None,
                 runtime: str = DEFAULT_RUNTIME) -> None:
        if runtime not in RUNTIMES:
            raise InputError(f"runtime: must be one of {list(RUNTIMES)}, got {runtime!r}")
        self.net = net.eval()
        self.cfg = cfg
        self.meta = dict(meta or {})
        self.runtime = runtime
        self._net_infer = fold_batch_norm(self.net)
        self._ort, self.runtime_fallback = None, ""
        if runtime == "onnxruntime":
            self._ort, self.runtime_fallback = ort_or_torch(lambda: OrtRunner(refiner_onnx_bytes(self._net_infer, cfg)),
                                                            "hand-centre refiner")
            if self._ort is None:
                self.runtime = "torch"

    @classmethod
    def from_file(cls, path: str | Path = BUNDLED_WEIGHTS, runtime: str = DEFAULT_RUNTIME) -> "HandCentreRefiner":
        """Load weights written by :func:`train` (``featmap train hand-centre``); ``runtime``: see the class.

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
        return cls(net, cfg, meta, runtime=runtime)

    def predict_offsets(self, crops: np.ndarray) -> np.ndarray:
        """(B, S, S) float32 crops -> (B, 3) float64 offsets / (cube / 2), clipped to [-1, 1]."""
        x = np.ascontiguousarray(crops, dtype=np.float32)[:, None]
        if self._ort is not None:
            try:
                return np.clip(self._ort.run(x).astype(np.float64), -1.0, 1.0)
            except Exception as e:  # noqa: BLE001 - a failing session: torch from now on, said once
                self._ort, self.runtime = None, "torch"
                self.runtime_fallback = f"hand-centre refiner: ONNX Runtime failed ({type(e).__name__}: {e}): torch from now on"
                log.warning(self.runtime_fallback)
        with torch.inference_mode():
            y = self._net_infer(torch.from_numpy(x)).numpy().astype(np.float64)
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
        return self._refine([depth_m], K, [center_c_m], iterations, "depth_m", "center_c_m")[0]

    def refine_batch(self, depths_m: Sequence[np.ndarray], K: np.ndarray, centers_c_m: Sequence[np.ndarray],
                     iterations: int = 3) -> list[np.ndarray]:
        """:meth:`refine` for several frames of one camera: one network call per round for all
        frames still moving (the rounds of one frame depend on each other, the frames do not).

        Args:
            depths_m: N (H, W) depth maps, metres.
            K: (3, 3) intrinsics, pixels.
            centers_c_m: N (3,) starts, camera optical frame, metres.
            iterations: rounds.

        Returns:
            N (3,) float64 centres, camera optical frame, metres, as :meth:`refine` gives them.

        Raises:
            InputError: bad depth map, intrinsics, centre (naming its index) or iteration count.
        """
        return self._refine(depths_m, K, centers_c_m, iterations, "depths_m[{i}]", "centers_c_m[{i}]")

    def _refine(self, depths_m, K, centers_c_m, iterations: int, d_name: str, c_name: str) -> list[np.ndarray]:
        if not isinstance(iterations, (int, np.integer)) or iterations < 0:
            raise InputError(f"iterations: expected an int >= 0, got {iterations!r}")
        if len(depths_m) != len(centers_c_m):
            raise InputError(f"centers_c_m: {len(centers_c_m)} centres for {len(depths_m)} depth maps")
        K = check_K(K)
        cs = []
        for i, (d, c) in enumerate(zip(depths_m, centers_c_m)):
            shape = np.shape(d)
            if len(shape) != 2 or 0 in shape:
                raise InputError(f"{d_name.format(i=i)}: expected (H, W), got shape {shape}")
            c = np.asarray(c, dtype=np.float64).reshape(-1)
            if c.size != 3 or not np.all(np.isfinite(c)):
                raise InputError(f"{c_name.format(i=i)}: expected 3 finite values, got {c.tolist()}")
            if c[2] <= 1e-3:
                raise InputError(f"{c_name.format(i=i)}: hand centre must be in front of the camera (z > 0), got z = {c[2]:.4f} m")
            cs.append(c)
        half = self.cfg.cube_m / 2.0
        active = list(range(len(cs)))
        for _ in range(int(iterations)):
            if not active:
                break
            crops = np.stack([crop_for_refiner(depths_m[i], K, cs[i], self.cfg) for i in active])
            moving = []
            for i, off in zip(active, self.predict_offsets(crops)):
                c_new = cs[i] + off * half
                if np.all(np.isfinite(c_new)) and c_new[2] > 0.05:  # else stop at the last good centre
                    cs[i] = c_new
                    moving.append(i)
            active = moving
        return cs


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
    stride: int = LOCALISE_STRIDE,
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

    Speed: the frame-wide passes (range, closest surface, the band's box) look at every
    ``stride``-th row and column; inside the box, which pixels make the blob (closest surface,
    depth steps, components) is decided at full resolution, and its geometry (axis, ends, mean
    shift) is computed from every ``stride``-th pixel of it. With the default stride 2 the
    answer moves by 0.3 mm (median; 1.6 mm at most over 40 real-like frames) from stride 1's,
    which equals the every-pixel localiser, at a third of the time.

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
        stride: sampling step in pixels, >= 1 (1: every pixel everywhere).

    Returns:
        (3,) float64 centre, camera optical frame, metres; None when nothing is in range.

    Raises:
        InputError: bad depth map, intrinsics or stride.
    """

    K = check_K(K)
    d_in = np.asarray(depth_m)
    if d_in.ndim != 2 or d_in.size == 0:
        raise InputError(f"depth_m: expected (H, W), got shape {d_in.shape}")
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise InputError(f"stride: expected an int >= 1, got {stride!r}")
    if d_in.dtype.kind != "f":
        d_in = d_in.astype(np.float64)
    H, W = d_in.shape
    s = int(stride)
    # 1. Where to look, from the samples: the closest surface and the box of the depth band behind it.
    d_s = d_in[::s, ::s].astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN compares False: invalid, as 0 is
        valid_s = (d_s > near_m) & (d_s < far_m)
    vals = d_s[valid_s]
    k_s = max(-(-min_pixels // (s * s)), 1)  # min_pixels in samples, rounded up
    if vals.size < k_s:
        return None
    dmin = float(np.partition(vals, k_s - 1)[k_s - 1])
    with np.errstate(invalid="ignore"):
        mask_s = valid_s & (d_s < dmin + depth_band_m)
    bx, by, bw, bh = cv2.boundingRect(mask_s.view(np.uint8))  # of the non-zero samples
    # 2. The blob at full resolution in that box (+ one stride, + one pixel for the depth steps):
    # which pixels belong to the hand is decided as every pixel sees it (a coarser grid breaks a
    # noisy far hand apart and lets a diagonal depth step leak), for the cost of the box.
    y0, y1 = max((by - 1) * s, 0), min((by + bh) * s + 1, H)
    x0, x1 = max((bx - 1) * s, 0), min((bx + bw) * s + 1, W)
    d = d_in[y0:y1, x0:x1].astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = (d > near_m) & (d < far_m)
    if s > 1:  # the closest surface as every pixel sees it (all of them are in the box)
        vals = d[valid]
        if vals.size < min_pixels:
            return None
        # the min_pixels smallest lie at or below the samples' figure whenever that many do
        low = vals[vals <= dmin]
        dmin = float(np.partition(low if low.size >= min_pixels else vals, min_pixels - 1)[min_pixels - 1])
    d[~np.isfinite(d)] = 0.0
    mask = valid & (d < dmin + depth_band_m)
    # split at depth steps so that an arm or body behind the hand is not the same blob
    n_lab, lab = cv2.connectedComponents((mask & ~_depth_steps(d, 0.02)).astype(np.uint8), connectivity=4)
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
    best = int(np.argmax(sizes))
    # 3. Its geometry from the samples (every s-th pixel of the box; all pixels of a blob too
    # thin to have min_pixels // 2 of them on the grid): means over thousands of points.
    g = s if np.count_nonzero(lab[::s, ::s] == best) * s * s >= min_pixels // 2 else 1
    d_g, lab_g, mask_g = d[::g, ::g], lab[::g, ::g], mask[::g, ::g]
    v, u = np.nonzero(lab_g == best)
    z = d_g[v, u]
    u, v = u * g + x0, v * g + y0
    P = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)
    c = P.mean(axis=0)
    if refine and sizes[best] >= min_pixels:
        va, ua = np.nonzero(mask_g)
        za = d_g[va, ua]
        ua, va = ua * g + x0, va * g + y0
        P_all = np.stack([(ua - K[0, 2]) * za / K[0, 0], (va - K[1, 2]) * za / K[1, 1], za], axis=1)
        leaves = (ua <= 2) | (va <= 2) | (ua >= W - 3) | (va >= H - 3) | (za > dmin + depth_band_m - 0.03)
        min_points = -(-(min_pixels // 2) // (g * g))  # min_pixels // 2 in points, rounded up
        c = _hand_end_centre(P, c, hand_radius_m, min_points, P_all, P_all[leaves], max_reach_m)
    c = c + np.array([0.0, 0.0, surface_offset_m])
    return c


#: DeepPrior++'s refined centre of mass: the cube side of the first round and how much it shrinks by the last.
COM_CUBE_M = 0.25
COM_ITERATIONS = 3
COM_SHRINK = 0.1


def refined_com_m(depth_m: np.ndarray, K: np.ndarray, seed_c_m: np.ndarray, cube_m: float = COM_CUBE_M,
                  iterations: int = COM_ITERATIONS, shrink: float = COM_SHRINK, min_pixels: int = 30, stride: int = 2) -> np.ndarray:
    """The hand's centre as DeepPrior++ takes it: the centre of mass of the depth inside a cube,
    re-centred on that mass a few times (``refineCoMIterative``).

    Round k keeps the pixels whose depth lies within the current centre's z +- side/2 and whose
    pixel lies in the cube's projected x-y window, the side shrinking linearly from ``cube_m`` to
    ``cube_m * (1 - shrink)``; the mean of their 3D points is the next centre. Training crops
    (seeded at the true palm centre) and run-time crops (seeded at the localiser's answer) use
    this same function, so the network sees the same centring in both.

    Args:
        depth_m: (H, W) depth along z, metres, 0 / non-finite = invalid.
        K: (3, 3) intrinsics, pixels.
        seed_c_m: (3,) start, camera optical frame, metres.
        cube_m: cube side of the first round, metres.
        iterations: rounds (0 returns the seed).
        shrink: relative shrink of the side by the last round.
        min_pixels: a round with fewer pixels (sampled) stops at the last centre.
        stride: use every ``stride``-th row and column.

    Returns:
        (3,) float64 centre, camera optical frame, metres.

    Raises:
        InputError: bad depth map, intrinsics, seed or parameters.
    """
    K = check_K(K)
    d = np.asarray(depth_m)
    if d.ndim != 2 or d.size == 0:
        raise InputError(f"depth_m: expected (H, W), got shape {d.shape}")
    c = np.asarray(seed_c_m, dtype=np.float64).reshape(-1)
    if c.size != 3 or not np.all(np.isfinite(c)) or c[2] <= 1e-3:
        raise InputError(f"seed_c_m: expected 3 finite values with z > 0, got {c.tolist()}")
    if not (np.isfinite(cube_m) and cube_m > 0) or not 0.0 <= shrink < 1.0:
        raise InputError(f"cube_m must be positive and shrink in [0, 1), got {cube_m}, {shrink}")
    if not isinstance(iterations, (int, np.integer)) or iterations < 0 or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise InputError(f"iterations (>= 0) and stride (>= 1) must be ints, got {iterations!r}, {stride!r}")
    H, W = d.shape
    for k in range(int(iterations)):
        side = cube_m * (1.0 - shrink * k / max(iterations - 1, 1))
        half = side / 2.0
        u0 = int(np.floor(K[0, 0] * (c[0] - half) / c[2] + K[0, 2]))
        u1 = int(np.ceil(K[0, 0] * (c[0] + half) / c[2] + K[0, 2])) + 1
        v0 = int(np.floor(K[1, 1] * (c[1] - half) / c[2] + K[1, 2]))
        v1 = int(np.ceil(K[1, 1] * (c[1] + half) / c[2] + K[1, 2])) + 1
        u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, W), min(v1, H)
        if u1 <= u0 or v1 <= v0:
            break
        win = np.asarray(d[v0:v1:stride, u0:u1:stride], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            sel = np.isfinite(win) & (win > c[2] - half) & (win < c[2] + half)
        if np.count_nonzero(sel) < min_pixels:
            break
        vv, uu = np.nonzero(sel)
        z = win[vv, uu]
        uu = uu * stride + u0
        vv = vv * stride + v0
        c = np.array([np.mean((uu - K[0, 2]) * z) / K[0, 0], np.mean((vv - K[1, 2]) * z) / K[1, 1], np.mean(z)])
    return c


def _depth_steps(d: np.ndarray, step_m: float) -> np.ndarray:
    """(H, W) bool: pixels of the (H, W) depth ``d`` (metres) with a 4-neighbour more than ``step_m`` away."""
    dz = np.zeros(d.shape, bool)
    jump_u = np.abs(d[:, 1:] - d[:, :-1]) > step_m
    jump_v = np.abs(d[1:, :] - d[:-1, :]) > step_m
    dz[:, 1:] |= jump_u
    dz[:, :-1] |= jump_u
    dz[1:, :] |= jump_v
    dz[:-1, :] |= jump_v
    return dz


def _tail_thresholds(s: np.ndarray, q: float) -> tuple[float, float]:
    """Thresholds that select the same tails of (N,) ``s`` as ``s <= np.percentile(s, 100 q)``
    and ``s >= np.percentile(s, 100 (1 - q))`` (linear interpolation), with one partition.

    The lower percentile lies in [a[i], a[i + 1]) of the sorted values a, i = floor((N - 1) q),
    so ``s <= a[i]`` selects the same values; the upper one lies in (a[j], a[j + 1]],
    j = floor((N - 1) (1 - q)), or is a[j] when it falls on it exactly.
    """
    n = len(s)
    i = int(np.floor((n - 1) * q))
    pos = (n - 1) * (1.0 - q)
    j = int(np.floor(pos))
    kth = sorted({i, j, min(j + 1, n - 1)})
    a = np.partition(s, kth)
    return float(a[i]), float(a[j] if pos == j else a[min(j + 1, n - 1)])


def _sq_dist(P: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances of (N, 3) points to one (3,) point: (N,)."""
    D = P - c
    return np.einsum("ij,ij->i", D, D)


def _hand_end_centre(
    P: np.ndarray,
    c0: np.ndarray,
    radius_m: float,
    min_points: int,
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
    for any hand size) are left out of it. Fewer than ``min_points`` points in a sphere stop it.

    Args:
        P: (N, 3) the blob's points, metres.
        c0: (3,) their mean.
        P_all: (M, 3) all in-range points, metres.
        cut: (L, 3) points where the surface leaves the image or the depth band.

    Returns:
        (3,) float64, metres.
    """
    X = P - c0
    Xs = X[:: max(1, len(X) // 4000)]
    axis = np.linalg.eigh(Xs.T @ Xs)[1][:, -1]  # principal axis (its sign does not matter below)
    s = X @ axis
    lo, hi = _tail_thresholds(s, 0.03)
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
    c = P[near_tip].mean(axis=0) if near_tip.sum() >= min_points else c0
    # The mean shift looks at the points of a ball of twice the radius around where it
    # started, gathered again only when the centre has moved more than a radius from there:
    # every point within ``radius_m`` of the centre is in that ball, so the answer is the same
    # as over all points, for a fraction of the distance computations.
    ball_c, ball = c, P_all[_sq_dist(P_all, c) < (2.0 * radius_m) ** 2]
    for _ in range(10):
        if _sq_dist(ball_c[None], c)[0] > radius_m**2:
            ball_c, ball = c, P_all[_sq_dist(P_all, c) < (2.0 * radius_m) ** 2]
        inside = _sq_dist(ball, c) < radius_m**2
        n_in = np.count_nonzero(inside)
        if n_in < min_points:
            break
        c_new = (inside @ ball) / n_in  # the mean of the points inside, without gathering them
        done = np.linalg.norm(c_new - c) < 2e-4
        c = c_new
        if done:
            break
    return c

