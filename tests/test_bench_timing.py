"""How the VLA benchmark turns a stream of batched calls into frames/s (on an injected clock: no wall-clock bounds)."""

from __future__ import annotations

import pytest

import vla_node.bench as bench


def test_a_stream_is_timed_from_its_first_result_so_the_unhidden_first_batch_is_not_spread_over_the_rest(
        monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])
    first_call_costs = []

    def results(calls: int):
        for call in range(calls):
            clock["now"] += 10.0 if call == 0 else 2.0  # the first batch waits for its own preprocessing
            first_call_costs.append(call == 0)
            yield

    rate = bench._steady_frames_per_second(results, calls=4, warmup=1, frames_per_call=8)
    assert rate == pytest.approx(3 * 8 / (3 * 2.0))  # 4 frames/s, not 32 / 16 = 2 counted from the call
    assert first_call_costs == [True, True, False, False, False]  # warm-up call, then the timed run's 4


def test_a_steady_state_rate_needs_two_timed_calls():
    with pytest.raises(ValueError, match="at least 2"):
        bench._steady_frames_per_second(lambda calls: iter(()), calls=1, warmup=0, frames_per_call=8)
