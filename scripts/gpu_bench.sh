#!/usr/bin/env bash
# The GPU check, a few minutes on one CUDA GPU (runs on a CPU too, with fewer repetitions):
#   f, g, h of the small CNN, ResNet-18, EfficientNet-Lite0 at 64 and 128 px in fp16: batch-1
#   p50/p95 (eager, CUDA graph, torch.compile) and batched throughput; the object node's
#   per-frame pipeline (bundled weights); offscreen EGL renders/s against training samples/s.
# Usage: bash scripts/gpu_bench.sh [OUT.json] [extra `featmap bench gpu` options]
# Writes OUT.json (default featmap_out/gpu_bench.json) and prints the tables; see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-featmap_out/gpu_bench.json}"
shift || true
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"   # headless GL for the render figures
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi: CPU run"
featmap bench gpu --json "$out" "$@"
