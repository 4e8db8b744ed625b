"""How far a pose sampler is from real hand poses (``featmap bench hand-poses``).

For each real frame (NYU's 14 test joints: an evaluation set, read here only to compare
distributions, never to fit or train), the nearest of ``samples`` poses drawn from a
:data:`featmap_ros.render.depth_sensor.HAND_DOMAINS` entry, after removing position, size and
rotation (similarity Procrustes, no reflection): the mean joint distance of the best match,
in the real hand's millimetres. A sampler whose poses are like real ones gives small distances;
one that misses real poses gives large ones for them. As a floor: the same distance from one
NYU test subject to the other.
"""
from __future__ import annotations

import numpy as np

from featmap_ros.data.hand_predictions import read_uvd_file
from featmap_ros.data.nyu import eval_joints, nyu_K
from featmap_ros.errors import InputError
from featmap_ros.render.depth_sensor import hand_domain, sample_domain_hand
from featmap_ros.render.hand_pose_fit import load_table

#: NYU test subjects: frames [0, 2440) and [2440, 8252).
NYU_SUBJECT_SPLIT = 2440


def nyu_label_joints_m(path) -> np.ndarray:
    """NYU's published (u, v, d) label file -> (N, 14, 3) float64, camera optical frame (y down), metres."""
    uvd = read_uvd_file(path, 14)
    K = nyu_K()
    z = uvd[..., 2] / 1000.0
    return np.stack([(uvd[..., 0] - K[0, 2]) * z / K[0, 0], (uvd[..., 1] - K[1, 2]) * z / K[1, 1], z], axis=-1)


def _normalise(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, J, 3) -> centred poses of unit RMS radius, and the (N,) radii."""
    X = P - P.mean(axis=1, keepdims=True)
    s = np.sqrt(np.mean(np.sum(X * X, axis=2), axis=1))
    if np.any(s <= 0):
        raise InputError("pose with all joints at one point")
    return X / s[:, None, None], s


def nearest_pose_distance_mm(real_m: np.ndarray, samples_m: np.ndarray, chunk: int = 50) -> np.ndarray:
    """For each real pose, the mean joint distance (mm, the real pose's scale) to the closest
    sample after similarity alignment (rotation without reflection, scale, translation).

    Args:
        real_m: (N, J, 3) poses, metres.
        samples_m: (M, J, 3) poses, metres (same joints).

    Returns:
        (N,) float64 millimetres.
    """
    A, sa = _normalise(np.asarray(real_m, dtype=np.float64))
    B, _ = _normalise(np.asarray(samples_m, dtype=np.float64))
    if A.shape[1:] != B.shape[1:]:
        raise InputError(f"poses: real {A.shape[1:]} and samples {B.shape[1:]} have other joints")
    out = np.empty(len(A))
    for i0 in range(0, len(A), chunk):
        a = A[i0:i0 + chunk]
        H = np.einsum("njc,mjd->nmcd", a, B)  # sum_j a_j b_j^T: the rotation B -> a maximises tr(R H^T)
        U, S, Vt = np.linalg.svd(H)
        d = np.sign(np.linalg.det(U @ Vt))
        S[..., 2] *= d
        U[..., :, 2] *= d[..., None]
        R = U @ Vt  # (n, m, 3, 3): rotation taking b onto a
        scale = S.sum(-1) / B.shape[1]  # optimal scale: tr(R M^T) / |b|^2, and |b|^2 = J at unit RMS radius
        Bm = np.einsum("nmcd,mjd->nmjc", R, B) * scale[..., None, None]
        err = np.linalg.norm(a[:, None] - Bm, axis=-1).mean(-1)  # (n, m)
        out[i0:i0 + chunk] = err.min(axis=1) * sa[i0:i0 + chunk] * 1000.0
    return out


#: per finger (pinky, ring, middle, index, thumb): (proximal point, middle point, tip) among NYU's 14
#: evaluation joints; fingers start at the palm centre, the thumb at its root (MCP).
CURL_JOINTS = ((13, 1, 0), (13, 3, 2), (13, 5, 4), (13, 7, 6), (10, 9, 8))


def finger_curl_deg(joints_m: np.ndarray) -> np.ndarray:
    """(N, 14, 3) NYU-layout joints -> (N, 5) curl of each finger, degrees: the angle between
    (proximal -> middle point) and (middle point -> tip); free of position, rotation and size,
    and nearly free of where a skeleton puts its joints."""
    J = np.asarray(joints_m, dtype=np.float64)
    out = []
    for a, b, c in CURL_JOINTS:
        u, v = J[:, b] - J[:, a], J[:, c] - J[:, b]
        cos = np.sum(u * v, axis=1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
        out.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.stack(out, axis=1)


def curl_distance_deg(real_m: np.ndarray, samples_m: np.ndarray) -> np.ndarray:
    """(5,) Wasserstein-1 distance (degrees) between the real and the sampled curl of each finger."""
    from scipy.stats import wasserstein_distance

    a, b = finger_curl_deg(real_m), finger_curl_deg(samples_m)
    return np.array([wasserstein_distance(a[:, f], b[:, f]) for f in range(5)])


def domain_poses_m(domain: str, count: int, seed: int) -> np.ndarray:
    """(count, 14, 3) joints of ``count`` hands of a domain in the hand frame, metres (position,
    orientation and size do not matter to :func:`nearest_pose_distance_mm`)."""
    dom = hand_domain(domain)
    table = load_table() if dom.poses == "table" else None
    rng = np.random.default_rng(seed)
    K = nyu_K()
    return np.stack([eval_joints(sample_domain_hand(rng, K, 640, 480, dom, table).joints_c_m()) for _ in range(count)])


def compare_pose_samplers(nyu_labels, domains: list[str], frames: int = 400, samples: int = 2000, seed: int = 0) -> dict:
    """Nearest-pose distances from ``frames`` NYU test frames (evenly spaced) to each domain's sampler,
    and, as a floor, from subject 1's frames to ``samples`` frames of subject 2; and the per-finger
    curl distributions' Wasserstein-1 distance to all NYU test frames (:func:`curl_distance_deg`;
    floor: subject 1 vs subject 2).

    Returns:
        {"frames", "samples", "domains": {name: {"mean_mm", "median_mm", "p90_mm", "curl_w1_deg" (5,)}},
        "nyu_other_subject": {...}}.
    """
    J = nyu_label_joints_m(nyu_labels)
    if len(J) <= NYU_SUBJECT_SPLIT:
        raise InputError(f"{nyu_labels}: {len(J)} frames; the NYU test set has 8252 (two subjects)")
    rng = np.random.default_rng(seed)
    real = J[np.linspace(0, len(J) - 1, frames).astype(int)]

    def stats(d: np.ndarray) -> dict:
        return {"mean_mm": float(d.mean()), "median_mm": float(np.median(d)), "p90_mm": float(np.percentile(d, 90))}

    out = {"frames": int(frames), "samples": int(samples), "domains": {}}
    for name in domains:
        P = domain_poses_m(name, samples, seed)
        out["domains"][name] = stats(nearest_pose_distance_mm(real, P))
        out["domains"][name]["curl_w1_deg"] = curl_distance_deg(J, P).tolist()
    s1 = J[:NYU_SUBJECT_SPLIT][np.linspace(0, NYU_SUBJECT_SPLIT - 1, frames).astype(int)]
    s2 = J[NYU_SUBJECT_SPLIT:][rng.choice(len(J) - NYU_SUBJECT_SPLIT, samples, replace=False)]
    out["nyu_other_subject"] = stats(nearest_pose_distance_mm(s1, s2))
    out["nyu_other_subject"]["curl_w1_deg"] = curl_distance_deg(J[:NYU_SUBJECT_SPLIT], J[NYU_SUBJECT_SPLIT:]).tolist()
    return out
