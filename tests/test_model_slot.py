"""ModelSlot: background load while the old model serves, atomic swap, failures keep the old model."""

from __future__ import annotations

import threading

import pytest

from polling import poll
from task_supplementor.ros.model_slot import ModelSlot


class _Gate:
    """Loads ``"model:<spec>"`` once released; spec 'bad' raises like a corrupt checkpoint."""

    def __init__(self):
        self.release = threading.Event()

    def load(self, spec: str) -> str:
        assert self.release.wait(10)
        if spec == "bad":
            raise OSError("header of model.safetensors is corrupt")
        return f"model:{spec}"


def _preflight(spec: str) -> None:
    if spec == "missing":
        raise ValueError("missing: no such directory")


@pytest.fixture()
def gate_slot():
    gate = _Gate()
    slot: ModelSlot[str, str] = ModelSlot(gate.load, name=lambda s: f"id-{s}", preflight=_preflight)
    yield gate, slot
    gate.release.set()
    slot.close()


def test_old_model_serves_during_load_then_swaps(gate_slot):
    gate, slot = gate_slot
    gate.release.set()
    slot.request("a")
    assert slot.wait_idle(5)
    assert slot.current == ("model:a", "id-a")
    gate.release.clear()
    slot.request("b")
    assert slot.busy and slot.current == ("model:a", "id-a")
    gate.release.set()
    assert slot.wait_idle(5)
    assert slot.current == ("model:b", "id-b") and slot.swaps == 2 and slot.last_error == ""


def test_failed_load_keeps_old_model_and_records_reason(gate_slot):
    gate, slot = gate_slot
    gate.release.set()
    slot.request("a")
    assert slot.wait_idle(5)
    slot.request("bad")
    assert slot.wait_idle(5)
    assert slot.current == ("model:a", "id-a")
    assert "id-bad" in slot.last_error and "corrupt" in slot.last_error and "still serving id-a" in slot.last_error


def test_preflight_rejects_without_loading(gate_slot):
    _, slot = gate_slot
    assert slot.check("missing") == "missing: no such directory"
    assert slot.check("a") is None
    assert slot.current == (None, "")


def test_newest_waiting_request_wins(gate_slot):
    gate, slot = gate_slot
    slot.request("a")          # starts loading, blocked on the gate
    assert poll(lambda: slot.loading == "a", 5, period=0.001)
    slot.request("b")
    slot.request("c")          # replaces b while a still loads
    gate.release.set()
    assert slot.wait_idle(5)
    assert slot.current == ("model:c", "id-c") and slot.swaps == 2


def test_a_failed_spec_loads_when_asked_again():
    """Retrying the checkpoint whose load failed (files fixed meanwhile) must load it, not be taken as 'no change'."""
    attempts: list[str] = []
    fixed = threading.Event()

    def load(spec: str) -> str:
        attempts.append(spec)
        if spec == "b" and not fixed.is_set():
            raise OSError("model-00002-of-00003.safetensors is missing")
        return f"model:{spec}"

    slot: ModelSlot[str, str] = ModelSlot(load, name=lambda s: f"id-{s}")
    try:
        slot.request("a")
        assert slot.wait_idle(5)
        slot.request("b")
        assert slot.wait_idle(5) and slot.current == ("model:a", "id-a") and slot.target == "a" and slot.last_error
        fixed.set()
        slot.request("b")
        assert slot.wait_idle(5)
        assert slot.current == ("model:b", "id-b") and slot.last_error == "" and attempts == ["a", "b", "b"]
    finally:
        slot.close()


def test_asking_for_what_serves_or_is_on_its_way_loads_nothing(gate_slot):
    gate, slot = gate_slot
    gate.release.set()
    slot.request("a")
    assert slot.wait_idle(5)
    slot.request("bad")
    assert slot.wait_idle(5) and "id-bad" in slot.last_error
    slot.request("a")  # back to the serving model: nothing to load, the failed swap is no longer wanted
    assert not slot.busy and slot.last_error == "" and slot.swaps == 1
    gate.release.clear()
    slot.request("b")
    assert poll(lambda: slot.loading == "b", 5, period=0.001)
    slot.request("b")  # already loading
    assert slot.target == "b"
    slot.request("a")  # back to "a" while "b" loads: "b" lands, then "a" loads again
    assert slot.target == "a"
    gate.release.set()
    assert slot.wait_idle(5)
    assert slot.current == ("model:a", "id-a") and slot.swaps == 3
