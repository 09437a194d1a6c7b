"""RollingRate: the achieved rate over a time window (the vla node's ``rate_hz``)."""

from __future__ import annotations

import time

import pytest

from task_supplementor.ros.diagnostics import RollingRate


def test_rate_over_the_window_and_zero_once_events_stop():
    rate = RollingRate(window_s=0.5)
    assert rate.hz() == 0.0
    for _ in range(6):
        rate.tick()
        time.sleep(0.02)
    assert rate.hz() == pytest.approx(1 / 0.02, rel=0.5)  # sleep overshoots; the order of magnitude is the check
    time.sleep(0.6)
    assert rate.hz() == 0.0

