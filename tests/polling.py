"""Waiting on a live ROS graph in tests: poll a condition, optionally re-publishing (best-effort topics drop)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll(predicate: Callable[[], Any], timeout: float, publish: Callable[[], None] | None = None,
         period: float = 0.1) -> Any:
    """The first truthy value of ``predicate`` within ``timeout`` seconds (calling ``publish`` before each try), or
    None when there was none: callers that expect nothing (e.g. no action while facts are missing) test for None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if publish is not None:
            publish()
        value = predicate()
        if value:
            return value
        time.sleep(period)
    return None
