"""How our node processes stop: a DDS teardown that never returns still ends the process, with a stack dump."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PEER = Path(__file__).parent / "peers" / "stuck_on_destroy.py"


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
