"""What it takes to start the suite: nodes, their YAML parameter files, launch-argument overrides and remaps.

One module, imported by ``launch/*.launch.py`` (workstations with ``ros2 launch``) and by ``task-supplementor up``
(the PyPI environment, no launch), so both start the same executables with the same parameters. The YAML files in
``config/`` hold every parameter's default; a launch argument or ``up`` option only overrides what it names, and the
override is converted to the type the YAML default has (``ros2 launch`` hands every argument over as a string, and a
ROS parameter of type double rejects the integer ``5``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "task_supplementor"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the suite: the console script, the ROS node name, its parameter file and its input remaps."""

    executable: str
    module: str  # ``python -m <module>`` runs the same ``main`` as the console script
    name: str
    params_file: str  # file name inside the config directory
    # launch argument that names a topic -> the node's own (relative) topic name it is remapped onto
    topic_remaps: dict[str, tuple[str, ...]] = field(default_factory=dict)


SUPPLEMENTOR = NodeSpec(
    executable="supplementor_node",
    module="supplementor_node.node",
    name="supplementor",
    params_file="supplementor.yaml",
    topic_remaps={"camera_topic": ("camera/image_raw",), "task_topic": ("task",)},
)
VLA = NodeSpec(
    executable="vla_node",
    module="vla_node.node",
    name="vla",
    params_file="vla.yaml",
    topic_remaps={"camera_topic": ("camera/image_raw",), "task_topic": ("task",),
                  "facts_topic": ("supplementor/facts",)},
)
SUITE: tuple[NodeSpec, ...] = (SUPPLEMENTOR, VLA)

# Launch arguments that name topics: argument -> (default, help).
TOPIC_ARGUMENTS: dict[str, tuple[str, str]] = {
    "camera_topic": ("/camera/image_raw", "camera image topic (the compressed stream is <camera_topic>/compressed)"),
    "task_topic": ("/task", "task instruction topic (std_msgs/String, latched)"),
    "facts_topic": ("/supplementor/facts", "VisualFacts topic the VLA node fuses"),
}

# Launch arguments that override parameters: argument -> ((node name, parameter), ...), help.
PARAMETER_ARGUMENTS: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "supplementor_checkpoint": ((("supplementor", "checkpoint"),), "Qwen2.5-VL checkpoint directory"),
    "vla_checkpoint": ((("vla", "checkpoint"),), "OpenVLA checkpoint directory"),
    "device": ((("supplementor", "device"), ("vla", "device")),
               "torch device for both models (auto, cpu, cuda, cuda:N)"),
    "supplementor_device": ((("supplementor", "device"),), "torch device of the supplementor only"),
    "vla_device": ((("vla", "device"),), "torch device of the VLA only"),
    "image_compressed": ((("supplementor", "image_compressed"), ("vla", "image_compressed")),
                         "subscribe to <camera_topic>/compressed (sensor_msgs/CompressedImage) instead of raw images"),
    "prompt_mode": ((("vla", "prompt_mode"),), "VLA prompt: none (E0) | supplement (E2/E5) | placeholder (E3)"),
    "control_rate_hz": ((("vla", "control_rate_hz"),), "VLA action rate (BridgeData v2: 5 Hz)"),
    "dry_run": ((("vla", "dry_run"),), "flag actions as dry-run (no hardware moves); true until you mean it"),
    "facts_max_age_s": ((("vla", "facts_max_age_s"),),
                        "facts older than this (frame stamp - facts stamp, s) are stale; on a robot it must exceed "
                        "the supplementor's latency plus its period"),
    "stale_facts_policy": ((("vla", "stale_facts_policy"),),
                           "stale, missing or (with require_frame_facts) invalid facts: hold (no action) | none "
                           "(act on the official prompt)"),
    "require_frame_facts": ((("vla", "require_frame_facts"),),
                            "act on frame t only with facts of frame t (deterministic replay experiments)"),
    "fuse_invalid_facts": ((("vla", "fuse_invalid_facts"),),
                           "also fuse supplements of facts the contract marked invalid (ablations, untrained models)"),
}


class BringupError(ValueError):
    """A parameter file or an override that cannot start the suite; the message says which and why."""


def default_config_dir() -> Path:
    """``config/`` of a source checkout (or editable install), else the installed ``share/task_supplementor/config``."""
    source = Path(__file__).resolve().parents[1] / "config"
    if source.is_dir():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / "config"
    except (ImportError, LookupError) as error:
        raise BringupError(f"no config directory: {source} does not exist and the installed package share "
                           f"directory was not found ({error})") from error


def load_node_parameters(spec: NodeSpec, config_dir: Path) -> dict[str, Any]:
    """The ``ros__parameters`` of ``spec`` from its YAML file, checked for the layout ROS expects."""
    path = config_dir / spec.params_file
    if not path.is_file():
        raise BringupError(f"{spec.name}: parameter file {path} does not exist")
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    section = document.get(spec.name, {}) if isinstance(document, dict) else None
    params = section.get("ros__parameters") if isinstance(section, dict) else None
    if not isinstance(params, dict):
        raise BringupError(f"{path}: expected '{spec.name}: ros__parameters: {{...}}' at the top level")
    return params


def coerce_like(default: Any, text: str, where: str) -> Any:
    """Convert the string ``text`` to the type of ``default`` (bool, int, float or str)."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise BringupError(f"{where}: expected true or false, got {text!r}")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError as error:
        raise BringupError(f"{where}: expected a {type(default).__name__}, got {text!r}") from error
    return text


def parameter_overrides(arguments: dict[str, str], config_dir: Path) -> dict[str, dict[str, Any]]:
    """node name -> {parameter: typed value} for every non-empty parameter argument in ``arguments``.

    An empty string means "keep the YAML value", so a launch file can declare every argument with default ''.
    """
    overrides: dict[str, dict[str, Any]] = {spec.name: {} for spec in SUITE}
    defaults = {spec.name: load_node_parameters(spec, config_dir) for spec in SUITE}
    for argument, text in arguments.items():
        if argument not in PARAMETER_ARGUMENTS or text == "":
            continue
        for node_name, parameter in PARAMETER_ARGUMENTS[argument][0]:
            if parameter not in defaults[node_name]:
                raise BringupError(f"{argument}: {node_name} has no parameter {parameter!r} in its YAML file")
            where = f"{argument} ({node_name}.{parameter})"
            overrides[node_name][parameter] = coerce_like(defaults[node_name][parameter], text, where)
    return overrides


def topic_remaps(spec: NodeSpec, arguments: dict[str, str]) -> list[tuple[str, str]]:
    """(from, to) remaps for ``spec``: each node topic onto the topic its launch argument names."""
    remaps: list[tuple[str, str]] = []
    for argument, node_topics in spec.topic_remaps.items():
        target = arguments.get(argument) or TOPIC_ARGUMENTS[argument][0]
        for node_topic in node_topics:
            remaps.append((node_topic, target))
            if node_topic == "camera/image_raw":
                remaps.append((f"{node_topic}/compressed", f"{target}/compressed"))
    return remaps


def ros_arguments(spec: NodeSpec, config_dir: Path, overrides: dict[str, Any],
                  remaps: list[tuple[str, str]]) -> list[str]:
    """``--ros-args`` for starting ``spec`` as a process, equivalent to what the launch file passes."""
    args = ["--ros-args", "-r", f"__node:={spec.name}", "--params-file", str(config_dir / spec.params_file)]
    for name, value in overrides.items():
        args += ["-p", f"{name}:={format_ros_value(value)}"]
    for source, target in remaps:
        args += ["-r", f"{source}:={target}"]
    return args


def format_ros_value(value: Any) -> str:
    """A value as ``-p name:=value`` text that ROS parses back to the same type (floats keep their dot)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return yaml.safe_dump(str(value), default_style="'").strip()  # quoted: '5' stays a string


def node_environment() -> dict[str, str]:
    """The environment for node processes: unbuffered output so logs interleave as they happen."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")
    return env
