"""ModelSlot: background load while the old model serves, atomic swap, failures keep the old model."""

from __future__ import annotations

import threading

import pytest

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
    while slot.loading != "a":
        pass
    slot.request("b")
    slot.request("c")          # replaces b while a still loads
    gate.release.set()
    assert slot.wait_idle(5)
    assert slot.current == ("model:c", "id-c") and slot.swaps == 2
