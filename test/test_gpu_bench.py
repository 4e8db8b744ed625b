"""The GPU check's parts on the CPU (tiny counts: what is measured is not checked, only that
every part runs and reports its figures; the speed itself is printed by the script)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from featmap_ros.errors import InputError
from featmap_ros.evaluation import gpu_bench

ROOT = Path(__file__).resolve().parents[1]


def test_network_bench_rows_on_cpu():
    rows = gpu_bench.network_bench("cpu", backbones=("small",), sizes=(64,), batch=2, iters=2, graphs=True)
    assert len(rows) == 1
    r = rows[0]
    assert r["backbone"] == "small" and r["size"] == 64 and r["dtype"] == "float32" and r["parameters"] > 0
    for part, n in (("batch1", 1), ("batched", 2)):
        assert r[part]["batch"] == n and 0 < r[part]["p50_ms"] <= r[part]["p95_ms"] and r[part]["per_s"] > 0
    assert "CUDA" in r["batch1_cuda_graph"]["error"]  # no graph on a CPU: said, not faked
    with pytest.raises(InputError, match="iters"):
        gpu_bench.network_bench("cpu", backbones=("small",), sizes=(64,), iters=0)


def test_training_bench_and_render_ratio():
    tr = gpu_bench.training_bench("cpu", "small", 64, batch=2, steps=1)
    assert tr["amp"] is False and tr["samples_per_s"] > 0 and tr["step_ms"] > 0
    assert gpu_bench.renders_per_training_step({"crops_per_s": 10.0}, {"samples_per_s": 50.0}) == pytest.approx(5.0)
    assert gpu_bench.renders_per_training_step({"error": "no EGL"}, tr) is None
    with pytest.raises(InputError, match="steps"):
        gpu_bench.training_bench("cpu", "small", 64, batch=2, steps=0)


def test_gpu_bench_script_writes_its_json(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh"), str(out), "--device", "cpu", "--iters", "2", "--batch", "2",
                        "--backbones", "small", "--sizes", "64", "--node-frames", "2", "--render-seconds", "0", "--train-steps", "1"],
                       capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(out.read_text())
    assert rep["device"] == "cpu" and rep["machine"]["cuda"] is None
    assert [n["backbone"] for n in rep["networks"]] == ["small"]
    assert rep["node"]["frames"] == 2 and rep["node"]["p50_ms"] > 0
    assert rep["training"]["samples_per_s"] > 0 and "render" not in rep
    assert "object node pipeline" in r.stdout
