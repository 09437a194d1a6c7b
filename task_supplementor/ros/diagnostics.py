"""Node health for ``/diagnostics``: rolling latency percentiles, counters and text fields -> DiagnosticStatus.

Why rolling: a p95 over the node's whole life hides a regression that started a minute ago; a fixed window of the
most recent samples shows what the node does now.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header


class RollingLatency:
    """The last ``window`` latencies in seconds; percentiles over them (NaN when empty)."""

    def __init__(self, window: int = 200):
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(float(seconds))

    def percentile(self, q: float) -> float:
        with self._lock:
            samples = list(self._samples)
        return float(np.percentile(samples, q)) if samples else float("nan")


class RollingRate:
    """Events per second over the last ``window_s`` seconds (0 with fewer than two events in it); thread-safe.

    WHY a time window and not a count: "rate achieved" must fall to 0 when the node stops publishing, not keep
    reporting the rate of the last burst.
    """

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._window_s = window_s
        self._clock = clock  # seconds; injectable so a test can say exactly when events happen
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self) -> None:
        now = self._clock()
        with self._lock:
            self._times.append(now)
            self._forget_before(now - self._window_s)

    def hz(self) -> float:
        with self._lock:
            self._forget_before(self._clock() - self._window_s)
            first, last, n = (self._times[0], self._times[-1], len(self._times)) if self._times else (0.0, 0.0, 0)
        return (n - 1) / (last - first) if n > 1 and last > first else 0.0

    def _forget_before(self, oldest: float) -> None:
        while self._times and self._times[0] < oldest:
            self._times.popleft()


class Health:
    """Thread-safe counters and fields of one node, rendered as one DiagnosticStatus.

    Level: ERROR while ``error`` is set (e.g. no model can serve), WARN while ``warning`` is set, else OK.
    """

    def __init__(self, name: str, hardware_id: str, window: int = 200, counters: tuple[str, ...] = ()):
        self.name, self.hardware_id = name, hardware_id
        self.latency = RollingLatency(window)
        self._counters: dict[str, int] = dict.fromkeys(counters, 0)
        self._fields: dict[str, str] = {}
        self._lock = threading.Lock()
        self.error = ""
        self.warning = ""

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + n

    def set_field(self, key: str, value: str) -> None:
        with self._lock:
            self._fields[key] = value

    def to_status(self) -> DiagnosticStatus:
        with self._lock:
            counters, fields = dict(self._counters), dict(self._fields)
        if self.error:
            level, message = DiagnosticStatus.ERROR, self.error
        elif self.warning:
            level, message = DiagnosticStatus.WARN, self.warning
        else:
            level, message = DiagnosticStatus.OK, "ok"
        values = [KeyValue(key=k, value=v) for k, v in sorted(fields.items())]
        values += [KeyValue(key=k, value=str(v)) for k, v in sorted(counters.items())]
        values += [KeyValue(key="latency_p50_s", value=f"{self.latency.percentile(50):.4f}"),
                   KeyValue(key="latency_p95_s", value=f"{self.latency.percentile(95):.4f}")]
        return DiagnosticStatus(level=level, name=self.name, message=message, hardware_id=self.hardware_id,
                                values=values)

    def to_array(self, header: Header) -> DiagnosticArray:
        return DiagnosticArray(header=header, status=[self.to_status()])


def report_model_slot(health: Health, slot, startup_problem: str, nothing_loaded: str) -> bool:
    """Set ``loading``/``last_error`` and the level from a :class:`ModelSlot`; True when a model is serving.

    ERROR while nothing serves (the load error, the startup problem, or what is loading), WARN while a model serves
    but the last requested swap failed.
    """
    model, _ = slot.current
    loading = slot.loading
    health.set_field("loading", loading.checkpoint if loading is not None else "")
    health.set_field("last_error", slot.last_error)  # cleared once a later load succeeds or the swap is undone
    if model is None:
        health.error = (slot.last_error or startup_problem
                        or (f"loading {loading.checkpoint}" if loading else nothing_loaded))
    else:
        health.error = ""
    health.warning = slot.last_error if model is not None else ""
    return model is not None
