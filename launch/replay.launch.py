"""The suite plus a bag replay that drives it: ``ros2 launch task_supplementor replay.launch.py manifest:=DIR``.

Starts both nodes exactly as ``suite.launch.py`` does (same arguments, same YAML files) and runs
``task-supplementor replay`` on a bag selection, in lockstep (frame t, wait for the action of frame t, then t+1; a
deterministic record) or in real time at ``rate``. Everything the nodes publish is recorded under ``out``. The launch
ends when the replay ends. For deterministic experiments also pass ``require_frame_facts:=true``.
"""

import os
import shutil

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, ExecuteProcess, IncludeLaunchDescription, \
    OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from task_supplementor import bringup

REPLAY_ARGUMENTS = {
    "manifest": ("", "conversion folder or its manifest.jsonl (the bag selection)"),
    "bags": ("", "space-separated bag folders (instead of manifest)"),
    "split": ("", "manifest selection: only this split"),
    "episodes": ("", "manifest selection: episode indices within the split, START:STOP or one index"),
    "mode": ("lockstep", "lockstep | realtime"),
    "rate": ("1.0", "realtime speed factor"),
    "camera": ("image_0", "bag camera that feeds the nodes' camera topic"),
    "out": ("replay_out", "record folder (record bags, frames.jsonl, summary.json)"),
    "action_timeout": ("30.0", "lockstep: seconds to wait for the action of a frame (a timeout is recorded)"),
    "resume": ("false", "true: finish the interrupted run in out (same bags and options) instead of refusing it"),
}


def replay_executable() -> str:
    """``task-supplementor`` as this package installed it: colcon puts console scripts in ``lib/<package>`` (where
    ``ros2 run`` looks, see setup.cfg), which is not on PATH; a source checkout's venv has it on PATH instead."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        installed = os.path.join(get_package_prefix("task_supplementor"), "lib", "task_supplementor",
                                 "task-supplementor")
    except (PackageNotFoundError, OSError):  # not installed, or no ROS environment sourced (AMENT_PREFIX_PATH)
        installed = ""
    found = installed if os.path.isfile(installed) else shutil.which("task-supplementor")
    if not found:
        raise RuntimeError("task-supplementor not found: build the workspace (colcon build) and source "
                           "install/setup.bash, or activate the venv made by make setup")
    return found


def replay_process(context) -> list:
    """``task-supplementor replay`` with the non-empty arguments, shutting the launch down when it exits."""
    value = {name: LaunchConfiguration(name).perform(context) for name in REPLAY_ARGUMENTS}
    command = [replay_executable(), "replay", *value["bags"].split(), "--mode", value["mode"], "--rate", value["rate"],
               "--camera", value["camera"], "--out", value["out"], "--action-timeout", value["action_timeout"]]
    for name in ("manifest", "split", "episodes"):
        if value[name]:
            command += [f"--{name}", value[name]]
    if bringup.coerce_like(False, value["resume"], "resume"):
        command.append("--resume")
    command += ["--camera-topic", LaunchConfiguration("camera_topic").perform(context),
                "--task-topic", LaunchConfiguration("task_topic").perform(context)]
    replay = ExecuteProcess(cmd=command, output="screen", name="replay")
    return [replay, RegisterEventHandler(OnProcessExit(target_action=replay,
                                                       on_exit=[EmitEvent(event=Shutdown(reason="replay done"))]))]


def generate_launch_description() -> LaunchDescription:
    suite = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(os.path.dirname(__file__), "suite.launch.py")))
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in REPLAY_ARGUMENTS.items()]
    return LaunchDescription([*declared, suite, OpaqueFunction(function=replay_process)])
