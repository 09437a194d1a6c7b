"""The ``supplementor`` ROS 2 node: latest camera frame + task -> ``VisualFacts`` on ``~/facts``.

Threading, and why: the executor threads only receive (decode the frame, store it as the single latest one, note the
task) and serve parameters/diagnostics; one dedicated worker thread runs the model. So a slow model never blocks a
callback, frames that arrive while the model is busy replace each other (dropped and counted, never queued), and a
new task wakes the worker at once to re-describe the latest frame. Models live in a :class:`ModelSlot`: a new
``checkpoint`` (or any other load-relevant parameter) is checked in the set-parameters callback (so a missing or
corrupt checkpoint is rejected with its reason, on Humble too) and loaded in the background while the old model
keeps serving; each message carries the id of the model that produced it.
"""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from std_msgs.msg import String
from task_supplementor_msgs.msg import VisualFacts

from supplementor_node.backends.base import BACKENDS, BackendConfig, check_backend_device
from supplementor_node.checkpoint_check import check_checkpoint_dir
from supplementor_node.describer import Describer, DescriberConfig, output_schema
from supplementor_node.prompt_spec import load_prompt_spec
from task_supplementor.ros.convert import facts_outcome_to_msg
from task_supplementor.devices import DTYPES, check_load_choices
from task_supplementor.ros.camera import CameraFrame, CameraInput
from task_supplementor.ros.model_node import ModelNode, shown_task
from task_supplementor.ros.params import ParamSpec
from task_supplementor.ros.qos import LATCHED_QOS, RELIABLE_QOS
from task_supplementor.ros.spin import spin_node

NODE_NAME = "supplementor"
EXAMPLE_CHECKPOINT = "/path/to/Qwen2.5-VL-3B-Instruct"  # in the hint of a node started without one
_BACKEND_FIELDS = frozenset(f.name for f in fields(BackendConfig))


# Every parameter, its default (config/supplementor.yaml repeats these) and its descriptor.
PARAMETERS: dict[str, ParamSpec] = {
    "checkpoint": ParamSpec("", "Qwen2.5-VL checkpoint directory (official layout). Empty: no model, nothing is "
                                "published until it is set. Setting it at runtime swaps the model live.",
                            group="model"),
    "backend": ParamSpec("transformers", f"inference backend: {' | '.join(BACKENDS)}", group="model"),
    "device": ParamSpec("auto", "torch device: auto | cpu | cuda | cuda:N (auto: cuda when available)",
                        group="model"),
    "dtype": ParamSpec("auto", f"weights dtype: {' | '.join(DTYPES)} (auto: bfloat16 on GPU, float32 on CPU)",
                       group="model"),
    "max_new_tokens": ParamSpec(1024, "upper bound on generated tokens per frame; with constrained decoding the "
                                      "facts schema is bounded so every output completes within it",
                                int_range=(16, 4096), group="model"),
    "rate_hz": ParamSpec(2.0, "maximum describe rate; frames in between are dropped (a new task re-describes at once)",
                         float_range=(0.1, 30.0)),
    "image_max_pixels": ParamSpec(256 * 28 * 28, "frames are resized to at most this many pixels before the model",
                                  int_range=(3136, 12845056), group="model"),
    "prompt_version": ParamSpec("v1", "E1 prompt specification version (task_supplementor/facts/prompts)",
                                group="model"),
    "constrained_decoding": ParamSpec(True, "constrain generation to the facts JSON Schema (xgrammar)",
                                      group="model"),
    "image_compressed": ParamSpec(True, "subscribe to camera/image_raw/compressed (JPEG/PNG) instead of "
                                        "camera/image_raw; fixed at start", read_only=True),
}


def check_choices(cfg: DescriberConfig) -> None:
    """Reject (ValueError with the reason) settings no checkpoint could load with: backend, device, dtype, prompt
    version, and a ``max_new_tokens`` too small for the constrained schema."""
    check_load_choices(cfg.model.backend, BACKENDS, cfg.model.device, cfg.model.dtype)
    check_backend_device(cfg.model.backend, cfg.model.device)
    load_prompt_spec(cfg.prompt_version)
    output_schema(cfg)


def preflight(cfg: DescriberConfig) -> None:
    """Reject (ValueError with the reason) a configuration that cannot load, before any load starts."""
    check_choices(cfg)
    check_checkpoint_dir(cfg.checkpoint)


class SupplementorNode(ModelNode[DescriberConfig, Describer]):
    counters = ("frames_received", "frames_dropped", "frames_repeated", "facts_published", "invalid_outputs",
                "inference_errors")

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, PARAMETERS, "visual facts", Describer, preflight, check_choices, **kwargs)
        self._frame: CameraFrame | None = None
        self._frame_fresh = False     # the latest frame has not been described yet
        self._described_stamp: int | None = None  # of the frame described last (or now); None after a failure
        self._task_fresh = False      # the task changed since the last description
        self._min_period_s = 1.0 / float(self._param("rate_hz"))  # kept here: the set callback runs before the set

        self._facts_pub = self.create_publisher(VisualFacts, "~/facts", RELIABLE_QOS)
        CameraInput(self, self.health, self._param("image_compressed"), self._on_frame)
        self.create_subscription(String, "task", self._on_task, LATCHED_QOS)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._load_initial_model(self._describer_config({}), EXAMPLE_CHECKPOINT)
        self._start_worker("supplementor-inference")

    # ---- parameters and models ------------------------------------------------------------------------------
    def _describer_config(self, overrides: dict[str, Any]) -> DescriberConfig:
        values = {name: self._value(name, overrides) for name, spec in PARAMETERS.items() if spec.group == "model"}
        model = BackendConfig(**{name: value for name, value in values.items() if name in _BACKEND_FIELDS})
        return DescriberConfig(model, **{name: value for name, value in values.items() if name not in _BACKEND_FIELDS})

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate and, for load-relevant changes, start the background load (Humble has no post-set callback).

        Nothing takes effect before the whole set is accepted: a rejected atomic set leaves the node as it was."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        model_changed = any(PARAMETERS[name].group == "model" for name in changes)
        cfg = self._describer_config(changes)
        reason = self._check_spec(cfg) if model_changed else None
        if reason:
            serving = self._slot.current[1]
            self.get_logger().error(f"rejected parameter change {changes}: {reason}"
                                    + (f"; {serving} keeps serving" if serving else ""))
            return SetParametersResult(successful=False, reason=reason)
        if "rate_hz" in changes:
            with self._cond:
                self._min_period_s = 1.0 / float(changes["rate_hz"])
                self._cond.notify_all()  # a worker waiting out the old period recomputes it now
        if model_changed and cfg.checkpoint:
            self._request_model(cfg)
        elif model_changed and self._startup_problem:  # a start-up value mended, no checkpoint yet: say what is left
            self._load_initial_model(cfg, EXAMPLE_CHECKPOINT)
        return SetParametersResult(successful=True)

    # ---- inputs ---------------------------------------------------------------------------------------------
    def _on_frame(self, frame: CameraFrame) -> None:
        with self._cond:
            waiting = self._frame if self._frame_fresh else None
            if frame.stamp_ns in (self._described_stamp, waiting.stamp_ns if waiting else None):
                # the same frame again (e.g. a lockstep replay re-sends a frame it heard nothing about): its facts
                # are on their way or out; one description per frame and task, as the VLA acts once per frame
                self.health.count("frames_repeated")
                return
            if self._frame_fresh:
                self.health.count("frames_dropped")
            self._frame, self._frame_fresh = frame, True
            self._cond.notify_all()

    def _on_task(self, msg: String) -> None:
        with self._cond:
            if msg.data != self._task:
                self._task, self._task_fresh = msg.data, True
                self.get_logger().info(f"new task: {shown_task(msg.data)!r}")
                self._cond.notify_all()

    # ---- inference worker -----------------------------------------------------------------------------------
    def _next_job(self, last_start: float) -> tuple[CameraFrame, str] | None:
        """Wait for a frame worth describing (a new frame at most every ``rate_hz`` period after ``last_start``, a
        new task at once); None when the node stops."""
        with self._cond:
            while not self._stopping:
                ready = self._frame is not None and self._task and self._slot.current[0] is not None
                wait = None
                if ready and self._task_fresh:
                    wait = 0.0
                elif ready and self._frame_fresh:
                    wait = max(0.0, last_start + self._min_period_s - time.monotonic())
                if wait == 0.0:
                    self._frame_fresh = self._task_fresh = False
                    self._described_stamp = self._frame.stamp_ns
                    return self._frame, self._task
                self._cond.wait(wait if wait is not None else 0.5)
        return None

    def _work(self) -> None:
        last_start = float("-inf")
        while (job := self._next_job(last_start)) is not None:
            frame, task = job
            last_start = time.monotonic()
            describer, model_id = self._slot.current
            try:
                description = describer.describe([(frame.rgb, task)])[0]
            except Exception as exc:  # noqa: BLE001 - a failing frame must not kill the node
                with self._cond:
                    if self._described_stamp == frame.stamp_ns:
                        self._described_stamp = None  # not described: the frame sent again is tried again
                self._inference_failed(model_id, exc)
                continue
            latency = time.monotonic() - frame.received
            msg = facts_outcome_to_msg(description.outcome, header=frame.header, task=task, model_id=model_id,
                                       latency_s=latency)
            if not self._publish_result(self._facts_pub, msg):
                return
            self._answered(frame.stamp_ns)
            self.health.latency.add(latency)
            self.health.count("facts_published")
            if not description.outcome.valid:
                self.health.count("invalid_outputs")


def main(args: list[str] | None = None) -> int:
    return spin_node(SupplementorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
