#!/usr/bin/env bash
# The test suite (called by scripts/bootstrap.sh test after set-up).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FEATMAP_VENV:-$(pwd)/.venv}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
# Plugins of a sourced ROS install (launch_testing) break pytest 9; the tests load what they need.
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider test "$@"
