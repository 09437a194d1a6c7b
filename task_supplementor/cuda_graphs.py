"""Recording a model function as a CUDA graph: what both ``fast_decode`` paths (Qwen2.5-VL, OpenVLA) share.

WHY one helper: a capture that skips any of its steps fails only on some machines or on the second GPU, far from
the cause. The function runs twice first on a side stream (lazy caches, cuBLAS workspaces and Triton autotuning
must not happen inside the capture), and the capture itself runs on a fresh stream of the current device: torch's
default capture stream is made once per process on whichever device was current at the first capture, and
capturing another device's kernels on it fails.

The capture is thread-local (``capture_error_mode="thread_local"``): a node records the graphs of a model it is
swapping in on its loader thread while the serving model keeps running on the inference thread (and the serving
model may record a graph for a new frame shape while the next checkpoint's weights are being copied in). Under
CUDA's default global mode, a capture forbids "unsafe" calls (synchronisation, allocations) in every thread of the
process, so the other thread's work would fail and invalidate the capture (the swap tests in
tests/test_openvla_cuda.py and tests/test_fast_decode.py fail that way on a GPU).

Thread-local is not enough when both threads record at once (the serving model meets a new frame shape during a
swap): entering a capture synchronises the whole device, which CUDA refuses while another thread's stream is
capturing, and a capture marks the device's random generator as recording, so the random tensors inductor
benchmarks with while compiling (the runs before a capture) fail in the other thread ("Offset increment outside
graph capture"); emptying torch's cache during a capture is refused too. So one process-wide lock,
:data:`capture_lock`, is held from a capture's first warm-up run to its end, and by callers that empty the cache.
It costs the serving thread a wait only when it records a new shape while the loader compiles (2x H200: the swap
test failed that way without it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch

Output = TypeVar("Output")

capture_lock = threading.RLock()
"""Held while a graph is compiled and recorded; hold it also around ``torch.cuda.empty_cache()``."""


def capture_graph(fn: Callable[[], Output], pool: tuple[int, int] | None) -> tuple[Output, torch.cuda.CUDAGraph]:
    """``fn``'s output tensors (refreshed by every replay) and its recorded graph, allocating from memory ``pool``
    (shared by a runtime's graphs: they replay one at a time, so their intermediates may overlap)."""
    with capture_lock:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, stream=torch.cuda.Stream(), capture_error_mode="thread_local"):
            output = fn()
    return output, graph
