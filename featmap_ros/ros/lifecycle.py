"""Managed (lifecycle) variants of the pose nodes: the same node, its phases driven by transitions.

    ros2 run featmap_ros object_pose_lifecycle_node            # starts unconfigured
    ros2 lifecycle set /object_pose_node configure             # parameters checked, model loaded
    ros2 lifecycle set /object_pose_node activate              # subscribes, infers, publishes
    ros2 lifecycle set /object_pose_node deactivate            # unsubscribes: no inference
    ros2 lifecycle set /object_pose_node cleanup               # model freed (CUDA cache emptied)

The transitions call :class:`~featmap_ros.ros.node_base.PoseNode`'s phases
(``configure_node``, ``activate_node``, ``deactivate_node``, ``cleanup_node``); nothing else
differs from the plain node. A configure that fails (a bad parameter, weights that do not
load) logs the reason naming the parameter and leaves the node unconfigured.
rclpy.lifecycle exists in Humble and Jazzy.
"""
from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn

from featmap_ros.ros.node_base import PoseNode


def managed(node_cls: type[PoseNode]) -> type:
    """The lifecycle variant of a :class:`PoseNode` subclass (a class of the same name + ``Managed``)."""

    class Managed(node_cls, LifecycleNode):
        def __init__(self, **kwargs) -> None:
            super().__init__(managed=True, **kwargs)

        def on_configure(self, state: State) -> TransitionCallbackReturn:
            try:
                self.configure_node()
            except Exception as e:  # noqa: BLE001 - the transition fails; the node stays unconfigured
                self.get_logger().error(f"configure failed: {e}")
                return TransitionCallbackReturn.FAILURE
            return super().on_configure(state)

        def on_activate(self, state: State) -> TransitionCallbackReturn:
            self.activate_node()
            return super().on_activate(state)

        def on_deactivate(self, state: State) -> TransitionCallbackReturn:
            self.deactivate_node()
            return super().on_deactivate(state)

        def on_cleanup(self, state: State) -> TransitionCallbackReturn:
            self.cleanup_node()
            return super().on_cleanup(state)

        def on_shutdown(self, state: State) -> TransitionCallbackReturn:
            self._release()
            return super().on_shutdown(state)

        def on_error(self, state: State) -> TransitionCallbackReturn:
            self._release()
            return TransitionCallbackReturn.SUCCESS  # back to unconfigured

        def _release(self) -> None:
            if self.worker is not None:
                self.deactivate_node()
            if self.pipeline is not None:
                self.cleanup_node()

    Managed.__name__ = Managed.__qualname__ = f"{node_cls.__name__}Managed"
    return Managed
