"""What both inference nodes share: parameters from one table, a hot-swappable model, one worker, ``/diagnostics``.

WHY a base: the supplementor and the VLA node differ in what they wait for and what they publish, not in how they
hold a model (a :class:`ModelSlot` named by its checkpoint, checked before any load), report their health (one
status a second with the slot's state) or stop (the worker finishes the inference in progress). Keeping those in one
place keeps the two nodes' behaviour the same where users expect it to be.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.publisher import Publisher
from std_msgs.msg import Header

from task_supplementor.devices import resolve_auto
from task_supplementor.ros.diagnostics import Health, report_model_slot
from task_supplementor.ros.model_slot import ModelSlot
from task_supplementor.ros.params import ParamSpec, declare_parameters, ignored_overrides


TASK_SHOWN_CHARS = 200  # of a task, in a log line or a status field (the message carries the whole text)


def shown_task(task: str) -> str:
    """``task`` as logs and /diagnostics show it: whole up to TASK_SHOWN_CHARS, else its start and its length (a
    runaway task text must not fill every log line and every status, once a second)."""
    return task if len(task) <= TASK_SHOWN_CHARS else f"{task[:TASK_SHOWN_CHARS]}... ({len(task)} characters)"


class CheckpointSpec(Protocol):
    """A load spec names its checkpoint (the model id messages carry and the diagnostics show) and its device (the
    diagnostics' hardware id)."""

    @property
    def checkpoint(self) -> str: ...

    @property
    def device(self) -> str: ...


S = TypeVar("S", bound=CheckpointSpec)  # what to load
T = TypeVar("T")  # the loaded model


class ModelNode(Node, Generic[S, T]):
    """A node with a parameter table, a :class:`ModelSlot` of ``load(spec)`` models and one inference thread.

    Subclasses build their publishers and subscriptions, then call :meth:`_load_initial_model` and
    :meth:`_start_worker`; they implement :meth:`_work` (return when :attr:`_stopping` is set, checked under
    :attr:`_cond`) and may add fields to the diagnostics with :meth:`_diagnostic_fields`.
    """

    model_noun = "model"  # what the slot holds, in messages and the id field (``<noun>_id``) of the status
    counters: tuple[str, ...] = ()  # reported from the first status on, at 0 until counted (dashboards need the keys)

    def __init__(self, name: str, parameters: dict[str, ParamSpec], health_name: str, load: Callable[[S], T],
                 preflight: Callable[[S], None], check_choices: Callable[[S], None], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        declare_parameters(self, parameters)
        for line in ignored_overrides(self):
            self.get_logger().warning(line)
        # status named after the node's full name, so two such nodes in one graph stay apart in /diagnostics
        self.health = Health(f"{self.get_fully_qualified_name()}: {health_name}", hardware_id=self._param("device"),
                             counters=self.counters)
        self._slot: ModelSlot[S, T] = ModelSlot(load, name=lambda spec: spec.checkpoint, preflight=preflight,
                                                on_event=self._on_slot_event)
        self._check_choices = check_choices
        self._cond = threading.Condition()  # guards the inputs the worker waits for, and _stopping
        self._task = ""
        # header stamp of the frame answered last, in the status: a replay whose first frame has that stamp (an
        # earlier run ended on it) is told why the node takes it for a frame sent again and stays silent
        self._answered_stamp_ns: int | None = None
        self._last_inference_error = ""  # set while the newest inference failed: the status is WARN meanwhile
        self.health.set_field("last_inference_error", "")  # present from the first status on, as the counters are
        self._stopping = False
        self._startup_problem = ""
        self._worker: threading.Thread | None = None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _value(self, name: str, overrides: dict[str, Any]) -> Any:
        """A parameter's value as it would be after ``overrides`` (a pending set) are applied."""
        return overrides.get(name, self._param(name))

    # ---- the model ------------------------------------------------------------------------------------------
    def _load_initial_model(self, spec: S, example_checkpoint: str, problem: str | None = None) -> None:
        """Start loading ``spec`` unless it is empty or rejected (``problem``: a reason found by the subclass)."""
        reason = self._check_spec(spec) or problem  # without a checkpoint: the device, dtype, ... still
        if reason:
            self._startup_problem = (f"start-up values rejected: {reason}; publishing nothing until that is mended "
                                     "(`ros2 param set` or any parameter client, or a restart with other values)")
            self.get_logger().error(self._startup_problem)
            return
        if not spec.checkpoint:
            self._startup_problem = ("no checkpoint set: publishing nothing until one is set, e.g. `ros2 param set "
                                     f"{self.get_fully_qualified_name()} checkpoint {example_checkpoint}`")
            self.get_logger().warning(self._startup_problem)
            return
        self._request_model(spec)

    def _check_spec(self, spec: S) -> str | None:
        """Why a parameter change to ``spec`` must be rejected, or None. Without a checkpoint only the choices
        (backend, device, dtype, ...) are checked (``check_choices``), now, so a bad one is refused when it is set
        rather than when a checkpoint is set later; with one, the whole preflight runs."""
        if spec.checkpoint:
            return self._slot.check(spec)
        held = self._slot.target
        if held is not None:  # accepted, it would read as "no model" while the old one kept publishing
            return (f"checkpoint '' would not stop {held.checkpoint} (a node does not unload its {self.model_noun} "
                    "while it runs): set another checkpoint, or stop the node")
        try:
            self._check_choices(spec)
        except ValueError as exc:
            return str(exc)
        return None

    def _request_model(self, spec: S) -> None:
        """Load ``spec`` in the background (already checked); the serving model keeps serving meanwhile."""
        self._startup_problem = ""
        self._slot.request(spec)

    def _on_slot_event(self, level: str, text: str) -> None:
        # two call sites on purpose: rclpy refuses a second severity at one call site (ValueError), which would
        # kill the loader thread on the first failed load and leave every later swap ignored
        if level == "error":
            self.get_logger().error(text)
        else:
            self.get_logger().info(text)
        with self._cond:
            self._cond.notify_all()  # a model that just arrived may unblock the worker

    # ---- the worker -----------------------------------------------------------------------------------------
    def _start_worker(self, thread_name: str) -> None:
        self._worker = threading.Thread(target=self._work, name=thread_name, daemon=True)
        self._worker.start()

    def _work(self) -> None:
        raise NotImplementedError

    def _publish_result(self, publisher: Publisher, msg: Any) -> bool:
        """Publish what an inference (or the status timer) produced; False when ROS shut down meanwhile (then the
        worker should end).

        WHY: Ctrl-C / SIGTERM invalidates the context at once, while the worker may be in the middle of an
        inference; its result then has nowhere to go, and the worker ends quietly instead of dying with an
        RCLError traceback on every stop. A publish error with ROS still up is a real error and is raised.
        """
        try:
            publisher.publish(msg)
        except _rclpy.RCLError:
            if self.context.ok():
                raise
            return False
        return True

    def _answered(self, stamp_ns: int) -> None:
        """An inference succeeded and its answer to the frame stamped ``stamp_ns`` is published."""
        self._answered_stamp_ns = stamp_ns
        self._last_inference_error = ""  # the field keeps the text; the status is OK again

    def _inference_failed(self, model_id: str, exc: Exception) -> None:
        """Count and report a failed inference (log throttled); the worker goes on with the next input. The status
        is WARN until an inference succeeds again: a node that fails on every frame publishes nothing."""
        self.health.count("inference_errors")
        self._last_inference_error = f"inference failed on {model_id}: {exc}"
        self.health.set_field("last_inference_error", self._last_inference_error)
        self.get_logger().error(f"inference failed on {model_id}: {type(exc).__name__}: {exc}",
                                throttle_duration_sec=10.0)

    # ---- diagnostics and shutdown ---------------------------------------------------------------------------
    def _warning(self) -> str:
        """A node-specific reason for WARN while its model serves ("" for none)."""
        return ""

    def _diagnostic_fields(self) -> dict[str, str]:
        """Node-specific text fields of the status (the model id, the task and the slot state are added here)."""
        return {}

    def _publish_diagnostics(self) -> None:
        _, model_id = self._slot.current
        serving = self._slot.serving_spec
        self.health.hardware_id = resolve_auto(serving.device if serving is not None else self._param("device"),
                                               "auto")[0]  # "auto" says nothing about where the model runs
        answered = "none" if self._answered_stamp_ns is None else str(self._answered_stamp_ns)
        fields = {f"{self.model_noun}_id": model_id or "none", "task": shown_task(self._task),
                  "last_answered_stamp_ns": answered, **self._diagnostic_fields()}
        for key, value in fields.items():
            self.health.set_field(key, value)
        if report_model_slot(self.health, self._slot, self._startup_problem, f"no {self.model_noun} loaded") \
                and not self.health.warning:
            self.health.warning = self._warning() or self._last_inference_error
        # a stop (Ctrl-C) can invalidate the context while this timer callback runs: then the status goes nowhere
        self._publish_result(self._diag_pub, self.health.to_array(Header(stamp=self.get_clock().now().to_msg())))

    def close(self) -> bool:
        """Stop the worker (after the inference in progress) and the loader; False while a checkpoint load is still
        running in the background (:meth:`ModelSlot.close`)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
        return self._slot.close()
