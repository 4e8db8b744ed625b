"""The package runs on ROS 2 Humble's Python (3.10): checked with vermin, a well-kept minimum-version
analyser, over the package, its tests, node scripts and launch files (as setup.py's python_requires says)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _vermin() -> list[str]:
    exe = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(exe).exists():
        pytest.skip("vermin is not installed (pip install -e '.[test]')")
    return [exe]


def test_every_file_runs_on_python_3_10():
    r = subprocess.run(_vermin() + ["--target=3.10-", "--violations", "--no-tips", "--eval-annotations",
                                    "featmap_ros", "test", "nodes", "launch"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_python_requires_is_3_10():
    assert re.search(r'python_requires=">=3\.10"', (ROOT / "setup.py").read_text())
