"""Launch files and YAML files agree with the nodes, checked without ROS launch installed.

``ros2 launch`` on a workstation breaks when a launch file names an executable that is not installed, a node name
the YAML files do not use, or a parameter the node does not declare (or declares with another type: a YAML ``5`` for
a double parameter stops the node at start). These tests read ``launch/*.launch.py`` with ``ast`` and the YAML files,
then start the real nodes (``task-supplementor up`` with the tiny models) and ask them over ROS which parameters they
declare and with which types.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from task_supplementor import bringup

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
CONFIG_DIR = REPO / "config"


def console_scripts() -> set[str]:
    """Executable names setup.py installs (parsed, not imported: importing setup.py runs setup())."""
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value and ":" in node.value:
            scripts.add(node.value.split(" = ")[0].strip())
    return scripts


def launch_nodes(path: Path) -> list[dict[str, str]]:
    """The literal keyword arguments (package, executable, name) of every ``Node(...)`` call in a launch file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Node":
            kwargs = {kw.arg: kw.value.value for kw in node.keywords
                      if isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)}
            found.append(kwargs)
    return found


def included_launch_files(path: Path) -> set[str]:
    """Names of the launch files a launch file includes (``*.launch.py`` literals inside IncludeLaunchDescription)."""
    included: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "IncludeLaunchDescription":
            included |= {leaf.value for leaf in ast.walk(node)
                         if isinstance(leaf, ast.Constant) and str(leaf.value).endswith(".launch.py")}
    return included


NODE_LAUNCH_FILES = [path for path in LAUNCH_FILES if launch_nodes(path)]  # files with Node(...) calls of their own


def test_launch_files_exist_and_are_installed() -> None:
    assert {p.name for p in LAUNCH_FILES} >= {"suite.launch.py", "replay.launch.py"}
    setup_source = (REPO / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup_source and 'glob("config/*.yaml")' in setup_source


@pytest.mark.parametrize("path", NODE_LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_nodes_name_installed_executables_and_known_nodes(path: Path) -> None:
    specs = {spec.executable: spec for spec in bringup.SUITE}
    scripts = console_scripts()
    calls = launch_nodes(path)
    for call in calls:
        assert call.get("package") == "task_supplementor", f"{path.name}: {call}"
        executable = call.get("executable")
        assert executable in scripts, f"{path.name}: executable {executable!r} is not a console script in setup.py"
        assert executable in specs, f"{path.name}: {executable!r} is not a node of the suite (bringup.SUITE)"
        assert call.get("name") == specs[executable].name, f"{path.name}: node name {call.get('name')!r}"
    assert sorted(call.get("executable") for call in calls) == sorted(specs), f"{path.name} starts {calls}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_file_starts_the_suite_itself_or_through_a_checked_one(path: Path) -> None:
    """A launch file without Node(...) calls (replay.launch.py) must get its nodes from a launch file that the test
    above checks; otherwise nothing here would say which nodes it starts."""
    if path in NODE_LAUNCH_FILES:
        return
    included = included_launch_files(path)
    checked = {p.name for p in NODE_LAUNCH_FILES}
    assert included & checked, f"{path.name} starts no node and includes none of {sorted(checked)} (it includes " \
                               f"{sorted(included) or 'nothing'})"


def test_setup_cfg_installs_executables_where_ros2_run_looks() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/task_supplementor"
    assert cfg["install"]["install_scripts"] == "$base/lib/task_supplementor"


@pytest.mark.parametrize("spec", bringup.SUITE, ids=lambda s: s.name)
def test_yaml_files_have_the_ros_layout(spec: bringup.NodeSpec) -> None:
    params = bringup.load_node_parameters(spec, CONFIG_DIR)
    assert params, f"{spec.params_file} declares no parameters"
    document = yaml.safe_load((CONFIG_DIR / spec.params_file).read_text())
    assert list(document) == [spec.name], f"{spec.params_file} must hold only the '{spec.name}' node"


def test_every_launch_argument_overrides_a_yaml_parameter_with_its_type() -> None:
    yaml_params = {spec.name: bringup.load_node_parameters(spec, CONFIG_DIR) for spec in bringup.SUITE}
    for argument, (targets, _) in bringup.PARAMETER_ARGUMENTS.items():
        for node_name, parameter in targets:
            assert parameter in yaml_params[node_name], f"{argument} -> {node_name}.{parameter} not in the YAML"
            default = yaml_params[node_name][parameter]
            text = str(default).lower() if isinstance(default, bool) else str(default) or "/some/checkpoint"
            typed = bringup.parameter_overrides({argument: text}, CONFIG_DIR)[node_name][parameter]
            assert type(typed) is type(default), f"{argument}: {type(typed)} vs YAML {type(default)}"
            assert typed == default or default == ""


def test_overrides_are_typed_and_bad_values_are_refused_with_the_argument_named() -> None:
    overrides = bringup.parameter_overrides({"control_rate_hz": "5", "dry_run": "False", "device": "cuda:1"},
                                            CONFIG_DIR)
    assert overrides["vla"]["control_rate_hz"] == 5.0 and isinstance(overrides["vla"]["control_rate_hz"], float)
    assert overrides["vla"]["dry_run"] is False
    assert overrides["supplementor"]["device"] == overrides["vla"]["device"] == "cuda:1"
    with pytest.raises(bringup.BringupError, match="control_rate_hz"):
        bringup.parameter_overrides({"control_rate_hz": "fast"}, CONFIG_DIR)
    with pytest.raises(bringup.BringupError, match="dry_run"):
        bringup.parameter_overrides({"dry_run": "maybe"}, CONFIG_DIR)


def test_remaps_cover_raw_and_compressed_camera_topics() -> None:
    remaps = dict(bringup.topic_remaps(bringup.VLA, {"camera_topic": "/wrist/image", "task_topic": ""}))
    assert remaps["camera/image_raw"] == "/wrist/image"
    assert remaps["camera/image_raw/compressed"] == "/wrist/image/compressed"
    assert remaps["task"] == "/task" and remaps["supplementor/facts"] == "/supplementor/facts"


# ---- the real nodes, started the way `task-supplementor up` starts them -----------------------------------------

ROS_BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}  # every rclpy node has them
YAML_TO_ROS_TYPE = {bool: 1, int: 2, float: 3, str: 4}  # rcl_interfaces/ParameterType: BOOL, INTEGER, DOUBLE, STRING


def up_command(tiny_models: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "task_supplementor.cli", "up", "--device", "cpu",
            "--supplementor-checkpoint", str(tiny_models / "qwen2_5_vl_tiny"),
            "--vla-checkpoint", str(tiny_models / "openvla_tiny"), *extra]


@pytest.fixture(scope="module")
def suite_up(tiny_models: Path):
    """``task-supplementor up`` running both nodes in a process group of its own, as a terminal's foreground job;
    stopped with SIGINT to that group (Ctrl-C) by the last test that uses it."""
    process = subprocess.Popen(up_command(tiny_models), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               process_group=0)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def declared_parameter_types(node_name: str, timeout_s: float = 60.0) -> dict[str, int]:
    """name -> ParameterType of every parameter ``/node_name`` declares, asked over its parameter services."""
    import rclpy
    from rclpy.parameter_client import AsyncParameterClient

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        probe = rclpy.create_node("launch_consistency_probe", context=context)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(probe)
        client = AsyncParameterClient(probe, node_name)
        assert client.wait_for_services(timeout_sec=timeout_s), f"/{node_name} parameter services never appeared"
        listed = client.list_parameters()
        executor.spin_until_future_complete(listed, timeout_sec=10.0)
        names = [n for n in listed.result().result.names if n not in ROS_BUILTIN_PARAMETERS]
        values = client.get_parameters(names)
        executor.spin_until_future_complete(values, timeout_sec=10.0)
        return {name: value.type for name, value in zip(names, values.result().values)}
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("spec", bringup.SUITE, ids=lambda s: s.name)
def test_running_nodes_declare_every_yaml_parameter_with_its_type(suite_up, spec: bringup.NodeSpec) -> None:
    declared = declared_parameter_types(spec.name)
    for name, default in bringup.load_node_parameters(spec, CONFIG_DIR).items():
        assert name in declared, f"{spec.params_file}: {name!r} is not declared by the running {spec.name} node"
        assert declared[name] == YAML_TO_ROS_TYPE[type(default)], \
            f"{spec.params_file}: {name!r} is {type(default).__name__} in YAML, ROS type {declared[name]} in the node"
    undocumented = set(declared) - set(bringup.load_node_parameters(spec, CONFIG_DIR))
    assert not undocumented, f"{spec.name} declares parameters missing from {spec.params_file}: {undocumented}"


def test_up_stops_cleanly_on_ctrl_c(suite_up) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group: only ``up`` may get it (the nodes run in
    groups of their own), and it stops the nodes one after the other, each exiting 0."""
    declared_parameter_types("vla")  # both nodes are up by now (the fixture's first users waited for them)
    os.killpg(suite_up.pid, signal.SIGINT)
    output, _ = suite_up.communicate(timeout=90)
    assert suite_up.returncode == 0, output
    assert "stopped (supplementor exit 0, vla exit 0)" in output, output


def _gone(pid: int) -> bool:
    """Exited (no process, or a zombie waiting for a reaper that is not its parent any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal (prctl) is Linux only")
def test_nodes_do_not_outlive_a_killed_up(tiny_models: Path) -> None:
    process = subprocess.Popen(up_command(tiny_models), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = ""
        while "up: started" not in started and process.poll() is None:  # the nodes' own output may come first
            started = process.stdout.readline()
        pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", started)]
        assert len(pids) == 2, started
        time.sleep(1.0)  # the nodes are starting (loading their models): killed at any moment, they must go
        process.kill()
        process.wait()
        deadline = time.monotonic() + 60
        while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(_gone(pid) for pid in pids), f"nodes still running after up was killed: {pids}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_up_names_the_node_that_dies(tiny_models: Path, tmp_path: Path) -> None:
    """A YAML integer for a double parameter kills the node at start: the drift this file exists to catch."""
    for spec in bringup.SUITE:
        (tmp_path / spec.params_file).write_text((CONFIG_DIR / spec.params_file).read_text())
    vla_yaml = tmp_path / "vla.yaml"
    vla_yaml.write_text(vla_yaml.read_text().replace("control_rate_hz: 5.0", "control_rate_hz: 5"))
    result = subprocess.run(up_command(tiny_models, "--config-dir", str(tmp_path)), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr  # the node's own code (a bad start-up value)
    # the supplementor's own code depends on how far its start got when it was stopped
    assert "node 'vla' exited with code 2; the other nodes were stopped (supplementor exit " in result.stderr, \
        result.stderr


def test_a_node_killed_by_a_signal_ends_up_with_128_plus_the_signal(tiny_models: Path) -> None:
    process = subprocess.Popen(up_command(tiny_models), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = ""
        while "up: started" not in started and process.poll() is None:
            started = process.stdout.readline()
        vla_pid = int(re.search(r"vla \(pid (\d+)\)", started).group(1))
        os.kill(vla_pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGKILL, output  # as a shell reports it; -9 & 0xff would be 247
    assert "node 'vla' exited with code -9; the other nodes were stopped (supplementor exit " in output, output


def test_replay_launch_passes_only_options_the_replay_command_has() -> None:
    import argparse

    from offline import replay

    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    known = {option for action in parser._actions for option in action.option_strings}
    source = (REPO / "launch" / "replay.launch.py").read_text()
    literal = {node.value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("--")
               and len(node.value) > 2}
    assert literal, "no option found written out in replay.launch.py: has this test stopped seeing them?"
    passed = literal | {f"--{name}" for name in ("manifest", "split", "episodes")}  # built as f"--{name}"
    assert passed <= known, f"replay.launch.py passes options replay does not have: {sorted(passed - known)}"


def test_a_node_that_cannot_be_started_stops_those_already_started(tiny_models: Path, tmp_path: Path) -> None:
    """The second node's log cannot be opened (a directory is in its place): the first node, already running, is
    stopped before the error reaches the caller (``__exit__`` does not run when ``__enter__`` raises)."""
    from task_supplementor.up import SuiteProcesses

    (tmp_path / f"{bringup.SUITE[1].name}.log").mkdir()
    suite = SuiteProcesses({"supplementor_checkpoint": str(tiny_models / "qwen2_5_vl_tiny"),
                            "vla_checkpoint": str(tiny_models / "openvla_tiny"), "device": "cpu"},
                           log_dir=tmp_path)
    with pytest.raises(IsADirectoryError):
        with suite:
            pass
    first = suite.processes[bringup.SUITE[0].name]
    assert list(suite.processes) == [bringup.SUITE[0].name] and first.poll() is not None
