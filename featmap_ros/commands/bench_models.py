"""``featmap bench ablation|exemplar|infer``: the paper's comparisons and inference speed.

- ``featmap bench ablation [--task object|hand|both] [--seeds 0 1 2] [--lambdas 1 10] ...``:
  with vs without mapping on the real-like domains, with the controls (see
  :mod:`featmap_ros.evaluation.ablation`); prints a table and writes JSON.
- ``featmap bench exemplar``: nearest neighbours among synthetic exemplar features vs Feature
  Mapping: accuracy and time per frame for growing exemplar sets.
- ``featmap bench infer [--runtime torch onnxruntime]``: estimator latency p50/p95 and
  throughput, batch 1 and batched, per runtime of f, g, h (torch, or the network exported to
  ONNX and run by ONNX Runtime), whole estimator calls and the network alone.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from featmap_ros import atomic, checkpoint
from featmap_ros.checkpoint import load_checkpoint, model_from_checkpoint
from featmap_ros.config import load
from featmap_ros.errors import InputError
from featmap_ros.estimators import HandPoseEstimator, ObjectPoseEstimator
from featmap_ros.evaluation import ablation, ablation_data, plots
from featmap_ros.evaluation.ablation import predict
from featmap_ros.evaluation.bench import latency_ms
from featmap_ros.evaluation.exemplar import ExemplarIndex, extract_features
from featmap_ros.onnx_export import DEFAULT_RUNTIME, RUNTIMES
from featmap_ros.training.config import TrainConfig
from featmap_ros.training.sources import as_float


def register(sub) -> None:
    a = sub.add_parser("ablation", help="with vs without Feature Mapping on the real-like domains, with controls, seeds, bootstrap")
    a.add_argument("--task", choices=("object", "hand", "both"), default="both")
    a.add_argument("--config-object", default="config/ablation_object.yaml", help="training config of the object runs")
    a.add_argument("--config-hand", default="config/ablation_hand.yaml", help="training config of the hand runs")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 10.0], help="lambda grid (chosen on the validation split)")
    a.add_argument("--variants", nargs="+", default=None, help="subset of variants (default all)")
    a.add_argument("--cache", type=Path, default=Path("featmap_out/cache"), help="pre-rendered data sets (built once, reused)")
    a.add_argument("--work", type=Path, default=Path("featmap_out/ablation"), help="checkpoints of every run (an interrupted ablation resumes)")
    a.add_argument("--json", type=Path, default=Path("featmap_out/ablation/ablation.json"))
    a.add_argument("--progress", action="store_true", help="tqdm bars for every run")
    a.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied to both configs, e.g. steps_stage2=300")
    a.set_defaults(func=run_ablation_cmd)

    e = sub.add_parser("exemplar", help="nearest-neighbour exemplars vs Feature Mapping: accuracy and time per frame vs exemplar count")
    e.add_argument("--checkpoint", default=None, help="object checkpoint trained with mapping (default: the bundled demo weights)")
    e.add_argument("--cache", type=Path, default=Path("featmap_out/cache"))
    e.add_argument("--config-object", default="config/ablation_object.yaml")
    e.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 6000, 10000, 100000],
                   help="exemplar counts; beyond the rendered crops in the cache, random features (timing only)")
    e.add_argument("--json", type=Path, default=Path("featmap_out/bench_exemplar.json"))
    e.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the data config, e.g. data.domain_preset= for the default (near) real-like domain")
    e.set_defaults(func=run_exemplar_cmd)

    i = sub.add_parser("infer", help="estimator latency p50/p95 and throughput, batch 1 and batched")
    i.add_argument("--object-checkpoint", default=None, help="default: bundled demo weights")
    i.add_argument("--hand-checkpoint", default=None, help="default: bundled demo weights")
    i.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    i.add_argument("--iters", type=int, default=50)
    i.add_argument("--batch", type=int, default=16, help="instances / frames per batched call")
    i.add_argument("--json", type=Path, default=Path("featmap_out/bench_infer.json"))
    i.add_argument("--runtime", nargs="+", choices=RUNTIMES, default=[DEFAULT_RUNTIME],
                   help="what runs f, g, h (onnxruntime: the network exported to ONNX); several = side by side")
    i.set_defaults(func=run_infer_cmd)


def _machine() -> dict:
    return {"processor": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# ----------------------------------------------------------------------------- ablation


def run_ablation_cmd(args: argparse.Namespace) -> int:

    tasks = ("object", "hand") if args.task == "both" else (args.task,)
    plan = ablation.AblationPlan(seeds=list(args.seeds), lambdas=list(args.lambdas))
    if args.variants:
        plan.variants = list(args.variants)
    reports = []
    for task in tasks:
        cfg_path = args.config_object if task == "object" else args.config_hand
        cfg = load(TrainConfig, cfg_path, list(args.overrides))
        if cfg.model.task != task:
            raise InputError(f"{cfg_path}: model.task is {cfg.model.task!r}, expected {task!r}")
        cache = ablation_data.ablation_cache(cfg, args.cache)
        print(f"[{task}] data: {cache.describe()}")
        def partial(rep, _task=task):
            if rep.get("seeds_done"):
                ablation.write_report(args.json, reports + [dict(rep, partial=True)])
                print(f"[{_task}] seeds done: {rep['seeds_done']}", flush=True)

        rep = ablation.run_ablation(cache, cfg, plan, args.work / task, progress=args.progress, on_seed_done=partial)
        rep["config_file"] = cfg_path
        reports.append(rep)
        print(ablation.format_table(rep))
        ablation.write_report(args.json, reports)  # after each task, so a late failure keeps the first
        if rep.get("seeds_done"):
            png = plots.plot_report(rep, args.json.with_name(f"{args.json.stem}_{task}.png"))
            md = args.json.with_name(f"{args.json.stem}_{task}.md")
            atomic.write_text(md, ablation.format_markdown(rep) + "\n")
            print(f"wrote {png} and {md}")
    rep_all = {"machine": _machine(), "reports": reports}
    atomic.write_json(args.json, rep_all)
    print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------- exemplar


def run_exemplar_cmd(args: argparse.Namespace) -> int:

    ck_path = args.checkpoint or str(checkpoint.bundled_weights("object"))
    ck = load_checkpoint(ck_path, task="object")
    model = model_from_checkpoint(ck, ck_path).eval()
    cfg = load(TrainConfig, args.config_object, list(args.overrides))
    cfg.model = model.cfg
    cache = ablation_data.ablation_cache(cfg, args.cache)
    torch.set_grad_enabled(False)
    feats_syn = extract_features(model.f, as_float(cache.synth["image"]))
    targets_syn = cache.synth["corners_n"].float()
    test_x = as_float(cache.test["real"])
    n_test = test_x.shape[0]
    t0 = time.perf_counter()
    f_real_raw = extract_features(model.f, test_x, flatten=False)
    t_f = (time.perf_counter() - t0) / n_test
    f_real, mapped = f_real_raw.flatten(1), model.g(f_real_raw).flatten(1)
    rows = []
    # Feature Mapping itself
    t0 = time.perf_counter()
    pred_fm = predict(model, test_x, real=True)
    t_fm = (time.perf_counter() - t0) / n_test
    s = cache.score(cache.test, pred_fm)
    rows.append({"method": "feature_mapping (f, g, h)", "exemplars": 0, "ms_per_frame": 1000 * t_fm,
                 **{k: float(np.mean(v)) for k, v in s.items()}})
    real_count = feats_syn.shape[0]
    for n in args.sizes:
        if n <= real_count:
            idx = torch.randperm(real_count, generator=torch.Generator().manual_seed(0))[:n]
            index = ExemplarIndex(feats_syn[idx], targets_syn[idx])
            kind = "rendered exemplars"
        else:
            # not enough rendered crops cached: random features of the same size and scale, for timing only
            g = torch.Generator().manual_seed(n)
            fake = torch.randn(n, feats_syn.shape[1], generator=g) * feats_syn.std(0) + feats_syn.mean(0)
            index = ExemplarIndex(fake, torch.zeros(n, 8, 2))
            kind = "random features (timing only)"
        for name, q in (("exemplar NN of f(x_real)", f_real), ("exemplar NN of g(f(x_real))", mapped)):
            t0 = time.perf_counter()
            pred = index.predict(q, k=1)
            t_nn = (time.perf_counter() - t0) / n_test
            row = {"method": name, "exemplars": n, "exemplar_kind": kind, "ms_per_frame": 1000 * (t_nn + t_f), "ms_lookup_per_frame": 1000 * t_nn}
            if kind == "rendered exemplars":
                sc = cache.score(cache.test, pred.double().numpy()[:, None])
                row.update({k: float(np.mean(v)) for k, v in sc.items()})
            rows.append(row)
    print(f"test: {n_test} real-like crops; checkpoint {ck_path}; rendered exemplars available: {real_count}; "
          f"times per frame with all test crops in one batch, {torch.get_num_threads()} CPU threads")
    keys = [k for k in rows[0] if k not in ("method", "exemplars", "ms_per_frame")]
    print(f"{'method':32s}{'exemplars':>10s}{'ms/frame':>10s}" + "".join(f"{k:>16s}" for k in keys))
    for r in rows:
        print(f"{r['method']:32s}{r['exemplars']:>10d}{r['ms_per_frame']:>10.3f}" + "".join(f"{_cell(r.get(k)):>16s}" for k in keys)
              + ("   (random features: timing only)" if r.get("exemplar_kind", "").startswith("random") else ""))
    atomic.write_json(args.json, {"machine": _machine(), "checkpoint": ck_path, "test_items": n_test, "rows": rows})
    print(f"wrote {args.json}")
    return 0


def _cell(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# ----------------------------------------------------------------------------- infer


def run_infer_cmd(args: argparse.Namespace) -> int:
    report = {"machine": _machine(), "device": args.device, "iters": args.iters, "runtimes": {}}
    for runtime in args.runtime:
        report["runtimes"][runtime] = _infer_runtime(args, runtime)
    first = report["runtimes"][args.runtime[0]]  # the first runtime's figures as the top-level keys
    report["object"], report["hand"] = first["object"], first["hand"]
    print(f"({report['machine']['processor']}, {report['machine']['torch_threads']} threads, cuda {report['machine']['cuda']}; "
          "net = f, g, h alone on random crops; the other rows are whole estimator calls)")
    for runtime, rep in report["runtimes"].items():
        print(f"runtime {runtime}, device {rep['device']}")
        for task in ("object", "hand"):
            for label, r in rep[task].items():
                if not isinstance(r, dict):  # the head and zoom-in rounds of the object checkpoint
                    print(f"  {task:6s} {label:18s} {r}")
                    continue
                rate = r.get("instances_per_s", r.get("frames_per_s"))
                unit = "instances/s" if "instances_per_s" in r else "frames/s"
                print(f"  {task:6s} {label:18s} p50 {r['p50_ms']:8.2f} ms  p95 {r['p95_ms']:8.2f} ms  {rate:8.1f} {unit}")
    atomic.write_json(args.json, report)
    print(f"wrote {args.json}")
    return 0


def _summary(t_ms: np.ndarray, n_per_call: int, rate_key: str) -> dict:
    """p50/p95 of per-call latencies (ms) and the throughput ``rate_key`` (items per second)."""
    return {"p50_ms": float(np.percentile(t_ms, 50)), "p95_ms": float(np.percentile(t_ms, 95)),
            rate_key: n_per_call * 1000.0 / float(np.mean(t_ms))}


def _net_latency(est, channels: int, batch: int, iters: int) -> dict:
    """Latency of the estimator's network alone (``_infer``: f, g, h) on a random crop batch."""

    S = est.input_size
    x = np.random.default_rng(0).uniform(0, 1, (batch, channels, S, S)).astype(np.float32)
    t = latency_ms(lambda: est._infer(x), iters)
    return _summary(t, batch, "instances_per_s")


def _coords_decode_latency(est, K: np.ndarray, iters: int) -> dict:
    """PnP-RANSAC of the ``coords`` head at its worst: every cell confident and the coordinates
    noise, so RANSAC runs to its iteration cap (a random image makes no confident cell and would
    time nothing)."""
    from featmap_ros import coords, crops

    n = est.model.cfg.coords_cells
    maps = np.random.default_rng(1).uniform(0, 1, (4, n, n)).astype(np.float32)
    maps[0] = 5.0
    win = crops.Window(320.0, 240.0, 120.0)

    def decode():
        try:
            coords.pose_from_coords(maps, win, K, est.meta.coords_box_min_m[0], est.meta.coords_box_size_m[0])
        except InputError:
            pass

    return _summary(latency_ms(decode, iters), 1, "instances_per_s")


def _infer_runtime(args: argparse.Namespace, runtime: str) -> dict:
    """Latencies of both estimators with f, g, h run by ``runtime`` (torch | onnxruntime)."""

    report = {}
    rng = np.random.default_rng(0)
    obj = ObjectPoseEstimator.from_checkpoint(args.object_checkpoint or checkpoint.bundled_weights("object"), device=args.device,
                                              runtime=runtime)
    report["device"] = str(obj.device)
    obj.warmup()
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    K = np.array([[572.4114, 0, 325.2611], [0, 573.57043, 242.04899], [0, 0, 1]])
    name = obj.object_names[0]
    one = [(name, np.array([280.0, 190.0, 90.0, 90.0]))]
    many = [(name, np.array([40.0 + 35 * k, 60.0 + 20 * (k % 5), 90.0, 90.0])) for k in range(args.batch)]
    res = {"net_batch1": _net_latency(obj, 3, 1, args.iters), f"net_batch{args.batch}": _net_latency(obj, 3, args.batch, args.iters)}
    for label, boxes in (("batch1", one), (f"batch{args.batch}", many)):
        t = latency_ms(lambda: obj.estimate(img, K, boxes), args.iters)
        res[label] = _summary(t, len(boxes), "instances_per_s")
    if obj.head == "coords":
        res["coords_decode_worst"] = _coords_decode_latency(obj, K, args.iters)
    if obj.localiser is not None:
        t = latency_ms(lambda: obj.estimate(img, K), args.iters)
        res["localiser_batch1"] = _summary(t, 1, "frames_per_s")
    res["head"], res["zoom_in"] = obj.head, obj.zoom_in
    report["object"] = res
    hand = HandPoseEstimator.from_checkpoint(args.hand_checkpoint or checkpoint.bundled_weights("hand"), device=args.device,
                                             runtime=runtime)
    hand.warmup()
    depth, Kh = ablation_data.sample_hand_frame(seed=0)
    hres = {"net_batch1": _net_latency(hand, 1, 1, args.iters), f"net_batch{args.batch}": _net_latency(hand, 1, args.batch, args.iters)}
    t = latency_ms(lambda: hand.estimate(depth, Kh), args.iters)
    hres["batch1"] = _summary(t, 1, "frames_per_s")
    depths = [depth] * args.batch
    t = latency_ms(lambda: hand.estimate_batch(depths, Kh), max(3, args.iters // 4))
    hres[f"batch{args.batch}"] = _summary(t, args.batch, "frames_per_s")
    report["hand"] = hres
    return report
