"""Both messages cross a real process boundary over DDS, and facts survive the message round trip."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from task_supplementor_msgs.msg import GripperState, VisualFacts, WidowXAction

from task_supplementor.facts import SCHEMA_VERSION, evaluate_output
from task_supplementor.ros.convert import facts_outcome_to_msg, msg_to_facts

PEER = Path(__file__).parent / "peers" / "publish_messages.py"


@pytest.fixture
def node():
    rclpy.init()
    node = rclpy.create_node("message_listener")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def test_visual_facts_and_action_cross_processes(node):
    received: dict[str, object] = {}
    node.create_subscription(VisualFacts, "/test/facts", lambda m: received.setdefault("facts", m), 10)
    node.create_subscription(WidowXAction, "/test/action", lambda m: received.setdefault("action", m), 10)
    peer = subprocess.Popen([sys.executable, str(PEER)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30.0
        while len(received) < 2 and time.monotonic() < deadline and peer.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        peer.terminate()
        _, stderr = peer.communicate(timeout=10)
    assert set(received) == {"facts", "action"}, f"peer stderr: {stderr}"
    facts, action = received["facts"], received["action"]
    assert (facts.header.stamp.sec, facts.header.stamp.nanosec, facts.header.frame_id) == (1234, 5678, "camera_0")
    assert facts.valid and facts.violations == [] and facts.model_id == "peer-model"
    assert facts.schema_version == SCHEMA_VERSION and facts.task == "stack the blocks"
    assert [o.name for o in facts.objects] == ["red block"] and list(facts.objects[0].attributes) == ["wooden"]
    assert facts.gripper.state == GripperState.CLOSED and facts.gripper.holding == "red block"
    assert facts.supplement.startswith("objects: red block (wooden, top-left).")
    assert action.delta_xyz.y == pytest.approx(-0.02) and action.delta_rpy.z == pytest.approx(0.2)
    assert list(action.raw) == pytest.approx([0.01, -0.02, 0.03, 0.1, -0.1, 0.2, 1.0])
    assert action.dry_run and action.prompt_mode == "supplement" and action.policy_id == "peer-policy"
    assert action.facts_age_s == pytest.approx(0.4)


@pytest.mark.parametrize("raw", [
    '{"objects": [{"name": "cup", "attributes": ["white", "ceramic"], "region": "bottom-right"}, '
    '{"name": "bowl", "region": "left"}], "relations": [{"subject": "cup", "relation": "right_of", '
    '"object": "bowl"}], "gripper": {"state": "open"}}',
    '{"objects": [], "gripper": {"state": "unknown"}}',
    '{"objects": [{"name": "tasse à café"}], "gripper": {"state": "closed", "holding": "tasse à café"}}',
])
def test_facts_message_round_trip(raw):
    outcome = evaluate_output(raw, "any task")
    msg = facts_outcome_to_msg(outcome, header=Header(frame_id="cam"), task="any task", model_id="m", latency_s=0.1)
    wire = deserialize_message(serialize_message(msg), VisualFacts)
    assert msg_to_facts(wire) == outcome.facts
    assert wire.supplement == outcome.supplement


def test_invalid_outcome_is_published_with_reasons():
    outcome = evaluate_output('{"objects": [{"name": "cup", "attributes": ["should be grasped"]}]}', "grasp cup")
    msg = facts_outcome_to_msg(outcome, header=Header(), task="grasp cup", model_id="m", latency_s=0.0)
    assert not msg.valid and list(msg.violations) == ["action_advice"]
    unparseable = facts_outcome_to_msg(evaluate_output("not json", "t"), header=Header(), task="t", model_id="m",
                                       latency_s=0.0)
    assert not unparseable.valid and list(unparseable.violations) == ["unparseable"] and unparseable.objects == []
