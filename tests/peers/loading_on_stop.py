"""A node process whose checkpoint load is still running (inside torch's C++ code) when it is told to stop.

Run by tests/test_spin.py: ``spin_node`` must end the process with status 0 without waiting for the load, instead
of letting the interpreter finalise under the loading thread (which aborts: C++ ``terminate called``).
"""

import sys
import time

import torch
from rclpy.node import Node

from task_supplementor.ros.model_slot import ModelSlot
from task_supplementor.ros.spin import spin_node


def slow_load(seconds: float) -> torch.Tensor:
    """Stands in for a large checkpoint load: torch work for ``seconds``."""
    weights = torch.randn(1024, 1024)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        weights = torch.tanh(weights @ weights)
    return weights


class LoadingOnStop(Node):
    def __init__(self) -> None:
        super().__init__("loading_on_stop")
        self.slot = ModelSlot(slow_load, name=lambda seconds: f"{seconds:.0f} s of torch work",
                              on_event=lambda level, text: print(text, flush=True))
        self.slot.request(60.0)

    def close(self) -> bool:
        return self.slot.close()


if __name__ == "__main__":
    sys.exit(spin_node(LoadingOnStop))
