"""How our node processes stop: a DDS teardown that never returns still ends the process, with a stack dump; a stop
during a checkpoint load exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PEER = Path(__file__).parent / "peers" / "stuck_on_destroy.py"
LOADING_PEER = Path(__file__).parent / "peers" / "loading_on_stop.py"


def test_a_hung_teardown_ends_the_process_with_a_stack_dump_after_the_timeout():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, str(PEER), "1.0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "spinning", process.stderr.read()
        process.send_signal(signal.SIGTERM)
        start = time.monotonic()
        code = process.wait(timeout=30)
        stopped_after = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read()
    assert code == 1, stderr
    assert 0.9 <= stopped_after < 15, stopped_after
    assert "Timeout" in stderr and "destroy_node" in stderr, stderr


def test_a_stop_while_a_checkpoint_loads_exits_0_without_waiting_for_the_load():
    """Ctrl-C while the model slot's loader is inside torch (a node just started, or a live swap): the load cannot
    be interrupted and is not waited for, and the process must not abort in the interpreter's finalisation."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, str(LOADING_PEER)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    try:
        assert "in the background" in process.stdout.readline()
        time.sleep(1.0)  # rclpy's signal handlers are installed and the loader is deep in torch by now
        process.send_signal(signal.SIGINT)
        start = time.monotonic()
        code = process.wait(timeout=30)
        stopped_after = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read()
    assert code == 0, output
    assert stopped_after < 10, stopped_after  # the 60 s load was not waited for
    assert "terminate called" not in output, output
