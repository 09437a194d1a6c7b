"""How our node processes stop: a DDS teardown that never returns still ends the process, with a stack dump; a stop
during a checkpoint load exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PEER = Path(__file__).parent / "peers" / "stuck_on_destroy.py"
LOADING_PEER = Path(__file__).parent / "peers" / "loading_on_stop.py"


def _signal_when_ready(command: list[str], ready: Callable[[subprocess.Popen], None], sig: int,
                       **popen: object) -> tuple[int, float, subprocess.Popen]:
    """Start ``command``, run ``ready`` on it, send ``sig``: (exit code, seconds from the signal to the exit, the
    process, for its output). Whatever happens, the process does not outlive the test."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, **popen)
    try:
        ready(process)
        process.send_signal(sig)
        start = time.monotonic()
        code = process.wait(timeout=30)
        return code, time.monotonic() - start, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_hung_teardown_ends_the_process_with_a_stack_dump_after_the_timeout():
    def spinning(process: subprocess.Popen) -> None:
        assert process.stdout.readline().strip() == "spinning", process.stderr.read()

    code, stopped_after, process = _signal_when_ready(
        [sys.executable, str(PEER), "1.0"], spinning, signal.SIGTERM, stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    stderr = process.stderr.read()
    assert code == 1, stderr
    assert 0.9 <= stopped_after < 15, stopped_after
    assert "Timeout" in stderr and "destroy_node" in stderr, stderr


def test_a_stop_while_a_checkpoint_loads_exits_0_without_waiting_for_the_load():
    """Ctrl-C while the model slot's loader is inside torch (a node just started, or a live swap): the load cannot
    be interrupted and is not waited for, and the process must not abort in the interpreter's finalisation."""
    def loading(process: subprocess.Popen) -> None:
        assert "in the background" in process.stdout.readline()
        time.sleep(1.0)  # rclpy's signal handlers are installed and the loader is deep in torch by now

    code, stopped_after, process = _signal_when_ready(
        [sys.executable, str(LOADING_PEER)], loading, signal.SIGINT, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    output = process.stdout.read()
    assert code == 0, output
    assert stopped_after < 10, stopped_after  # the 60 s load was not waited for
    assert "terminate called" not in output, output
