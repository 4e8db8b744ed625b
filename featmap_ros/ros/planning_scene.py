"""The objects of a planning scene from the filtered poses: moveit_msgs/CollisionObject messages.

No rclpy here; the messages come from a factory (rclpy's with moveit_msgs installed, or a
rosbags typestore with moveit_msgs registered from its .msg files,
:func:`featmap_ros.ros.msg_defs.register_moveit_types`).

:class:`PlanningSceneObjects` follows each object over the frames (its best instance, as
``~/<object>/pose``):

- **ADD** when it appears: the mesh (metres, model frame, decimated to ``max_triangles``) at the
  filtered pose, ``header`` = the input image's (stamp and optical frame);
- **MOVE** while it stays: the new pose only (MoveIt keeps the geometry; the arrays stay empty);
- **REMOVE** when it is lost: no pose for longer than ``lost_after_s`` of input stamps (the
  pose filter's ``max_gap_s``), or the stamps went back (a bag looping: every object goes).

An object without a usable mesh is added as its model box (a ``SolidPrimitive`` BOX, the
estimator's extents), so that a planner still avoids it.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featmap_ros.data.bop import Mesh, decimate_mesh
from featmap_ros.errors import InputError
from featmap_ros.results import ObjectPose
from featmap_ros.ros import conversions as conv

COLLISION_OBJECT = "moveit_msgs/msg/CollisionObject"


@dataclass(frozen=True)
class CollisionShape:
    """One object's collision geometry in its model frame: a mesh, or else a box.

    Attributes:
        mesh: the decimated mesh (metres), or None.
        box_size_m: (3,) the model box's size, metres (used when there is no mesh).
        box_center_m: (3,) its centre in the model frame, metres.
        note: where the shape came from, or why there is no mesh.
    """

    mesh: Mesh | None
    box_size_m: np.ndarray
    box_center_m: np.ndarray
    note: str = ""


def collision_shapes(objects: Sequence[str], mesh_of: Callable[[str], Mesh | str], extents_m: Mapping[str, np.ndarray],
                     centers_m: Mapping[str, np.ndarray], max_triangles: int = 2000) -> dict[str, CollisionShape]:
    """Each object's collision shape, built once at start-up.

    Args:
        objects: object names.
        mesh_of: name -> mesh in metres or why there is none (``ObjectPoseEstimator.object_mesh``).
        extents_m, centers_m: name -> (3,) model box size and centre, metres.
        max_triangles: meshes are decimated to at most this many faces.

    Returns:
        name -> :class:`CollisionShape` (``note`` says "box: <why>" for an object without a mesh).
    """
    out = {}
    for name in objects:
        size = np.asarray(extents_m[name], np.float64).reshape(3)
        center = np.asarray(centers_m[name], np.float64).reshape(3)
        mesh = mesh_of(name)
        if isinstance(mesh, str):
            out[name] = CollisionShape(None, size, center, f"box: {mesh}")
            continue
        try:
            small = decimate_mesh(mesh, max_triangles)
        except InputError as e:
            out[name] = CollisionShape(None, size, center, f"box: {e}")
            continue
        out[name] = CollisionShape(small, size, center, f"mesh {small.name or mesh.name}: {len(small.faces)} triangles")
    return out


def moveit_available() -> str:
    """"" when the ROS Python package ``moveit_msgs`` can be imported (a node can publish
    CollisionObject), else the line a node logs once: the output is off."""
    try:
        found = importlib.util.find_spec("moveit_msgs") is not None
    except (ImportError, ValueError):
        found = False
    return "" if found else ("planning_scene.enabled, but moveit_msgs is not installed (sudo apt install "
                             "ros-$ROS_DISTRO-moveit-msgs): ~/collision_objects is off")


def collision_object_id(frame_prefix: str, name: str) -> str:
    """The planning-scene id of an object: ``<frame_prefix><name>`` with ``/`` as ``_`` (MoveIt
    uses ``/`` for subframes: ``id/subframe``)."""
    return f"{frame_prefix}{name}".replace("/", "_")


def _shape_fields(msgs: Any, shape: CollisionShape) -> dict[str, Any]:
    """The geometry fields of an ADD: one mesh (identity mesh pose) or one box primitive."""
    identity = conv.pose_msg(msgs, np.eye(3), np.zeros(3))
    if shape.mesh is not None:
        verts = [conv.point_msg(msgs, v) for v in np.asarray(shape.mesh.vertices_m, np.float64)]
        tris = [msgs.new("shape_msgs/msg/MeshTriangle", vertex_indices=np.asarray(f, dtype=np.uint32))
                for f in np.asarray(shape.mesh.faces, np.int64)]
        return {"meshes": [msgs.new("shape_msgs/msg/Mesh", triangles=tris, vertices=verts)], "mesh_poses": [identity]}
    SP = msgs.cls("shape_msgs/msg/SolidPrimitive")
    box = msgs.new("shape_msgs/msg/SolidPrimitive", type=int(SP.BOX), dimensions=msgs.f64_array(shape.box_size_m))
    return {"primitives": [box], "primitive_poses": [conv.pose_msg(msgs, np.eye(3), shape.box_center_m)]}


class PlanningSceneObjects:
    """ADD / MOVE / REMOVE of each object's CollisionObject over the frames (module docstring).

    Args:
        msgs: message factory holding moveit_msgs and shape_msgs.
        shapes: name -> :class:`CollisionShape` (:func:`collision_shapes`); objects not in it
            are left out of the scene.
        frame_prefix: the ids' prefix (:func:`collision_object_id`).
        lost_after_s: an object without a pose for longer than this (input stamps) is removed.
    """

    def __init__(self, msgs: Any, shapes: Mapping[str, CollisionShape], frame_prefix: str = "featmap/",
                 lost_after_s: float = 0.5) -> None:
        self.msgs = msgs
        self.shapes = dict(shapes)
        self.frame_prefix = frame_prefix
        self.lost_after_s = float(lost_after_s)
        #: name -> (last stamp seen, seconds; the frame_id it was added in)
        self.present: dict[str, tuple[float, str]] = {}
        self.last_stamp_s: float | None = None
        CO = msgs.cls(COLLISION_OBJECT)
        self._ops = {"ADD": int(CO.ADD), "MOVE": int(CO.MOVE), "REMOVE": int(CO.REMOVE)}

    def _message(self, name: str, header: Any, operation: str, pose: ObjectPose | None = None) -> Any:
        msgs = self.msgs
        fields: dict[str, Any] = {"header": header, "id": collision_object_id(self.frame_prefix, name),
                                  "operation": self._ops[operation]}
        if pose is not None:
            fields["pose"] = conv.pose_msg(msgs, pose.R_m2c, pose.t_m2c_m, f"pose of {name!r}")
        if operation == "ADD":
            fields.update(_shape_fields(msgs, self.shapes[name]))
        return msgs.new(COLLISION_OBJECT, **fields)

    def update(self, best: Mapping[str, ObjectPose], header: Any, stamp_s: float) -> list[Any]:
        """The CollisionObject messages of one frame.

        Args:
            best: object name -> its filtered pose in this frame (the best instance).
            header: the input image's header (stamp, optical frame).
            stamp_s: its stamp, seconds.

        Returns:
            REMOVEs of the objects lost, then an ADD (new) or MOVE (known) per object of ``best``
            that has a shape.
        """
        out = []
        if self.last_stamp_s is not None and stamp_s < self.last_stamp_s:
            lost = list(self.present)  # time went back: start the scene over
        else:
            lost = [n for n, (seen, _) in self.present.items() if n not in best and stamp_s - seen > self.lost_after_s]
        for name in lost:
            del self.present[name]
            out.append(self._message(name, header, "REMOVE"))
        self.last_stamp_s = float(stamp_s)
        for name, pose in best.items():
            if name not in self.shapes:
                continue
            op = "MOVE" if name in self.present and self.present[name][1] == header.frame_id else "ADD"
            self.present[name] = (float(stamp_s), str(header.frame_id))
            out.append(self._message(name, header, op, pose))
        return out

    def remove_all(self, header: Any) -> list[Any]:
        """REMOVE of every object in the scene (a node shutting down or turning the output off)."""
        out = [self._message(name, header, "REMOVE") for name in self.present]
        self.present = {}
        return out
