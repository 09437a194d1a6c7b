"""A node process whose DDS teardown never returns (as when Fast DDS deadlocks deleting its participant).

Run by tests/test_spin.py: ``spin_node``'s teardown watchdog must end the process anyway.
"""

import sys
import threading

from rclpy.node import Node

from task_supplementor.ros.spin import spin_node


class StuckOnDestroy(Node):
    def __init__(self) -> None:
        super().__init__("stuck_on_destroy")
        self._ready = self.create_timer(0.05, self._say_ready)

    def _say_ready(self) -> None:  # from inside spin: rclpy's SIGTERM handler is installed by now
        self.destroy_timer(self._ready)
        print("spinning", flush=True)

    def close(self) -> bool:
        return True

    def destroy_node(self) -> None:
        threading.Event().wait()  # never returns


if __name__ == "__main__":
    sys.exit(spin_node(StuckOnDestroy, teardown_timeout_s=float(sys.argv[1])))
