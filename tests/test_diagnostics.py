"""RollingRate: the achieved rate over a time window (the vla node's ``rate_hz``)."""

from __future__ import annotations

from task_supplementor.ros.diagnostics import RollingRate


def test_rate_over_the_window_and_zero_once_events_stop():
    now = [0.0]
    rate = RollingRate(window_s=0.5, clock=lambda: now[0])
    assert rate.hz() == 0.0
    for at in (0.0, 0.02, 0.04, 0.06, 0.08, 0.30):
        now[0] = at
        rate.tick()
    assert abs(rate.hz() - 5 / 0.30) < 1e-9  # 6 events, 5 intervals
    now[0] = 0.55  # the first three events have left the 0.5 s window
    assert abs(rate.hz() - 2 / 0.24) < 1e-9
    now[0] = 0.81
    assert rate.hz() == 0.0  # nothing in the last 0.5 s: publishing stopped
