"""Speed of the hand depth pipeline (used by ``featmap bench render``).

Each figure is measured by running the operation repeatedly for ``seconds`` in this process on
the CPU (one thread of numpy/OpenCV work, no GPU) and counting completions.
"""
from __future__ import annotations

import time

import numpy as np


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
    from featmap_ros.crops import crop_depth, joints_to_crop, localise_hand
    from featmap_ros.data.hand_samples import SyntheticHandCrops
    from featmap_ros.data.nyu import nyu_K
    from featmap_ros.data.specs import NYU_EVAL_JOINTS
    from featmap_ros.render.depth_sensor import render_pair
    from featmap_ros.render.hand import sample_hand
    from featmap_ros.render.hand_depth import render_hand_depth

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
