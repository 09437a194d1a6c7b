"""``main`` of both node executables: init, spin on a multi-threaded executor, clean shutdown.

One place so both nodes stop the same way on Ctrl-C/SIGTERM: the worker finishes its inference (``node.close()``),
then the executor and rclpy shut down, and the process exits 0 (``task-supplementor up`` and launch rely on it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


class ClosableNode(Protocol):
    def close(self) -> None: ...


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = make_node()
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
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
