"""The core (everything outside featmap_ros/ros/) works on a machine without ROS 2."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "featmap_ros"
#: Top-level modules that only a ROS 2 installation provides.
ROS_MODULES = (
    "rclpy", "rosidl_runtime_py", "rosidl_parser", "sensor_msgs", "geometry_msgs", "vision_msgs",
    "visualization_msgs", "std_msgs", "builtin_interfaces", "diagnostic_msgs", "tf2_ros", "tf2_msgs",
    "message_filters", "cv_bridge", "launch", "launch_ros", "rosgraph_msgs", "ament_index_python",
)

_BLOCKED_IMPORT = r'''
import importlib, importlib.abc, json, sys
BLOCKED = set(sys.argv[1].split(","))

class NoRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} blocked: no ROS here")
        return None

sys.meta_path.insert(0, NoRos())
for m in list(sys.modules):
    if m.split(".")[0] in BLOCKED:
        del sys.modules[m]
import pathlib
import featmap_ros
root = pathlib.Path(featmap_ros.__file__).parent
names = sorted(
    ".".join(("featmap_ros",) + p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    for p in root.rglob("*.py") if p.relative_to(root).parts[0] != "ros"
)
failed = {}
for n in names:
    try:
        importlib.import_module(n)
    except Exception as e:
        failed[n] = f"{type(e).__name__}: {e}"
from featmap_ros.cli import build_parser
build_parser().parse_args(["eval", "hands", "p", "g", "--dataset", "nyu"])
loaded_ros = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"modules": names, "failed": failed, "loaded_ros": loaded_ros}))
'''


def test_every_core_module_imports_with_ros_blocked():
    env = dict(os.environ, PYTHONPATH=str(PKG.parent), PYOPENGL_PLATFORM=os.environ.get("PYOPENGL_PLATFORM", "egl"))
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT, ",".join(ROS_MODULES)],
        capture_output=True, text=True, timeout=240, env=env, cwd=str(PKG.parent),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "featmap_ros.evaluation.metrics" in out["modules"] and "featmap_ros.geometry" in out["modules"]
    assert out["failed"] == {}
    assert out["loaded_ros"] == []


def test_blocker_really_blocks():
    code = _BLOCKED_IMPORT.split("import featmap_ros")[0] + "import rclpy\n"
    proc = subprocess.run([sys.executable, "-c", code, "rclpy"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_no_ros_import_statements_outside_ros_package():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        if "ros" in path.relative_to(PKG).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(PKG.parent)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in ROS_MODULES]
    assert offenders == []
