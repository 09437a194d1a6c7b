"""The vla node as a real process over DDS with the tiny OpenVLA checkpoint.

One node process serves every test of this module (starting one costs seconds of imports). The test side is a plain
rclpy node that publishes frames, the task and VisualFacts, and sets parameters through the node's real
``set_parameters`` service, like ``ros2 param set``. Frames use distinct stamps per test: the node acts at most once
per frame, so each stamp yields at most one action.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

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
from vla_node.node import VlaNode
from vla_node.prompt_fusion import FusionConfig, PromptFuser
from vla_node.widowx import HIGH, LOW, clip_to_widowx

TASK = "put the carrot on the plate"
SUPPLEMENT = "objects: carrot (orange, left); plate (white, center). relations: none. gripper: open, holding nothing."


class Harness:
    def __init__(self, node, checkpoint: str, ns: str = "", log: Path | None = None):
        """``ns``: the namespace the vla node was started in ("" or e.g. "/held"); ``log``: its output."""
        self.node, self.checkpoint, self.ns, self.log = node, checkpoint, ns, log
        self.lock = threading.Lock()
        self.actions: list[WidowXAction] = []
        self.received_at: list[float] = []  # monotonic receive time of each action (same clock as the node's)
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_message = ""
        self.diagnostics_at = 0.0
        self.image_pub = node.create_publisher(Image, f"{ns}/camera/image_raw", SENSOR_QOS)
        self.task_pub = node.create_publisher(String, f"{ns}/task", LATCHED_QOS)
        self.facts_pub = node.create_publisher(VisualFacts, f"{ns}/supplementor/facts", RELIABLE_QOS)
        node.create_subscription(WidowXAction, f"{ns}/vla/action", self._on_action, RELIABLE_QOS)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.params = node.create_client(SetParameters, f"{ns}/vla/set_parameters")
        self.rgb = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)

    def _on_action(self, msg: WidowXAction) -> None:
        with self.lock:
            self.actions.append(msg)
            self.received_at.append(time.monotonic())

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"{self.ns}/vla: actions":
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_message = status.message
                    self.diagnostics_at = time.monotonic()

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
        """``key``'s count in a diagnostics message published after everything that happened before this call (the
        first one received over 1 s later: they come at 1 Hz, and delivery takes far less than a second)."""
        after = time.monotonic() + 1.0
        assert self.wait_for(lambda: self.diagnostics_at > after, 10), "no diagnostics from the vla node"
        with self.lock:
            return int(self.diagnostics.get(key, "0"))


@pytest.fixture(scope="module")
def vla(tiny_models, tmp_path_factory):
    checkpoint = str(tiny_models / "openvla_tiny")
    log = tmp_path_factory.mktemp("vla_logs") / "vla.log"
    rclpy.init()
    proc = start_node("vla_node.node", "vla.yaml", {"checkpoint": checkpoint, "image_compressed": "false",
                                                    "control_rate_hz": "10.0", "device": "cpu",
                                                    "unorm_key": "bridge", "zzz": "1"}, log)  # misspelt, unknown
    node = rclpy.create_node("vla_test")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        harness = Harness(node, checkpoint, log=log)
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


@pytest.fixture(autouse=True)
def yaml_prompt_parameters(vla: Harness):
    """Each test starts from config/vla.yaml's key, prompt and facts parameters, whatever the test before it left
    (one node serves the module: a test failing half-way must not fail the ones after it)."""
    results = vla.set(unnorm_key="bridge_orig", prompt_mode="none", placeholder_kind="digits", placeholder_seed=0,
                      stale_facts_policy="hold", facts_max_age_s=1.0, require_frame_facts=False,
                      fuse_invalid_facts=False, dry_run=True)
    assert all(r.successful for r in results), [r.reason for r in results]


@pytest.fixture(scope="module")
def policy(vla: Harness):
    """The tiny policy loaded in this process through the node's own loader, to recompute what the node acted on."""
    from vla_node.backends import PolicySpec, load_policy

    return load_policy(PolicySpec(checkpoint=vla.checkpoint, device="cpu", dtype="float32"))


def _assert_policy_saw(policy, vla: Harness, action: WidowXAction, config: FusionConfig) -> None:
    """``action`` is the policy's output for its frame under ``config``'s prompt, and (where that prompt is not the
    official one) not under the official prompt: so the fused text reached the policy, not only the mode label."""
    stamp = action.header.stamp.sec * 1_000_000_000 + action.header.stamp.nanosec
    official = PromptFuser(FusionConfig(mode="none"), policy.tokenizer).build(TASK, None, stamp).text
    fused = PromptFuser(config, policy.tokenizer).build(TASK, SUPPLEMENT, stamp).text
    expected, under_official = policy.predict([vla.rgb, vla.rgb], [fused, official], "bridge_orig")
    np.testing.assert_allclose(np.array(action.raw), expected, atol=1e-6, err_msg=fused)
    if config.mode != "none":
        assert not np.allclose(expected, under_official, atol=1e-6), "this frame cannot tell the prompts apart"


def test_official_prompt_one_action_per_frame_dry_run_by_default(vla: Harness):
    action = vla.act(100)
    assert action is not None
    assert (action.prompt_mode, action.policy_id, action.facts_age_s) == ("none", vla.checkpoint, -1.0)
    assert action.dry_run is True and action.header.frame_id == "camera" and action.latency_s > 0
    a = np.array([action.delta_xyz.x, action.delta_xyz.y, action.delta_xyz.z, action.delta_rpy.x, action.delta_rpy.y,
                  action.delta_rpy.z, action.gripper])
    assert np.all(a >= LOW - 1e-6) and np.all(a <= HIGH + 1e-6)
    repeated = vla.counter("frames_repeated")
    for _ in range(8):  # the same frame again over several control ticks: never a second action
        vla.image_pub.publish(vla.frame(100))
        time.sleep(0.1)
    assert len(vla.actions_for(100)) == 1
    assert vla.counter("frames_repeated") >= repeated + 6  # best-effort QoS: nearly all 8 arrive


def test_a_frame_from_before_the_task_is_not_acted_on_for_it(vla: Harness):
    """No task: the frame waits. A task that comes seconds later must not move the arm on that old picture; the
    next frame (or the same frame sent again) is acted on."""
    vla.task_pub.publish(String(data=""))
    assert vla.wait_for(lambda: vla.diagnostics.get("task") == "", 10)
    older, received = vla.counter("frames_older_than_task"), vla.counter("frames_received")
    for _ in range(5):  # best-effort QoS
        vla.image_pub.publish(vla.frame(150))
        time.sleep(0.1)
    assert vla.counter("frames_received") > received
    time.sleep(1.0)  # the frame is now well over TASK_FRAME_GRACE_S (0.5 s) older than the task to come
    vla.task_pub.publish(String(data=TASK))
    assert vla.wait_for(lambda: vla.diagnostics.get("task") == TASK, 10)
    assert vla.counter("frames_older_than_task") == older + 1
    assert not vla.actions_for(150)
    assert vla.act(151) is not None
    assert vla.act(150) is not None  # the old stamp, sent now: a fresh frame as far as the node can tell


def test_a_runaway_task_is_refused_per_frame_and_shown_cut_short(vla: Harness):
    """Past the 2048 tokens openvla-7b was trained on an action would still come out; the node must not act on it,
    and must not put 10 kB into every status and log line."""
    runaway = "pick up the cup " * 700
    errors = vla.counter("inference_errors")
    vla.task_pub.publish(String(data=runaway))
    try:
        assert vla.wait_for(lambda: vla.diagnostics.get("task", "").endswith(f"... ({len(runaway)} characters)"), 10)
        assert len(vla.diagnostics["task"]) < 300
        for _ in range(5):
            vla.image_pub.publish(vla.frame(160))
            time.sleep(0.2)
        assert vla.wait_for(lambda: "llm_max_length of 2048" in vla.diagnostics_message, 10), vla.diagnostics_message
        assert vla.counter("inference_errors") > errors and not vla.actions_for(160)
    finally:
        vla.task_pub.publish(String(data=TASK))
    assert vla.act(161) is not None
    assert f"new task: '{runaway[:200]}... ({len(runaway)} characters)'" in vla.log.read_text()


def test_mode_switch_fresh_and_stale_facts(vla: Harness, policy):
    assert all(r.successful for r in vla.set(prompt_mode="supplement", stale_facts_policy="hold",
                                            facts_max_age_s=1.0))  # hold: no frame acted on before the facts come
    assert "prompt_mode now supplement (placeholder digits, seed 0)" in vla.log.read_text()
    vla.facts(199, 800_000_000)
    fresh = vla.act(200)
    assert fresh.prompt_mode == "supplement" and fresh.facts_age_s == pytest.approx(0.2, abs=1e-6)
    _assert_policy_saw(policy, vla, fresh, FusionConfig(mode="supplement"))
    assert vla.set(stale_facts_policy="none")[0].successful
    stale_before = vla.counter("stale_facts")
    stale = vla.act(210)  # newest facts are 10.2 s older than the frame -> fall back to the official prompt
    assert stale.prompt_mode == "none" and stale.facts_age_s == -1.0
    _assert_policy_saw(policy, vla, stale, FusionConfig(mode="none"))
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
    assert all(r.successful for r in vla.set(prompt_mode="placeholder", placeholder_kind="stopwords"))
    vla.facts(230)
    placeholder = vla.act(230)
    assert placeholder.prompt_mode == "placeholder"
    _assert_policy_saw(policy, vla, placeholder, FusionConfig(mode="placeholder", placeholder_kind="stopwords"))


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


def test_parameters_it_does_not_declare_are_named_at_start(vla: Harness):
    """rclpy ignores them silently; a misspelt unnorm_key would leave the default statistics acting on a robot."""
    log = vla.log.read_text()
    assert ("parameter 'unorm_key' given to /vla is not one of its parameters and is ignored; did you mean "
            "'unnorm_key'?") in log
    assert "parameter 'zzz' given to /vla is not one of its parameters and is ignored\n" in log


def test_bad_values_rejected_with_reasons(vla: Harness, tmp_path):
    result = vla.set(unnorm_key="bridge")[0]
    assert not result.successful
    for key in ("'bridge'", "bridge_orig", "fractal20220817_data", "taco_play"):
        assert key in result.reason
    assert not vla.set(prompt_mode="facts")[0].successful
    assert not vla.set(supplement_template="no slots here")[0].successful
    missing = vla.set(checkpoint="/nonexistent/openvla-7b")[0]
    assert not missing.successful and "config.json" in missing.reason
    cleared = vla.set(checkpoint="")[0]  # would read as "no policy" while the policy kept acting
    assert not cleared.successful and f"checkpoint '' would not stop {vla.checkpoint}" in cleared.reason
    other_model = vla.set(checkpoint=str(Path(vla.checkpoint).parent / "qwen2_5_vl_tiny"))[0]  # the supplementor's
    assert not other_model.successful and "model_type 'qwen2_5_vl', not 'openvla'" in other_model.reason
    for damage, said in ((lambda shard: shard.unlink(), "shards named in the index are missing"),
                         (lambda shard: os.truncate(shard, shard.stat().st_size - 100), "truncated")):
        broken = tmp_path / f"openvla_{len(said)}"
        shutil.copytree(vla.checkpoint, broken)
        damage(broken / "model-00003-of-00003.safetensors")
        result = vla.set(checkpoint=str(broken))[0]  # refused at once, not after a background load
        assert not result.successful and said in result.reason and "model-00003-of-00003" in result.reason
    absent = vla.set(device="cuda:99")[0]  # said when set, not in a failed load later
    assert not absent.successful and "device 'cuda:99'" in absent.reason and "on this machine" in absent.reason
    for name, value, accepted in (("dtype", "int8", "bfloat16"), ("device", "cuda:0;cuda:1", "cuda:0,cuda:1"),
                                  ("backend", "openvla", "native, hf-official")):
        result = vla.set(**{name: value})[0]
        assert not result.successful and f"{name} '{value}'" in result.reason and accepted in result.reason
    official = vla.set(backend="hf-official")[0]  # transformers 5 here: the official code cannot run; said at once
    assert not official.successful and "transformers is" in official.reason and "'native'" in official.reason
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


def test_latency_percentiles_and_achieved_rate_in_diagnostics(vla: Harness):
    """p50/p95 are over the last 200 published latencies (the messages carry each one); rate_hz over the last 10 s."""
    control_rate_hz = 10.0
    deadline, sec = time.monotonic() + 4.0, 800
    while time.monotonic() < deadline:  # a new frame every 50 ms: the 10 Hz timer is the limit
        vla.image_pub.publish(vla.frame(sec))
        sec += 1
        time.sleep(0.05)
    time.sleep(0.5)  # the last inference lands
    published = vla.counter("actions_published")
    with vla.lock:
        diag, diag_at, received = dict(vla.diagnostics), vla.diagnostics_at, list(vla.received_at)
        latencies = [a.latency_s for a in vla.actions]
    assert published == len(latencies), "the test missed actions: the percentiles below would not be comparable"
    window = latencies[-200:]
    assert float(diag["latency_p50_s"]) == pytest.approx(np.percentile(window, 50), abs=1e-4)
    assert float(diag["latency_p95_s"]) == pytest.approx(np.percentile(window, 95), abs=1e-4)
    recent = [t for t in received if diag_at - 10.0 <= t <= diag_at]
    expected_hz = (len(recent) - 1) / (recent[-1] - recent[0])
    # the node's figure is the rate the test saw over the same window (earlier tests' actions included), never
    # above what the control timer allows; how fast this machine is decides nothing here
    assert float(diag["rate_hz"]) <= control_rate_hz * 1.05
    assert float(diag["rate_hz"]) == pytest.approx(expected_hz, rel=0.15)


def _checkpoint_copy(source: str, out, extra_key: str, constant_action: list[float]) -> None:
    """A copy of ``source`` whose norm_stats also hold ``extra_key``: q01 = q99 = ``constant_action`` on the masked
    dims, so every action un-normalised with that key equals it there, whatever the tokens."""
    shutil.copytree(source, out)
    config = json.loads((out / "config.json").read_text())
    stats = json.loads(json.dumps(config["norm_stats"]["bridge_orig"]))
    stats["action"]["q01"] = stats["action"]["q99"] = constant_action
    config["norm_stats"][extra_key] = stats
    (out / "config.json").write_text(json.dumps(config))
    (out / "dataset_statistics.json").write_text(json.dumps(config["norm_stats"]))  # what is read when present


def test_failed_swap_keeps_policy_and_key_then_a_retry_loads_with_the_new_key(vla: Harness, tmp_path):
    """A checkpoint that passes the quick check but fails to load (a whole shard holding a tensor of the wrong
    shape) leaves the old policy serving with its own unnorm key (the new key, which the old checkpoint lacks, waits
    for the new policy); setting the same checkpoint again once the files are fixed loads it, and its actions use the
    new key."""
    from safetensors.torch import load_file, save_file

    other = tmp_path / "openvla_c"
    constant = [0.01, -0.02, 0.03, -0.04, 0.05, -0.06, 0.0]
    _checkpoint_copy(vla.checkpoint, other, "only_in_c", constant)
    shard = other / "model-00002-of-00003.safetensors"
    shard.rename(tmp_path / shard.name)
    tensors = load_file(tmp_path / shard.name)
    name = next(iter(tensors))
    tensors[name] = tensors[name].flatten()[1:].clone()  # one element short: whole file, wrong shape
    save_file(tensors, shard, metadata={"format": "pt"})
    errors_before = vla.counter("inference_errors")
    results = vla.set(checkpoint=str(other), unnorm_key="only_in_c")  # in this order: the key goes with "other"
    assert [r.successful for r in results] == [True, True], [r.reason for r in results]
    failed = vla.wait_for(lambda: str(other) in vla.diagnostics.get("last_error", ""), 60)
    assert failed, f"the broken checkpoint's load error never showed: {vla.diagnostics}"
    action = vla.act(900)
    assert action is not None and action.policy_id == vla.checkpoint
    assert vla.wait_for(lambda: vla.diagnostics["unnorm_key"] == "bridge_orig", 10)
    assert vla.counter("inference_errors") == errors_before
    (tmp_path / shard.name).replace(shard)
    assert vla.set(checkpoint=str(other))[0].successful  # the same value again: a retry
    stamps = iter(range(901, 1000))
    served = vla.wait_for(lambda: (a := vla.act(next(stamps))) is not None and a.policy_id == str(other) and a, 60)
    assert served, f"the fixed checkpoint was never loaded: {vla.diagnostics}"
    np.testing.assert_allclose(np.array(served.raw[:6]), constant[:6], atol=1e-6)
    assert vla.counter("inference_errors") == errors_before
    # statistics added to the serving checkpoint's files after it loaded never reach its policy: refused
    stats = json.loads((other / "dataset_statistics.json").read_text())
    (other / "dataset_statistics.json").write_text(json.dumps(dict(stats, added_later=stats["only_in_c"])))
    late = vla.set(unnorm_key="added_later")[0]
    assert not late.successful and "'added_later' is not in" in late.reason, late.reason
    # back, for tests that follow: the key first (it goes with the serving "other"), then the checkpoint
    assert all(r.successful for r in vla.set(unnorm_key="bridge_orig", checkpoint=vla.checkpoint))
    assert vla.wait_for(lambda: (a := vla.act(next(stamps))) is not None and a.policy_id == vla.checkpoint, 60)


def test_a_checkpoint_sharing_no_key_waits_for_one_of_its_own_then_loads(vla: Harness, tmp_path):
    """`ros2 param set` sets one parameter per call: going to a checkpoint fine-tuned on another dataset (its only
    key is its own, as finetune.py writes) and back must work one set at a time, in the natural order."""
    tuned = tmp_path / "finetuned"
    constant = [0.02, -0.01, 0.04, -0.03, 0.06, -0.05, 0.0]
    shutil.copytree(vla.checkpoint, tuned)
    stats = json.loads((tuned / "config.json").read_text())["norm_stats"]["bridge_orig"]
    stats["action"]["q01"] = stats["action"]["q99"] = constant
    (tuned / "dataset_statistics.json").write_text(json.dumps({"my_robot": stats}))
    accepted = vla.set(checkpoint=str(tuned))[0]
    assert accepted.successful, accepted.reason
    waiting = f"checkpoint {tuned} waits for an unnorm_key of its own (my_robot; 'bridge_orig' is not one)"
    assert vla.wait_for(lambda: waiting in vla.diagnostics_message, 10), vla.diagnostics_message
    stamps = iter(range(1300, 1500))
    assert vla.act(next(stamps)).policy_id == vla.checkpoint  # the serving policy acts meanwhile, with its own key
    wrong = vla.set(unnorm_key="bridge")[0]
    assert not wrong.successful and "available unnorm keys: my_robot" in wrong.reason, wrong.reason
    assert vla.set(unnorm_key="my_robot")[0].successful
    served = vla.wait_for(lambda: (a := vla.act(next(stamps))) is not None and a.policy_id == str(tuned) and a, 60)
    assert served, f"the fine-tuned checkpoint never served: {vla.diagnostics}"
    np.testing.assert_allclose(np.array(served.raw[:6]), constant[:6], atol=1e-6)
    assert vla.wait_for(lambda: waiting not in vla.diagnostics_message, 10), vla.diagnostics_message
    assert vla.set(checkpoint=vla.checkpoint)[0].successful  # and back
    assert vla.set(unnorm_key="bridge_orig")[0].successful
    assert vla.wait_for(lambda: (a := vla.act(next(stamps))) is not None and a.policy_id == vla.checkpoint, 60)
    assert vla.wait_for(lambda: vla.diagnostics["unnorm_key"] == "bridge_orig", 10)


def test_a_start_up_value_no_checkpoint_can_mend_ends_the_node_with_one_line(vla: Harness, tmp_path):
    log = tmp_path / "bogus_mode.log"
    proc = start_node("vla_node.node", "vla.yaml", {"checkpoint": vla.checkpoint, "prompt_mode": "bogus",
                                                    "device": "cpu"}, log, ros_args=("-r", "__ns:=/bogus"))
    try:
        code = proc.wait(timeout=60)
    finally:
        stop_nodes({"bogus": (proc, log)})  # nothing to do when it ended as it should
    text = log.read_text()
    assert code == 2, text
    assert "not started, bad parameter: prompt_mode 'bogus' is not one of none, supplement, placeholder" in text
    assert "Traceback" not in text, text


def test_without_a_checkpoint_choices_are_checked_at_once_and_the_first_load_comes_when_it_is_set(vla: Harness,
                                                                                                      tmp_path):
    """Started with no checkpoint, the node serves nothing; a bad dtype is refused when it is set (not when a
    checkpoint arrives later), a device is accepted, and setting the checkpoint loads the policy."""
    log = tmp_path / "empty.log"
    proc = start_node("vla_node.node", "vla.yaml", {"checkpoint": '""', "image_compressed": "false",
                                                    "control_rate_hz": "10.0"}, log, ros_args=("-r", "__ns:=/empty"))
    try:
        empty = Harness(vla.node, vla.checkpoint, ns="/empty")
        empty.task_pub.publish(String(data=TASK))
        said = empty.wait_for(lambda: "no checkpoint set" in empty.diagnostics_message, 60)
        assert said and empty.diagnostics.get("policy_id") == "none", (empty.diagnostics_message, log.read_text())
        refused = empty.set(dtype="int8")[0]
        assert not refused.successful and "dtype 'int8'" in refused.reason
        assert empty.set(device="cpu")[0].successful, "a device must be settable before any checkpoint"
        assert empty.set(checkpoint=vla.checkpoint)[0].successful
        action = empty.act(1200, timeout=60)
        assert action is not None and action.policy_id == vla.checkpoint, log.read_text()
    finally:
        stopped = stop_nodes({"empty": (proc, log)})["empty"]
    assert stopped.clean, stopped.log_tail


def test_a_start_up_checkpoint_held_back_by_its_unnorm_key_loads_once_the_key_is_set(vla: Harness, tmp_path):
    """Started with a key the checkpoint lacks, the node serves nothing and says why; other parameters can be set
    meanwhile; setting the key (only) loads the policy, whose actions then come."""
    log = tmp_path / "held.log"
    proc = start_node("vla_node.node", "vla.yaml", {"checkpoint": vla.checkpoint, "unnorm_key": "bridge",
                                                    "image_compressed": "false", "control_rate_hz": "10.0",
                                                    "device": "cpu"}, log, ros_args=("-r", "__ns:=/held"))
    try:
        held = Harness(vla.node, vla.checkpoint, ns="/held")
        held.task_pub.publish(String(data=TASK))
        said = held.wait_for(lambda: "unnorm_key 'bridge'" in held.diagnostics_message, 60)
        assert said and "bridge_orig" in held.diagnostics_message, (held.diagnostics_message, log.read_text())
        assert held.diagnostics.get("policy_id") == "none"
        assert all(key in held.diagnostics for key in VlaNode.counters), held.diagnostics  # every key from the start
        assert held.diagnostics["actions_published"] == held.diagnostics["frames_received"] == "0"
        # other parameters are not the key's business: set while held back, and the policy stays held back
        assert all(r.successful for r in held.set(dry_run=True, prompt_mode="none", control_rate_hz=10.0))
        assert held.counter("actions_published") == 0 and held.diagnostics.get("policy_id") == "none"
        assert "unnorm_key 'bridge'" in held.diagnostics_message
        assert held.set(unnorm_key="bridge_orig")[0].successful
        action = held.act(1100, timeout=60)
        assert action is not None and action.policy_id == vla.checkpoint, log.read_text()
        assert held.wait_for(lambda: held.diagnostics_message == "ok", 10), held.diagnostics_message  # problem gone
    finally:
        stopped = stop_nodes({"held": (proc, log)})["held"]
    assert stopped.clean, stopped.log_tail
