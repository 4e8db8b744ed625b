"""Several cameras in one node without rclpy: the batcher, the ``cameras`` parameter."""
from __future__ import annotations

import pytest

from featmap_ros.errors import InputError
from featmap_ros.ros import params as P
from featmap_ros.ros.multicam import CameraBatcher


def test_batch_closes_when_every_camera_has_a_frame():
    b = CameraBatcher(["left", "right"], 0.05)
    assert b.add("right", "r0", 10.0) is None
    assert b.add("left", "l0", 10.01) == [("left", "l0"), ("right", "r0")]  # cameras in order
    assert b.due(99.0) is None  # nothing open


def test_batch_closes_after_the_window_without_a_stalled_camera():
    b = CameraBatcher(["left", "right", "top"], 0.05)
    assert b.add("left", "l0", 10.0) is None
    assert b.add("left", "l1", 10.02) is None  # a newer frame of the same camera replaces its older one
    assert b.due(10.04) is None
    assert b.due(10.05) == [("left", "l1")]
    assert b.add("right", "r0", 11.0) is None
    # a frame after the window: the open batch goes out, this frame starts the next one
    assert b.add("top", "t0", 11.2) == [("right", "r0")]
    assert b.add("left", "l2", 11.21) is None and b.add("right", "r1", 11.22) == [("left", "l2"), ("right", "r1"), ("top", "t0")]


def test_window_zero_and_bad_input():
    b = CameraBatcher(["a", "b"], 0.0)
    assert b.add("a", 1, 0.0) == [("a", 1)]
    with pytest.raises(InputError, match="camera 'c' is not one of"):
        b.add("c", 1, 0.0)
    with pytest.raises(InputError, match="batch.window_s"):
        CameraBatcher(["a"], -1.0)
    with pytest.raises(InputError, match="at least one camera"):
        CameraBatcher([], 0.1)


def test_cameras_parameter_takes_a_list_or_a_string():
    spec = P.spec_table(P.OBJECT_NODE_PARAMS)["cameras"]
    assert spec.check(["cam_left", "cam_right"]) == ("cam_left", "cam_right")
    assert spec.check("cam_left, cam_right") == "cam_left, cam_right"
    assert P.parse_cameras(("cam_left", "cam_right")) == P.parse_cameras("cam_left,cam_right") == ("cam_left", "cam_right")
    assert P.parse_cameras("") == () and P.parse_cameras([]) == ()
    assert P.parse_cameras(["robot/wrist"]) == ("robot/wrist",)
    with pytest.raises(InputError, match="parameter 'cameras': expected a string or a list of strings"):
        spec.check([1, 2])
    with pytest.raises(InputError, match="parameter 'cameras': '2cam' is not a camera namespace"):
        P.parse_cameras(["2cam"])
    with pytest.raises(InputError, match="names a camera twice"):
        P.parse_cameras("a,a")
    with pytest.raises(InputError, match="parameter 'batch.window_s'"):
        P.validate_params(P.OBJECT_NODE_PARAMS, {"batch.window_s": -0.1})


def test_bench_node_cameras_runs_both_setups_and_names_bad_counts(tmp_path, capsys):
    """``featmap bench node --cameras``: one batched process and N spawned single-camera processes
    (tiny random net, 2 frames: a smoke test; the figures come from real runs, docs/ros.md)."""
    pytest.importorskip("rosbags")
    from featmap_ros import cli

    out = tmp_path / "cams.json"
    assert cli.main(["bench", "node", "--cameras", "1,2", "--frames", "2", "--repeats", "1", "--random", "--backbone",
                     "small", "--device", "cpu", "--width", "64", "--height", "48", "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())["cameras"]
    assert [r["cameras"] for r in rows] == [1, 2]
    assert all(r["one_process_fps"] > 0 and r["separate_processes_fps"] > 0 for r in rows)
    assert "1 node, batched" in capsys.readouterr().out
    assert cli.main(["bench", "node", "--cameras", "0"]) == 2
    assert "--cameras: comma-separated counts from 1 to 16" in capsys.readouterr().err
