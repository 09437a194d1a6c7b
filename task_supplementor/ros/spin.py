"""``main`` of both node executables: init, spin on a multi-threaded executor, clean shutdown.

One place so both nodes stop the same way on Ctrl-C/SIGTERM: the worker finishes its inference (``node.close()``),
then the executor and rclpy shut down, and the process exits 0 (``task-supplementor up`` and launch rely on it).
A start-up parameter the node cannot run with ends it at once with one line naming it, and exit status 2.

The DDS teardown is bounded: Fast DDS 2.14 (Jazzy's default middleware) can deadlock deleting a participant while
it is still processing another participant's departure, i.e. when two nodes stop at the same moment, as they do
under ``ros2 launch`` or ``task-supplementor up`` (seen once in this project's tests: ``rmw_destroy_node`` ->
``DomainParticipant::set_listener`` spinning forever against a discovery thread in ``onWriterDiscovery``). The
spinning call holds the GIL, so no Python thread or signal handler can end it; faulthandler's watchdog is native,
so after ``teardown_timeout_s`` it writes every thread's stack to stderr and exits with status 1 instead.

A stop that arrives while a checkpoint is still loading in the background (a node just started, or a live swap)
does not wait for the load: once ROS is down the process ends with ``os._exit(0)``. Letting the interpreter finalise
under the loading thread aborts the process instead (C++ ``terminate called without an active exception``, exit
-6; seen in this project's tests when a node was stopped a second after it started).
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Callable

import rclpy
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from task_supplementor.ros.model_node import ModelNode
from task_supplementor.ros.params import StartupParameterError


TEARDOWN_TIMEOUT_S = 10.0  # destroying a node's DDS entities takes well under a second when it does not deadlock


def spin_node(make_node: Callable[[], ModelNode], args: list[str] | None = None,
              teardown_timeout_s: float = TEARDOWN_TIMEOUT_S) -> int:
    rclpy.init(args=args)
    try:
        node = make_node()
    except (StartupParameterError, InvalidParameterValueException, InvalidParameterTypeException) as error:
        # rclpy's: a value out of its declared range, a wrong type (5 for 5.0); anything else is a bug: traceback
        rclpy.logging.get_logger("task_supplementor").fatal(f"not started, bad parameter: {error}")
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # rclpy's SIGINT/SIGTERM handler shuts the context down while the executor may be building its wait set;
        # that race surfaces as RCLError ("the given context is not valid") instead of ExternalShutdownException.
        # After a shutdown it is a clean stop; with the context still up it is a real error.
        if rclpy.ok():
            raise
    finally:
        idle = node.close()
        executor.shutdown()
        faulthandler.dump_traceback_later(teardown_timeout_s, exit=True)
        node.destroy_node()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()
    if not idle:  # a checkpoint load is still running: end here, not in interpreter finalisation (see above)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
