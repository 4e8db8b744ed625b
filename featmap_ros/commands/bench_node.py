"""``featmap bench node``: per-frame latency of the nodes' work, and the share spent in conversions.

Runs the very code the nodes run on each synchronised frame (:mod:`featmap_ros.ros.pipeline`:
message -> numpy, image windows, estimator, numpy -> output messages, debug image) in-process on
real ROS message types from rosbags, without ROS. DDS transport and rclpy (de)serialisation are
not included; the nodes' ``/diagnostics`` report the latency from input stamp to publication.

    featmap bench node                          # bundled demo weights, both nodes
    featmap bench node --task object --frames 100 --debug-image
    featmap bench node --random                 # randomly initialised nets (latency only)
    featmap bench node --task object --objects 1,4,8   # scaling with the objects in view (one batched call)
    featmap bench node --cameras 1,2,4          # N cameras: one node batching them vs N single-camera processes
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from featmap_ros import atomic
from featmap_ros.checkpoint import bundled_weights
from featmap_ros.data.specs import hand_dataset
from featmap_ros.errors import InputError
from featmap_ros.estimators import HandPoseEstimator, ObjectPoseEstimator
from featmap_ros.geometry import CameraModel, box_corners, look_at_R_m2c
from featmap_ros.nets import ModelConfig, build_model
from featmap_ros.results import ObjectPose
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.msg_defs import featmap_typestore
from featmap_ros.onnx_export import DEFAULT_RUNTIME, RUNTIMES
from featmap_ros.ros.params import HAND_NODE_PARAMS, OBJECT_NODE_PARAMS, validate_params
from featmap_ros.ros.pipeline import HandPipeline, HandSettings, ObjectPipeline, ObjectSettings

#: the pipelines' stages (the hand pipeline has no window selection or pose filter: 0 there)
STAGES = ("convert_in_s", "rois_s", "estimate_s", "filter_s", "convert_out_s", "debug_s")


def register(sub) -> None:
    p = sub.add_parser("node", help="per-frame latency of object_pose_node / hand_pose_node work, share in conversions")
    p.add_argument("--task", choices=("object", "hand", "both"), default="both")
    p.add_argument("--frames", type=int, default=50, help="timed frames per task (after 3 untimed)")
    p.add_argument("--object-checkpoint", default=None, help="default: bundled demo weights")
    p.add_argument("--hand-checkpoint", default=None, help="default: bundled demo weights")
    p.add_argument("--random", action="store_true",
                   help="randomly initialised nets of --backbone when no checkpoint is given (latency does not depend on weights)")
    p.add_argument("--backbone", default="resnet18", help="object backbone with --random (hand: deepprior)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--roi-source", choices=("ground_truth", "localiser"), default="ground_truth",
                   help="object windows: ground truth of the synthetic frame (always one object) or the built-in localiser")
    p.add_argument("--debug-image", action="store_true", help="also build the debug image (as when someone subscribes)")
    p.add_argument("--objects", default="1",
                   help="objects in view of the object node, comma-separated counts (e.g. 1,4,8): one run each, "
                        "all windows of a frame estimated in one batched call (ground-truth ROIs only)")
    p.add_argument("--cameras", default="",
                   help="comma-separated camera counts (e.g. 1,2,4): object frames/s of ONE node process whose "
                        "cameras' windows go through one batched call (pipeline.process_object_batch) against as many "
                        "single-camera node processes (processes started here, same pipeline); object task only")
    p.add_argument("--repeats", type=int, default=3,
                   help="--cameras: measure each setting this many times, alternating, and keep the best (a shared, busy "
                        "machine slows single runs down)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=RUNTIMES,
                   help="what runs the networks (the nodes' default: onnxruntime, torch where it is missing)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.set_defaults(func=run)


def _object_estimator(args):

    if args.object_checkpoint or not args.random:

        path = args.object_checkpoint or bundled_weights("object")
        return ObjectPoseEstimator.from_checkpoint(path, device=args.device, runtime=args.runtime), str(path)

    model = build_model(ModelConfig(task="object", backbone=args.backbone, pretrained=False, n_objects=1))
    meta = {"object_names": ["object"], "obj_ids": [1],
            "corners_m": box_corners(np.array([-0.04, -0.04, -0.05]), np.array([0.08, 0.08, 0.1]))[None].tolist()}
    return ObjectPoseEstimator(model, meta, device=args.device, runtime=args.runtime), f"random {args.backbone}"


def _hand_estimator(args):

    if args.hand_checkpoint or not args.random:

        path = args.hand_checkpoint or bundled_weights("hand")
        return HandPoseEstimator.from_checkpoint(path, device=args.device, runtime=args.runtime), str(path)

    model = build_model(ModelConfig(task="hand", backbone="deepprior", pretrained=False))
    meta = {"joint_names": list(hand_dataset("nyu").joint_names), "cube_mm": 300.0}
    return HandPoseEstimator(model, meta, device=args.device, runtime=args.runtime), "random deepprior"


def _camera(w: int, h: int):

    f = 572.4114 * w / 640.0
    return CameraModel.from_fxfycxcy(f, f, w / 2.0, h / 2.0, w, h)


def _object_positions_m(n: int) -> np.ndarray:
    """(n, 3) object positions at 0.8 m, metres: the centre for one, else a grid across the view."""
    if n == 1:
        return np.array([[0.02, -0.01, 0.8]])
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    x = np.linspace(-0.24, 0.24, cols) if cols > 1 else np.zeros(1)
    y = np.linspace(-0.16, 0.16, rows) if rows > 1 else np.zeros(1)
    grid = np.array([(xi, yi, 0.8) for yi in y for xi in x])
    return grid[:n]


def _object_frame(msgs, camera, est, n_objects: int = 1):
    """A textured bgr8 frame, its CameraInfo, and a ground-truth Detection3DArray (``n_objects`` at 0.8 m).

    The objects cycle through the model's objects; several instances of one object are allowed.
    """

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (camera.height, camera.width, 3), dtype=np.uint8)
    header = conv.make_header(msgs, 1_700_000_000_000_000_000, "camera_color_optical_frame")
    gts = []
    for k, t in enumerate(_object_positions_m(n_objects)):
        i = k % len(est.object_names)
        gts.append(ObjectPose(object_name=est.object_names[i], obj_id=i + 1, R_m2c=look_at_R_m2c(np.array([0.2, -0.5, 0.8])),
                              t_m2c_m=t, score=1.0, extents_m=np.asarray(est.extents_m[i]), center_m=np.asarray(est.center_m[i])))
    return (conv.numpy_to_image(msgs, img, "bgr8", header), conv.camera_model_to_info(msgs, camera, header),
            conv.object_poses_to_detection3d_array(msgs, gts, header))


def _hand_frame(msgs, camera):
    """A 16UC1 frame: a wall at 1.5 m and a hand-sized blob at 0.5 m in front of it."""

    v, u = np.mgrid[0:camera.height, 0:camera.width]
    depth_mm = np.full((camera.height, camera.width), 1500, np.uint16)
    r = (u - camera.cx) ** 2 / (0.12 * camera.width) ** 2 + (v - camera.cy) ** 2 / (0.2 * camera.height) ** 2
    depth_mm[r < 1] = (500 + 40 * r[r < 1]).astype(np.uint16)
    header = conv.make_header(msgs, 1_700_000_000_000_000_000, "camera_depth_optical_frame")
    return conv.numpy_to_image(msgs, depth_mm, "16UC1", header), conv.camera_model_to_info(msgs, camera, header)


def _time(process, n: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Run ``process`` 3 + n times; returns (n,) total seconds, (n, len(STAGES)) stage seconds,
    frames with output, estimates in all."""
    for _ in range(3):
        process()
    totals, stages, hits, estimates = [], [], 0, 0
    for _ in range(n):
        t0 = time.perf_counter()
        out, found = process()
        totals.append(time.perf_counter() - t0)
        stages.append([out.timings.get(k, 0.0) for k in STAGES])
        hits += int(found > 0)
        estimates += int(found)
    return np.array(totals), np.array(stages), hits, estimates


def _report(task: str, what: str, totals: np.ndarray, stages: np.ndarray, hits: int, estimates: int,
            objects: int | None = None) -> dict:
    ms = lambda a: {"mean": float(a.mean() * 1e3), "p50": float(np.median(a) * 1e3), "p95": float(np.percentile(a, 95) * 1e3)}
    conv_s = stages[:, STAGES.index("convert_in_s")] + stages[:, STAGES.index("convert_out_s")]
    rep = {"task": task, "weights": what, "frames": int(totals.size), "frames_with_output": hits,
           "estimates_per_frame": estimates / totals.size,
           "total_ms": ms(totals), **{k.replace("_s", "_ms"): ms(stages[:, j]) for j, k in enumerate(STAGES)},
           "conversion_share": float(conv_s.sum() / totals.sum())}
    in_view = ""
    if objects is not None:
        rep["objects_in_view"] = objects
        in_view = f"{objects} object{'s' if objects > 1 else ''} in view, {rep['estimates_per_frame']:.1f} estimates per frame; "
    print(f"\n{task}_pose_node work per frame ({rep['frames']} frames, {hits} with an estimate; {in_view}weights: {what})")
    print(f"  {'stage':<18}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}")
    for key, label in (("convert_in_ms", "messages -> numpy"), ("rois_ms", "image windows"), ("estimate_ms", "estimator"),
                       ("filter_ms", "score, pose filter"), ("convert_out_ms", "numpy -> messages"),
                       ("debug_ms", "debug image"), ("total_ms", "total")):
        r = rep[key]
        print(f"  {label:<18}{r['mean']:>10.2f}{r['p50']:>10.2f}{r['p95']:>10.2f}")
    print(f"  share in conversions: {100 * rep['conversion_share']:.1f} % of the total "
          f"(messages <-> numpy; window selection and pose filter apart)")
    return rep


def _print_scaling(reports: list[dict]) -> None:
    """The object node's p50 per frame against the objects in view."""
    print("\nobject_pose_node scaling with the objects in view (p50 ms; one batched estimator call per frame)")
    print(f"  {'objects':>7}{'total':>9}{'estimator':>11}{'conversions':>13}{'per object':>12}")
    for r in reports:
        conv_ms = r["convert_in_ms"]["p50"] + r["convert_out_ms"]["p50"]
        n = r["objects_in_view"]
        print(f"  {n:>7}{r['total_ms']['p50']:>9.2f}{r['estimate_ms']['p50']:>11.2f}{conv_ms:>13.2f}{r['total_ms']['p50'] / n:>12.2f}")


def _object_counts(text: str, option: str = "--objects", most: int = 64) -> list[int]:
    try:
        counts = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or any(not 1 <= n <= most for n in counts):
        raise InputError(f"{option}: comma-separated counts from 1 to {most}, got {text!r}")
    return counts


def _camera_process(ckpt: str | None, random_backbone: str | None, device: str, runtime: str, size: tuple[int, int],
                    frames: int, threads: int, barrier, results) -> None:
    """One single-camera "node process" (spawned): the object pipeline on its own frames, timed
    between a barrier shared with the others and its last frame."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    args = argparse.Namespace(object_checkpoint=ckpt, random=random_backbone is not None, backbone=random_backbone or "",
                              device=device, runtime=runtime)
    est, _ = _object_estimator(args)
    est.warmup()
    msgs = conv.RosbagsMessages(featmap_typestore("jazzy"))
    pipe = ObjectPipeline(est, msgs, ObjectSettings.from_params(validate_params(OBJECT_NODE_PARAMS, {"roi_source": "ground_truth"}),
                                                                est.object_names))
    image, info, gt = _object_frame(msgs, _camera(*size), est, 1)
    for _ in range(3):
        pipe.process(image, info, ground_truth_msg=gt)
    barrier.wait()
    t0 = time.monotonic()
    for _ in range(frames):
        pipe.process(image, info, ground_truth_msg=gt)
    results.put((t0, time.monotonic()))


def _spans(procs, results, timeout_s: float = 3600.0) -> list[tuple[float, float]]:
    """Each camera process's (start, end), waiting while they run; a process that died first
    (an exception in it) is an error naming its exit code, not an hour's wait."""
    import queue

    spans, t_end = [], time.monotonic() + timeout_s
    while len(spans) < len(procs):
        try:
            spans.append(results.get(timeout=1.0))
        except queue.Empty:
            dead = [pr.exitcode for pr in procs if pr.exitcode not in (None, 0)]
            if dead or time.monotonic() > t_end:
                for pr in procs:
                    pr.terminate()
                raise InputError(f"--cameras: a camera process exited with code {dead[0]} (its traceback is above)"
                                 if dead else f"--cameras: no result within {timeout_s:g} s")
    return spans


def _bench_cameras(args: argparse.Namespace, counts: list[int]) -> list[dict]:
    """Frames/s of 1..N cameras: one process batching them vs N single-camera processes."""
    import multiprocessing

    import torch

    from featmap_ros.ros.pipeline import process_object_batch

    msgs = conv.RosbagsMessages(featmap_typestore("jazzy"))
    camera = _camera(args.width, args.height)
    est, what = _object_estimator(args)
    est.warmup()
    values = validate_params(OBJECT_NODE_PARAMS, {"roi_source": "ground_truth"})
    image, info, gt = _object_frame(msgs, camera, est, 1)
    threads = torch.get_num_threads()
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for n in counts:
        pipes = [ObjectPipeline(est, msgs, ObjectSettings.from_params(values, est.object_names)) for _ in range(n)]
        batch = [(pipe, {"image_msg": image, "info_msg": info, "ground_truth_msg": gt}, False) for pipe in pipes]
        for _ in range(3):
            process_object_batch(batch)
        one, multi, p50 = [], [], []
        for _ in range(args.repeats):  # alternate the two, keep the best of each
            per_batch = []
            for _ in range(args.frames):
                t0 = time.perf_counter()
                outs = process_object_batch(batch)
                per_batch.append(time.perf_counter() - t0)
                if any(isinstance(o, Exception) for o in outs):
                    raise next(o for o in outs if isinstance(o, Exception))
            one.append(n * args.frames / float(np.sum(per_batch)))
            p50.append(float(np.median(per_batch) * 1e3))
            barrier, results = ctx.Barrier(n), ctx.Queue()
            ckpt = args.object_checkpoint or (None if args.random else str(bundled_weights("object")))
            procs = [ctx.Process(target=_camera_process, args=(ckpt, args.backbone if args.random and not ckpt else None,
                                                               args.device, args.runtime, (args.width, args.height),
                                                               args.frames, max(threads // n, 1), barrier, results))
                     for _ in range(n)]
            for pr in procs:
                pr.start()
            spans = _spans(procs, results)
            for pr in procs:
                pr.join()
            multi.append(n * args.frames / (max(e for _, e in spans) - min(s for s, _ in spans)))
        rows.append({"cameras": n, "one_process_fps": max(one), "one_process_batch_ms_p50": min(p50),
                     "separate_processes_fps": max(multi), "torch_threads_per_process": max(threads // n, 1),
                     "all_one_process_fps": one, "all_separate_processes_fps": multi})
    print(f"\nobject frames/s with N cameras (best of {args.repeats}; {args.frames} frames per camera, one object each, "
          f"{args.width}x{args.height}, "
          f"device {args.device}, weights: {what})")
    print(f"  {'cameras':>7}{'1 node, batched':>17}{'batch p50 ms':>14}{'N node processes':>18}{'threads/process':>17}")
    for r in rows:
        print(f"  {r['cameras']:>7}{r['one_process_fps']:>17.1f}{r['one_process_batch_ms_p50']:>14.2f}"
              f"{r['separate_processes_fps']:>18.1f}{r['torch_threads_per_process']:>17}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"  (frames/s over all cameras; the N processes share the {threads} torch threads of this one; "
          f"in-process pipelines, no DDS; {os.cpu_count()} CPUs, load average {load:.1f} at the end)")
    return rows


def run(args: argparse.Namespace) -> int:

    if args.frames < 1:
        raise InputError(f"--frames: must be >= 1, got {args.frames}")
    if args.width < 32 or args.height < 32:
        raise InputError(f"--width/--height: at least 32 pixels, got {args.width}x{args.height}")
    counts = _object_counts(args.objects)
    if counts != [1] and args.roi_source != "ground_truth":
        raise InputError(f"--objects: needs --roi-source ground_truth (the localiser finds what it finds), got {args.roi_source}")
    if args.cameras:
        cams = _object_counts(args.cameras, "--cameras", 16)
        if args.repeats < 1:
            raise InputError(f"--repeats: must be >= 1, got {args.repeats}")
        rows = _bench_cameras(args, cams)
        if args.json:
            atomic.write_json(args.json, {"args": {k: str(v) for k, v in vars(args).items() if k != "func"}, "cameras": rows})
            print(f"wrote {args.json}")
        return 0
    msgs = conv.RosbagsMessages(featmap_typestore("jazzy"))
    camera = _camera(args.width, args.height)
    reports = []
    if args.task in ("object", "both"):
        est, what = _object_estimator(args)
        est.warmup()
        values = validate_params(OBJECT_NODE_PARAMS, {"roi_source": args.roi_source})
        object_reports = []
        for n in counts:
            pipe = ObjectPipeline(est, msgs, ObjectSettings.from_params(values, est.object_names))
            image, info, gt = _object_frame(msgs, camera, est, n)
            gt_msg = gt if args.roi_source == "ground_truth" else None

            def step_object():
                out = pipe.process(image, info, ground_truth_msg=gt_msg, want_debug=args.debug_image)
                return out, len(out.results)

            object_reports.append(_report("object", f"{what}, runtime {est.runtime}", *_time(step_object, args.frames), objects=n))
        if len(counts) > 1:
            _print_scaling(object_reports)
        reports += object_reports
    if args.task in ("hand", "both"):
        est, what = _hand_estimator(args)
        est.warmup()
        pipe = HandPipeline(est, msgs, HandSettings.from_params(validate_params(HAND_NODE_PARAMS, {})))
        depth, info = _hand_frame(msgs, camera)

        def step_hand():
            out = pipe.process(depth, info, want_debug=args.debug_image)
            return out, int(out.result is not None)

        refiner = getattr(est, "centre_refiner", None)
        runtime = est.runtime + ("" if refiner is None else f", centre refiner {refiner.runtime}")
        reports.append(_report("hand", f"{what}, runtime {runtime}", *_time(step_hand, args.frames)))
    import torch

    machine = {"processor": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(f"\n(in-process, rosbags message types, {args.width}x{args.height}, device {args.device}, "
          f"torch threads {machine['torch_threads']}; DDS transport not included)")
    if args.json:
        atomic.write_json(args.json, {"machine": machine, "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
                                      "reports": reports})
        print(f"wrote {args.json}")
    return 0
