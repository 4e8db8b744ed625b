#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine to a result:
#   bash scripts/bootstrap.sh demo   -> set up, then run the embedded demo (`featmap demo`)
#   bash scripts/bootstrap.sh test   -> set up, then run the test suite
#   bash scripts/bootstrap.sh setup  -> set up only
# Set-up: Debian packages for offscreen rendering (EGL), a virtual environment in .venv,
# and the Python packages (torch and torchvision from PyPI). Repeated runs skip what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${FEATMAP_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
mode="${1:-demo}"; shift || true

need_debs=()
for pkg in libegl1 libegl-mesa0 libgl1; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_debs+=("$pkg")
done
if ! "$PY" -c "import venv, ensurepip" >/dev/null 2>&1; then
  need_debs+=("python3-venv")
fi
if [ ${#need_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[bootstrap] installing Debian packages: ${need_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null
  else
    echo "[bootstrap] missing Debian packages; run this once, then again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${need_debs[*]}" >&2
    exit 1
  fi
fi

stamp="$VENV/.featmap-setup-$(cat setup.py | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] creating $VENV and installing Python packages (torch is large: a few minutes the first time)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q torch torchvision
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  rm -f "$VENV"/.featmap-setup-*
  touch "$stamp"
fi
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"

case "$mode" in
  setup) echo "[bootstrap] ready: $VENV" ;;
  demo) exec "$VENV/bin/featmap" demo "$@" ;;
  test) exec bash scripts/run_tests.sh "$@" ;;
  *) echo "usage: bash scripts/bootstrap.sh demo|test|setup [args...]" >&2; exit 2 ;;
esac
