"""LINEMOD replay: dataset_player_node -> object_pose_node -> evaluator_node (+ RViz).

    ros2 launch featmap_ros linemod.launch.py                      # embedded sample, no RViz
    ros2 launch featmap_ros linemod.launch.py rviz:=true dataset_root:=/data/bop/lm
    ros2 launch featmap_ros linemod.launch.py roi_source:=localiser     # windows from the built-in localiser
    ros2 launch featmap_ros linemod.launch.py refine_depth:=off         # colour only (the dataset's depth unused)
    ros2 launch featmap_ros linemod.launch.py rviz:=true loop:=true     # replay for ever (RViz opened any time)
    ros2 launch featmap_ros linemod.launch.py lifecycle:=true           # managed object node (configured, activated)

With no arguments it replays the sample the project makes itself and the bundled weights. The
player's depth (BOP depth is registered to colour) refines the poses (refine_depth:=auto); the
evaluator scores the per-frame poses (~/detections_raw): dataset frames are not one continuous
video, so the filtered ones (~/detections) would mix frames.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from featmap_ros.ros.launch_nodes import camera_link_static_tf, pose_node_actions


def _config(share, name):
    """The package's parameter file for a node, if installed (the player/evaluator may add theirs)."""
    path = os.path.join(share, "config", f"{name}.yaml")
    return [path] if os.path.isfile(path) else []


def generate_launch_description():
    share = get_package_share_directory("featmap_ros")
    arg = LaunchConfiguration
    sim_time = ParameterValue(arg("use_sim_time"), value_type=bool)
    args = [
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"], description="start RViz"),
        DeclareLaunchArgument("dataset_root", default_value="",
                              description="BOP LINEMOD folder (lm or lmo); empty = the embedded sample"),
        DeclareLaunchArgument("dataset", default_value="lm", choices=["lm", "lmo"], description="BOP dataset name"),
        DeclareLaunchArgument("weights", default_value="", description="object checkpoint; empty = bundled weights"),
        DeclareLaunchArgument("roi_source", default_value="ground_truth",
                              choices=["localiser", "detections", "tracking", "ground_truth"],
                              description="where the object node's image windows come from: ground_truth = the "
                                          "player's boxes (pose accuracy alone); localiser/tracking = the "
                                          "checkpoint's built-in localiser (full pipeline)"),
        DeclareLaunchArgument("refine_depth", default_value="auto", choices=["auto", "on", "off"],
                              description="refine the poses with the player's registered depth: auto = when it "
                                          "arrives, on = wait for it, off = colour only"),
        DeclareLaunchArgument("device", default_value="auto", description="torch device: auto, cpu, cuda"),
        DeclareLaunchArgument("runtime", default_value="onnxruntime", choices=["onnxruntime", "torch"],
                              description="what runs the networks: onnxruntime (torch where it fails, logged), or torch"),
        DeclareLaunchArgument("output_dir", default_value="featmap_linemod_eval",
                              description="where the evaluator writes its metrics at shutdown"),
        DeclareLaunchArgument("use_sim_time", default_value="true", choices=["true", "false"],
                              description="follow the player's /clock"),
        DeclareLaunchArgument("lossless", default_value="true", choices=["true", "false"],
                              description="the player waits for the estimate of each frame (every frame scored); "
                                          "false = play at the player's rate, frames the node is too busy for are lost"),
        DeclareLaunchArgument("loop", default_value="false", choices=["true", "false"],
                              description="replay the frames for ever (stamps keep increasing)"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="run the managed (lifecycle) object node"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="lifecycle:=true: configure and activate it at once (false: leave it "
                                          "unconfigured for ros2 lifecycle set / a lifecycle manager)"),
        DeclareLaunchArgument("mode", default_value="continuous", choices=["continuous", "on_request"],
                              description="object node: estimate every frame, or only for ~/estimate requests"),
    ]
    player = Node(
        package="featmap_ros", executable="dataset_player_node", name="dataset_player_node", output="screen",
        parameters=[*_config(share, "dataset_player_node"),
                    {"dataset": ParameterValue(arg("dataset"), value_type=str),
                     "dataset_root": ParameterValue(arg("dataset_root"), value_type=str),
                     "wait_for_ack": ParameterValue(arg("lossless"), value_type=bool),
                     "loop": ParameterValue(arg("loop"), value_type=bool), "use_sim_time": False}],
    )
    estimator = pose_node_actions(
        "object_pose_node", "object_pose_node", arg("lifecycle"), arg("autostart"),
        parameters=[os.path.join(share, "config", "object_pose_node.yaml"),
                    {"weights": ParameterValue(arg("weights"), value_type=str),
                     "roi_source": ParameterValue(arg("roi_source"), value_type=str),
                     "refine.depth": ParameterValue(arg("refine_depth"), value_type=str),
                     "refine.mesh_root": ParameterValue(PathJoinSubstitution([arg("dataset_root"), "models"]), value_type=str),
                     "device": ParameterValue(arg("device"), value_type=str), "runtime": ParameterValue(arg("runtime"), value_type=str),
                     "mode": ParameterValue(arg("mode"), value_type=str), "use_sim_time": sim_time}],
        remappings=[("image", "/camera/color/image_raw"), ("camera_info", "/camera/color/camera_info"),
                    ("depth", "/camera/depth/image_raw"), ("depth_camera_info", "/camera/depth/camera_info"),
                    ("detections_2d", "/detections_2d"), ("ground_truth/detections", "/ground_truth/detections")],
    )
    evaluator = Node(
        package="featmap_ros", executable="evaluator_node", name="evaluator_node", output="screen",
        parameters=[*_config(share, "evaluator_node"),
                    {"task": "object", "dataset": ParameterValue(arg("dataset"), value_type=str),
                     "dataset_root": ParameterValue(arg("dataset_root"), value_type=str),
                     "output_dir": ParameterValue(arg("output_dir"), value_type=str), "use_sim_time": sim_time}],
        remappings=[("estimates", "/object_pose_node/detections_raw"), ("ground_truth", "/ground_truth/detections")],
    )
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", output="log", condition=IfCondition(arg("rviz")),
        arguments=["-d", os.path.join(share, "config", "linemod.rviz"), "-f", "camera_link"],
        parameters=[{"use_sim_time": sim_time}],
    )
    camera_tf = camera_link_static_tf("camera_color_optical_frame", IfCondition(arg("rviz")))  # fixed frame before the first image
    return LaunchDescription([*args, player, *estimator, evaluator, rviz, camera_tf])
