"""RViz configs as a user opens them (no ROS needed): one config per launch, real display
classes, topics the launch wires, late-subscriber QoS, a sim-time-proof TF timeout, a pinned
layout; and the markers and TF of one estimate carry the same stamp and frame."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

#: Class names in ros2/rviz rviz_default_plugins/plugins_description.xml (humble and jazzy
#: branches; jazzy adds CameraInfo). A name outside this list makes RViz show an error display.
RVIZ_DEFAULT_PLUGINS = {
    "AccelStamped", "Axes", "Camera", "CameraInfo", "DepthCloud", "Effort", "FPS", "FluidPressure", "FocusCamera",
    "Grid", "GridCells", "Illuminance", "Image", "Interact", "InteractiveMarkers", "LaserScan", "Map", "Marker",
    "MarkerArray", "Measure", "MoveCamera", "Odometry", "Orbit", "Path", "PointCloud", "PointCloud2", "PointStamped",
    "Polygon", "Pose", "PoseArray", "PoseWithCovariance", "PublishPoint", "Range", "RelativeHumidity", "RobotModel",
    "Select", "SetGoal", "SetInitialPose", "TF", "Temperature", "ThirdPersonFollower", "TopDownOrtho",
    "TwistStamped", "Wrench", "XYOrbit",
}
#: In both branches (CameraInfo is Jazzy only: not to be used here).
RVIZ_HUMBLE_MISSING = {"CameraInfo"}
#: rviz_common's built-in panels (rviz_common/src/rviz_common/panel_factory.cpp, humble and jazzy).
RVIZ_COMMON_PANELS = {"Displays", "Help", "Selection", "Time", "Tool Properties", "Transformation", "Views"}

#: launch file -> (its RViz config, the estimator node it starts).
LAUNCHES = {
    "linemod.launch.py": ("linemod.rviz", "object_pose_node"),
    "camera_object.launch.py": ("linemod.rviz", "object_pose_node"),
    "nyu.launch.py": ("nyu.rviz", "hand_pose_node"),
    "camera_hand.launch.py": ("nyu.rviz", "hand_pose_node"),
}


def load_rviz(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def displays(cfg: dict) -> list[dict]:
    return cfg["Visualization Manager"]["Displays"]


def string_constants(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def published_topics(node_name: str) -> set[str]:
    """Topics the node publishes under its own name with one camera: ``"~/x"`` in its module and
    the shared base, and ``f"{ns}x"`` (``ns`` = ``"~/"`` for the single camera)."""
    files = [REPO / "featmap_ros" / "ros" / f"{node_name}.py", REPO / "featmap_ros" / "ros" / "node_base.py"]
    topics = {f"/{node_name}/{s[2:]}" for f in files for s in string_constants(f) if s.startswith("~/")}
    for f in files:
        for n in ast.walk(ast.parse(f.read_text())):
            if (isinstance(n, ast.JoinedStr) and len(n.values) == 2 and isinstance(n.values[0], ast.FormattedValue)
                    and getattr(n.values[0].value, "id", "") == "ns" and isinstance(n.values[1], ast.Constant)):
                topics.add(f"/{node_name}/{n.values[1].value}")
    return topics


def launched_nodes(launch: Path) -> set[str]:
    """Names of the nodes a launch file starts (``name=`` of Node / pose_node_actions' second argument)."""
    names = set()
    for call in (n for n in ast.walk(ast.parse(launch.read_text())) if isinstance(n, ast.Call)):
        fn = getattr(call.func, "id", getattr(call.func, "attr", ""))
        if fn == "pose_node_actions" and len(call.args) >= 2 and isinstance(call.args[1], ast.Constant):
            names.add(call.args[1].value)
        for kw in call.keywords:
            if fn == "Node" and kw.arg == "name" and isinstance(kw.value, ast.Constant):
                names.add(kw.value.value)
    return names


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
def test_each_launch_opens_its_own_config(launch):
    config, node = LAUNCHES[launch]
    consts = string_constants(REPO / "launch" / launch)
    assert [c for c in consts if c.endswith(".rviz")] == [config]
    assert node in launched_nodes(REPO / "launch" / launch)
    assert not (REPO / "config" / "featmap.rviz").exists()  # the shared config showed an empty panel per launch


@pytest.mark.parametrize("config", ["linemod.rviz", "nyu.rviz"])
def test_classes_are_real_rviz_plugins(config):
    cfg = load_rviz(config)
    for p in cfg["Panels"]:
        pkg, _, name = p["Class"].partition("/")
        assert pkg == "rviz_common" and name in RVIZ_COMMON_PANELS, p["Class"]
    vm = cfg["Visualization Manager"]
    classes = [d["Class"] for d in displays(cfg)] + [t["Class"] for t in vm["Tools"]] + [vm["Views"]["Current"]["Class"]]
    for c in classes:
        pkg, _, name = c.partition("/")
        assert pkg == "rviz_default_plugins" and name in RVIZ_DEFAULT_PLUGINS - RVIZ_HUMBLE_MISSING, c


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
def test_every_topic_is_one_the_launch_wires(launch):
    config, node = LAUNCHES[launch]
    nodes = launched_nodes(REPO / "launch" / launch)
    wired = set().union(*(published_topics(n) for n in nodes if n in ("object_pose_node", "hand_pose_node")))
    topics = [d["Topic"]["Value"] for d in displays(load_rviz(config)) if "Topic" in d]
    assert topics, config
    for t in topics:
        assert t in wired, f"{config}: {t} is not published by the nodes of {launch} ({sorted(wired)})"
    assert all(t.startswith(f"/{node}/") for t in topics)  # no empty panel for the other node


@pytest.mark.parametrize("config,node", [("linemod.rviz", "object_pose_node"), ("nyu.rviz", "hand_pose_node")])
def test_late_subscribers_sim_time_labels_and_layout(config, node):
    cfg = load_rviz(config)
    ds = {d["Class"].split("/")[1]: d for d in displays(cfg)}
    for kind in ("MarkerArray", "Image"):  # the node's latched_qos: reliable, transient local, depth 1
        q = ds[kind]["Topic"]
        assert (q["Durability Policy"], q["Reliability Policy"]) == ("Transient Local", "Reliable"), kind
    src = (REPO / "featmap_ros" / "ros" / "node_common.py").read_text()
    assert "durability=DurabilityPolicy.TRANSIENT_LOCAL" in src
    for module in ("object_pose_node.py", "hand_pose_node.py"):
        assert re.search(r'markers", latched_qos\(\)', (REPO / "featmap_ros" / "ros" / module).read_text()), module
    tf = ds["TF"]
    assert tf["Frame Timeout"] >= 1e5  # wall seconds; stamps are sim time during a replay
    assert tf["Frames"]["camera_link"]["Value"] is False  # same point as the optical frame: one label only
    assert cfg["Visualization Manager"]["Global Options"]["Fixed Frame"] == "camera_link"
    geo = cfg["Window Geometry"]
    assert (geo["Width"], geo["Height"]) == (1600, 1000)
    image_name = ds["Image"]["Name"]
    state = geo["QMainWindow State"]
    for dock in ("Displays", image_name):  # the pinned layout places these docks (Qt stores names as UTF-16)
        assert dock.encode("utf-16-be").hex() in state, dock
    assert cfg["Panels"][0]["Tree Height"] >= 600


@pytest.mark.parametrize("launch,frame", [("linemod.launch.py", "camera_color_optical_frame"),
                                          ("nyu.launch.py", "camera_depth_optical_frame")])
def test_dataset_launches_publish_the_fixed_frame_at_start_up_and_can_loop(launch, frame):
    text = (REPO / "launch" / launch).read_text()
    assert f'camera_link_static_tf("{frame}"' in text
    assert '"-f", "camera_link"' in text
    assert 'DeclareLaunchArgument("loop"' in text and '"loop": ParameterValue(arg("loop"), value_type=bool)' in text


def test_launch_static_tf_equals_the_players():
    from featmap_ros.data import player

    consts = {}
    for node in ast.parse((REPO / "featmap_ros" / "ros" / "launch_nodes.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            consts[node.targets[0].id] = ast.literal_eval(node.value) if not isinstance(node.value, ast.Call) else None
    assert consts["CAMERA_LINK"] == player.CAMERA_LINK
    assert consts["OPTICAL_FROM_LINK_XYZW"] == player.OPTICAL_FROM_LINK_XYZW


def test_markers_and_tf_of_one_estimate_share_stamp_and_frame():
    """RViz resolves a marker (frame_locked false) at its stamp: with the TF of the same estimate
    stamped alike, the axes and the mesh come from the same frame during playback."""
    pytest.importorskip("rosbags")
    from featmap_ros.results import ObjectPose
    from featmap_ros.ros import conversions as conv
    from featmap_ros.ros import params as P
    from featmap_ros.ros.msg_defs import featmap_typestore
    from featmap_ros.ros.pipeline import ObjectPipeline, ObjectSettings
    from featmap_ros.geometry import CameraModel

    class OneObject:
        object_names = ["ape"]

        def estimate(self, image_rgb, K, boxes=None):
            return [ObjectPose("ape", 0, np.eye(3), np.array([0.0, 0.0, 0.8]), 0.9, np.array([0.08, 0.08, 0.1]), np.zeros(3))]

    msgs = conv.RosbagsMessages(featmap_typestore("jazzy"))
    values = P.validate_params(P.OBJECT_NODE_PARAMS, {"markers.mesh_resource": "package://featmap_ros/meshes/{object}.ply"})
    pipe = ObjectPipeline(OneObject(), msgs, ObjectSettings.from_params(values, ["ape"]))
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    for k in range(3):
        h = conv.make_header(msgs, 5_000_000_000 + k * 33_333_333, "camera_color_optical_frame")
        out = pipe.process(conv.numpy_to_image(msgs, np.zeros((480, 640, 3), np.uint8), "rgb8", h),
                           conv.camera_model_to_info(msgs, CameraModel(K, 640, 480), h))
        stamps = {conv.stamp_to_ns(m.header.stamp) for m in [*out.markers.markers, *out.transforms, out.detections]}
        assert stamps == {conv.stamp_to_ns(h.stamp)}
        assert {m.header.frame_id for m in [*out.markers.markers, *out.transforms]} == {"camera_color_optical_frame"}
        assert not any(m.frame_locked for m in out.markers.markers)
        assert [t.child_frame_id for t in out.transforms] == ["featmap/ape"]
    assert re.fullmatch(r"[0-9a-f]+", load_rviz("linemod.rviz")["Window Geometry"]["QMainWindow State"])


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
def test_launches_offer_lifecycle_autostart_and_mode(launch):
    """lifecycle:=true starts the managed node (configured and activated when autostart), mode is passed on."""
    text = (REPO / "launch" / launch).read_text()
    for name in ("lifecycle", "autostart", "mode"):
        assert f'DeclareLaunchArgument("{name}"' in text, name
    assert 'pose_node_actions(' in text and 'arg("lifecycle"), arg("autostart")' in text
    assert '"mode": ParameterValue(arg("mode"), value_type=str)' in text
    helper = (REPO / "featmap_ros" / "ros" / "launch_nodes.py").read_text()
    assert 'start_state="configuring", goal_state="inactive"' in helper  # a manual deactivate is not undone
    for node in ("object_pose_lifecycle_node", "hand_pose_lifecycle_node"):
        assert (REPO / "nodes" / node).is_file() and f"nodes/{node}" in (REPO / "CMakeLists.txt").read_text()
