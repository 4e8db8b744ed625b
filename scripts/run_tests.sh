#!/usr/bin/env bash
# The test suite (called by scripts/bootstrap.sh test after set-up).
# When a ROS 2 install is found ($FEATMAP_ROS_SETUP, else /opt/ros/jazzy or /opt/ros/humble
# setup.bash), the ROS tests then run a second time with it sourced (rclpy, launch files).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FEATMAP_VENV:-$(pwd)/.venv}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
# Plugins of a sourced ROS install (launch_testing) break pytest 9; the tests load what they need.
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
ros_setup="${FEATMAP_ROS_SETUP:-}"
if [ -z "$ros_setup" ]; then
  for distro in jazzy humble; do
    if [ -f "/opt/ros/$distro/setup.bash" ]; then ros_setup="/opt/ros/$distro/setup.bash"; break; fi
  done
fi
if [ -z "$ros_setup" ]; then
  exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider test "$@"
fi
"$VENV/bin/python" -m pytest -q -p no:cacheprovider test "$@"
echo "[run_tests] ROS 2 tests with $ros_setup sourced"
(
  set +u  # ROS setup scripts read unset variables
  # shellcheck disable=SC1090
  source "$ros_setup"
  set -u
  export PATH="$VENV/bin:$PATH"  # launch tests start the node scripts (#!/usr/bin/env python3) with the venv's torch
  exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs \
    test/test_ros_*.py
)
