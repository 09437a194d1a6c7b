"""``task-supplementor up``: the suite as plain processes, for environments without ``ros2 launch``.

Starts the same executables as ``launch/suite.launch.py`` with the same YAML files and the same overrides (both go
through :mod:`task_supplementor.bringup`). Ctrl-C stops every node cleanly and exits 0; if a node dies on its own,
the others are stopped and the command exits non-zero, naming the node and its exit code.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TextIO

from task_supplementor import bringup

STOP_TIMEOUT_S = 10.0


class NodeDied(RuntimeError):
    """A node process exited while the suite was meant to be running."""

    def __init__(self, name: str, returncode: int) -> None:
        super().__init__(f"node '{name}' exited with code {returncode}; the other nodes were stopped")
        self.name, self.returncode = name, returncode


class SuiteProcesses:
    """The suite's nodes as child processes; a context manager that always stops what it started."""

    def __init__(self, arguments: dict[str, str], config_dir: Path | None = None,
                 nodes: tuple[bringup.NodeSpec, ...] = bringup.SUITE, log_dir: Path | None = None) -> None:
        self.config_dir = config_dir or bringup.default_config_dir()
        overrides = bringup.parameter_overrides(arguments, self.config_dir)
        self.commands = {
            spec.name: [sys.executable, "-m", spec.module,
                        *bringup.ros_arguments(spec, self.config_dir, overrides[spec.name],
                                               bringup.topic_remaps(spec, arguments))]
            for spec in nodes
        }
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list[TextIO] = []

    def start(self) -> None:
        for name, command in self.commands.items():
            output = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                output = open(self.log_dir / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115 (closed in stop)
                self._logs.append(output)
            self.processes[name] = subprocess.Popen(command, env=bringup.node_environment(), stdout=output,
                                                    stderr=subprocess.STDOUT if output else None)

    def check_alive(self) -> None:
        """Raise :class:`NodeDied` for the first node that has exited."""
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                raise NodeDied(name, code)

    def stop(self) -> dict[str, int]:
        """SIGINT every running node (rclpy shuts down cleanly), then escalate; name -> exit code."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        codes: dict[str, int] = {}
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        for log in self._logs:
            log.close()
        return codes

    def __enter__(self) -> SuiteProcesses:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The launch file's arguments as options (``--camera-topic``, ``--vla-checkpoint``, ...)."""
    for name, (default, text) in bringup.TOPIC_ARGUMENTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default, help=f"{text} (default {default})")
    for name, (_, text) in bringup.PARAMETER_ARGUMENTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default="", help=f"{text} (default: the YAML value)")
    parser.add_argument("--config-dir", type=Path, default=None,
                        help="directory holding supplementor.yaml and vla.yaml (default: the package's config/)")


def suite_arguments(args: argparse.Namespace) -> dict[str, str]:
    names = list(bringup.TOPIC_ARGUMENTS) + list(bringup.PARAMETER_ARGUMENTS)
    return {name: str(getattr(args, name)) for name in names}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_suite_arguments(parser)
    parser.add_argument("--only", choices=[spec.name for spec in bringup.SUITE], action="append",
                        help="start only this node (repeatable)")


def run(args: argparse.Namespace) -> int:
    nodes = tuple(spec for spec in bringup.SUITE if not args.only or spec.name in args.only)
    try:
        suite = SuiteProcesses(suite_arguments(args), args.config_dir, nodes)
    except bringup.BringupError as error:
        print(f"task-supplementor up: {error}", file=sys.stderr)
        return 2
    print(f"task-supplementor up: starting {', '.join(suite.commands)} (Ctrl-C stops them)", flush=True)
    # SIGTERM (e.g. from a supervisor) takes the same clean path as Ctrl-C; SIGINT explicitly too, because a shell
    # that starts `up &` in a script starts it with SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    suite.start()
    try:
        while True:
            suite.check_alive()
            time.sleep(0.2)
    except KeyboardInterrupt:
        codes = suite.stop()
        print(f"task-supplementor up: stopped ({', '.join(f'{n} exit {c}' for n, c in codes.items())})")
        return 0
    except NodeDied as died:
        suite.stop()
        print(f"task-supplementor up: {died}", file=sys.stderr)
        return died.returncode or 1
