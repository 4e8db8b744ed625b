"""The paper's comparison, with the controls that make a gain attributable to the mapping.

For one task (object or hand) and a cached data set (:class:`featmap_ros.evaluation.ablation_data.TaskCache`:
unlimited-style synthetic crops, a few hundred real-like training pairs, a real-like
validation split and a real-like test split never seen in training), and for each seed:

1. stage 1 (f, h on synthetic crops) is trained once and shared by every variant of that seed;
2. stage 2 forks from it into the variants:

   - ``synthetic_only``: the stage-1 model, no stage 2 (how far the domain gap is);
   - ``no_mapping``: the paper's baseline, f and h on real + synthetic crops, no g;
   - ``no_mapping_pair_synth``: the baseline also given the pairs' synthetic halves;
   - ``no_mapping_strong_aug``: the baseline with strong photometric augmentation of all crops
     in stage 2 (stage 1 is the shared one, with the default photometric augmentation);
   - ``mapping_lambda0``: g trained with the pose loss only (lambda = 0);
   - ``mapping_lambda<L>`` for every L of the grid;
   - ``mapping_joint_target`` (lambda = ``control_lambda``): the matching target is f(x_s) of the
     f being trained (the paper's joint loss) instead of the frozen stage-1 f;
   - ``mapping_fc_level`` (lambda = ``control_lambda``): g on the FC feature vector (the paper's
     layer) instead of the conv feature maps; its stage 1 is the shared one, re-labelled
     (:func:`featmap_ros.checkpoint.convert_map_level`: the same function, FC layers moved from f to h).

3. lambda is chosen on the validation split (mean over seeds of the primary metric), never on
   the test split; the test figures of the chosen lambda are compared with ``no_mapping``;
4. the difference is given per seed and as a paired bootstrap 95 % interval over test items
   (items resampled with replacement, each item's success averaged over seeds).

Primary metrics: objects, 2D projection error <= 5 px after PnP (and ADD <= 10 %); hands,
mean joint error in mm (and the max-frame curve).
"""
from __future__ import annotations

import copy
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from featmap_ros import atomic
from featmap_ros.checkpoint import convert_map_level
from featmap_ros.training.config import TrainConfig
from featmap_ros.training.loop import train
from featmap_ros.training.sources import CachedSource, as_float

log = logging.getLogger(__name__)


@dataclass
class AblationPlan:
    """What the ablation runs.

    Attributes:
        seeds: training seeds.
        lambdas: the lambda grid of the mapping (lambda = 0 is always run as a control).
        variants: the variants to run (default all).
        control_lambda: lambda of the ``mapping_joint_target`` and ``mapping_fc_level`` variants.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    lambdas: list[float] = field(default_factory=lambda: [1.0, 10.0])
    variants: list[str] = field(default_factory=lambda: ["synthetic_only", "no_mapping", "no_mapping_pair_synth", "no_mapping_strong_aug", "mapping_lambda0", "mapping",
                                                         "mapping_joint_target", "mapping_fc_level"])
    control_lambda: float = 1.0


def variant_configs(base: TrainConfig, plan: AblationPlan) -> dict[str, TrainConfig]:
    """Stage-2 configs of every variant (name -> config)."""
    out: dict[str, TrainConfig] = {}
    v = set(plan.variants)
    # most important first, so that a run cut short still has the main comparison
    if "no_mapping" in v:
        out["no_mapping"] = _with(base, mapping=False)
    if "mapping" in v:
        for lam in plan.lambdas:
            out[f"mapping_lambda{lam:g}"] = _with(base, mapping=True, lambda_map=float(lam))
    if "mapping_lambda0" in v:
        out["mapping_lambda0"] = _with(base, mapping=True, lambda_map=0.0)
    if "no_mapping_pair_synth" in v:
        out["no_mapping_pair_synth"] = _with(base, mapping=False, baseline_pair_synth=True)
    if "no_mapping_strong_aug" in v:
        out["no_mapping_strong_aug"] = _with(base, mapping=False, augment="strong", augment_real=True)
    if "mapping_joint_target" in v and base.match_target != "current":
        out["mapping_joint_target"] = _with(base, mapping=True, lambda_map=plan.control_lambda, match_target="current")
    if "mapping_fc_level" in v and base.model.map_level != "fc":
        out["mapping_fc_level"] = _with(base, mapping=True, lambda_map=plan.control_lambda)
        out["mapping_fc_level"].model.map_level = "fc"
    return out


def _with(cfg: TrainConfig, **kw) -> TrainConfig:
    c = copy.deepcopy(cfg)
    for k, val in kw.items():
        setattr(c, k, val)
    return c


@torch.no_grad()
def predict(model, x: torch.Tensor, real: bool, batch: int = 256) -> np.ndarray:
    """Model outputs for crops (N, C, S, S): object (N, n_obj, 8, 2) / hand (N, J, 3), float64."""
    model.eval()
    outs = [model(as_float(x[i:i + batch]), real=real).float() for i in range(0, x.shape[0], batch)]
    return torch.cat(outs).double().numpy()


def score_items(cache, split: dict, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-item scores of predictions on a cached split (see TaskCache.score)."""
    return cache.score(split, pred)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b and its 95 % paired bootstrap interval.

    Args:
        a, b: (N,) per-item values of two methods on the same items.

    Returns:
        (mean difference, lower, upper).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def run_ablation(cache, base: TrainConfig, plan: AblationPlan, work_dir: str | Path, progress: bool = False,
                 on_seed_done=None) -> dict:
    """Run every variant for every seed on one task; returns the report (also JSON-able).

    Args:
        cache: a :class:`featmap_ros.evaluation.ablation_data.TaskCache`.
        base: the stage-1/stage-2 config shared by all variants (steps, model, lr, ...).
        plan: seeds, lambdas, variants.
        work_dir: checkpoints of every run (reused if present: the ablation resumes).
        on_seed_done: called with the report so far after each seed (to write partial results).
    """
    work = Path(work_dir)
    primary, higher_better = cache.primary_metric, cache.higher_is_better
    variants = variant_configs(base, plan)
    per_seed: dict[str, dict[int, dict]] = {}
    items: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    val_scores: dict[str, dict[int, float]] = {}
    t_start = time.perf_counter()
    models = {}
    for seed in plan.seeds:
        s1 = _with(base, seed=seed)
        synth = CachedSource(cache.synth, seed=seed, stream=0)
        pairs = CachedSource(cache.pairs, seed=seed, stream=1)
        s1_dir = work / f"seed{seed}" / "stage1"
        t0 = time.perf_counter()
        r1 = train(s1, synth, pairs, s1_dir, meta=cache.meta, stop_after=base.steps_stage1, progress=progress, device="cpu")
        log.info("%s seed %d stage 1: %.0f s", cache.task, seed, time.perf_counter() - t0)
        if "synthetic_only" in plan.variants:
            _record(cache, "synthetic_only", seed, r1.model, False, per_seed, items, val_scores)
        for name, vcfg in variants.items():
            vdir = work / f"seed{seed}" / name
            atomic.make_dir(vdir)
            if not (vdir / "last.pt").exists():
                if vcfg.model.map_level != base.model.map_level:
                    convert_map_level(s1_dir / "last.pt", vdir / "last.pt", vcfg.model.map_level)
                else:
                    shutil.copyfile(s1_dir / "last.pt", vdir / "last.pt")
            t0 = time.perf_counter()
            r = train(_with(vcfg, seed=seed), CachedSource(cache.synth, seed=seed, stream=0), CachedSource(cache.pairs, seed=seed, stream=1),
                      vdir, meta=cache.meta, progress=progress, device="cpu")
            log.info("%s seed %d %s: %.0f s", cache.task, seed, name, time.perf_counter() - t0)
            _record(cache, name, seed, r.model, vcfg.mapping, per_seed, items, val_scores)
            models[(name, seed)] = r.checkpoint
        if on_seed_done is not None:
            on_seed_done(_report(cache, base, plan, per_seed, items, val_scores, models, t_start))
    return _report(cache, base, plan, per_seed, items, val_scores, models, t_start)


def _report(cache, base, plan, per_seed, items, val_scores, models, t_start) -> dict:
    """The report over the seeds every variant has finished (all of them at the end)."""
    primary, higher_better = cache.primary_metric, cache.higher_is_better
    seeds_done = [s for s in plan.seeds if all(s in per_seed[n] for n in per_seed)]
    if not seeds_done:
        return {"task": cache.task, "seeds_done": []}
    # lambda chosen on validation (mean over seeds)
    lam_names = [n for n in per_seed if n.startswith("mapping_lambda") and n != "mapping_lambda0"]
    chosen = None
    if lam_names:
        mean_val = {n: float(np.mean([val_scores[n][s] for s in seeds_done])) for n in lam_names}
        chosen = (max if higher_better else min)(lam_names, key=lambda n: mean_val[n])
    table = {}
    for name, seeds in per_seed.items():
        table[name] = {}
        keys = seeds[seeds_done[0]].keys()
        for k in keys:
            vals = np.array([seeds[s][k] for s in seeds_done], dtype=np.float64)
            table[name][k] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, "per_seed": vals.tolist()}
        table[name]["val_" + primary] = {"mean": float(np.mean([val_scores[name][s] for s in seeds_done])), "per_seed": [val_scores[name][s] for s in seeds_done]}
    comparison = None
    if chosen and "no_mapping" in per_seed:
        comparison = {"mapping": chosen, "baseline": "no_mapping", "metrics": {}}
        for k in cache.item_metrics:
            a = np.mean([items[chosen][s][k] for s in seeds_done], axis=0)
            b = np.mean([items["no_mapping"][s][k] for s in seeds_done], axis=0)
            mean, lo, hi = paired_bootstrap(a, b)
            per_seed_diff = [float(np.mean(items[chosen][s][k]) - np.mean(items["no_mapping"][s][k])) for s in seeds_done]
            comparison["metrics"][k] = {"difference": mean, "ci95": [lo, hi], "per_seed_difference": per_seed_diff}
        m = table[chosen][primary]
        b = table["no_mapping"][primary]
        diff = m["mean"] - b["mean"]
        spread = max(m["std"], b["std"])
        comparison["primary"] = primary
        comparison["primary_difference"] = diff
        comparison["seed_spread"] = spread
        better = diff > 0 if higher_better else diff < 0
        comparison["mapping_beats_baseline_beyond_seed_spread"] = bool(better and abs(diff) > spread)
        comparison["all_seeds_agree"] = bool(all((d > 0) == higher_better for d in comparison["metrics"][primary]["per_seed_difference"]))
    return {
        "task": cache.task,
        "data": cache.describe(),
        "config": {"steps_stage1": base.steps_stage1, "steps_stage2": base.steps_stage2, "batch_size": base.batch_size,
                   "pair_batch_size": base.pair_batch_size, "model": base.model.__dict__, "lr": base.lr,
                   "detach_synth_features": base.detach_synth_features, "feature_match_norm": base.feature_match_norm,
                   "feature_match_centered": getattr(base, "feature_match_centered", False)},
        "seeds_done": seeds_done, "plan": {"seeds": plan.seeds, "lambdas": plan.lambdas, "variants": plan.variants},
        "primary_metric": primary,
        "higher_is_better": higher_better,
        "chosen_lambda_variant": chosen,
        "table": table,
        "comparison": comparison,
        "seconds": time.perf_counter() - t_start,
        "checkpoints": {f"{n}/seed{s}": str(p) for (n, s), p in models.items()},
    }


def _record(cache, name, seed, model, real_through_g, per_seed, items, val_scores) -> None:
    pred_t = predict(model, cache.test["real"], real=real_through_g)
    scores = cache.score(cache.test, pred_t)
    items.setdefault(name, {})[seed] = scores
    per_seed.setdefault(name, {})[seed] = {k: float(np.mean(v)) for k, v in scores.items()}
    pred_v = predict(model, cache.val["real"], real=real_through_g)
    v = cache.score(cache.val, pred_v)
    val_scores.setdefault(name, {})[seed] = float(np.mean(v[cache.primary_metric]))


def format_table(report: dict) -> str:
    """The report as a printed table (mean +- std over seeds)."""
    lines = [f"[{report['task']}] {report['data']}"]
    metrics = list(next(iter(report["table"].values())).keys())
    metrics = [m for m in metrics if not m.startswith("val_")]
    head = f"{'variant':26s}" + "".join(f"{m:>22s}" for m in metrics) + f"{'val ' + report['primary_metric']:>24s}"
    lines.append(head)
    for name, row in report["table"].items():
        mark = " *" if name == report.get("chosen_lambda_variant") else ""
        cells = "".join(f"{_fmt(row[m]['mean'], m):>13s} ± {_fmt(row[m]['std'], m):<6s}" for m in metrics)
        lines.append(f"{name + mark:26s}{cells}{_fmt(row['val_' + report['primary_metric']]['mean'], report['primary_metric']):>24s}")
    c = report.get("comparison")
    if c:
        lines.append(f"* lambda chosen on the validation split: {c['mapping']}")
        for k, v in c["metrics"].items():
            lines.append(f"  {c['mapping']} - no_mapping, {k}: {_fmt(v['difference'], k)} (95 % paired bootstrap {_fmt(v['ci95'][0], k)} .. {_fmt(v['ci95'][1], k)}); per seed {[_fmt(x, k) for x in v['per_seed_difference']]}")
        lines.append(f"  beats the baseline beyond the seed spread ({_fmt(c['seed_spread'], c['primary'])}): {c['mapping_beats_baseline_beyond_seed_spread']}; same sign on every seed: {c['all_seeds_agree']}")
    return "\n".join(lines)


METRIC_LABELS = {
    "proj2d_5px": "2D proj ≤ 5 px", "add_10": "ADD ≤ 10 %", "corner_px": "corner error (px)",
    "mean_mm": "mean joint error (mm)", "max_le_20mm": "frames, all joints ≤ 20 mm", "max_le_40mm": "frames, all joints ≤ 40 mm",
}


def format_markdown(report: dict) -> str:
    """The report as a Markdown table (mean ± std over seeds) and the comparison as bullets."""
    metrics = [m for m in next(iter(report["table"].values())) if not m.startswith("val_")]
    primary = report["primary_metric"]
    lab = lambda m: METRIC_LABELS.get(m, m)  # noqa: E731
    lines = [f"**{report['task']}** ({report['data']}; seeds {report['seeds_done']}; mean ± std over seeds; "
             f"{report['seconds'] / 60:.0f} min)", "",
             "| variant | " + " | ".join(lab(m) for m in metrics) + f" | validation {lab(primary)} |",
             "|---" * (len(metrics) + 2) + "|"]
    for name, row in report["table"].items():
        label = f"`{name}`" + (" (λ chosen on validation)" if name == report.get("chosen_lambda_variant") else "")
        cells = " | ".join(f"{_fmt(row[m]['mean'], m)} ± {_fmt(row[m]['std'], m)}" for m in metrics)
        lines.append(f"| {label} | {cells} | {_fmt(row['val_' + primary]['mean'], primary)} |")
    c = report.get("comparison")
    if c:
        lines.append("")
        for k, v in c["metrics"].items():
            per = ", ".join(_fmt(x, k) for x in v["per_seed_difference"])
            lines.append(f"- `{c['mapping']}` − `no_mapping`, {lab(k)}: {_fmt(v['difference'], k)} (95 % paired bootstrap "
                         f"{_fmt(v['ci95'][0], k)} … {_fmt(v['ci95'][1], k)}; per seed {per})")
        lines.append(f"- mapping beats the baseline by more than the seed spread ({_fmt(c['seed_spread'], c['primary'])}): "
                     f"**{'yes' if c['mapping_beats_baseline_beyond_seed_spread'] else 'no'}**; same sign on every seed: "
                     f"{'yes' if c['all_seeds_agree'] else 'no'}")
    return "\n".join(lines)


def _fmt(v: float, metric: str) -> str:
    if metric.endswith("_mm") or metric.endswith("_px"):
        return f"{v:.2f}"
    return f"{100 * v:.1f}%"


def write_report(path: str | Path, reports: list[dict]) -> None:
    atomic.write_json(path, {"reports": reports})
