"""Benchmark helpers: call latency (:func:`latency_ms`), hand depth rendering and cropping rates
(``featmap bench render``), and the run-time hand centre error, localiser alone vs the learned
refinement (``featmap bench hand-centre``).

Each figure is measured by running the operation repeatedly for ``seconds`` in this process on
the CPU (one thread of numpy/OpenCV work, no GPU) and counting completions.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from featmap_ros.crops import crop_depth, joints_to_crop
from featmap_ros.data.hand_samples import SyntheticHandCrops
from featmap_ros.data.nyu import nyu_K
from featmap_ros.data.specs import NYU_EVAL_JOINTS
from featmap_ros.errors import InputError
from featmap_ros.estimators import localiser_kwargs
from featmap_ros.hand_localiser import BUNDLED_WEIGHTS, HandCentreRefiner, localise_hand
from featmap_ros.render.depth_sensor import render_pair, sample_pair
from featmap_ros.render.hand import PALM_CENTER, sample_hand
from featmap_ros.render.hand_depth import render_hand_depth
from featmap_ros.training.hand_centre import evaluate_centres


def _rate(fn, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def run_hand_render_bench(seconds: float = 5.0, seed: int = 0) -> dict:
    """Measure hand depth rendering and DeepPrior cropping rates.

    Args:
        seconds: time spent on each measurement.
        seed: seed of the random hands.

    Returns:
        dict of frames per second: ``depth_640x480_fps`` (clean hand + forearm stub, analytic
        capsule ray caster), ``real_like_pair_fps`` (synthetic + real-like scene through the
        sensor model), ``crop_normalise_128_fps`` (crop + normalise a 640x480 depth map and its
        14 joints), ``localise_fps`` (run-time hand localiser on a real-like frame),
        ``synthetic_sample_fps`` (a whole training sample: hand, render, augmented crop).
    """

    K = nyu_K()
    rng = np.random.default_rng(seed)
    hands = [sample_hand(rng, K, 640, 480) for _ in range(32)]
    i = [0]

    def render():
        render_hand_depth(hands[i[0] % 32], K, 640, 480)
        i[0] += 1

    def pair():
        render_pair(hands[i[0] % 32], K, 640, 480, rng)
        i[0] += 1

    depth = render_hand_depth(hands[0], K, 640, 480)
    J = hands[0].joints_c_m()
    center = J[32]
    J14 = J[list(NYU_EVAL_JOINTS)]

    def crop():
        _, T = crop_depth(depth, center, K, 0.3, 128)
        joints_to_crop(J14, T)

    _, real = render_pair(hands[1], K, 640, 480, rng)

    def localise():
        localise_hand(real, K)

    ds = SyntheticHandCrops(size=128, seed=seed)

    def sample():
        ds.sample(rng)

    return {
        "depth_640x480_fps": _rate(render, seconds),
        "real_like_pair_fps": _rate(pair, seconds),
        "crop_normalise_128_fps": _rate(crop, seconds),
        "localise_fps": _rate(localise, seconds),
        "synthetic_sample_fps": _rate(sample, seconds),
    }


def run_hand_detector_bench(frames: int = 300, seed: int = 1, progress: bool = True) -> dict:
    """Accuracy of the run-time hand localiser (``hand_localiser.localise_hand``) on real-like frames.

    Frames come from ``depth_sensor.sample_pair`` (hand, forearm, upper arm, body, wall, floor,
    clutter, sensor noise and dropout); the error is the 3D distance from the localiser's centre
    to the palm-centre joint (PALM_3, the crop centre used in training).

    Returns:
        dict: frames, found (frames with an answer), mean / median / p90 error in mm over the
        found frames, and the fractions of all frames within 15 mm and 25 mm.
    """
    from tqdm import tqdm

    K = nyu_K()
    rng = np.random.default_rng(seed)
    errs = []
    t0 = time.perf_counter()
    for _ in tqdm(range(frames), desc="hand localiser", unit="frame", disable=not progress):
        hand, _, real = sample_pair(rng, K)
        c = localise_hand(real, K)
        errs.append(np.inf if c is None else float(np.linalg.norm(c - hand.joints_c_m()[PALM_CENTER])))
    e = np.array(errs) * 1000.0
    found = np.isfinite(e)
    return {
        "frames": frames,
        "found": int(found.sum()),
        "mean_error_mm": float(e[found].mean()) if found.any() else float("nan"),
        "median_error_mm": float(np.median(e)),
        "p90_error_mm": float(np.percentile(e, 90)),
        "within_15mm": float((e <= 15.0).mean()),
        "within_25mm": float((e <= 25.0).mean()),
        "seconds": time.perf_counter() - t0,
    }


def run_hand_centre_bench(frames: int = 300, seed: int = 1, refiner=None, iterations: int = 3, progress: bool = True) -> dict:
    """Run-time hand centre on real-like frames: the localiser alone vs with the learned refinement.

    Same frames and error as :func:`run_hand_detector_bench` (``sample_pair`` from
    ``np.random.default_rng(seed)``, 3D distance to the palm-centre joint), measured for
    ``hand_localiser.localise_hand`` and for ``hand_localiser.HandCentreRefiner.refine`` started from it.

    Args:
        frames: real-like frames.
        seed: their seed; the refiner's training seeds (``train_config.seed`` and ``+ 1``) are refused.
        refiner: a ``HandCentreRefiner`` or a weights path; None = the bundled weights.
        iterations: refinement rounds.
        progress: show a tqdm bar.

    Returns:
        dict: frames, seed, found, iterations, ``unrefined`` and ``refined``, each with mean /
        median / p90 error in mm (mean over found frames) and fractions within 15 / 25 mm.
    """

    if refiner is None or not isinstance(refiner, HandCentreRefiner):
        refiner = HandCentreRefiner.from_file(BUNDLED_WEIGHTS if refiner is None else refiner)
    check_eval_seed(refiner, seed)
    t0 = time.perf_counter()
    out = evaluate_centres(refiner, frames, seed, iterations, progress)
    out["seconds"] = time.perf_counter() - t0
    return out


def latency_ms(fn, n: int, warmup: int = 3) -> np.ndarray:
    """Wall-clock milliseconds of ``n`` calls of ``fn()`` after ``warmup`` calls (for benchmarks)."""
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000.0)
    return np.asarray(times)


def check_eval_seed(refiner: HandCentreRefiner, seed: int) -> None:
    """Raise InputError when ``seed`` is one of the refiner's training or validation seeds."""
    tc = refiner.meta.get("train_config") or {}
    used = {tc.get("seed"), None if tc.get("seed") is None else tc["seed"] + 1} - {None}
    if seed in used:
        raise InputError(f"seed: {seed} was used to train these weights (train_config.seed = {tc.get('seed')}; training and validation use seed and seed + 1)")


def run_hand_path_bench(estimator, frames: int = 30, seed: int = 1, rounds: int = 3) -> dict:
    """Per-frame time of a :class:`~featmap_ros.estimators.HandPoseEstimator` and of its stages,
    on real-like frames (``sample_pair`` from ``np.random.default_rng(seed)``, 640x480 float32).

    Per frame, ``rounds`` times over all frames: the stages one after the other, as the estimator
    runs them (``localise_hand`` with the estimator's localiser arguments; the learned refinement
    from its centre, when the estimator has a refiner; ``estimate_batch`` at the refined centre:
    crop, f, g, h, joints), then the whole ``estimate`` call. Each is timed in wall-clock time and
    in CPU time of the process (all its threads: on a machine shared with other jobs, CPU time
    leaves out the time the process waited for a core, not the cache misses the others cause).

    Args:
        estimator: the hand estimator (its device and torch threads are used as they are).
        frames: real-like frames.
        seed: their seed.
        rounds: passes over the frames.

    Returns:
        dict: frames, rounds, seed, found (frames with a hand), torch_threads, and per part
        (``estimate``, ``localise``, ``refine``, ``crop_and_network``) ``<part>_ms`` and
        ``<part>_cpu_ms``, each {p50, p95, mean}.
    """
    if frames < 1 or rounds < 1:
        raise InputError(f"frames and rounds: expected >= 1, got {frames}, {rounds}")
    K = nyu_K()
    rng = np.random.default_rng(seed)
    depths = [sample_pair(rng, K)[2].astype(np.float32) for _ in range(frames)]
    kw = localiser_kwargs(estimator.meta)
    refiner = estimator.centre_refiner
    estimator.warmup()
    parts = ("estimate", "localise", "refine", "crop_and_network")
    wall: dict[str, list[float]] = {k: [] for k in parts}
    cpu: dict[str, list[float]] = {k: [] for k in parts}

    def timed(part: str, fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall[part].append(time.perf_counter() - t)
        cpu[part].append(time.process_time() - c)
        return out

    found = 0
    for r in range(rounds):
        for d in depths:
            c = timed("localise", lambda: localise_hand(d, K, **kw))
            if c is not None:
                if refiner is not None:
                    c = timed("refine", lambda: refiner.refine(d, K, c))
                timed("crop_and_network", lambda: estimator.estimate_batch([d], K, centers_m=[c]))
            pose = timed("estimate", lambda: estimator.estimate(d, K))
            found += int(r == 0 and pose is not None)

    def stats(t: list[float]) -> dict:
        ms = np.asarray(t, dtype=np.float64) * 1000.0
        if not len(ms):
            return {"p50": 0.0, "p95": 0.0, "mean": 0.0}
        return {"p50": float(np.median(ms)), "p95": float(np.percentile(ms, 95)), "mean": float(ms.mean())}

    out = {"frames": frames, "rounds": rounds, "seed": seed, "found": found, "torch_threads": torch.get_num_threads()}
    for k in parts:
        out[f"{k}_ms"], out[f"{k}_cpu_ms"] = stats(wall[k]), stats(cpu[k])
    return out
