"""Launch actions the launch files share: a pose node, plain or managed, and RViz's fixed frame.

``pose_node_actions`` starts ``<executable>`` when ``lifecycle`` is false, else the managed
variant ``<executable without _node>_lifecycle_node`` as a ``launch_ros.actions.LifecycleNode``
which, with ``autostart`` true, is configured at once and activated when configuring succeeded
(launch_ros ``ChangeState`` events: the same in Humble and Jazzy). Deactivating it by hand later
(``ros2 lifecycle set``) is not undone: only the configuring -> inactive transition activates.
"""
from __future__ import annotations

from launch.actions import EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.substitutions import PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

#: As featmap_ros.data.player's CAMERA_LINK / OPTICAL_FROM_LINK_XYZW (the launch files must not import
#: the player and its rendering stack; test_ros_rviz.py checks they agree).
CAMERA_LINK = "camera_link"
OPTICAL_FROM_LINK_XYZW = (-0.5, 0.5, -0.5, 0.5)


def managed_executable(executable: str) -> str:
    """``object_pose_node`` -> ``object_pose_lifecycle_node``."""
    return executable[: -len("_node")] + "_lifecycle_node" if executable.endswith("_node") else executable + "_lifecycle"


def pose_node_actions(executable: str, name: str, lifecycle, autostart, **node_kwargs) -> list:
    """The estimator node: plain unless ``lifecycle`` ("true"/"false" substitution), else managed.

    Args:
        executable: ``object_pose_node`` or ``hand_pose_node``.
        name: node name (the managed one gets the empty namespace).
        lifecycle, autostart: launch substitutions (``LaunchConfiguration``) evaluating to true/false.
        node_kwargs: parameters, remappings, ... for both variants.

    Returns:
        Launch actions.
    """
    plain = Node(package="featmap_ros", executable=executable, name=name, output="screen",
                 condition=UnlessCondition(lifecycle), **node_kwargs)
    managed = LifecycleNode(package="featmap_ros", executable=managed_executable(executable), name=name, namespace="",
                            output="screen", condition=IfCondition(lifecycle), **node_kwargs)
    auto = IfCondition(PythonExpression(["'", lifecycle, "' == 'true' and '", autostart, "' == 'true'"]))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                            transition_id=Transition.TRANSITION_CONFIGURE), condition=auto)
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=managed, start_state="configuring", goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]), condition=auto)
    return [plain, managed, activate, configure]


def camera_link_static_tf(optical_frame: str, condition=None) -> Node:
    """``static_transform_publisher``: ``camera_link`` -> ``optical_frame`` (REP 103 rotation, as
    the player's ``/tf_static``), published at start-up so that RViz's fixed frame
    ``camera_link`` exists before the first image."""
    qx, qy, qz, qw = (str(v) for v in OPTICAL_FROM_LINK_XYZW)
    return Node(package="tf2_ros", executable="static_transform_publisher", name="camera_link_tf", output="log",
                arguments=["--x", "0", "--y", "0", "--z", "0", "--qx", qx, "--qy", qy, "--qz", qz, "--qw", qw,
                           "--frame-id", CAMERA_LINK, "--child-frame-id", optical_frame], condition=condition)
