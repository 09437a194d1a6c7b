"""Declarative node parameters: one table per node (default, description, range, group) -> ROS descriptors.

WHY a table: the YAML files in config/, the launch files and the tests all need the same names, defaults and types;
a node that declares from one table cannot drift from itself, and tests/test_launch_consistency.py checks the YAML
against what the running node declares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


class StartupParameterError(ValueError):
    """A start-up value a node cannot run with and no later ``ros2 param set`` could mend while it runs (e.g. an
    unknown ``prompt_mode``): the node exits with this message (no traceback), like rclpy does for a value out of
    its declared range."""


@dataclass(frozen=True)
class ParamSpec:
    default: Any
    description: str
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    read_only: bool = False
    group: str = ""  # what a change rebuilds, e.g. "model" (a live swap) or "fusion"; "" = read on use

    def descriptor(self) -> ParameterDescriptor:
        desc = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.int_range:
            desc.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=1)]
        if self.float_range:
            desc.floating_point_range = [FloatingPointRange(from_value=self.float_range[0],
                                                            to_value=self.float_range[1], step=0.0)]
        return desc


def declare_parameters(node: Node, table: dict[str, ParamSpec]) -> None:
    for name, spec in table.items():
        node.declare_parameter(name, spec.default, spec.descriptor())
