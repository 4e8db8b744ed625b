"""``featmap demo`` (interim): score a small hand sample that the project generates itself.

The full demo (objects and hands through the trained estimators) replaces this module; until
then the main-job command runs the published-format hand evaluator end to end on a seeded
sample: plausible NYU hands (14 joints, (u, v, d) with NYU's camera) and noisy "predictions".
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from featmap_ros.atomic import write_json, write_text
from featmap_ros.commands.eval_published import evaluate_hands, format_hand_table
from featmap_ros.data.specs import hand_dataset
from featmap_ros.geometry import xyz_to_uvd
from featmap_ros import metrics

#: An open right hand in NYU's 14-joint order, mm, palm centre at the origin (x right, y up).
HAND_TEMPLATE_MM = np.array([
    [-45, 75, 0], [-40, 45, 0],      # pinky tip, mid
    [-18, 95, 0], [-16, 60, 0],      # ring
    [5, 100, 0], [5, 65, 0],         # middle
    [28, 92, 0], [26, 60, 0],        # index
    [75, 40, -10], [60, 15, -5],     # thumb tip, mid
    [35, -15, 0],                    # thumb root
    [-30, -35, 0], [20, -40, 0],     # palm (wrist side)
    [0, 0, 0],                       # palm centre
], dtype=np.float64)


def make_hand_sample(n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ground truth and noisy predictions in NYU's published (u, v, d) format.

    Returns:
        (gt_uvd, pred_uvd), each (n_frames, 14, 3) float64: u, v pixels, d mm.
    """
    rng = np.random.default_rng(seed)
    spec = hand_dataset("nyu")
    scale = rng.uniform(0.85, 1.15, (n_frames, 1, 1))
    curl = rng.uniform(0.0, 0.5, (n_frames, 1, 1)) * np.array([1, 0.5] * 4 + [0.3, 0.2, 0, 0, 0, 0])[None, :, None]
    hand = HAND_TEMPLATE_MM[None] * scale
    hand = hand + curl * np.array([0.0, -60.0, -50.0])  # fingers bend down and towards the camera
    R = Rotation.from_euler("zyx", rng.uniform([-0.6, -0.5, -0.4], [0.6, 0.5, 0.4], (n_frames, 3))).as_matrix()
    centre = np.stack([rng.uniform(-120, 120, n_frames), rng.uniform(-80, 80, n_frames), rng.uniform(550, 900, n_frames)], axis=1)
    gt_xyz = np.einsum("nij,nkj->nki", R, hand) + centre[:, None, :]
    noise = rng.normal(0.0, 4.5, gt_xyz.shape) * rng.uniform(0.5, 2.0, (n_frames, 1, 1))
    outlier = rng.random((n_frames, 14, 1)) < 0.02
    noise = noise + outlier * rng.normal(0.0, 30.0, gt_xyz.shape)
    pred_xyz = gt_xyz + noise
    to_uvd = lambda xyz: xyz_to_uvd(xyz, spec.fx, spec.fy, spec.cx, spec.cy, y_up=spec.y_up)  # noqa: E731
    return to_uvd(gt_xyz), to_uvd(pred_xyz)


def _published_text(uvd: np.ndarray) -> str:
    return "".join(" ".join(f"{v:.3f}" for v in frame.ravel()) + "\n" for frame in uvd)


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the embedded demo (interim: the hand evaluator on a generated sample)")
    p.add_argument("--out", type=Path, default=Path("featmap_out/demo"), help="output folder (default: ./featmap_out/demo)")
    p.add_argument("--frames", type=int, default=500, help="frames in the generated sample")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sample")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    gt_uvd, pred_uvd = make_hand_sample(max(1, args.frames), args.seed)
    gt_path, pred_path = out / "hand_sample_gt.txt", out / "hand_sample_pred.txt"
    write_text(gt_path, _published_text(gt_uvd))
    write_text(pred_path, _published_text(pred_uvd))
    report = evaluate_hands(pred_path, gt_path, "nyu")
    print(format_hand_table(report))
    write_json(out / "hand_metrics.json", report)
    curve = report["max_frame_curve"]
    metrics.plot_max_frame_curves(
        {f"generated sample ({report['mean_mm']:.2f} mm)": (np.array(curve["thresholds_mm"]), np.array(curve["fraction"]))},
        out / "hand_curve.png",
        title=f"featmap demo: {report['frames']} generated NYU-format frames",
    )
    print(f"wrote {out.resolve()}/: hand_sample_gt.txt, hand_sample_pred.txt, hand_metrics.json, hand_curve.png")
    return 0
