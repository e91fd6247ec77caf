"""The compiled functions of one model build, owned in one place.

A :class:`Trainer` belongs to one model's build, backend and frozen set (the model makes a new
one when any of those change, so nothing stale is ever called). It compiles each function on
first use, under a lock, and keeps only the runners of the latest :class:`FitSetup`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from wframe.training.runner import FitSetup, RunSpec, make_runner
from wframe.training.step import make_eval_step, make_grad_fn
from wframe.training.tracker import NOTHING, Tracker


class Trainer:
    """``predict_fn()``, ``eval_fn(loss, metrics)``, ``grad_fn(loss)`` and ``runner(setup,
    spec)`` of one model, each compiled once by the model's backend; ``memo(key, make)`` keeps
    any other value made for this build (a strategy's compiled functions, a constant key)."""

    def __init__(self, model: Any):
        self.model = model
        self._lock = threading.Lock()
        self._made: dict[Hashable, Any] = {}
        self._setup: FitSetup | None = None
        self._runners: dict[RunSpec, Callable] = {}

    def memo(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()`` the first time ``key`` is asked for on this trainer, the same value after."""
        value = self._made.get(key)
        if value is None:
            with self._lock:
                value = self._made.get(key)
                if value is None:
                    value = self._made[key] = make()
        return value

    def predict_fn(self) -> Callable:
        """``(params, state, x) -> y`` in inference mode."""
        model = self.model

        def predict(params, state, x):
            return model.apply(params, state, x, train=False, vjp=False)[0]

        return self.memo(("predict",), lambda: model.backend.jit(predict))

    def eval_fn(self, loss: Any, tracker: Tracker = NOTHING) -> Callable:
        """``(params, state, x, y) -> {"loss": ..., name: ...}`` in inference mode: the loss
        and ``tracker``'s values (a metric's statistics)."""
        make = lambda: make_eval_step(self.model, loss, tracker)  # noqa: E731
        return self.memo(("eval", loss, tracker), make)

    def grad_fn(self, loss: Any) -> Callable:
        """``(params, state, x, y, key) -> (loss, grads, new_state, pred, penalty)``."""
        model = self.model
        make = lambda: model.backend.jit(make_grad_fn(model, loss, model.frozen))  # noqa: E731
        return self.memo(("grad", loss), make)

    @property
    def setup(self) -> FitSetup | None:
        """The setup of the last ``fit`` (its runners are the ones kept)."""
        return self._setup

    def runners(self) -> dict[RunSpec, Callable]:
        """The compiled runners kept, by spec (for inspection: trace counts, lowering)."""
        return dict(self._runners)

    def memos(self) -> dict[Hashable, Any]:
        """Everything :meth:`memo` and the named functions made, by key (for inspection)."""
        return dict(self._made)

    def runner(self, setup: FitSetup, spec: RunSpec) -> Callable:
        """The compiled runner of ``spec`` for ``setup`` (:func:`make_runner`); a new setup
        drops the runners of the previous one."""
        with self._lock:
            if setup is not self._setup and setup != self._setup:
                self._setup, self._runners = setup, {}
            run = self._runners.get(spec)
            if run is None:
                run = self._runners[spec] = make_runner(self.model, setup, spec)
        return run
