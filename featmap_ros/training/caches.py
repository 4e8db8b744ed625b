"""Training data for ``featmap train``, the ablation and the demo: sources, caches, metadata.

The data layer (``featmap_ros.render``, ``featmap_ros.data``, ``featmap_ros.crops``) makes
samples; this module turns them into what :func:`featmap_ros.training.loop.train` consumes:

- a *synthetic* source (crops rendered once into a seeded cache and sampled from it, or online);
- a *pairs* source (real crop + synthetic crop of the same pose and window + target);
- metadata the estimators need (object names, box corners, diameters; joint names, cube);
- for the ablation and the demo, a :class:`TaskCache` with real-like validation and test splits
  (never used in training) and the scoring of predictions on them.

Caches are keyed by every parameter that changes their content and written atomically, so the
ablation renders its data once and every run reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import torch

from featmap_ros import atomic

log = logging.getLogger(__name__)


def cache_path(cache_dir: Path, task: str, params: dict) -> Path:
    key = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{task}_{key}.pt"


def load_or_build(path: Path, build: Callable[[], dict]) -> dict:
    if path.is_file():
        log.info("using cached data %s", path)
        return torch.load(path, map_location="cpu", weights_only=False)
    data = build()
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(data, tmp)
    return data


# ============================================================================= hands


# ============================================================================= dispatch


# ============================================================================= objects


# ============================================================================= featmap train


# ============================================================================= the localiser


