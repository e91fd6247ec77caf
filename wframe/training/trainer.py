"""The compiled functions of one model build, owned in one place, and shared by every model
of the same architecture on a compiling backend.

A :class:`Trainer` belongs to one architecture, backend and frozen set (a model asks for
another when any of those change, so nothing stale is ever called). It compiles each function
on first use, under a lock, and keeps only the runners of the latest :class:`FitSetup`.

**Compile once per architecture.** On a backend that compiles (JAX), :func:`trainer_for` gives
models whose structure is equal (their layer descriptions compare equal field by field, with
the same dtype policy, input shapes, frozen set and device) one :class:`Trainer`: a second model
of an architecture compiled before in the process traces and compiles nothing. The trainer
compiles against an array-less copy of the first model (``model.arrayless()``), so the cache
keeps no model's weights alive; it holds the :data:`SHARED` most recent architectures.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from wframe.training.host_plan import planned_forward
from wframe.training.runner import FitSetup, RunSpec, make_runner
from wframe.training.step import make_eval_step, make_grad_fn
from wframe.training.tracker import NOTHING, Tracker

#: How many setups' runners a trainer keeps (least recently used first out).
SETUPS = 4


class Trainer:
    """``predict_fn()``, ``eval_fn(loss, metrics)``, ``grad_fn(loss)`` and ``runner(setup,
    spec)`` of one model, each compiled once by the model's backend; ``memo(key, make)`` keeps
    any other value made for this build (a strategy's compiled functions, a constant key).

    Args:
      model: the model whose layers, loss and backend the functions use; they take the arrays
        as arguments, so a shared trainer holds an array-free copy (``model.arrayless()``).
    """

    def __init__(self, model: Any):
        self.model = model
        self._lock = threading.Lock()
        self._made: dict[Hashable, Any] = {}
        self._setup: FitSetup | None = None
        self._runners: dict[RunSpec, Callable] = {}
        # The runners of the latest setups, newest last (models sharing this trainer may
        # train with different optimizers in turn).
        self._kept: list[tuple[FitSetup, dict[RunSpec, Callable]]] = []

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
        """``(params, state, x) -> y`` in inference mode (on the host, from the model's
        inference plan where it has one: :func:`~wframe.training.host_plan.planned_forward`)."""
        model = self.model

        def predict(params, state, x):
            return model.apply(params, state, x, train=False, vjp=False)[0]

        def make():
            return planned_forward(model, model.backend) or model.backend.jit(predict)

        return self.memo(("predict",), make)

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
        """The compiled runner of ``spec`` for ``setup`` (:func:`make_runner`); the runners of
        the :data:`SETUPS` latest setups are kept."""
        with self._lock:
            if setup is not self._setup and setup != self._setup:
                found = [i for i, (s, _) in enumerate(self._kept) if s is setup or s == setup]
                runners = self._kept.pop(found[0])[1] if found else {}
                self._kept = [*self._kept, (setup, runners)][-SETUPS:]
                self._setup, self._runners = setup, runners
            run = self._runners.get(spec)
            if run is None:
                run = self._runners[spec] = make_runner(self.model, setup, spec)
        return run


#: How many architectures' trainers a process keeps (least recently used first out).
SHARED = 16
_shared: OrderedDict[Hashable, Trainer] = OrderedDict()
_shared_lock = threading.Lock()


def structure_key(model: Any) -> Hashable | None:
    """What determines the programs a model compiles, or ``None`` where that cannot be told
    (a field that is not hashable): its class and layer fields (all but its own name), dtype
    policy (with its loss scaling), input shapes, frozen set, backend and device. Layers
    compare by value (functions, and models nested with weights, by identity)."""
    fields = tuple(
        (f.name, getattr(model, f.name)) for f in dataclasses.fields(model) if f.name != "name"
    )
    backend = model.backend
    key = (type(model), fields, model.policy, model.input_shape, model.frozen)
    key = (*key, backend.name, backend.device)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def trainer_for(model: Any) -> Trainer:
    """The :class:`Trainer` of ``model``'s build: shared by architecture where the backend
    compiles (``backend.traced``), the model's own elsewhere (NumPy and CuPy compile nothing,
    and their runners keep batch buffers that two models training at once must not share).

    Args:
      model: a built model; its architecture (``structure_key``) keys the shared trainers.
    """
    key = structure_key(model) if model.backend.traced else None
    if key is None:
        return Trainer(model)
    with _shared_lock:
        trainer = _shared.get(key)
        if trainer is None:
            trainer = _shared[key] = Trainer(model.arrayless())
            while len(_shared) > SHARED:
                _shared.popitem(last=False)
        _shared.move_to_end(key)
    return trainer


def forget_shared() -> None:
    """Drop every shared trainer (their compiled functions go when no model uses them)."""
    with _shared_lock:
        _shared.clear()
