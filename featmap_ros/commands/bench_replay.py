"""``featmap bench replay``: a long in-process replay, player -> estimator -> evaluator, memory sampled.

    featmap bench replay --task object --frames 100000
    featmap bench replay --task hand --frames 20000 --dataset-root /data/nyu --json replay.json

Each frame goes the way it goes on ROS, without rclpy: the player's messages
(:func:`featmap_ros.ros.bag.frame_messages`) are serialised to CDR and read back (what a
subscriber gets), the estimator node's own callback logic (:class:`featmap_ros.ros.pipeline.ObjectPipeline`
with ground-truth windows, or ``HandPipeline``) turns them into output messages, which go through
CDR again into the evaluator's callbacks (:class:`featmap_ros.ros.online_eval.MessageEvaluator`). The
dataset loops (stamps keep increasing). The process RSS is sampled every ``--sample-every`` frames
(and Python's traced allocations with ``--tracemalloc``, which is slower); the report gives the
growth from the end of the warm-up to the end, frames per second, and the evaluator's summary, and
writes a PNG of memory against frames.
"""
from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from featmap_ros import atomic
from featmap_ros.data import player
from featmap_ros.data.specs import hand_dataset
from featmap_ros.errors import InputError
from featmap_ros.estimators import HandPoseEstimator, ObjectPoseEstimator
from featmap_ros.evaluation.online import jsonable
from featmap_ros.nets import ModelConfig, build_model
from featmap_ros.ros import conversions as conv, online_eval
from featmap_ros.ros.bag import frame_messages
from featmap_ros.ros.msg_defs import featmap_typestore
from featmap_ros.ros.pipeline import HandPipeline, HandSettings, ObjectPipeline, ObjectSettings


def register(sub) -> None:
    p = sub.add_parser("replay", help="long in-process replay (player -> estimator -> evaluator) with memory sampled")
    p.add_argument("--task", choices=("object", "hand"), default="object")
    p.add_argument("--frames", type=int, default=2000, help="frames to replay (the dataset loops)")
    p.add_argument("--dataset-root", type=Path, default=None, help="BOP (object) or NYU-layout (hand) folder; default: the embedded sample")
    p.add_argument("--weights", default="", help="checkpoint; empty = bundled weights if installed, else a random-init small network")
    p.add_argument("--warmup", type=int, default=0, help="frames before the memory baseline (default: 10 %% of --frames, >= 20)")
    p.add_argument("--sample-every", type=int, default=0, help="memory sample period in frames (default: --frames / 200)")
    p.add_argument("--tracemalloc", action="store_true", help="also sample Python's traced allocations (slower)")
    p.add_argument("--out", type=Path, default=Path("featmap_out/bench_replay"), help="folder for replay.json and replay_memory.png")
    p.set_defaults(func=run)


def rss_bytes() -> int:
    """Resident set size of this process, bytes (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _random_object_estimator(source) -> Any:
    import torch

    ids = sorted(source.models_info)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small", input_size=64, feature_dim=128, small_channels=[8, 16, 32], n_objects=len(ids), pretrained=False))
    meta = {"object_names": [source.names[i] for i in ids], "obj_ids": ids,
            "corners_m": [source.models_info[i].corners_m.tolist() for i in ids], "window_scale": 1.2}
    return ObjectPoseEstimator(model, meta, device="cpu")


def _random_hand_estimator() -> Any:
    import torch

    torch.manual_seed(0)
    model = build_model(ModelConfig(task="hand", backbone="small", input_size=64, feature_dim=128, small_channels=[8, 16, 32],
                                    n_joints=14, pretrained=False))
    return HandPoseEstimator(model, {"joint_names": list(hand_dataset("nyu").joint_names), "cube_mm": 300.0}, device="cpu")


def load_estimator(task: str, weights: str, source) -> tuple[Any, str]:
    """(estimator, where its weights came from): a checkpoint, the bundled weights, or random init."""

    cls = ObjectPoseEstimator if task == "object" else HandPoseEstimator
    if weights:
        return cls.from_checkpoint(weights, device="cpu"), str(weights)
    try:
        from featmap_ros.checkpoint import bundled_weights

        path = bundled_weights(task)
        est = cls.from_checkpoint(path, device="cpu")
        if task == "object" and not set(est.object_names) & set(source.names.values()):
            raise InputError(f"{path}: knows {est.object_names}, none of the dataset's objects")
        return est, str(path)
    except InputError:
        return (_random_object_estimator(source) if task == "object" else _random_hand_estimator()), "random init"


def run_replay(task: str, source, estimator, frames: int, evaluator, warmup: int = 20, sample_every: int = 10,
               trace: bool = False, progress: bool = True) -> dict[str, Any]:
    """Replay ``frames`` frames (looping over ``source``) through CDR, the estimator node's
    pipeline and ``evaluator`` (a :class:`~featmap_ros.ros.online_eval.MessageEvaluator`).

    Returns:
        ``{"frames", "seconds", "fps", "samples": [(frame, rss_bytes, traced_bytes)], "rss_growth",
        "traced_growth_bytes", "summary", "rejected"}``; growths compare the first sample at or
        after ``warmup`` with the last.
    """
    from tqdm import tqdm

    if frames < 1:
        raise InputError(f"--frames: must be >= 1, got {frames}")
    store = featmap_typestore("jazzy")
    msgs = conv.RosbagsMessages(store)

    def wire(m):  # what a subscriber receives
        return store.deserialize_cdr(store.serialize_cdr(m, m.__msgtype__), m.__msgtype__)

    if task == "object":
        pipe = ObjectPipeline(estimator, msgs, ObjectSettings(objects=tuple(estimator.object_names), roi_source="ground_truth"))
    else:
        pipe = HandPipeline(estimator, msgs, HandSettings())
    T = player.TOPICS
    samples: list[tuple[int, int, int]] = []
    failed = 0
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    order = player.schedule(player.parse_range(None, len(source)), loop=True, max_frames=frames)
    for k, i in enumerate(tqdm(order, total=frames, desc=f"replay {task}", unit="frame", disable=not progress, dynamic_ncols=True)):
        stamp = player.stamp_ns(k)
        out = {t: wire(m) for t, m in frame_messages(msgs, source.frame(i), stamp)}
        try:
            if task == "object":
                evaluator.on_camera_info(out[T["colour_info"]])
                evaluator.on_ground_truth(out[T["gt_objects"]])
                res = pipe.process(out[T["colour_image"]], out[T["colour_info"]], ground_truth_msg=out[T["gt_objects"]])
                evaluator.on_estimate(wire(res.detections))
            else:
                evaluator.on_ground_truth(out[T["gt_hand"]])
                res = pipe.process(out[T["depth_image"]], out[T["depth_info"]])
                if res.hand_pose is not None:
                    evaluator.on_estimate(wire(res.hand_pose))
        except InputError:
            failed += 1  # the node drops the frame; the evaluator scores it as missed
        del out
        if k % max(1, sample_every) == 0 or k == frames - 1:
            samples.append((k, rss_bytes(), tracemalloc.get_traced_memory()[0] if trace else 0))
    seconds = time.perf_counter() - t0
    if trace:
        tracemalloc.stop()
    evaluator.finish()
    base = next((s for s in samples if s[0] >= warmup), samples[-1])
    last = samples[-1]
    return {
        "task": task, "frames": frames, "seconds": seconds, "fps": frames / seconds if seconds > 0 else float("inf"),
        "frames_failed_in_pipeline": failed, "samples": samples, "baseline_frame": base[0],
        "rss_baseline_mb": base[1] / 2**20, "rss_end_mb": last[1] / 2**20, "rss_growth": (last[1] - base[1]) / base[1],
        "traced_growth_bytes": (last[2] - base[2]) if trace else None,
        "summary": evaluator.evaluator.running_summary(), "rejected": dict(evaluator.rejected),
    }


def _plot(samples, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.array(samples, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    try:
        ax.plot(s[:, 0], s[:, 1] / 2**20, label="RSS (MiB)")
        if s[:, 2].any():
            ax2 = ax.twinx()
            ax2.plot(s[:, 0], s[:, 2] / 2**20, color="tab:orange", label="traced Python (MiB)")
            ax2.set_ylabel("traced Python allocations (MiB)")
        ax.set_xlabel("frames replayed")
        ax.set_ylabel("resident memory (MiB)")
        ax.grid(True, alpha=0.4)
        ax.set_title(title)
        fig.tight_layout()
        with atomic.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def run(args: argparse.Namespace) -> int:

    kind = "nyu" if args.task == "hand" else "lm"
    root = args.dataset_root or player.embedded_sample(kind)
    source = player.open_source("nyu" if args.task == "hand" else "bop", root)
    est, origin = load_estimator(args.task, args.weights, source)
    ev = online_eval.make_evaluator(args.task, "lm", root)
    warmup = args.warmup or max(20, args.frames // 10)
    every = args.sample_every or max(1, args.frames // 200)
    r = run_replay(args.task, source, est, args.frames, ev, warmup, every, args.tracemalloc)
    r.update({"dataset_root": str(root), "weights": origin})
    print(f"replayed {r['frames']} {args.task} frames of {root} ({len(source)} distinct, looping) in {r['seconds']:.1f} s: "
          f"{r['fps']:.1f} frames/s (weights: {origin})")
    print(f"RSS {r['rss_baseline_mb']:.1f} MiB after {r['baseline_frame']} frames -> {r['rss_end_mb']:.1f} MiB at the end: "
          f"growth {100 * r['rss_growth']:+.2f} %")
    if r["traced_growth_bytes"] is not None:
        print(f"traced Python allocations grew by {r['traced_growth_bytes'] / 1024:.1f} KiB "
              f"({r['traced_growth_bytes'] / max(1, r['frames'] - r['baseline_frame']):.1f} B/frame)")
    s = r["summary"]
    print("evaluator: " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()))
    atomic.write_json(args.out / "replay.json", jsonable(r))
    _plot(r["samples"], args.out / "replay_memory.png", f"featmap bench replay --task {args.task} --frames {args.frames}")
    print(f"wrote {args.out / 'replay.json'}, {args.out / 'replay_memory.png'}")
    return 0
