"""The GPU check (``featmap bench gpu``, ``scripts/gpu_bench.sh``): what a GPU machine gives this
project, in a few minutes, as one JSON report. It runs on a CPU too (fewer repetitions), so it is
tested without a GPU.

Parts (each a plain function returning a dict):

- :func:`network_bench`: f, g, h of randomly initialised object networks (the small CNN,
  ResNet-18, EfficientNet-Lite0; latency does not depend on the weights) at 64 and 128 px:
  p50/p95 per call at batch 1 and throughput at a larger batch, fp16 on CUDA as the estimators
  run it (fp32 on a CPU); with ``graphs``, the batch-1 call again replayed from a captured CUDA
  graph, and with ``compile``, through ``torch.compile`` (its compile time reported).
- :func:`training_bench`: training samples per second of one network (forward, backward, AdamW;
  automatic mixed precision on CUDA), to set against :func:`render_bench`'s renders per second
  (offscreen EGL/OSMesa, one process): how many render workers one GPU's training needs.

Every figure is measured here, in this process, on the device named in the report.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from featmap_ros.errors import InputError
from featmap_ros.evaluation.bench import latency_ms
from featmap_ros.nets import ModelConfig, build_model

#: the object backbones compared (small CNN, ResNet-18, EfficientNet-Lite0)
BACKBONES = ("small", "resnet18", "efficientnet_lite0")
#: crop sides, pixels
SIZES = (64, 128)


def _stats(t_ms: np.ndarray, per_call: int) -> dict:
    return {"p50_ms": float(np.percentile(t_ms, 50)), "p95_ms": float(np.percentile(t_ms, 95)),
            "per_s": per_call * 1000.0 / float(np.mean(t_ms)), "batch": per_call, "calls": int(len(t_ms))}


def _model(backbone: str, size: int, device: torch.device, half: bool) -> torch.nn.Module:
    model = build_model(ModelConfig(task="object", backbone=backbone, input_size=size, pretrained=False, n_objects=1))
    model = model.eval().to(device)
    return model.half() if half else model


def _graph_runner(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A function replaying one captured CUDA graph of ``model(x, real=True)`` (static input)."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):  # warm-up on a side stream, as capture requires
            model(static_x, real=True)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_y = model(static_x, real=True)

    def run() -> torch.Tensor:
        static_x.copy_(x)
        graph.replay()
        return static_y

    return run


def network_bench(device: str | torch.device = "cpu", backbones=BACKBONES, sizes=SIZES, batch: int = 64, iters: int = 100,
                  graphs: bool = False, compile: bool = False) -> list[dict]:
    """Latency and throughput of f, g, h (see the module docstring).

    Args:
        device: torch device.
        backbones, sizes: what to measure.
        batch: the batched call's size.
        iters: timed calls per figure (after 3 untimed).
        graphs: also time batch 1 replayed from a CUDA graph (CUDA only).
        compile: also time batch 1 through ``torch.compile`` (mode ``max-autotune-no-cudagraphs``
            on CUDA, default on a CPU).

    Returns:
        one dict per (backbone, size): ``dtype``, ``batch1``, ``batched`` (p50_ms, p95_ms,
        per_s = instances per second), and ``batch1_cuda_graph`` / ``batch1_compiled`` (with
        ``compile_s``) or the reason they were not measured.
    """
    dev = torch.device(device)
    if iters < 1 or batch < 1:
        raise InputError(f"iters and batch: expected >= 1, got {iters}, {batch}")
    half = dev.type == "cuda"
    rows = []
    for bb in backbones:
        for size in sizes:
            model = _model(bb, size, dev, half)
            dtype = torch.float16 if half else torch.float32
            x1 = torch.rand(1, 3, size, size, device=dev, dtype=dtype)
            xb = torch.rand(batch, 3, size, size, device=dev, dtype=dtype)
            row = {"backbone": bb, "size": size, "dtype": str(dtype).replace("torch.", ""), "device": str(dev),
                   "parameters": int(sum(p.numel() for p in model.parameters()))}
            with torch.inference_mode():
                row["batch1"] = _stats(latency_ms(lambda: model(x1, real=True), iters), 1)
                row["batched"] = _stats(latency_ms(lambda: model(xb, real=True), max(3, iters // 4)), batch)
            if graphs and dev.type == "cuda":
                try:
                    run = _graph_runner(model, x1)
                    row["batch1_cuda_graph"] = _stats(latency_ms(run, iters), 1)
                except Exception as e:  # capture fails on some ops/drivers: a figure we report as missing
                    row["batch1_cuda_graph"] = {"error": f"{e.__class__.__name__}: {e}"}
            elif graphs:
                row["batch1_cuda_graph"] = {"error": "CUDA graphs need a CUDA device"}
            if compile:
                try:
                    mode = "max-autotune-no-cudagraphs" if dev.type == "cuda" else "default"
                    t0 = time.perf_counter()
                    compiled = torch.compile(model, mode=mode)
                    with torch.inference_mode():
                        compiled(x1, real=True)  # compiles here
                        compile_s = time.perf_counter() - t0
                        row["batch1_compiled"] = {**_stats(latency_ms(lambda: compiled(x1, real=True), iters), 1),
                                                  "compile_s": compile_s, "mode": mode}
                except Exception as e:  # no compiler toolchain, unsupported op: reported, not fatal
                    row["batch1_compiled"] = {"error": f"{e.__class__.__name__}: {str(e).splitlines()[0][:200]}"}
            rows.append(row)
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def training_bench(device: str | torch.device = "cpu", backbone: str = "resnet18", size: int = 128, batch: int = 64,
                   steps: int = 20) -> dict:
    """Training samples per second of one object network on random crops (forward on the
    synthetic path, a squared-output loss, backward, AdamW; fp16 autocast with a gradient scaler
    on CUDA).

    Returns:
        dict: backbone, size, batch, steps, ``samples_per_s``, ``step_ms`` (p50), amp.
    """
    dev = torch.device(device)
    if steps < 1 or batch < 1:
        raise InputError(f"steps and batch: expected >= 1, got {steps}, {batch}")
    model = build_model(ModelConfig(task="object", backbone=backbone, input_size=size, pretrained=False, n_objects=1)).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.rand(batch, 3, size, size, device=dev)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp):
            loss = model(x, real=False).float().square().mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    t = latency_ms(step, steps, warmup=2)
    return {"backbone": backbone, "size": size, "batch": batch, "steps": steps, "amp": amp, "device": str(dev),
            "step_ms": float(np.median(t)), "samples_per_s": batch * 1000.0 / float(np.mean(t))}


def render_bench(seconds: float = 3.0, size: int = 128) -> dict:
    """Offscreen renders per second in this process (``featmap bench render --only object``'s
    figures: complete training crops, crop renders, 640x480 frames), or the reason it failed (no
    EGL/OSMesa)."""
    try:
        from featmap_ros.evaluation.render_bench import run_object_render_bench  # pyrender, GL: optional here
        return run_object_render_bench(seconds, size)
    except Exception as e:  # a machine without a GL platform still gets the other figures
        return {"error": f"{e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}


def renders_per_training_step(render: dict, training: dict) -> float | None:
    """Render worker processes needed to feed the training (training samples/s over one
    process's complete training crops/s); None without both figures."""
    crops = render.get("crops_per_s")
    if not crops or "samples_per_s" not in training:
        return None
    return float(training["samples_per_s"] / crops)
