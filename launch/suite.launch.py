"""Both nodes of the suite: ``ros2 launch task_supplementor suite.launch.py [argument:=value ...]``.

Parameters come from ``config/supplementor.yaml`` and ``config/vla.yaml`` (installed into the package's share
directory); each argument below overrides only what it names and is left empty to keep the YAML value. Topic
arguments remap the nodes' inputs, e.g. ``camera_topic:=/wrist_cam/image_raw``. ``ros2 launch ... --show-args``
lists them with their help. The same nodes, files and overrides are what ``task-supplementor up`` starts without
``ros2 launch`` (see task_supplementor/bringup.py).
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from task_supplementor import bringup


def declare_suite_arguments() -> list[DeclareLaunchArgument]:
    """Every topic and parameter argument of the suite, with its help text."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in bringup.TOPIC_ARGUMENTS.items()]
    declared += [DeclareLaunchArgument(name, default_value="", description=f"{text} (empty: the YAML value)")
                 for name, (_, text) in bringup.PARAMETER_ARGUMENTS.items()]
    declared.append(DeclareLaunchArgument("config_dir", default_value=str(bringup.default_config_dir()),
                                          description="directory holding supplementor.yaml and vla.yaml"))
    return declared


def suite_nodes(context) -> list[Node]:
    """The two nodes, with the YAML files plus the typed overrides of the non-empty arguments."""
    names = list(bringup.TOPIC_ARGUMENTS) + list(bringup.PARAMETER_ARGUMENTS) + ["config_dir"]
    arguments = {name: LaunchConfiguration(name).perform(context) for name in names}
    config_dir = Path(arguments["config_dir"])
    overrides = bringup.parameter_overrides(arguments, config_dir)
    supplementor, vla = bringup.SUPPLEMENTOR, bringup.VLA
    return [
        Node(package="task_supplementor", executable="supplementor_node", name="supplementor", output="screen",
             parameters=[str(config_dir / supplementor.params_file), overrides[supplementor.name]],
             remappings=bringup.topic_remaps(supplementor, arguments)),
        Node(package="task_supplementor", executable="vla_node", name="vla", output="screen",
             parameters=[str(config_dir / vla.params_file), overrides[vla.name]],
             remappings=bringup.topic_remaps(vla, arguments)),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*declare_suite_arguments(), OpaqueFunction(function=suite_nodes)])
