"""``task-supplementor up``: the suite as plain processes, for environments without ``ros2 launch``.

Starts the same executables as ``launch/suite.launch.py`` with the same YAML files and the same overrides (both go
through :mod:`task_supplementor.bringup`). Ctrl-C stops every node and exits 0 when each stopped cleanly (exit 0),
1 otherwise (e.g. a node that had to be killed); if a node dies on its own, the others are stopped and the command
exits non-zero, naming the node and its exit code.

The nodes run in their own process groups, so a terminal's Ctrl-C reaches only this command, which then stops them
one at a time (see :meth:`SuiteProcesses.stop`); on Linux they are also told to stop if this command is killed
outright (SIGKILL), so no node outlives the suite.
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TextIO

from task_supplementor import bringup

STOP_TIMEOUT_S = 15.0  # > the nodes' own teardown watchdog (10 s), so a stuck node reports itself before SIGKILL
SETTLE_S = 1.0  # between one node's exit and the next one's SIGINT: its DDS departure is processed by then
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with_parent() -> None:
    """In a node's process before exec (Linux): SIGTERM when the parent dies, even by SIGKILL.

    WHY: the nodes sit in their own process groups (so Ctrl-C reaches only ``up``); without this a killed ``up`` would
    leave them running, still publishing and holding the GPU.
    """
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


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
        """Start every node; if one cannot be started (or Ctrl-C comes meanwhile), stop those already started."""
        try:
            for name, command in self.commands.items():
                output = None
                if self.log_dir is not None:
                    self.log_dir.mkdir(parents=True, exist_ok=True)
                    output = open(self.log_dir / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115 (see stop)
                    self._logs.append(output)
                self.processes[name] = subprocess.Popen(
                    command, env=bringup.node_environment(), stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT if output else None, process_group=0,
                    preexec_fn=_stop_with_parent if sys.platform.startswith("linux") else None)
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ raises
            raise

    def check_alive(self) -> None:
        """Raise :class:`NodeDied` for the first node that has exited."""
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                raise NodeDied(name, code)

    def stop(self) -> dict[str, int]:
        """Stop the nodes one at a time, last started first: SIGINT (rclpy shuts down cleanly), SIGKILL after
        ``STOP_TIMEOUT_S``, then ``SETTLE_S`` before the next; name -> exit code, in start order.

        WHY one at a time: Fast DDS 2.14 (Jazzy's default) can deadlock deleting a participant while it processes
        another participant's departure, which is what two nodes stopping at the same moment do (seen in CI; the
        nodes' watchdog then ends the stuck one with exit 1 after 10 s, see docs/deploy.md).
        """
        codes: dict[str, int] = {}
        for name, process in reversed(self.processes.items()):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                if any(other.poll() is None for other in self.processes.values()):
                    time.sleep(SETTLE_S)
            codes[name] = process.returncode
        for log in self._logs:
            log.close()
        return {name: codes[name] for name in self.processes}

    def __enter__(self) -> SuiteProcesses:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The launch file's arguments as options (``--camera-topic``, ``--vla-checkpoint``, ...)."""
    for name, (default, text) in bringup.TOPIC_ARGUMENTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default,
                            help=f"{text} (default {default})")
    for name, (_, text) in bringup.PARAMETER_ARGUMENTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default="",
                            help=f"{text} (default: the YAML value)")
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
    # SIGTERM (e.g. from a supervisor) takes the same clean path as Ctrl-C; SIGINT explicitly too, because a shell
    # that starts `up &` in a script starts it with SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        suite.start()
        started = ", ".join(f"{name} (pid {process.pid})" for name, process in suite.processes.items())
        print(f"task-supplementor up: started {started}; Ctrl-C stops them", flush=True)
        while True:
            suite.check_alive()
            time.sleep(0.2)
    except KeyboardInterrupt:
        _ignore_stop_signals()
        print("task-supplementor up: stopping the nodes one at a time", flush=True)
        codes = suite.stop()
        print(f"task-supplementor up: stopped ({', '.join(f'{n} exit {c}' for n, c in codes.items())})")
        return 0 if all(code == 0 for code in codes.values()) else 1
    except NodeDied as died:
        _ignore_stop_signals()
        codes = suite.stop()
        others = ", ".join(f"{n} exit {c}" for n, c in codes.items() if n != died.name)
        print(f"task-supplementor up: {died}" + (f" ({others})" if others else ""), file=sys.stderr)
        # a node ended by a signal (returncode -N) gives 128 + N, as a shell reports it (not -N & 0xff)
        return 128 - died.returncode if died.returncode < 0 else died.returncode or 1


def _ignore_stop_signals() -> None:
    """While the nodes are being stopped: a (second) Ctrl-C or SIGTERM must not cut the ordered stop short."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.SIG_IGN)
