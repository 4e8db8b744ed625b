"""Curves as PNG (matplotlib): object 2D-projection and ADD curves, hand max-frame curves, the
ablation's bar chart. Written atomically."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from featmap_ros import atomic
from featmap_ros.atomic import atomic_path
from featmap_ros.evaluation.ablation import METRIC_LABELS


def plot_object_curves(curves: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """Two panels: fraction of instances vs 2D projection threshold and vs ADD threshold.

    Args:
        curves: label -> an :func:`object_summary` dict.
        path: output PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    try:
        for label, s in curves.items():
            axes[0].plot(s["curve_proj2d"]["thresholds_px"], 100 * np.array(s["curve_proj2d"]["fraction"]), label=label, linewidth=2)
            axes[1].plot(100 * np.array(s["curve_add"]["thresholds_frac"]), 100 * np.array(s["curve_add"]["fraction"]), label=label, linewidth=2)
        axes[0].axvline(5, color="grey", linestyle=":")
        axes[1].axvline(10, color="grey", linestyle=":")
        axes[0].set_xlabel("2D projection error threshold (px)")
        axes[1].set_xlabel("ADD threshold (% of diameter)")
        for ax in axes:
            ax.set_ylabel("instances within threshold (%)")
            ax.set_ylim(0, 100)
            ax.grid(True, alpha=0.4)
            ax.legend(loc="lower right", fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def plot_max_frame_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """Write the fraction-of-frames curves as a PNG (atomically).

    Args:
        curves: label -> (thresholds_mm (T,), fractions (T,)).
        path: output .png path.
        title: figure title.

    Returns:
        The written path.
    """
    from matplotlib.figure import Figure  # lazily; a bare Figure renders with Agg and leaves pyplot's state alone

    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.subplots()
    for label, (th, frac) in curves.items():
        ax.plot(np.asarray(th), 100.0 * np.asarray(frac), label=label, linewidth=2)
    ax.set_xlabel("maximum allowed distance to ground truth D (mm)")
    ax.set_ylabel("frames with every joint within D (%)")
    ax.set_xlim(0, max(float(np.max(th)) for th, _ in curves.values()) if curves else 80)
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.4)
    if curves:
        ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return out


def plot_report(report: dict, path: str | Path) -> Path:
    """A PNG of the primary metric per variant: bars = mean over seeds, dots = seeds (atomic write)."""
    from matplotlib.figure import Figure

    primary = report["primary_metric"]
    names = list(report["table"])
    scale = 1.0 if primary.endswith(("_mm", "_px")) else 100.0
    fig = Figure(figsize=(max(6.0, 0.9 * len(names) + 2), 4.5), dpi=120)
    ax = fig.subplots()
    for i, n in enumerate(names):
        row = report["table"][n][primary]
        colour = "tab:orange" if n == report.get("chosen_lambda_variant") else ("tab:blue" if n.startswith("mapping") else "tab:gray")
        ax.bar(i, scale * row["mean"], color=colour, alpha=0.8)
        ax.plot([i] * len(row["per_seed"]), [scale * v for v in row["per_seed"]], "k.", markersize=6)
        ax.annotate(f"{scale * row['mean']:.1f}", (i, scale * row["mean"]), ha="center", va="bottom", fontsize=7,
                    xytext=(0, 2), textcoords="offset points")
    if "no_mapping" in report["table"]:
        ax.axhline(scale * report["table"]["no_mapping"][primary]["mean"], color="k", linestyle="--", linewidth=1, label="no_mapping")
        ax.legend(loc="upper right", fontsize=8)
    if scale == 1.0:  # errors: zoom on the range the variants span (the differences are a few per cent)
        vals = [scale * v for n in names for v in report["table"][n][primary]["per_seed"]]
        lo, hi = min(vals), max(vals)
        ax.set_ylim(max(0.0, lo - 0.15 * (hi - lo) - 0.5), hi + 0.1 * (hi - lo) + 0.5)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    unit = "" if scale == 1.0 else " (%)"
    ax.set_ylabel(METRIC_LABELS.get(primary, primary) + unit + ("  — lower is better" if not report["higher_is_better"] else ""))
    ax.set_title(f"{report['task']}: test split, seeds {report['seeds_done']} (orange: λ chosen on validation)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.4)
    fig.tight_layout()
    out = Path(path)
    with atomic.atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return out
