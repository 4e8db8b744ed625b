"""``featmap bench gpu``: the GPU check in one command (``scripts/gpu_bench.sh`` runs it).

On a CUDA device (default ``--device auto``): f, g, h of the small CNN, ResNet-18 and
EfficientNet-Lite0 at 64 and 128 px in fp16, batch 1 (p50/p95, CUDA graph, ``torch.compile``)
and batched throughput; the object node's per-frame pipeline with the bundled weights; offscreen
renders/s against training samples/s. On a CPU the same parts run with fewer repetitions and
without graphs or compilation (``--compile on`` forces it), so the script is tested without a GPU.
Writes everything to one JSON file.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from featmap_ros import atomic
from featmap_ros.checkpoint import resolve_device
from featmap_ros.commands.bench_node import _camera, _object_estimator, _object_frame, _time
from featmap_ros.evaluation import gpu_bench
from featmap_ros.onnx_export import DEFAULT_RUNTIME
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.msg_defs import featmap_typestore
from featmap_ros.ros.params import OBJECT_NODE_PARAMS, validate_params
from featmap_ros.ros.pipeline import ObjectPipeline, ObjectSettings


def register(sub) -> None:
    p = sub.add_parser("gpu", help="GPU check: network latency/throughput (fp16, CUDA graphs, torch.compile), node frame time, renders vs training samples per second")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--iters", type=int, default=None, help="timed calls per latency figure (default 200 on CUDA, 10 on a CPU)")
    p.add_argument("--batch", type=int, default=None, help="batched call size (default 64 on CUDA, 8 on a CPU)")
    p.add_argument("--backbones", nargs="+", default=list(gpu_bench.BACKBONES), choices=list(gpu_bench.BACKBONES))
    p.add_argument("--sizes", type=int, nargs="+", default=list(gpu_bench.SIZES), help="crop sides, pixels")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile at batch 1 (auto: on CUDA only)")
    p.add_argument("--node-frames", type=int, default=None, help="object node frames (default 200 on CUDA, 20 on a CPU); 0 = skip")
    p.add_argument("--render-seconds", type=float, default=None, help="per render figure (default 5 on CUDA, 1 on a CPU); 0 = skip")
    p.add_argument("--train-steps", type=int, default=None, help="training steps timed (default 30 on CUDA, 2 on a CPU); 0 = skip")
    p.add_argument("--json", type=Path, default=Path("featmap_out/gpu_bench.json"))
    p.set_defaults(func=run)


def _node_frame_time(device: str, frames: int) -> dict:
    """The object node's per-frame pipeline (bench node's frame: 640x480, one object, ground-truth
    window, bundled demo weights) on ``device``."""
    args = argparse.Namespace(object_checkpoint=None, random=False, backbone="", device=device, runtime=DEFAULT_RUNTIME)
    est, what = _object_estimator(args)
    est.warmup()
    msgs = conv.RosbagsMessages(featmap_typestore())
    pipe = ObjectPipeline(est, msgs, ObjectSettings.from_params(validate_params(OBJECT_NODE_PARAMS, {"roi_source": "ground_truth"}),
                                                                est.object_names))
    image, info, gt = _object_frame(msgs, _camera(640, 480), est, 1)

    def step():
        out = pipe.process(image, info, ground_truth_msg=gt)
        return out, len(out.results)

    totals, stages, hits, _ = _time(step, frames)
    ms = totals * 1e3
    return {"weights": what, "frames": frames, "frames_with_output": hits, "p50_ms": float(np.median(ms)),
            "p95_ms": float(np.percentile(ms, 95)), "device": str(est.device)}


def run(args: argparse.Namespace) -> int:
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    pick = lambda given, on_gpu, on_cpu: given if given is not None else (on_gpu if cuda else on_cpu)
    iters, batch = pick(args.iters, 200, 10), pick(args.batch, 64, 8)
    compile_ = args.compile == "on" or (args.compile == "auto" and cuda)
    report = {"machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                          "cuda": torch.cuda.get_device_name(0) if cuda else None,
                          "gl_platform": os.environ.get("PYOPENGL_PLATFORM", "")},
              "device": str(dev), "iters": iters, "batch": batch}
    t0 = time.perf_counter()
    print(f"[gpu bench] device {dev} ({report['machine']['cuda'] or report['machine']['processor']}), "
          f"{iters} calls per latency figure, batch {batch}", flush=True)
    rows = gpu_bench.network_bench(dev, args.backbones, args.sizes, batch, iters, graphs=cuda, compile=compile_)
    report["networks"] = rows
    print(f"\nf, g, h ({rows[0]['dtype'] if rows else ''}), per call")
    print(f"  {'backbone':20s}{'px':>5s}{'b1 p50':>9s}{'b1 p95':>9s}{'graph p50':>11s}{'compiled':>10s}{f'b{batch} inst/s':>13s}")
    for r in rows:
        g, c = r.get("batch1_cuda_graph", {}), r.get("batch1_compiled", {})
        cell = lambda d: f"{d['p50_ms']:.3f}" if "p50_ms" in d else ("err" if "error" in d else "-")
        print(f"  {r['backbone']:20s}{r['size']:>5d}{r['batch1']['p50_ms']:>9.3f}{r['batch1']['p95_ms']:>9.3f}"
              f"{cell(g):>11s}{cell(c):>10s}{r['batched']['per_s']:>13.0f}", flush=True)
    frames = pick(args.node_frames, 200, 20)
    if frames > 0:
        report["node"] = _node_frame_time(str(dev), frames)
        n = report["node"]
        print(f"\nobject node pipeline (640x480, 1 object, demo weights): p50 {n['p50_ms']:.2f} ms, p95 {n['p95_ms']:.2f} ms", flush=True)
    steps = pick(args.train_steps, 30, 2)
    if steps > 0:
        report["training"] = gpu_bench.training_bench(dev, "resnet18", 128, batch, steps)
        tr = report["training"]
        print(f"\ntraining ResNet-18 128 px, batch {tr['batch']}{' (AMP fp16)' if tr['amp'] else ''}: "
              f"{tr['samples_per_s']:.0f} samples/s ({tr['step_ms']:.1f} ms per step)", flush=True)
    seconds = pick(args.render_seconds, 5.0, 1.0)
    if seconds > 0:
        report["render"] = gpu_bench.render_bench(seconds, 128)
        rd = report["render"]
        if "error" in rd:
            print(f"\nrendering: not measured ({rd['error']})")
        else:
            print(f"\nrendering ({rd['backend']}), one process: {rd['crops_per_s']:.1f} training crops/s, "
                  f"{rd['crop_renders_per_s']:.1f} crop renders/s, {rd['frames_per_s']:.1f} frames/s 640x480")
        if "training" in report:
            need = gpu_bench.renders_per_training_step(rd, report["training"])
            report["render_processes_to_feed_training"] = need
            if need is not None:
                print(f"  render processes needed to feed the training above: {need:.1f}")
    report["seconds"] = time.perf_counter() - t0
    atomic.write_json(args.json, report)
    print(f"\nwrote {args.json} ({report['seconds']:.0f} s)")
    return 0
