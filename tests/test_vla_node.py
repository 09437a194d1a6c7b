"""The vla node as a real process over DDS with the tiny OpenVLA checkpoint.

One node process serves every test of this module (starting one costs seconds of imports). The test side is a plain
rclpy node that publishes frames, the task and VisualFacts, and sets parameters through the node's real
``set_parameters`` service, like ``ros2 param set``. Frames use distinct stamps per test: the node acts at most once
per frame, so each stamp yields at most one action.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
from std_msgs.msg import String
from task_supplementor_msgs.msg import VisualFacts, WidowXAction

from node_process import start_node, stop_nodes
from polling import poll
from task_supplementor.ros.images import rgb_to_imgmsg
from task_supplementor.ros.qos import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS
from vla_node.widowx import HIGH, LOW, clip_to_widowx

TASK = "put the carrot on the plate"
SUPPLEMENT = "objects: carrot (orange, left); plate (white, center). relations: none. gripper: open, holding nothing."


class Harness:
    def __init__(self, node, checkpoint: str):
        self.node, self.checkpoint = node, checkpoint
        self.lock = threading.Lock()
        self.actions: list[WidowXAction] = []
        self.diagnostics: dict[str, str] = {}
        self.image_pub = node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.task_pub = node.create_publisher(String, "task", LATCHED_QOS)
        self.facts_pub = node.create_publisher(VisualFacts, "supplementor/facts", RELIABLE_QOS)
        node.create_subscription(WidowXAction, "vla/action", self._on_action, RELIABLE_QOS)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.params = node.create_client(SetParameters, "vla/set_parameters")
        self.rgb = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)

    def _on_action(self, msg: WidowXAction) -> None:
        with self.lock:
            self.actions.append(msg)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("/vla: actions"):
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}

    def wait_for(self, predicate, timeout: float, publish=None, period: float = 0.1):
        return poll(predicate, timeout, publish, period)

    def set(self, **values):
        """Set parameters through the service; returns the SetParametersResult list."""
        kinds = {bool: ("bool_value", ParameterType.PARAMETER_BOOL),
                 int: ("integer_value", ParameterType.PARAMETER_INTEGER),
                 float: ("double_value", ParameterType.PARAMETER_DOUBLE),
                 str: ("string_value", ParameterType.PARAMETER_STRING)}
        params = []
        for name, value in values.items():
            field, kind = kinds[type(value)]
            params.append(ParameterMsg(name=name, value=ParameterValue(type=kind, **{field: value})))
        assert self.params.wait_for_service(timeout_sec=30)
        future = self.params.call_async(SetParameters.Request(parameters=params))
        assert self.wait_for(future.done, 30)
        return future.result().results

    def facts(self, sec: int, nanosec: int = 0, task: str = TASK, valid: bool = True) -> None:
        msg = VisualFacts(task=task, supplement=SUPPLEMENT, valid=valid, schema_version="1.0", model_id="test")
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        self.facts_pub.publish(msg)

    def frame(self, sec: int) -> Image:
        msg = rgb_to_imgmsg(self.rgb)
        msg.header.stamp.sec = sec
        msg.header.frame_id = "camera"
        return msg

    def actions_for(self, sec: int) -> list[WidowXAction]:
        with self.lock:
            return [a for a in self.actions if a.header.stamp.sec == sec]

    def act(self, sec: int, timeout: float = 20.0) -> WidowXAction | None:
        """Publish frame ``sec`` (repeatedly: best-effort QoS) until an action for it arrives."""
        found = self.wait_for(lambda: self.actions_for(sec), timeout,
                              publish=lambda: self.image_pub.publish(self.frame(sec)), period=0.15)
        return found[0] if found else None

    def counter(self, key: str) -> int:
        time.sleep(1.2)  # diagnostics are published at 1 Hz
        with self.lock:
            return int(self.diagnostics.get(key, "0"))


@pytest.fixture(scope="module")
def vla(tiny_models, tmp_path_factory):
    checkpoint = str(tiny_models / "openvla_tiny")
    log = tmp_path_factory.mktemp("vla_logs") / "vla.log"
    rclpy.init()
    proc = start_node("vla_node.node", "vla.yaml", {"checkpoint": checkpoint, "image_compressed": "false",
                                                    "control_rate_hz": "10.0", "device": "cpu"}, log)
    node = rclpy.create_node("vla_test")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        harness = Harness(node, checkpoint)
        harness.task_pub.publish(String(data=TASK))
        ready = harness.wait_for(lambda: harness.diagnostics.get("policy_id") == checkpoint, 90)
        assert ready, f"the vla node did not load the tiny policy; log:\n{log.read_text()}"
        yield harness
    finally:
        stopped = stop_nodes({"vla": (proc, log)})["vla"]
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    assert stopped.clean, f"vla node did not exit cleanly on SIGTERM ({stopped.code}); log:\n{stopped.log_tail}"


def test_official_prompt_one_action_per_frame_dry_run_by_default(vla: Harness):
    action = vla.act(100)
    assert action is not None
    assert (action.prompt_mode, action.policy_id, action.facts_age_s) == ("none", vla.checkpoint, -1.0)
    assert action.dry_run is True and action.header.frame_id == "camera" and action.latency_s > 0
    a = np.array([action.delta_xyz.x, action.delta_xyz.y, action.delta_xyz.z, action.delta_rpy.x, action.delta_rpy.y,
                  action.delta_rpy.z, action.gripper])
    assert np.all(a >= LOW - 1e-6) and np.all(a <= HIGH + 1e-6)
    for _ in range(8):  # the same frame again over several control ticks: never a second action
        vla.image_pub.publish(vla.frame(100))
        time.sleep(0.1)
    assert len(vla.actions_for(100)) == 1
    assert vla.counter("idle_ticks") > 0


def test_mode_switch_fresh_and_stale_facts(vla: Harness):
    assert all(r.successful for r in vla.set(prompt_mode="supplement", stale_facts_policy="none",
                                            facts_max_age_s=1.0))
    vla.facts(199, 800_000_000)
    fresh = vla.act(200)
    assert fresh.prompt_mode == "supplement" and fresh.facts_age_s == pytest.approx(0.2, abs=1e-6)
    stale_before = vla.counter("stale_facts")
    stale = vla.act(210)  # newest facts are 10.2 s older than the frame -> fall back to the official prompt
    assert stale.prompt_mode == "none" and stale.facts_age_s == -1.0
    assert vla.counter("stale_facts") == stale_before + 1
    # hold: no action for a frame without fresh facts, until facts for it arrive
    assert vla.set(stale_facts_policy="hold")[0].successful
    assert vla.act(220, timeout=1.5) is None
    vla.facts(220, task="a different task")  # facts for another task are never used
    vla.facts(219, valid=False)  # nor invalid ones
    assert vla.act(220, timeout=1.0) is None
    vla.facts(220)
    held = vla.act(220)
    assert held.prompt_mode == "supplement" and held.facts_age_s == 0.0
    assert vla.set(prompt_mode="placeholder", placeholder_kind="stopwords")[0].successful
    vla.facts(230)
    assert vla.act(230).prompt_mode == "placeholder"


def test_require_frame_facts_waits_for_facts_of_that_frame(vla: Harness):
    assert all(r.successful for r in vla.set(prompt_mode="supplement", require_frame_facts=True))
    vla.facts(299)
    assert vla.act(300, timeout=1.5) is None
    vla.facts(300)
    action = vla.act(300)
    assert action.prompt_mode == "supplement" and action.facts_age_s == 0.0
    assert all(r.successful for r in vla.set(prompt_mode="none", require_frame_facts=False))


def test_invalid_facts_of_the_frame_follow_the_stale_policy_or_are_fused_when_asked(vla: Harness):
    """With require_frame_facts, invalid facts of frame t must not make the node wait for t forever."""
    assert all(r.successful for r in vla.set(prompt_mode="supplement", require_frame_facts=True,
                                            stale_facts_policy="none", fuse_invalid_facts=False))
    vla.facts(310, valid=False)
    fallback = vla.act(310)
    assert fallback.prompt_mode == "none" and fallback.facts_age_s == -1.0
    assert vla.set(fuse_invalid_facts=True)[0].successful
    vla.facts(311, valid=False)
    fused = vla.act(311)
    assert fused.prompt_mode == "supplement" and fused.facts_age_s == 0.0
    assert all(r.successful for r in vla.set(prompt_mode="none", require_frame_facts=False, stale_facts_policy="hold",
                                            fuse_invalid_facts=False))


def test_clipping_to_widowx_bounds_with_the_clipped_flag(vla: Harness):
    ours = clip_to_widowx([0.2, -0.01, 0.0, -0.3, 0.1, 0.25, -0.5])
    np.testing.assert_array_equal(ours.action, [0.05, -0.01, 0.0, -0.25, 0.1, 0.25, 0.0])
    assert ours.clipped and not clip_to_widowx([0.0] * 6 + [1.0]).clipped
    clipped_before = vla.counter("actions_clipped")
    # taco_play's statistics span about +-0.7 per axis: un-normalised steps exceed the WidowX's 5 cm / 0.25 rad
    assert vla.set(unnorm_key="taco_play")[0].successful
    action = vla.act(400)
    assert vla.set(unnorm_key="bridge_orig")[0].successful
    raw = np.array(action.raw, dtype=np.float64)
    published = np.array([action.delta_xyz.x, action.delta_xyz.y, action.delta_xyz.z, action.delta_rpy.x,
                          action.delta_rpy.y, action.delta_rpy.z, action.gripper])
    assert action.clipped and np.any(np.abs(raw[:3]) > 0.05)
    np.testing.assert_allclose(published, np.clip(raw, LOW, HIGH), atol=1e-6)
    assert vla.counter("actions_clipped") > clipped_before


def test_dry_run_flag_follows_the_parameter(vla: Harness):
    assert vla.set(dry_run=False)[0].successful
    assert vla.act(500).dry_run is False
    assert vla.set(dry_run=True)[0].successful
    assert vla.act(501).dry_run is True


def test_bad_values_rejected_with_reasons(vla: Harness):
    result = vla.set(unnorm_key="bridge")[0]
    assert not result.successful
    for key in ("'bridge'", "bridge_orig", "fractal20220817_data", "taco_play"):
        assert key in result.reason
    assert not vla.set(prompt_mode="facts")[0].successful
    assert not vla.set(supplement_template="no slots here")[0].successful
    missing = vla.set(checkpoint="/nonexistent/openvla-7b")[0]
    assert not missing.successful and "config.json" in missing.reason
    for name, value, accepted in (("dtype", "int8", "bfloat16"), ("device", "cuda:0;cuda:1", "cuda:0,cuda:1"),
                                  ("backend", "openvla", "native, hf-official")):
        result = vla.set(**{name: value})[0]
        assert not result.successful and f"{name} '{value}'" in result.reason and accepted in result.reason
    assert vla.act(600).policy_id == vla.checkpoint  # the serving policy is untouched


def test_live_policy_swap_under_continuous_frames(vla: Harness, tiny_models):
    """Swap to another checkpoint while frames keep coming: actions never stop, then name the new policy."""
    other = str(tiny_models / "openvla_tiny_b")
    stamps = iter(range(700, 800))
    assert vla.act(next(stamps)).policy_id == vla.checkpoint
    assert vla.set(checkpoint=other)[0].successful  # accepted at once; loads in the background
    seen: list[str] = []
    for sec in stamps:
        action = vla.act(sec)
        assert action is not None, f"no action for frame {sec} during the swap (policies so far: {seen})"
        seen.append(action.policy_id)
        if action.policy_id == other:
            break
    assert seen[-1] == other, f"the new policy never served: {seen}"
    assert set(seen) <= {vla.checkpoint, other}
    assert vla.set(checkpoint=vla.checkpoint)[0].successful  # back, for the tests that follow
    assert vla.wait_for(lambda: (a := vla.act(next(stamps))) is not None and a.policy_id == vla.checkpoint, 60)
