"""The ``vla`` ROS 2 node: latest camera frame + task (+ the supplementor's facts) -> ``WidowXAction`` on ``~/action``.

Threading, and why: executor callbacks only store inputs (the single latest frame, the task, recent facts) and a
timer at ``control_rate_hz`` wakes one dedicated inference thread, so a slow policy never blocks a callback and
frames that arrive meanwhile replace each other (counted). Each frame is acted on at most once; a tick with no new
frame is counted as idle. The policy lives in a :class:`ModelSlot`: ``checkpoint``/``backend``/``device``/``dtype``
changes are checked in the set-parameters callback (bad path or an ``unnorm_key`` the checkpoint lacks is rejected
with the list of available keys) and loaded in the background while the old policy keeps serving. The
``unnorm_key`` belongs to a checkpoint: set with a new checkpoint, it takes effect when that policy starts serving
(the old one keeps its own key meanwhile, and for good if the load fails); set alone, it goes with the checkpoint on
its way in, else the serving one. Prompt parameters take effect on the next frame.

Facts (``supplement``/``placeholder`` modes): the newest valid facts for the current task stamped no later than the
frame; their age is frame stamp - facts stamp (deterministic under replay). Older than ``facts_max_age_s`` (or none):
``stale_facts_policy`` ``hold`` publishes nothing while they are (the arm holds its pose): the frame is acted on if
fresh facts for it come before a newer frame replaces it; ``none`` acts at once with the official prompt. Either way
the frame is counted once in ``stale_facts``. ``require_frame_facts`` waits for facts stamped exactly like the
frame. When frame stamps go back (the same bags replayed again, a looped bag), the facts heard before that frame are
forgotten: they are the earlier pass's, and with the same stamps they would be fused into this pass's frames.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import Vector3
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from std_msgs.msg import String
from task_supplementor_msgs.msg import VisualFacts, WidowXAction

from task_supplementor.devices import DTYPES
from task_supplementor.ros.camera import CameraFrame, CameraInput
from task_supplementor.ros.diagnostics import RollingRate
from task_supplementor.ros.model_node import ModelNode, shown_task
from task_supplementor.ros.params import ParamSpec, StartupParameterError
from task_supplementor.ros.qos import LATCHED_QOS, RELIABLE_QOS
from task_supplementor.ros.spin import spin_node
from vla_node.backends import BACKENDS, Policy, PolicySpec, load_policy
from vla_node.backends.base import check_choices, check_unnorm_key, norm_stats_of, preflight
from vla_node.prompt_fusion import (
    DEFAULT_SUPPLEMENT_TEMPLATE, PLACEHOLDER_KINDS, PROMPT_MODES, FusionConfig, PlaceholderError, PromptFuser,
)
from vla_node.widowx import clip_to_widowx

NODE_NAME = "vla"
EXAMPLE_CHECKPOINT = "/path/to/openvla-7b"  # in the hint of a node started without one
STALE_POLICIES = ("hold", "none")
_FACTS_KEPT = 64
# A frame that arrived more than this long before the current task is never acted on for it: with no task (or
# another) the node waited, and the picture may be long out of date when an instruction comes (a stalled camera).
# Not zero: a replay publishes a bag's task and first frame together, and the two topics arrive in either order.
TASK_FRAME_GRACE_S = 0.5


# Every parameter, its default (config/vla.yaml repeats these) and its descriptor.
PARAMETERS: dict[str, ParamSpec] = {
    "checkpoint": ParamSpec("", "OpenVLA checkpoint directory (openvla/openvla-7b layout). Empty: no policy, nothing "
                                "is published until it is set. Setting it at runtime swaps the policy live.",
                            group="policy"),
    "backend": ParamSpec("native", f"policy backend: {' | '.join(BACKENDS)} (hf-official needs transformers "
                                   "4.40.1 + timm 0.9.x in its own environment)", group="policy"),
    "device": ParamSpec("auto", "torch device: auto | cpu | cuda | cuda:N | cuda:0,cuda:1 (native: split over two)",
                        group="policy"),
    "dtype": ParamSpec("auto", f"weights dtype: {' | '.join(DTYPES)} (auto: bfloat16 on GPU, float32 on CPU)",
                       group="policy"),
    "unnorm_key": ParamSpec("bridge_orig", "dataset statistics key in the checkpoint's norm_stats used to "
                                           "un-normalise actions (bridge_orig = BridgeData v2 / WidowX)"),
    "prompt_mode": ParamSpec("none", f"{' | '.join(PROMPT_MODES)}: official prompt (E0), facts supplement "
                                     "(E2/E5), same-length content-free placeholder (E3)", group="fusion"),
    "supplement_template": ParamSpec(DEFAULT_SUPPLEMENT_TEMPLATE, "full prompt for supplement/placeholder modes with "
                                                                  "{task} and {supplement}", group="fusion"),
    "placeholder_kind": ParamSpec("digits", f"placeholder text: {' | '.join(PLACEHOLDER_KINDS)}", group="fusion"),
    "placeholder_seed": ParamSpec(0, "placeholder seed; each frame uses (seed, frame stamp)", group="fusion"),
    "facts_max_age_s": ParamSpec(1.0, "facts older than this (frame stamp - facts stamp) are stale",
                                 float_range=(0.0, 3600.0)),
    "stale_facts_policy": ParamSpec("hold", "stale or missing facts: hold (no action until fresh facts come or a "
                                            "newer frame replaces it) | none (act with the official prompt)"),
    "control_rate_hz": ParamSpec(5.0, "action rate (BridgeData v2 robot: 5 Hz); at most one action per frame",
                                 float_range=(0.1, 100.0)),
    "dry_run": ParamSpec(True, "flag every action dry_run (no hardware should execute it); false only on a robot"),
    "image_compressed": ParamSpec(True, "subscribe to camera/image_raw/compressed (JPEG/PNG) instead of "
                                        "camera/image_raw; fixed at start", read_only=True),
    "require_frame_facts": ParamSpec(False, "supplement/placeholder: act on frame t only once facts stamped t exist "
                                            "(deterministic replay records)"),
    "fuse_invalid_facts": ParamSpec(False, "also fuse the supplement of facts the contract marked invalid (ablations, "
                                           "untrained models); false: invalid facts count as missing"),
}


def stamp_ns(stamp: TimeMsg) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass(frozen=True)
class FactsChoice:
    """What the prompt uses for one frame: a mode, the supplement (or None) and the facts' age (-1: none)."""

    mode: str | None  # None: do not act on this frame now
    supplement: str | None = None
    age_s: float = -1.0


class VlaNode(ModelNode[PolicySpec, Policy]):
    model_noun = "policy"
    counters = ("frames_received", "frames_dropped", "frames_repeated", "facts_received", "actions_published",
                "actions_clipped", "stale_facts", "idle_ticks", "ticks_without_task_or_policy",
                "ticks_waiting_for_facts", "frames_older_than_task", "placeholder_failures", "inference_errors")

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, PARAMETERS, "actions", load_policy, preflight, check_choices, **kwargs)
        try:  # values no checkpoint can make valid: refused at start, as rclpy refuses a value out of range
            self._fusion = self._fusion_config({})
            self._check_stale_facts_policy({})
        except ValueError as error:
            raise StartupParameterError(str(error)) from None
        self._fuser_cache: tuple[Policy, PromptFuser] | None = None  # the fuser measures with the policy's tokenizer
        self._frame: CameraFrame | None = None  # the newest frame, until acted on or set aside
        self._last_stamp_ns: int | None = None  # the newest frame's stamp (stamps going back = a new pass)
        self._acted_stamp: int | None = None  # stamp of the last frame acted on (never re-used)
        self._task_received = 0.0  # monotonic time the current task came
        self._awaiting_key = ""  # a checkpoint accepted while its statistics lack the unnorm key; loads once one is set
        self._awaiting_warning = ""  # what the status says about it meanwhile
        self._stale_counted_stamp: int | None = None
        self._facts: deque[tuple[float, VisualFacts]] = deque(maxlen=_FACTS_KEPT)  # (monotonic receipt, facts)
        self._ticks = 0
        self._action_rate = RollingRate(window_s=10.0)
        self._unnorm_keys: dict[str, str] = {}  # checkpoint -> the unnorm key its actions are un-normalised with

        self._action_pub = self.create_publisher(WidowXAction, "~/action", RELIABLE_QOS)
        CameraInput(self, self.health, self._param("image_compressed"), self._on_frame)
        self.create_subscription(String, "task", self._on_task, LATCHED_QOS)
        self.create_subscription(VisualFacts, "supplementor/facts", self._on_facts, RELIABLE_QOS)
        self._timer = self.create_timer(1.0 / float(self._param("control_rate_hz")), self._on_tick)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if not self._param("dry_run"):
            self.get_logger().warning("dry_run is false: actions are published for execution on hardware")

        problem = self._check_changes({}, self._unnorm_key_owner({}))  # at start: is the unnorm key the checkpoint's?
        if problem is None and self._param("checkpoint"):
            self._unnorm_keys[self._param("checkpoint")] = self._param("unnorm_key")
        self._load_initial_model(self._policy_spec({}), EXAMPLE_CHECKPOINT, problem)
        self._start_worker("vla-inference")

    # ---- parameters and policies ----------------------------------------------------------------------------
    def _policy_spec(self, overrides: dict[str, Any]) -> PolicySpec:
        return PolicySpec(**{name: self._value(name, overrides) for name, spec in PARAMETERS.items()
                             if spec.group == "policy"})

    def _fusion_config(self, overrides: dict[str, Any]) -> FusionConfig:
        return FusionConfig(mode=self._value("prompt_mode", overrides),
                            template=self._value("supplement_template", overrides),
                            placeholder_kind=self._value("placeholder_kind", overrides),
                            placeholder_seed=int(self._value("placeholder_seed", overrides)))

    def _unnorm_key_owner(self, changes: dict[str, Any]) -> str:
        """The checkpoint whose ``norm_stats`` the ``unnorm_key`` after ``changes`` is for.

        A policy change brings its own checkpoint; a key set alone goes with the policy on its way in (or serving).
        WHY not simply the ``checkpoint`` parameter: after a failed swap it names a checkpoint that is not serving.
        """
        target = self._slot.target
        if target is None or any(PARAMETERS[name].group == "policy" for name in changes):
            return self._policy_spec(changes).checkpoint
        return self._awaiting_key or target.checkpoint

    def _check_changes(self, changes: dict[str, Any], owner: str) -> str | None:
        """The reason to reject ``changes``, or None. Cheap: reads ``owner``'s config.json at most (the checkpoint
        the unnorm key is for, see :meth:`_unnorm_key_owner`)."""
        return self._value_problem(changes) or self._key_problem(changes, owner)

    def _value_problem(self, changes: dict[str, Any]) -> str | None:
        """Why the prompt and stale-facts values after ``changes`` cannot be used (None: they can)."""
        try:
            self._fusion_config(changes)
            self._check_stale_facts_policy(changes)
        except ValueError as error:
            return str(error)
        return None

    def _key_problem(self, changes: dict[str, Any], owner: str) -> str | None:
        """Why the ``unnorm_key`` after ``changes`` cannot un-normalise ``owner``'s actions (None: it can, or no
        owner)."""
        try:
            if owner:
                check_unnorm_key(self._norm_stats(owner), self._value("unnorm_key", changes), owner)
        except ValueError as error:
            return str(error)
        return None

    def _norm_stats(self, checkpoint: str) -> dict[str, Any]:
        """The statistics actions of ``checkpoint`` are un-normalised with: the serving policy's own (read when it
        loaded: files changed since do not reach it), else the checkpoint's files."""
        policy, policy_id = self._slot.current
        return policy.norm_stats if policy is not None and policy_id == checkpoint else norm_stats_of(checkpoint)

    def _check_stale_facts_policy(self, changes: dict[str, Any]) -> None:
        policy = self._value("stale_facts_policy", changes)
        if policy not in STALE_POLICIES:
            raise ValueError(f"stale_facts_policy {policy!r} is not one of {', '.join(STALE_POLICIES)}")

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate every change; start the background load for policy changes (Humble has no post-set callback)."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        policy_set = any(PARAMETERS[n].group == "policy" for n in changes)
        # the unnorm key is checked only when it or the policy changes, so a prompt or dry_run change goes through
        # also while the start-up checkpoint is held back; its owner is read once (a load ending meanwhile must not
        # change whose key it is)
        owner = self._unnorm_key_owner(changes) if policy_set or "unnorm_key" in changes else ""
        value_problem = self._value_problem(changes)
        key_problem = self._key_problem(changes, owner)
        spec = self._policy_spec(changes)
        policy_changed = bool(spec.checkpoint) and policy_set
        spec_problem = self._check_spec(spec) if policy_set and value_problem is None else None
        # a checkpoint whose statistics lack the current key, while a policy serves: accepted, and loaded once a key
        # it has is set. WHY: `ros2 param set` sets one parameter per call, and neither order could otherwise go
        # from one checkpoint to another that shares no key (e.g. to one fine-tuned with finetune.py and back)
        awaiting = (policy_changed and "unnorm_key" not in changes and self._slot.target is not None
                    and value_problem is None and spec_problem is None and key_problem is not None)
        key_arrived = "unnorm_key" in changes and not policy_set and bool(self._awaiting_key)
        # the start-up checkpoint was held back (e.g. its unnorm key was wrong), no policy came since, and the key
        # changes now: this change may be what it waited for
        held_back = ("unnorm_key" in changes and bool(spec.checkpoint) and not policy_changed
                     and self._slot.target is None and bool(self._startup_problem))
        reason = None if awaiting else value_problem or key_problem or spec_problem
        if reason:
            self.get_logger().error(f"rejected parameter change {changes}: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        if awaiting:
            self._awaiting_key = spec.checkpoint
            keys = ", ".join(sorted(self._norm_stats(spec.checkpoint)))  # read once, not at every status
            self._awaiting_warning = (f"checkpoint {spec.checkpoint} waits for an unnorm_key of its own ({keys}; "
                                      f"'{self._value('unnorm_key', changes)}' is not one): set unnorm_key to load "
                                      f"it; {self._slot.current[1] or 'the serving policy'} keeps serving meanwhile")
            self.get_logger().warning(self._awaiting_warning)
        elif policy_changed or key_arrived:  # (key_arrived: the owner below is the checkpoint that waited)
            self._unnorm_keys[owner] = self._value("unnorm_key", changes)  # there the moment the policy serves
            self._awaiting_key = ""
            self._request_model(spec)
        else:
            if owner and "unnorm_key" in changes:
                self._unnorm_keys[owner] = self._value("unnorm_key", changes)
            # the key the start-up checkpoint waited for; or a start-up value mended, no checkpoint yet: say what is
            # left
            if held_back or (policy_set and not spec.checkpoint and self._startup_problem):
                self._load_initial_model(spec, EXAMPLE_CHECKPOINT)
        if any(PARAMETERS[n].group == "fusion" for n in changes):
            fusion = self._fusion_config(changes)
            if fusion != self._fusion:  # what acts changes: a run's log must show from which frame on
                template = "" if fusion.template == self._fusion.template else ", a new supplement_template"
                self.get_logger().info(f"prompt_mode now {fusion.mode} (placeholder {fusion.placeholder_kind}, seed "
                                       f"{fusion.placeholder_seed}{template})")
            self._fusion = fusion
        if "control_rate_hz" in changes:
            self._timer.cancel()
            self.destroy_timer(self._timer)
            self._timer = self.create_timer(1.0 / float(changes["control_rate_hz"]), self._on_tick)
        return SetParametersResult(successful=True)

    # ---- inputs ---------------------------------------------------------------------------------------------
    def _on_frame(self, frame: CameraFrame) -> None:
        with self._cond:
            pending = self._frame if self._frame is not None and self._frame.stamp_ns != self._acted_stamp else None
            if frame.stamp_ns in (self._acted_stamp, pending.stamp_ns if pending else None):
                # the same frame again (a lockstep replay re-sends a frame it heard nothing about): one action a frame
                self.health.count("frames_repeated")
                return
            if pending is not None:
                self.health.count("frames_dropped")  # replaced before it was acted on
            if self._last_stamp_ns is not None and frame.stamp_ns < self._last_stamp_ns:
                self._forget_facts_before(frame)
            self._frame = frame
            self._last_stamp_ns = frame.stamp_ns

    def _forget_facts_before(self, frame: CameraFrame) -> None:
        """Stamps went back: drop the facts heard before ``frame`` (an earlier pass's); called with the lock held."""
        kept = [(received, facts) for received, facts in self._facts if received >= frame.received]
        self.get_logger().info(f"frame stamps went back ({self._last_stamp_ns} -> {frame.stamp_ns} ns): a new pass "
                               f"over the frames; {len(self._facts) - len(kept)} facts heard before it forgotten")
        self._facts = deque(kept, maxlen=_FACTS_KEPT)

    def _on_task(self, msg: String) -> None:
        with self._cond:
            if msg.data != self._task:
                self._task = msg.data
                self._task_received = time.monotonic()
                self.get_logger().info(f"new task: {shown_task(msg.data)!r}")

    def _on_facts(self, msg: VisualFacts) -> None:
        with self._cond:
            self._facts.append((time.monotonic(), msg))
        self.health.count("facts_received")

    def _on_tick(self) -> None:
        with self._cond:
            self._ticks += 1
            self._cond.notify_all()

    # ---- choosing what to act on ----------------------------------------------------------------------------
    def _choose_facts(self, frame: CameraFrame, mode: str) -> FactsChoice:
        """Which facts (if any) the prompt for ``frame`` uses; called with the lock held."""
        if mode == "none":
            return FactsChoice("none")
        fuse_invalid = bool(self._param("fuse_invalid_facts"))
        for_task = [f for _, f in self._facts if f.task == self._task and stamp_ns(f.header.stamp) <= frame.stamp_ns]
        usable = [f for f in for_task if f.valid or fuse_invalid]
        if self._param("require_frame_facts"):
            exact = [f for f in usable if stamp_ns(f.header.stamp) == frame.stamp_ns]
            if exact:
                return FactsChoice(mode, exact[-1].supplement, 0.0)
            if not any(stamp_ns(f.header.stamp) == frame.stamp_ns for f in for_task):
                return FactsChoice(None)  # the facts of this frame are not here yet: wait for them
            usable = []  # they came, invalid: the stale-facts policy decides below (never wait forever)
        newest = max(usable, key=lambda f: stamp_ns(f.header.stamp), default=None)
        if newest is not None:
            age = (frame.stamp_ns - stamp_ns(newest.header.stamp)) / 1e9
            if age <= float(self._param("facts_max_age_s")):
                return FactsChoice(mode, newest.supplement, age)
        if self._stale_counted_stamp != frame.stamp_ns:
            self._stale_counted_stamp = frame.stamp_ns
            self.health.count("stale_facts")
        return FactsChoice("none") if self._param("stale_facts_policy") == "none" else FactsChoice(None)

    def _next_job(self) -> tuple[CameraFrame, str, FactsChoice] | None:
        """Wait for a tick with a frame not yet acted on; None when the node stops."""
        seen = self._ticks
        with self._cond:
            while not self._stopping:
                if self._ticks == seen:
                    self._cond.wait(0.5)
                    continue
                seen = self._ticks
                frame = self._frame
                if frame is None or frame.stamp_ns == self._acted_stamp:
                    self.health.count("idle_ticks")
                    continue
                if not self._task or self._slot.current[0] is None:
                    self.health.count("ticks_without_task_or_policy")
                    continue
                if frame.received < self._task_received - TASK_FRAME_GRACE_S:
                    self.health.count("frames_older_than_task")
                    self._frame = None  # the next frame (or this one sent again) is taken afresh
                    continue
                choice = self._choose_facts(frame, self._fusion.mode)
                if choice.mode is None:
                    self.health.count("ticks_waiting_for_facts")
                    continue
                self._acted_stamp = frame.stamp_ns
                return frame, self._task, choice
        return None

    # ---- inference worker -----------------------------------------------------------------------------------
    def _fuser(self, policy: Policy) -> PromptFuser:
        cached = self._fuser_cache
        if cached is None or cached[0] is not policy or cached[1].config != self._fusion:
            cached = self._fuser_cache = (policy, PromptFuser(self._fusion, policy.tokenizer))
        return cached[1]

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            frame, task, choice = job
            policy, policy_id = self._slot.current
            unnorm_key = self._unnorm_keys[policy_id]
            try:
                prompt = self._fuser(policy).build(task, choice.supplement, frame.stamp_ns, mode=choice.mode)
                raw = policy.predict([frame.rgb], [prompt.text], unnorm_key)[0]
                clipped = clip_to_widowx(raw)
            except PlaceholderError as exc:
                self.health.count("placeholder_failures")
                self.get_logger().error(str(exc), throttle_duration_sec=10.0)
                continue
            except Exception as exc:  # noqa: BLE001 - a failing frame must not kill the node
                self._inference_failed(policy_id, exc)
                continue
            latency = time.monotonic() - frame.received
            if not self._publish_result(self._action_pub,
                                        self._action_msg(frame, clipped, prompt.mode, policy_id, choice, latency)):
                return
            self._answered(frame.stamp_ns)
            self._action_rate.tick()
            self.health.latency.add(latency)
            self.health.count("actions_published")
            self.health.count(f"actions_mode.{prompt.mode}")
            if clipped.clipped:
                self.health.count("actions_clipped")

    def _action_msg(self, frame: CameraFrame, clipped, mode: str, policy_id: str, choice: FactsChoice,
                    latency: float) -> WidowXAction:
        a = clipped.action
        return WidowXAction(
            header=frame.header, delta_xyz=Vector3(x=a[0], y=a[1], z=a[2]),
            delta_rpy=Vector3(x=a[3], y=a[4], z=a[5]), gripper=float(a[6]),
            raw=[float(v) for v in clipped.raw], clipped=clipped.clipped, dry_run=bool(self._param("dry_run")),
            prompt_mode=mode, policy_id=policy_id, facts_age_s=float(choice.age_s if mode != "none" else -1.0),
            latency_s=float(latency))

    # ---- diagnostics --------------------------------------------------------------------------------------------
    def _warning(self) -> str:
        return self._awaiting_warning if self._awaiting_key else ""

    def _diagnostic_fields(self) -> dict[str, str]:
        _, policy_id = self._slot.current
        return {"prompt_mode": self._fusion.mode, "unnorm_key": self._unnorm_keys.get(policy_id, ""),
                "dry_run": str(self._param("dry_run")).lower(), "rate_hz": f"{self._action_rate.hz():.2f}"}


def main(args: list[str] | None = None) -> int:
    return spin_node(VlaNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
