"""hand_pose_node on a live depth camera (RealSense topic names by default) (+ RViz).

    ros2 launch realsense2_camera rs_launch.py           # in another terminal
    ros2 launch featmap_ros camera_hand.launch.py rviz:=true
    ros2 launch featmap_ros camera_hand.launch.py depth:=/my_cam/depth/image camera_info:=/my_cam/depth/camera_info

Depth is 16UC1 in millimetres (RealSense, Kinect) or 32FC1 in metres.
realsense2_camera >= 4.54 names its topics /camera/camera/depth/...: pass depth:= and camera_info:=.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from featmap_ros.ros.launch_nodes import pose_node_actions


def generate_launch_description():
    share = get_package_share_directory("featmap_ros")
    arg = LaunchConfiguration
    args = [
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"], description="start RViz"),
        DeclareLaunchArgument("depth", default_value="/camera/depth/image_rect_raw", description="depth image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/depth/camera_info", description="its camera_info"),
        DeclareLaunchArgument("weights", default_value="", description="hand checkpoint; empty = bundled weights"),
        DeclareLaunchArgument("device", default_value="auto", description="torch device: auto, cpu, cuda"),
        DeclareLaunchArgument("runtime", default_value="onnxruntime", choices=["onnxruntime", "torch"],
                              description="what runs the networks: onnxruntime (torch where it fails, logged), or torch"),
        DeclareLaunchArgument("fixed_frame", default_value="camera_depth_optical_frame",
                              description="RViz fixed frame (the depth camera's optical frame)"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="run the managed (lifecycle) node"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="lifecycle:=true: configure and activate it at once"),
        DeclareLaunchArgument("mode", default_value="continuous", choices=["continuous", "on_request"],
                              description="estimate every frame, or only for ~/estimate requests (GPU free between them)"),
    ]
    estimator = pose_node_actions(
        "hand_pose_node", "hand_pose_node", arg("lifecycle"), arg("autostart"),
        parameters=[os.path.join(share, "config", "hand_pose_node.yaml"),
                    {"weights": ParameterValue(arg("weights"), value_type=str),
                     "device": ParameterValue(arg("device"), value_type=str), "runtime": ParameterValue(arg("runtime"), value_type=str),
                     "mode": ParameterValue(arg("mode"), value_type=str)}],
        remappings=[("depth", arg("depth")), ("camera_info", arg("camera_info"))],
    )
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", output="log", condition=IfCondition(arg("rviz")),
        arguments=["-d", os.path.join(share, "config", "nyu.rviz"), "-f", arg("fixed_frame")],
    )
    return LaunchDescription([*args, *estimator, rviz])
