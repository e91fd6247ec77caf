"""Reading and changing an optimizer's hyper-parameters from the outside (callbacks, the user).

:func:`get_hyperparam` and :func:`set_hyperparam` read and replace an injected value in any
optimizer state that holds an injected state (wframe's or optax's, found by its field names);
:func:`learning_rate`, :func:`update_count` and :func:`is_scheduled` answer from the optimizer's
declaration (:func:`~wframe.optimizers.spec_of`) and its state.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable
from typing import Any

from wframe.backends import array_namespace
from wframe.optimizers.base import OptState
from wframe.optimizers.inject import is_injected_state, wrap_state
from wframe.optimizers.spec import InjectedSpec, OptimizerSpec, spec_of
from wframe.types import Array, Params

# (dtype kind, itemsize) -> the struct format that rounds a Python float to that dtype.
_STRUCT = {("f", 4): "f", ("f", 2): "e"}


def get_hyperparam(opt_state: OptState, name: str) -> float:
    """The value of the injected hyper-parameter ``name`` in ``opt_state``, as a host float
    (:func:`host_float`: a float32 value as the shortest decimal that rounds to it).

    For a scheduled one, the value the last update used (the first one's before any update).

    Args:
      opt_state: an optimizer state holding an injected state (e.g. ``model.opt_state`` of an
        optimizer given by name, or made by :func:`inject_hyperparams`).
      name: the hyper-parameter, e.g. ``"learning_rate"``.

    Raises:
      ValueError: if ``opt_state`` holds no injected state, or none with ``name``; the message
        says how to make an optimizer that has one.
    """
    return host_float(_find(opt_state, name).hyperparams[name])


def host_float(value: Any) -> float:
    """``value`` (a number, or a 0-d array of any backend) as a Python float; a float32 or
    float16 one as the shortest decimal that rounds to the same number in its dtype.

    A learning rate set to 0.001 is stored as the float32 nearest it, 0.0010000000474974513:
    read back here it is ``0.001`` again, which converts to that same float32, so nothing is
    lost; float64 values and other types come back as ``float(value)``.

    Args:
      value: a Python or NumPy number, or a 0-d array of any backend (synced to the host).
    """
    out = float(value)
    dtype = getattr(value, "dtype", None)
    fmt = _STRUCT.get((getattr(dtype, "kind", None), getattr(dtype, "itemsize", None)))
    if fmt is None or not math.isfinite(out):
        return out
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        short = float(f"{out:.{digits}g}")
        try:
            if struct.unpack(fmt, struct.pack(fmt, short))[0] == out:
                return short
        except OverflowError:  # a 1-digit rounding past the dtype's largest value
            continue
    return out


def set_hyperparam(opt_state: OptState, name: str, value: float) -> OptState:
    """A new optimizer state whose injected hyper-parameter ``name`` is ``value``.

    Functional: ``opt_state`` is left unchanged and the new state shares every other array with
    it. The new value keeps the stored array's dtype and backend, so a compiled step takes it
    without retracing. A scheduled hyper-parameter is recomputed at the next update: setting it
    changes nothing (:func:`is_scheduled` says which are).

    Args:
      opt_state, name: as for :func:`get_hyperparam`.
      value: the new value (a number); stored in the old value's dtype (float32: rounded).

    Raises:
      ValueError: as :func:`get_hyperparam`.
    """
    found = _find(opt_state, name)
    old = found.hyperparams[name]
    if hasattr(old, "dtype"):
        new = array_namespace(old).asarray(float(value), dtype=old.dtype)
    else:
        new = float(value)
    hyper = {**found.hyperparams, name: new}
    return _replace_first(opt_state, lambda s: s._replace(hyperparams=hyper))[0]


def learning_rate(optimizer: Any, opt_state: OptState, count: int | None = None) -> float | None:
    """The learning rate that ``optimizer``'s update number ``count`` (counted from 0) uses.

    Args:
      optimizer: the transformation ``opt_state`` belongs to.
      opt_state: its state.
      count: the update's index; default: the next update's.

    Returns:
      From an injected state, the stored value, or its schedule at ``count`` when ``optimizer``
      was made by :func:`inject_hyperparams` (for optax's own with a schedule, the value the last
      update used); for the named optimizers (:func:`adam`, ...), the learning rate their spec
      declares, or its schedule at ``count``; otherwise ``None``. A host float
      (:func:`host_float`).
    """
    spec = spec_of(optimizer)
    found = find_injected_state(opt_state)
    if found is not None and "learning_rate" in found.hyperparams:
        schedule = spec.schedules.get("learning_rate") if isinstance(spec, InjectedSpec) else None
        if schedule is None:
            return host_float(found.hyperparams["learning_rate"])
        return _at(schedule, found.count, count)
    if not isinstance(spec, OptimizerSpec) or spec.learning_rate is None:
        return None
    if not callable(spec.learning_rate):
        return host_float(spec.learning_rate)
    return _at(spec.learning_rate, spec.part(opt_state, "learning_rate").count, count)


def update_count(optimizer: Any, opt_state: OptState) -> int | None:
    """The index of ``optimizer``'s next update, where its state counts the updates: an injected
    state's count, or the count of a named optimizer's scheduled learning rate; else ``None``.

    Args:
      optimizer: the transformation ``opt_state`` belongs to (its spec, :func:`spec_of`).
      opt_state: its state.
    """
    found = find_injected_state(opt_state)
    if found is not None:
        return int(found.count)
    spec = spec_of(optimizer)
    if isinstance(spec, OptimizerSpec) and callable(spec.learning_rate):
        return int(spec.part(opt_state, "learning_rate").count)
    return None


def is_scheduled(optimizer: Any, name: str) -> bool:
    """Whether ``optimizer`` recomputes the hyper-parameter ``name`` from a schedule at every
    update, so that setting it is futile: made by :func:`inject_hyperparams` with a schedule for
    it, or a named optimizer made with a schedule for its learning rate.

    Args:
      optimizer: the transformation (its declaration is read, :func:`spec_of`; no state).
      name: the hyper-parameter, e.g. ``"learning_rate"``.
    """
    spec = spec_of(optimizer)
    if isinstance(spec, OptimizerSpec):
        return name == "learning_rate" and callable(spec.learning_rate)
    return isinstance(spec, InjectedSpec) and name in spec.schedules


def with_settable_learning_rate(optimizer: Any, opt_state: OptState, params: Params) -> OptState:
    """``opt_state`` in a form whose learning rate :func:`set_hyperparam` can set, for
    ``optimizer``'s next update: what the learning-rate callbacks call before the first step.

    A state that already holds an injected learning rate (an optimizer given by name, made by
    :func:`inject_hyperparams`, or optax's ``inject_hyperparams``) is returned as it is. The
    state of a named optimizer (:func:`adam`, ...) made with a number for its rate comes back
    wrapped in an :class:`InjectHyperparamsState` holding that rate (in the params' floating
    dtype) and the chain's state unchanged, whose count starts at the chain's own step count
    (zero where it has none); the optimizer's update takes both forms (and its fused in-place
    path too), so training goes on with the same numbers until the rate is set.

    Args:
      optimizer: the transformation.
      opt_state: its state, or ``None`` to check the optimizer alone.
      params: what it updates (the model's trainable params), for the rate's dtype.

    Returns:
      The state to train on (``None`` for ``None``).

    Raises:
      TypeError: where nothing can set the rate: a schedule recomputes it at every step, or the
        optimizer keeps it as a constant of its code (an optax object, a chain built by hand).
        The message says what to use instead.
    """
    found = None if opt_state is None else find_injected_state(opt_state)
    spec = spec_of(optimizer)
    scheduled = is_scheduled(optimizer, "learning_rate") or (
        found is not None and "learning_rate" in getattr(found, "hyperparams_states", {})
    )
    if scheduled:
        raise TypeError(
            "the optimizer was made with a schedule for it, which recomputes the learning rate "
            "at every step, so setting it would change nothing. Pass a number instead "
            "(wf.optimizers.adam(1e-3), inject_hyperparams(...)(learning_rate=0.01)), or drop "
            "the callback"
        )
    if found is not None and "learning_rate" in found.hyperparams:
        return opt_state
    settable = spec.settable if isinstance(spec, OptimizerSpec) else None
    if settable is None or (opt_state is not None and not spec.fits(opt_state)):
        raise TypeError(_constant_rate(optimizer, spec))
    if opt_state is None:
        return None
    values = {"learning_rate": spec.learning_rate}
    return wrap_state(opt_state, values, params, _chain_count(opt_state))


def find_injected_state(opt_state: OptState) -> Any:
    """The first injected state in ``opt_state`` (depth first through tuples, lists and dicts:
    a chain's or a partition's), or ``None``.

    Args:
      opt_state: any optimizer state; an injected state is wframe's
        :class:`InjectHyperparamsState` or optax's, recognized by its field names.
    """
    if is_injected_state(opt_state):
        return opt_state
    for child in _children(opt_state):
        found = find_injected_state(child)
        if found is not None:
            return found
    return None


# --- helpers ------------------------------------------------------------------------------------


def _constant_rate(optimizer: Any, spec: Any) -> str:
    # Why nothing can set this optimizer's learning rate, and what to use instead.
    if isinstance(spec, OptimizerSpec) and spec.learning_rate is None:
        what = f"{spec.name} was made without a learning rate"
        fix = f"pass one: wf.optimizers.{spec.name}(learning_rate=1e-3)"
    else:
        kind = type(optimizer)
        what = (
            f"the optimizer (a {kind.__module__}.{kind.__qualname__}) keeps its learning rate "
            "as a constant of its code, where nothing can set it"
        )
        fix = (
            'use a wframe optimizer (wf.optimizers.adam(1e-3), or a name: optimizer="adam"), '
            "whose rate the callbacks can set, or wrap yours: "
            "wf.optimizers.inject_hyperparams(factory)(learning_rate=...) (on JAX "
            "optax.inject_hyperparams(optax.adam)(learning_rate=1e-3) too)"
        )
    return f"{what}. To change it during training, {fix}"


def _chain_count(opt_state: Any) -> Any:
    # A copy of the first step count among the chain's states (a copy: the in-place paths
    # increment each count once), or None where none counts.
    for part in opt_state:
        count = getattr(part, "count", None)
        if hasattr(count, "dtype"):
            return array_namespace(count).asarray(count + 0)
    return None


def _children(tree: Any) -> Iterable[Any]:
    if isinstance(tree, dict):
        return tree.values()
    if isinstance(tree, (tuple, list)):
        return tree
    return ()


def _find(opt_state: OptState, name: str) -> Any:
    found = find_injected_state(opt_state)
    how = (
        "Make the optimizer with wf.optimizers.inject_hyperparams(wf.optimizers.adam)"
        "(learning_rate=...) (any factory, any numeric argument), or pass it by name "
        '(optimizer="adam"), which injects its learning rate'
    )
    if found is None:
        raise ValueError(
            f"the optimizer state holds no injected hyper-parameters, so {name!r} cannot be read "
            f"or set (received a {type(opt_state).__name__}). {how}"
        )
    if name not in found.hyperparams:
        raise ValueError(
            f"the optimizer state's injected hyper-parameters are {sorted(found.hyperparams)}; "
            f"received name={name!r}. {how}, passing {name} as a number or schedule (not in "
            f"static_args)"
        )
    return found


def _replace_first(tree: Any, fn: Callable[[Any], Any]) -> tuple[Any, bool]:
    # ``tree`` with its first injected state replaced by fn(state); only containers on the way
    # are rebuilt.
    if is_injected_state(tree):
        return fn(tree), True
    if isinstance(tree, dict):
        for k, v in tree.items():
            new, done = _replace_first(v, fn)
            if done:
                return {**tree, k: new}, True
    elif isinstance(tree, (tuple, list)):
        for i, v in enumerate(tree):
            new, done = _replace_first(v, fn)
            if done:
                items = [*tree[:i], new, *tree[i + 1 :]]
                named = hasattr(tree, "_fields")
                return (type(tree)(*items) if named else type(tree)(items)), True
    return tree, False


def _at(schedule: Callable, state_count: Array, count: int | None) -> float:
    # The schedule at ``count`` (default: the state's), given as an array like the state's count.
    if count is None:
        return float(schedule(state_count))
    xp = array_namespace(state_count)
    return float(schedule(xp.asarray(count, dtype=state_count.dtype)))
