"""Package metadata: package.xml (catkin_pkg), setup.py console script, CI runs the README's test command."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROSDEP_KEYS = (
    "rclpy", "sensor_msgs", "geometry_msgs", "vision_msgs", "visualization_msgs", "tf2_ros",
    "message_filters", "std_msgs", "rosidl_default_generators", "rosidl_default_runtime",
)


def test_package_xml_is_valid_format_3_with_dependencies():
    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    pkg = catkin_pkg.parse_package(str(ROOT / "package.xml"))
    pkg.validate()
    assert pkg.name == "featmap_ros" and pkg.package_format == 3
    deps = {d.name for group in (
        pkg.build_depends, pkg.buildtool_depends, pkg.build_export_depends, pkg.exec_depends,
        pkg.test_depends, pkg.group_depends,
    ) for d in group}
    missing = [k for k in ROSDEP_KEYS if k not in deps]
    assert missing == []
    assert "rosidl_interface_packages" in {g.name for g in pkg.member_of_groups}
    assert [e.content for e in pkg.exports if e.tagname == "build_type"] == ["ament_cmake"]


def test_setup_py_console_script_points_at_cli_main():
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = [
        s.value for node in ast.walk(tree) if isinstance(node, ast.Dict)
        for k, v in zip(node.keys, node.values)
        if isinstance(k, ast.Constant) and k.value == "console_scripts"
        for s in v.elts
    ]
    assert "featmap = featmap_ros.cli:main" in [re.sub(r"\s+", " ", s) for s in scripts]
    from featmap_ros import cli

    assert callable(cli.main)
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    commands = [line.split("#")[0].strip() for b in blocks for line in b.splitlines()]
    test_cmds = [c for c in commands if re.search(r"\btest\b", c)]
    assert test_cmds, "README has no test command"
    ci = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci_text = " ; ".join(c for c in ci if c)
    assert any(cmd in ci_text for cmd in test_cmds[:1]), (test_cmds[0], ci_text)
