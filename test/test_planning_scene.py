"""featmap_ros.ros.planning_scene: moveit_msgs/CollisionObject ADD / MOVE / REMOVE from the filtered
poses, built with the real moveit_msgs definitions (their .msg files registered in the rosbags
typestore: FEATMAP_MOVEIT_MSGS or an ament share with moveit_msgs; skipped without them), through
CDR; and the definitions' loader."""
from __future__ import annotations

import numpy as np
import pytest

from featmap_ros.ros import conversions as conv
from featmap_ros.ros import params as P
from featmap_ros.ros.msg_defs import MOVEIT_MSGS_ENV, featmap_typestore, register_moveit_types
from featmap_ros.ros.pipeline import ObjectPipeline, ObjectSettings
from featmap_ros.ros.planning_scene import (PlanningSceneObjects, collision_object_id, collision_shapes,
                                            moveit_available)
from featmap_ros.render.toy_object import make_toy_object
from test_ros_node_logic import FakeObjectEstimator, frame

CO = "moveit_msgs/msg/CollisionObject"


@pytest.fixture(scope="module")
def store():
    ts = featmap_typestore("jazzy")
    why = register_moveit_types(ts)
    if why:
        pytest.skip(f"moveit_msgs definitions not found ({why})")
    return ts


@pytest.fixture(scope="module")
def msgs(store):
    return conv.RosbagsMessages(store)


class MeshEstimator(FakeObjectEstimator):
    """The fake estimator with meshes: the toy's for ape (9740 triangles), none for can."""

    def object_mesh(self, name):
        return make_toy_object()[0] if name == "ape" else f"no mesh for {name!r}"


def _pipeline(msgs, **params):
    est = MeshEstimator()
    values = P.validate_params(P.OBJECT_NODE_PARAMS, params)
    settings = ObjectSettings.from_params(values, est.object_names)
    shapes = collision_shapes(settings.objects, est.object_mesh, dict(zip(est.object_names, est.extents_m)),
                              dict(zip(est.object_names, est.center_m)), values["planning_scene.max_triangles"])
    scene = PlanningSceneObjects(msgs, shapes, settings.frame_prefix, settings.filter_config.max_gap_s)
    return ObjectPipeline(est, msgs, settings, planning_scene=scene)


def _round_trip(store, msg):
    return store.deserialize_cdr(store.serialize_cdr(msg, CO), CO)


def test_collision_objects_added_moved_and_removed(store, msgs):
    pipe = _pipeline(msgs)
    ns0 = 1_000_000_000
    out = pipe.process(*frame(msgs, ns=ns0))
    cos = {c.id: _round_trip(store, c) for c in out.collision_objects}
    assert set(cos) == {"featmap_ape", "featmap_can"}
    ape, can = cos["featmap_ape"], cos["featmap_can"]
    C = msgs.cls(CO)
    assert ape.operation == C.ADD == can.operation
    for c in (ape, can):
        assert c.header.frame_id == "camera_color_optical_frame" and conv.stamp_to_ns(c.header.stamp) == ns0
    # the mesh in metres (the toy is ~9 cm), decimated to <= 2000 triangles, at the published (filtered) pose
    (mesh,) = ape.meshes
    verts = np.array([[v.x, v.y, v.z] for v in mesh.vertices])
    tris = np.array([t.vertex_indices for t in mesh.triangles])
    toy = make_toy_object()[0]
    assert 1000 <= len(tris) <= 2000 and tris.max() < len(verts)
    np.testing.assert_allclose(verts.max(0), toy.vertices_m.max(0), atol=0.002)
    best = {p.object_name: p for p in out.results}
    assert (ape.pose.position.x, ape.pose.position.y, ape.pose.position.z) == pytest.approx(tuple(best["ape"].t_m2c_m))
    assert ape.pose.position.z == pytest.approx(out.poses["ape"].pose.position.z)
    # no mesh: the model box
    assert not can.meshes and len(can.primitives) == 1
    assert can.primitives[0].type == msgs.cls("shape_msgs/msg/SolidPrimitive").BOX
    np.testing.assert_allclose(can.primitives[0].dimensions, FakeObjectEstimator.extents_m[1])
    # the next frame: MOVE, geometry left out
    out = pipe.process(*frame(msgs, ns=ns0 + 33_333_333))
    assert {(c.id, c.operation) for c in out.collision_objects} == {("featmap_ape", C.MOVE), ("featmap_can", C.MOVE)}
    assert all(not c.meshes and not c.primitives for c in out.collision_objects)
    # can lost (windows for ape only): kept while within filter.max_gap_s, then REMOVE
    pipe.settings = ObjectSettings.from_params(P.validate_params(P.OBJECT_NODE_PARAMS, {"roi_source": "detections"}),
                                               FakeObjectEstimator.object_names)
    boxes = conv.boxes_to_detection2d_array(msgs, [("ape", np.array([300.0, 200.0, 60.0, 60.0]), 0.9)],
                                            conv.make_header(msgs, ns0, "camera_color_optical_frame"))
    out = pipe.process(*frame(msgs, ns=ns0 + 300_000_000), detections_msg=boxes)
    assert {(c.id, c.operation) for c in out.collision_objects} == {("featmap_ape", C.MOVE)}
    out = pipe.process(*frame(msgs, ns=ns0 + 600_000_000), detections_msg=boxes)
    ops = [(c.id, c.operation) for c in out.collision_objects]
    assert ops == [("featmap_can", C.REMOVE), ("featmap_ape", C.MOVE)]
    assert not _round_trip(store, out.collision_objects[0]).meshes
    # time going back (a bag looping): everything removed, then added again
    out = pipe.process(*frame(msgs, ns=ns0), detections_msg=boxes)
    assert [(c.id, c.operation) for c in out.collision_objects] == [("featmap_ape", C.REMOVE), ("featmap_ape", C.ADD)]
    assert [c.id for c in pipe.planning_scene.remove_all(out.detections.header)] == ["featmap_ape"]


def test_collision_object_ids_have_no_subframe_separator():
    assert collision_object_id("featmap/cam0/", "ape") == "featmap_cam0_ape"


def test_shapes_fall_back_to_the_box_and_say_why():
    est = MeshEstimator()
    shapes = collision_shapes(["ape", "can"], est.object_mesh, dict(zip(est.object_names, est.extents_m)),
                              dict(zip(est.object_names, est.center_m)), max_triangles=500)
    assert shapes["ape"].mesh is not None and len(shapes["ape"].mesh.faces) <= 500
    assert shapes["can"].mesh is None and shapes["can"].note == "box: no mesh for 'can'"
    np.testing.assert_allclose(shapes["can"].box_size_m, est.extents_m[1])


def test_definitions_not_found_are_named(tmp_path):
    why = register_moveit_types(featmap_typestore("jazzy"), {MOVEIT_MSGS_ENV: str(tmp_path)})
    assert why.startswith("moveit_msgs/msg/CollisionObject: no .msg file under") and str(tmp_path) in why
    why = register_moveit_types(featmap_typestore("jazzy"), {})
    assert MOVEIT_MSGS_ENV in why


def test_moveit_available_says_why_not():
    """Without moveit_msgs (this machine has no ROS) the node's output is off, and it says so."""
    why = moveit_available()
    try:
        import moveit_msgs.msg  # noqa: F401
    except ImportError:
        assert "moveit_msgs" in why and "~/collision_objects is off" in why
    else:
        assert why == ""
