"""Loading a model on one thread while another model keeps answering on a second: what a live swap does on a GPU.

WHY a helper: both nodes swap checkpoints this way (the loader thread compiles and records the new model's CUDA
graphs while the inference thread replays the old one's), and a capture that is not thread-local makes both fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

Loaded = TypeVar("Loaded")


def load_while_serving(serve_once: Callable[[], object], load: Callable[[], Loaded],
                       loads: int = 2) -> tuple[list[Loaded], int, list[BaseException]]:
    """Calls ``serve_once`` in a loop on a thread while ``load`` runs ``loads`` times on this one.

    Returns the loaded models, how many serving calls finished, and the serving calls' errors; an error of ``load``
    propagates (after the serving thread has stopped)."""
    stop, errors, served = threading.Event(), [], [0]

    def serve() -> None:
        while not stop.is_set():
            try:
                serve_once()
                served[0] += 1
            except BaseException as error:  # noqa: BLE001 - collected for the test to show
                errors.append(error)

    thread = threading.Thread(target=serve, name="serving")
    thread.start()
    try:
        loaded = [load() for _ in range(loads)]
    finally:
        stop.set()
        thread.join()
    return loaded, served[0], errors
