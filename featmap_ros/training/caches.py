"""Data caches of training, the ablation and the demo: files keyed by every parameter that changes
their content, written atomically, read back with :func:`featmap_ros.checkpoint.safe_torch_load`
(no code runs from a cache file). Rendering a set once lets every run reuse it."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import torch

from featmap_ros import atomic
from featmap_ros.checkpoint import safe_torch_load

log = logging.getLogger(__name__)


def cache_path(cache_dir: Path, task: str, params: dict) -> Path:
    key = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{task}_{key}.pt"


def load_or_build(path: Path, build: Callable[[], dict]) -> dict:
    if path.is_file():
        log.info("using cached data %s", path)
        return safe_torch_load(path, "data cache")
    data = build()
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(data, tmp)
    return data



# ============================================================================= the localiser
