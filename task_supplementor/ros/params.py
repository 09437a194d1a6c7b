"""Declarative node parameters: one table per node (default, description, range, group) -> ROS descriptors.

WHY a table: the YAML files in config/, the launch files and the tests all need the same names, defaults and types;
a node that declares from one table cannot drift from itself, and tests/test_launch_consistency.py checks the YAML
against what the running node declares.
"""

from __future__ import annotations

import difflib
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


def ignored_overrides(node: Node) -> list[str]:
    """One line per parameter value given to ``node`` (``--params-file``, ``-p``, a launch file) that it does not
    declare, with the closest declared name when there is one; call it after declaring.

    WHY: rclpy drops such values without a word, so a misspelt ``unorm_key`` in a YAML file would leave the default
    un-normalisation statistics in force on a robot. rclpy keeps the given values in ``Node._parameter_overrides``
    (no public accessor; the same from Foxy to Jazzy); should that attribute go, this finds nothing rather than fail.
    """
    given = getattr(node, "_parameter_overrides", None) or {}
    declared = sorted(node.get_parameters_by_prefix(""))
    lines = []
    for name in sorted(n for n in given if not node.has_parameter(n)):
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        lines.append(f"parameter {name!r} given to {node.get_fully_qualified_name()} is not one of its parameters "
                     f"and is ignored{hint}")
    return lines
