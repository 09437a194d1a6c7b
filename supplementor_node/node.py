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

import re
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Header, String
from task_supplementor_msgs.msg import VisualFacts

from supplementor_node.backends.base import BACKENDS, DTYPES
from supplementor_node.checkpoint_check import check_checkpoint_dir
from supplementor_node.describer import Describer, DescriberConfig
from supplementor_node.prompt_spec import load_prompt_spec
from task_supplementor.ros.convert import facts_outcome_to_msg
from task_supplementor.ros.diagnostics import Health, report_model_slot
from task_supplementor.ros.params import ParamSpec, declare_parameters
from task_supplementor.ros.spin import spin_node
from task_supplementor.ros.camera import CameraFrame, CameraInput
from task_supplementor.ros.model_slot import ModelSlot
from task_supplementor.ros.qos import LATCHED_QOS, RELIABLE_QOS

NODE_NAME = "supplementor"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


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


def preflight(cfg: DescriberConfig) -> None:
    """Reject (ValueError with the reason) a configuration that cannot load, before any load starts."""
    if cfg.backend not in BACKENDS:
        raise ValueError(f"backend {cfg.backend!r} not in {BACKENDS}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype {cfg.dtype!r} not in {DTYPES}")
    if not _DEVICE.match(cfg.device):
        raise ValueError(f"device {cfg.device!r} is not auto, cpu, cuda or cuda:N")
    load_prompt_spec(cfg.prompt_version)
    check_checkpoint_dir(cfg.checkpoint)


class SupplementorNode(Node):
    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self, PARAMETERS)
        # status named after the node's full name, so two supplementors in one graph stay apart in /diagnostics
        self.health = Health(f"{self.get_fully_qualified_name()}: visual facts", hardware_id=self._param("device"))
        self._slot: ModelSlot[DescriberConfig, Describer] = ModelSlot(
            Describer, name=lambda cfg: cfg.checkpoint, preflight=preflight, on_event=self._on_slot_event)
        self._cond = threading.Condition()
        self._frame: CameraFrame | None = None
        self._frame_fresh = False     # the latest frame has not been described yet
        self._task = ""
        self._task_fresh = False      # the task changed since the last description
        self._stopping = False
        self._startup_problem = ""

        self._facts_pub = self.create_publisher(VisualFacts, "~/facts", RELIABLE_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        CameraInput(self, self.health, self._param("image_compressed"), self._on_frame)
        self.create_subscription(String, "task", self._on_task, LATCHED_QOS)
        self.create_timer(1.0, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._request_initial_model()
        self._worker = threading.Thread(target=self._work, name="supplementor-inference", daemon=True)
        self._worker.start()

    # ---- parameters and models ------------------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _describer_config(self, overrides: dict[str, Any]) -> DescriberConfig:
        value = {name: overrides.get(name, self._param(name)) for name in PARAMETERS if PARAMETERS[name].group == "model"}
        return DescriberConfig(**value)

    def _request_initial_model(self) -> None:
        cfg = self._describer_config({})
        if not cfg.checkpoint:
            self._startup_problem = ("no checkpoint set: publishing nothing until one is set, e.g. "
                                     "`ros2 param set /supplementor checkpoint /path/to/Qwen2.5-VL-3B-Instruct`")
            self.get_logger().warning(self._startup_problem)
            return
        reason = self._slot.check(cfg)
        if reason:
            self._startup_problem = f"checkpoint rejected: {reason}; publishing nothing until a valid one is set"
            self.get_logger().error(self._startup_problem)
            return
        self._slot.request(cfg)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate and, for load-relevant changes, start the background load (Humble has no post-set callback)."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        if not any(PARAMETERS[name].group == "model" for name in changes):
            return SetParametersResult(successful=True)
        cfg = self._describer_config(changes)
        if cfg == self._describer_config({}) and (self._slot.current[0] is not None or self._slot.busy):
            return SetParametersResult(successful=True)   # nothing to reload
        reason = self._slot.check(cfg)
        if reason:
            self.get_logger().error(f"rejected parameter change {changes}: {reason}; the current model keeps serving")
            return SetParametersResult(successful=False, reason=reason)
        self._startup_problem = ""
        self._slot.request(cfg)
        return SetParametersResult(successful=True)

    def _on_slot_event(self, level: str, text: str) -> None:
        (self.get_logger().error if level == "error" else self.get_logger().info)(text)
        with self._cond:
            self._cond.notify_all()   # a model that just arrived may unblock the worker

    # ---- inputs ---------------------------------------------------------------------------------------------
    def _on_frame(self, frame: CameraFrame) -> None:
        with self._cond:
            if self._frame_fresh:
                self.health.count("frames_dropped")
            self._frame, self._frame_fresh = frame, True
            self._cond.notify_all()

    def _on_task(self, msg: String) -> None:
        with self._cond:
            if msg.data != self._task:
                self._task, self._task_fresh = msg.data, True
                self.get_logger().info(f"new task: {msg.data!r}")
                self._cond.notify_all()

    # ---- inference worker -----------------------------------------------------------------------------------
    def _next_job(self, not_before: float) -> tuple[CameraFrame, str] | None:
        """Wait for a frame worth describing; None when the node stops."""
        with self._cond:
            while not self._stopping:
                ready = self._frame is not None and self._task and self._slot.current[0] is not None
                wait = None
                if ready and self._task_fresh:
                    wait = 0.0
                elif ready and self._frame_fresh:
                    wait = max(0.0, not_before - time.monotonic())
                if wait == 0.0:
                    self._frame_fresh = self._task_fresh = False
                    return self._frame, self._task
                self._cond.wait(wait if wait is not None else 0.5)
        return None

    def _work(self) -> None:
        not_before = 0.0
        while (job := self._next_job(not_before)) is not None:
            frame, task = job
            not_before = time.monotonic() + 1.0 / float(self._param("rate_hz"))
            describer, model_id = self._slot.current
            try:
                description = describer.describe([(frame.rgb, task)])[0]
            except Exception as exc:  # noqa: BLE001 - a failing frame must not kill the node
                self.health.count("inference_errors")
                self.health.set_field("last_error", f"inference failed on {model_id}: {exc}")
                self.get_logger().error(f"inference failed on {model_id}: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=10.0)
                continue
            latency = time.monotonic() - frame.received
            self._facts_pub.publish(facts_outcome_to_msg(description.outcome, header=frame.header, task=task,
                                                         model_id=model_id, latency_s=latency))
            self.health.latency.add(latency)
            self.health.count("facts_published")
            if not description.outcome.valid:
                self.health.count("invalid_outputs")

    # ---- diagnostics and shutdown ---------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        _, model_id = self._slot.current
        self.health.set_field("model_id", model_id or "none")
        self.health.set_field("task", self._task)
        report_model_slot(self.health, self._slot, self._startup_problem, "no model loaded")
        self._diag_pub.publish(self.health.to_array(Header(stamp=self.get_clock().now().to_msg())))

    def close(self) -> None:
        """Stop the worker (after the inference in progress) and the loader."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._worker.join(timeout=30.0)
        self._slot.close()


def main(args: list[str] | None = None) -> int:
    return spin_node(SupplementorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
