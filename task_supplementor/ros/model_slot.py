"""Hot-swappable model holder: load a new model in the background while the old one keeps serving.

Why a slot: loading a checkpoint takes seconds to minutes; a robot must not stop perceiving meanwhile, and a bad
path must never leave it with no model. Why no ROS in here: Humble has no post-set parameter callbacks, so a node
validates a new value in its ``add_on_set_parameters_callback`` (with :meth:`ModelSlot.check`, rejecting the set
with the reason) and starts the load there (:meth:`ModelSlot.request`); the slot does the rest the same on every
distro. Readers call :attr:`current` once per inference and keep that pair for the whole inference, so a swap in
the middle is harmless: the old model is freed when its last in-flight user lets go of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

S = TypeVar("S")  # the spec: what to load (e.g. a config dataclass)
T = TypeVar("T")  # the loaded model


class ModelSlot(Generic[S, T]):
    """Holds the serving ``(model, model_id)``; one background worker loads the most recently requested spec.

    ``load(spec)`` builds a model (may raise: the old model stays, the reason goes to :attr:`last_error`);
    ``name(spec)`` is the model id messages carry; ``preflight(spec)`` is a quick check that raises ``ValueError``
    with a clear reason for a spec that cannot possibly load (missing path, corrupt files).
    """

    def __init__(self, load: Callable[[S], T], name: Callable[[S], str],
                 preflight: Callable[[S], None] | None = None,
                 on_event: Callable[[str, str], None] | None = None):
        self._load, self._name, self._preflight = load, name, preflight
        self._on_event = on_event or (lambda level, text: None)
        self._current: tuple[T | None, str] = (None, "")
        self._current_spec: S | None = None
        self._wanted: S | None = None
        self._loading: S | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.last_error = ""
        self.swaps = 0
        self._worker = threading.Thread(target=self._run, name="model-slot-loader", daemon=True)
        self._worker.start()

    @property
    def current(self) -> tuple[T | None, str]:
        """The serving model and its id, read atomically; ``(None, "")`` until the first load succeeds."""
        return self._current

    @property
    def busy(self) -> bool:
        """True while a load is pending or running."""
        with self._cond:
            return self._wanted is not None or self._loading is not None

    @property
    def loading(self) -> S | None:
        """The spec being loaded right now, if any."""
        return self._loading

    @property
    def serving_spec(self) -> S | None:
        """The spec of the serving model; None until the first load succeeds."""
        with self._cond:
            return self._current_spec

    @property
    def target(self) -> S | None:
        """The spec the slot is heading for: the newest one requested (waiting or loading), else the serving one.

        WHY: a parameter set asks "does this change anything?"; comparing against the parameter's previous value gets
        it wrong after a failed load (the parameter then names the failed spec, so retrying it would be ignored).
        """
        with self._cond:
            return next((s for s in (self._wanted, self._loading, self._current_spec) if s is not None), None)

    def check(self, spec: S) -> str | None:
        """The reason ``spec`` is rejected, or None when it is worth loading."""
        if self._preflight is None:
            return None
        try:
            self._preflight(spec)
        except ValueError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - a check that trips over odd files must reject, not crash the node
            return f"checking {self._name(spec)} failed ({type(exc).__name__}: {exc})"
        return None

    def request(self, spec: S) -> None:
        """Load ``spec`` in the background. A newer request replaces one still waiting (not one already loading).

        Asking for the spec already on its way does nothing; asking for the serving spec with nothing on its way
        only forgets the failure of an earlier swap (the user went back, so it is no longer wanted). A spec whose load
        failed is loaded again when asked for again (the files may have been fixed meanwhile).
        """
        with self._cond:
            on_its_way = self._wanted if self._wanted is not None else self._loading
            if on_its_way is not None and spec == on_its_way:
                return
            if on_its_way is None and spec == self._current_spec:
                self.last_error = ""
                return
            self._wanted = spec
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no load is pending or running; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._wanted is not None or self._loading is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> bool:
        """Stop the worker after the load in progress (if any); the serving model stays readable.

        Returns False while a load is still running: a checkpoint load cannot be interrupted, and it is not waited
        for (it may take minutes); see :func:`task_supplementor.ros.spin.spin_node` for how the process then exits.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=0.1)
        return not self._worker.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._wanted is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                spec, self._wanted, self._loading = self._wanted, None, self._wanted
                if spec == self._current_spec:  # asked back to the serving spec while another was loading
                    self._loading, self.last_error = None, ""
                    self._cond.notify_all()
                    continue
            name = self._name(spec)
            self._on_event("info", f"loading model {name} in the background")
            start = time.monotonic()
            try:
                model = self._load(spec)
            except Exception as exc:  # noqa: BLE001 - any load failure must keep the old model serving
                serving = self._current[1] or "none"
                self.last_error = f"loading {name} failed ({type(exc).__name__}: {exc}); still serving {serving}"
                self._on_event("error", self.last_error)
            else:
                with self._cond:
                    self._current, self._current_spec = (model, name), spec
                self.swaps += 1
                self.last_error = ""
                self._on_event("info", f"now serving {name} (loaded in {time.monotonic() - start:.1f} s)")
            finally:
                with self._cond:
                    self._loading = None
                    self._cond.notify_all()
