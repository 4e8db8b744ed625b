"""object_pose_node on a live colour (+ depth) camera (RealSense topic names by default) (+ RViz).

    ros2 launch realsense2_camera rs_launch.py           # in another terminal
    ros2 launch featmap_ros camera_object.launch.py rviz:=true
    ros2 launch featmap_ros camera_object.launch.py image:=/my_cam/image_rect camera_info:=/my_cam/camera_info

realsense2_camera >= 4.54 names its topics /camera/camera/color/...: pass image:= and camera_info:=.
Depth refines the poses when it arrives on depth:= (registered to colour: rs_launch.py
align_depth.enable:=true publishes /camera/aligned_depth_to_color/...); a colour-only camera
still gets answers.
The images are assumed rectified (the node warns once when camera_info has distortion).
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
        DeclareLaunchArgument("image", default_value="/camera/color/image_raw", description="colour image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/color/camera_info", description="its camera_info"),
        DeclareLaunchArgument("depth", default_value="/camera/aligned_depth_to_color/image_raw",
                              description="depth image registered to the colour image (used when it arrives)"),
        DeclareLaunchArgument("depth_camera_info", default_value="/camera/aligned_depth_to_color/camera_info",
                              description="its camera_info"),
        DeclareLaunchArgument("detections_2d", default_value="/detections_2d",
                              description="vision_msgs/Detection2DArray topic (roi_source:=detections)"),
        DeclareLaunchArgument("roi_source", default_value="localiser",
                              choices=["localiser", "detections", "tracking", "ground_truth"],
                              description="where the image windows come from"),
        DeclareLaunchArgument("weights", default_value="", description="object checkpoint; empty = bundled weights"),
        DeclareLaunchArgument("device", default_value="auto", description="torch device: auto, cpu, cuda"),
        DeclareLaunchArgument("runtime", default_value="onnxruntime", choices=["onnxruntime", "torch"],
                              description="what runs the networks: onnxruntime (torch where it fails, logged), or torch"),
        DeclareLaunchArgument("fixed_frame", default_value="camera_color_optical_frame",
                              description="RViz fixed frame (the camera's optical frame)"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="run the managed (lifecycle) node"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="lifecycle:=true: configure and activate it at once"),
        DeclareLaunchArgument("mode", default_value="continuous", choices=["continuous", "on_request"],
                              description="estimate every frame, or only for ~/estimate requests (GPU free between them)"),
    ]
    estimator = pose_node_actions(
        "object_pose_node", "object_pose_node", arg("lifecycle"), arg("autostart"),
        parameters=[os.path.join(share, "config", "object_pose_node.yaml"),
                    {"weights": ParameterValue(arg("weights"), value_type=str),
                     "roi_source": ParameterValue(arg("roi_source"), value_type=str),
                     "device": ParameterValue(arg("device"), value_type=str), "runtime": ParameterValue(arg("runtime"), value_type=str),
                     "mode": ParameterValue(arg("mode"), value_type=str)}],
        remappings=[("image", arg("image")), ("camera_info", arg("camera_info")), ("depth", arg("depth")),
                    ("depth_camera_info", arg("depth_camera_info")), ("detections_2d", arg("detections_2d"))],
    )
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", output="log", condition=IfCondition(arg("rviz")),
        arguments=["-d", os.path.join(share, "config", "linemod.rviz"), "-f", arg("fixed_frame")],
    )
    return LaunchDescription([*args, *estimator, rviz])
