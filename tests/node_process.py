"""Our node executables as child processes of a test: started with their log in a file, stopped by signal.

WHY one place: a node that does not stop on SIGTERM/SIGINT is a bug users meet under ``ros2 launch``; when it
happens in a test, the test must say where the node was stuck (not just "timed out") and must not leave the
test process's own ROS context broken for the tests that follow. Children run with Python's faulthandler on, so
a hung one is sent SIGABRT and writes every thread's stack into its log before it is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTLE_S = 1.0  # after one node exits, for the others to finish processing its departure


def start_node(module: str, params_file: str, overrides: dict[str, str], log: Path,
               ros_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """``python -m module --ros-args [ros_args] --params-file config/params_file -p name:=value ...``."""
    command = [sys.executable, "-m", module, "--ros-args", *ros_args,
               "--params-file", str(REPO / "config" / params_file)]
    for name, value in overrides.items():
        command += ["-p", f"{name}:={value}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@dataclass(frozen=True)
class Stopped:
    """How a node process ended: its exit code, or None when it hung and had to be killed."""

    code: int | None
    log_tail: str

    @property
    def clean(self) -> bool:
        return self.code == 0


def stop_nodes(nodes: dict[str, tuple[subprocess.Popen, Path]], sig: int = signal.SIGTERM,
               timeout: float = 60.0) -> dict[str, Stopped]:
    """Send ``sig`` to each ``name: (process, log)`` in turn and wait for it; one still running after ``timeout`` s
    gets SIGABRT (its stack dump goes to its log), then SIGKILL.

    One at a time, with a pause between, because Fast DDS 2.14 can deadlock a participant's deletion while it is
    processing another participant's departure (see ``task_supplementor/ros/spin.py``): the nodes' own clean exit is
    what these tests check, not that upstream race, which the nodes' teardown watchdog bounds.
    """
    stopped = {}
    for index, (name, (process, log)) in enumerate(nodes.items()):
        if index:
            time.sleep(SETTLE_S)
        if process.poll() is None:
            process.send_signal(sig)
        stopped[name] = _wait(process, log, timeout)
    return stopped


def _wait(process: subprocess.Popen, log: Path, timeout: float) -> Stopped:
    try:
        code: int | None = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
        process.send_signal(signal.SIGABRT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log.read_text(errors="replace") if log.is_file() else ""
    return Stopped(code, text[-6000:])
