"""Copies of a model: ``copy.copy`` (shares the arrays), :meth:`Copying.copy` (copies them on
the backend), ``copy.deepcopy`` and ``pickle``.

:class:`Copying` is a base of :class:`~wframe.model.arrays.Holder`. What a copy or a pickle
never takes: the lock, the compiled functions (a copy compiles its own on first use) and the
record of a running ``fit``.

**Deep copies** (``copy.deepcopy(model)``) copy every array on the model's backend and every
other attribute (layers, loss, metrics, counters, seed, frozen set, masks, history); the
optimizer and the backend are shared (an optimizer is a stateless ``(init, update)`` pair: its
state is copied). Training the copy never changes the original, and trains exactly as the
original would (bit-for-bit on NumPy).

**Pickles** (``pickle``, ``joblib``, ``multiprocessing``) hold the layers (immutable
descriptions: the model's config), every other attribute, the backend by name and every array
as a NumPy array: the model unpickles on the backend it was on (a JAX model on JAX; a
``BackendUnavailableError`` where that backend cannot run: unpickle it where it can, or
``to_backend`` before pickling). An optimizer given by name is stored by name and made again;
an optimizer object that does not pickle (wframe's and optax's are closures) is left out with
its state, with a ``UserWarning``: ``compile(optimizer=...)`` the unpickled model again, or
compile with the optimizer's name (``optimizer="adam"``) to keep it.

A model being trained (``fit`` running in another thread, or a callback that copies the model,
as a "keep the best model" callback does) is copied as it was last published: the arrays and
counters of one complete step, which in ``on_epoch_end`` are those of the epoch just ended.
The copy is not training.
"""

from __future__ import annotations

import copy as copy_mod
import pickle
import threading
import warnings
from typing import Any

import numpy as np

from wframe import assigned
from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe.backends import resolve, to_numpy
from wframe.tree import tree_map

#: What a copy or a pickle never takes (made again empty).
TRANSIENT = ("_lock", "_trainer", "_running")


class Copying:
    """``copy.copy``, :meth:`copy`, ``copy.deepcopy``, ``pickle`` and :meth:`named` of a model
    (a base class of :class:`~wframe.model.arrays.Holder`, whose attributes it copies)."""

    def _fresh(self, state: dict[str, Any]) -> None:
        vars(self).update(state, _lock=threading.RLock(), _trainer=None, _running=None)

    def __copy__(self) -> Any:
        # A copy shares the arrays (immutable snapshots), never the compiled state or a lock.
        clone = object.__new__(type(self))
        clone._fresh(vars(self))
        return clone

    def named(self, name):
        if name == self.name:
            return self
        clone = copy_mod.copy(self)
        object.__setattr__(clone, "name", name)
        return clone

    def arrayless(self) -> Any:
        """A copy of the model's description, shapes, policy, backend and frozen set holding no
        arrays and no history: what compiled functions shared by every model of this
        architecture close over (:func:`wframe.training.trainer_for`)."""
        clone = copy_mod.copy(self)
        now = vars(self)["_now"]
        if now is not None:  # built: names, shapes and dtypes stay, the values go
            now = now._replace(arrays=tree_map(_absent, now.arrays))
        vars(clone).update(_now=now, history=None)
        return clone

    def copy(self) -> Any:
        """A model of the same layers with its own copy of every array, the same counters and
        compiled functions of its own."""
        clone = copy_mod.copy(self)
        if self.built:
            arrays = self._backend.copy(self.train_state)
            clone.commit(arrays, steps=self.steps, epochs=self.epochs)
        return clone

    def __deepcopy__(self, memo: dict) -> Any:
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for shared in (self.optimizer, self._backend):  # stateless, or one per process
            memo[id(shared)] = shared
        clone._fresh(copy_mod.deepcopy(_lasting(self), memo))
        return clone

    def __getstate__(self) -> dict[str, Any]:
        state = _lasting(self)
        now, backend = state["_now"], state["_backend"]
        state["_backend"] = None if backend is None else backend.name
        optimizer, keep = _portable_optimizer(self.optimizer, self._optimizer_name, self.label)
        state["optimizer"] = optimizer
        state["compiled_metrics"] = _portable_metrics(state.get("compiled_metrics"), self.label)
        if not _pickles(state.get("loss"), "loss", self.label):
            state["loss"] = None  # the default loss, made again on unpickling
        if now is not None:
            arrays = now.arrays if keep else now.arrays._replace(opt_state=None)
            state["_now"] = now._replace(arrays=tree_map(_host, arrays))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._fresh(state)
        if self._backend is not None:
            self._backend = resolve(self._backend)
        if self._now is not None:
            arrays = tree_map(assigned.mover(self._backend), self._now.arrays)
            self._now = self._now._replace(arrays=arrays)
        if self.loss is None:
            self.loss = losses_mod.get("softmax_cross_entropy")
        if self.optimizer is None and self._optimizer_name is not None:
            self.optimizer = optimizers_mod.get(self._optimizer_name)


def _lasting(model: Any) -> dict[str, Any]:
    """``model``'s attributes but the transient ones, read at once (a ``fit`` in another thread
    replaces the snapshot in one assignment: this holds one step)."""
    return {k: v for k, v in dict(vars(model)).items() if k not in TRANSIENT}


class Absent:
    """Where an array-less copy had an array: its shape and dtype only (a leaf, as an array
    is, for the tree helpers)."""

    __slots__ = ("dtype", "shape")

    def __init__(self, shape: tuple, dtype: Any):
        self.shape, self.dtype = shape, dtype


def _absent(a: Any) -> Absent:
    return Absent(tuple(a.shape), a.dtype)


def _host(a: Any) -> Any:
    """An array as a NumPy array (NumPy scalars and Python numbers as they are)."""
    return to_numpy(a) if hasattr(a, "shape") and not isinstance(a, np.generic) else a


def _portable_optimizer(optimizer: Any, name: str | None, label: str) -> tuple[Any, bool]:
    """``(what a pickle stores for the optimizer, whether its state is stored)``: ``None``
    for none or one given by name (made again from it), the object itself if it pickles;
    otherwise ``None`` without its state, with a warning."""
    if optimizer is None or name is not None:
        return None, True
    try:
        pickle.dumps(optimizer)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        warnings.warn(
            f"pickle: the optimizer of {label} is a {type(optimizer).__name__} object that does "
            f"not pickle ({e}); the unpickled model has no optimizer and no optimizer state. "
            "Call model.compile(optimizer=...) on it again, or compile with the optimizer's "
            "name (optimizer='adam') to keep both",
            UserWarning,
            stacklevel=3,
        )
        return None, False
    return optimizer, True


def _portable_metrics(metrics: Any, label: str) -> Any:
    """``compile(metrics=...)`` as a pickle stores it: as given where it pickles; else
    ``None`` (the loss's default metrics), with a warning naming what did not pickle."""
    return metrics if _pickles(metrics, "metrics", label) else None


def _pickles(value: Any, what: str, label: str) -> bool:
    """Whether ``value`` pickles; if not, a warning that the unpickled model goes without it
    (the default loss; the loss's default metrics)."""
    try:
        pickle.dumps(value)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        instead = "the default loss" if what == "loss" else "the loss's default metrics"
        warnings.warn(
            f"pickle: the {what} of {label} {'do' if what == 'metrics' else 'does'} not pickle "
            f"({e}); the unpickled model has "
            f"{instead}. Give it by name, as a wframe object or as a function defined at a "
            "module's top level (not a lambda) to keep it",
            UserWarning,
            stacklevel=4,
        )
        return False
    return True
