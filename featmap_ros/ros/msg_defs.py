"""Message definitions that the rosbags typestores do not ship, as .msg text, and moveit_msgs'
read from its own .msg files (:func:`register_moveit_types`; no copy of them is kept here).

``vision_msgs`` (4.1, the ``ros2`` branch of ros-perception/vision_msgs, as released for Humble
and Jazzy) and this package's own ``featmap_ros/msg/HandPose``. They let rosbags build, serialise
and read the very messages the nodes publish, without ROS: the bag writer and the tests use them.
``test_ros_conversions.py`` checks that ``HAND_POSE_MSG`` matches ``msg/HandPose.msg``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from featmap_ros.errors import InputError

#: vision_msgs 4.1 definitions (comments dropped), keyed by full type name.
VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
}

#: featmap_ros/msg/HandPose, identical to ``msg/HandPose.msg`` (the file colcon builds from).
HAND_POSE_MSG = """\
# 3D hand joints estimated from one depth image.
# Stamped with the header of the input depth image; joints are in its frame (REP 103, metres).
std_msgs/Header header
string[] joint_names              # one name per joint, e.g. NYU's 14 evaluation joints
geometry_msgs/Point[] joints      # metres, in header.frame_id, same order as joint_names
float32[] joint_scores            # per-joint confidence in [0, 1]; empty if not estimated
float32 score                     # overall confidence in [0, 1]
geometry_msgs/Point crop_center   # centre of the DeepPrior crop cube, metres, header.frame_id
"""

FEATMAP_MSGS: dict[str, str] = {"featmap_ros/msg/HandPose": HAND_POSE_MSG}

#: The services ``srv/Estimate.srv`` and ``srv/EstimateHand.srv``, identical to those files.
ESTIMATE_SRV = """\
# The object poses of the next synchronised frame (object_pose_node ~/estimate).
# The answer comes from the first frame the node accepts after the request arrived.
float64 timeout_s                           # longest wait, seconds; 0 = the node's request.timeout_s
string camera                               # object_pose_node with cameras: whose poses; "" = the first
---
bool success                                # false: no frame processed in time (message says why)
string message                              # "ok", or the reason (timeout, inactive node, missing input)
vision_msgs/Detection3DArray detections     # as on ~/detections: input header, poses in metres
"""

ESTIMATE_HAND_SRV = """\
# The hand pose of the next synchronised frame (hand_pose_node ~/estimate).
# The answer comes from the first frame the node accepts after the request arrived.
float64 timeout_s                           # longest wait, seconds; 0 = the node's request.timeout_s
---
bool success                                # false: no frame processed in time (message says why)
string message                              # "ok", or the reason (timeout, inactive node, missing input)
HandPose hand_pose                          # as on ~/hand_pose: no joints when no hand was found
"""

FEATMAP_SRVS: dict[str, str] = {"Estimate": ESTIMATE_SRV, "EstimateHand": ESTIMATE_HAND_SRV}


def srv_halves(name: str, text: str) -> dict[str, str]:
    """A .srv text -> its request and response as message definitions.

    rosbags' typestores know ``msg`` and ``action`` types only, so the halves are registered as
    ``featmap_ros/msg/<Name>_Request`` and ``featmap_ros/msg/<Name>_Response`` (same fields as the
    rosidl-generated ``featmap_ros.srv.<Name>.Request`` / ``.Response``).
    """
    request, sep, response = text.partition("\n---\n")
    if not sep:
        raise InputError(f"service {name}: no '---' line between request and response")
    return {f"featmap_ros/msg/{name}_Request": request + "\n", f"featmap_ros/msg/{name}_Response": response}


def register_types(typestore: Any) -> Any:
    """Register vision_msgs and featmap_ros messages (and the halves of its services, see
    :func:`srv_halves`) in a rosbags typestore (in place).

    Args:
        typestore: a ``rosbags.typesys`` store, e.g. ``get_typestore(Stores.ROS2_JAZZY)``.

    Returns:
        The same typestore, for chaining. Types it already holds are left as they are.
    """
    from rosbags.typesys import get_types_from_msg

    types: dict[str, Any] = {}
    srvs = {k: v for name, text in FEATMAP_SRVS.items() for k, v in srv_halves(name, text).items()}
    for name, text in {**VISION_MSGS, **FEATMAP_MSGS, **srvs}.items():
        if name not in typestore.types:
            types.update(get_types_from_msg(text, name))
    if types:
        typestore.register(types)
    return typestore


def featmap_typestore(distro: str = "jazzy") -> Any:
    """A fresh rosbags typestore for ``humble`` or ``jazzy`` with this package's messages added."""
    from rosbags.typesys import Stores, get_typestore

    stores = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
    if distro not in stores:
        raise InputError(f"ROS distro {distro!r}: valid {sorted(stores)}")
    return register_types(get_typestore(stores[distro]))


#: ``FEATMAP_MOVEIT_MSGS``: a folder with moveit_msgs' ``.msg`` files (the package folder, holding
#: ``msg/CollisionObject.msg``, or a folder of package folders); its dependencies are looked for
#: beside it, in the ament prefixes (``AMENT_PREFIX_PATH``) and in the typestore.
MOVEIT_MSGS_ENV = "FEATMAP_MOVEIT_MSGS"
#: The moveit_msgs types the planning-scene output builds (their fields' types follow).
MOVEIT_TYPES = ("moveit_msgs/msg/CollisionObject",)
#: Field types that are not messages.
_BUILTIN_TYPES = frozenset(("bool", "byte", "char", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                            "uint64", "float32", "float64", "string", "wstring", "time", "duration"))


def msg_search_roots(env: Mapping[str, str] | None = None) -> list[Path]:
    """Folders that hold ``<package>/msg/<Name>.msg``: ``$FEATMAP_MOVEIT_MSGS`` (and the folder
    above it, for the package folder itself), then ``<prefix>/share`` of each ament prefix."""
    env = os.environ if env is None else env
    roots: list[Path] = []
    if env.get(MOVEIT_MSGS_ENV):
        p = Path(env[MOVEIT_MSGS_ENV]).expanduser()
        roots += [p, p.parent]
    roots += [Path(prefix) / "share" for prefix in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if prefix]
    return roots


def _msg_file(typename: str, roots: Sequence[Path]) -> Path | None:
    pkg, _, name = typename.split("/")
    for root in roots:
        for f in (root / pkg / "msg" / f"{name}.msg", root / "msg" / f"{name}.msg" if root.name == pkg else None):
            if f is not None and f.is_file():
                return f
    return None


def _field_types(text: str, pkg: str) -> list[str]:
    """The message types a .msg text's fields name, as ``pkg/msg/Name``."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or "=" in line:
            continue  # blank, comment or constant
        typ = re.sub(r"\[.*\]$", "", line.split()[0])
        typ = re.sub(r"<=\d+$", "", typ)  # bounded strings
        if typ in _BUILTIN_TYPES:
            continue
        if typ == "Header":
            out.append("std_msgs/msg/Header")
        elif "/" in typ:
            p, _, n = typ.rpartition("/")
            out.append(f"{p.split('/')[0]}/msg/{n}")
        else:
            out.append(f"{pkg}/msg/{typ}")
    return out


def moveit_definitions(typestore: Any, env: Mapping[str, str] | None = None) -> tuple[dict[str, str], str]:
    """The .msg texts of :data:`MOVEIT_TYPES` and of every type they need that ``typestore``
    lacks, read from the message files (no copies kept here).

    Args:
        typestore: a rosbags typestore (its types are not looked up in files).
        env: the environment (default ``os.environ``): ``FEATMAP_MOVEIT_MSGS``, ``AMENT_PREFIX_PATH``.

    Returns:
        (typename -> .msg text, "") or ({}, why not: which file was not found, where).
    """
    roots = msg_search_roots(env)
    if not roots:
        return {}, f"no moveit_msgs definitions: set {MOVEIT_MSGS_ENV} to a folder of its .msg files or source a ROS 2 with moveit_msgs"
    todo, texts = list(MOVEIT_TYPES), {}
    while todo:
        typename = todo.pop()
        if typename in texts or typename in typestore.types:
            continue
        f = _msg_file(typename, roots)
        if f is None:
            return {}, f"{typename}: no .msg file under {[str(r) for r in roots]}"
        try:
            text = f.read_text()
        except OSError as e:
            return {}, f"{f}: cannot read ({e})"
        texts[typename] = text
        todo += _field_types(text, typename.split("/")[0])
    return texts, ""


def register_moveit_types(typestore: Any, env: Mapping[str, str] | None = None) -> str:
    """Register moveit_msgs' CollisionObject (and what it needs) in a rosbags typestore, from the
    .msg files (:func:`moveit_definitions`).

    Returns:
        "" when registered (or already there), else why not (the output is then off).

    Raises:
        InputError: a .msg file that rosbags cannot parse (naming the type).
    """
    from rosbags.typesys import get_types_from_msg

    if all(t in typestore.types for t in MOVEIT_TYPES):
        return ""
    texts, why = moveit_definitions(typestore, env)
    if why:
        return why
    types: dict[str, Any] = {}
    for name, text in texts.items():
        try:
            types.update(get_types_from_msg(text, name))
        except Exception as e:  # rosbags raises its own parse errors
            raise InputError(f"{name}: cannot parse its .msg ({type(e).__name__}: {e})") from None
    typestore.register(types)
    return ""
