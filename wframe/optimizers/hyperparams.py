"""Reading and changing an optimizer's hyper-parameters from the outside (callbacks, the user).

:func:`get_hyperparam` and :func:`set_hyperparam` read and replace an injected value in any
optimizer state that holds an injected state (wframe's or optax's, found by its field names);
:func:`learning_rate`, :func:`update_count` and :func:`is_scheduled` answer from the optimizer's
declaration (:func:`~wframe.optimizers.spec_of`) and its state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wframe.backends import array_namespace
from wframe.optimizers.base import OptState
from wframe.optimizers.spec import InjectedSpec, OptimizerSpec, spec_of
from wframe.types import Array

# What makes a state an injected one, wframe's InjectHyperparamsState or optax's
# Inject[Stateful]HyperparamsState: these field names.
_INJECT_FIELDS = frozenset({"count", "hyperparams", "inner_state"})


def get_hyperparam(opt_state: OptState, name: str) -> float:
    """The value of the injected hyper-parameter ``name`` in ``opt_state``, as a host float.

    For a scheduled one, the value the last update used (the first one's before any update).

    Raises:
      ValueError: if ``opt_state`` holds no injected state, or none with ``name``; the message
        says how to make an optimizer that has one.
    """
    return float(_find(opt_state, name).hyperparams[name])


def set_hyperparam(opt_state: OptState, name: str, value: float) -> OptState:
    """A new optimizer state whose injected hyper-parameter ``name`` is ``value``.

    Functional: ``opt_state`` is left unchanged and the new state shares every other array with
    it. The new value keeps the stored array's dtype and backend, so a compiled step takes it
    without retracing. A scheduled hyper-parameter is recomputed at the next update: setting it
    changes nothing (:func:`is_scheduled` says which are).

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
      update used); for :func:`sgd`, :func:`adam`, :func:`adamw` and :func:`rmsprop`, the
      learning rate their spec declares, or its schedule at ``count``; otherwise ``None``.
    """
    spec = spec_of(optimizer)
    found = find_injected_state(opt_state)
    if found is not None and "learning_rate" in found.hyperparams:
        schedule = spec.schedules.get("learning_rate") if isinstance(spec, InjectedSpec) else None
        if schedule is None:
            return float(found.hyperparams["learning_rate"])
        return _at(schedule, found.count, count)
    if not isinstance(spec, OptimizerSpec):
        return None
    if not callable(spec.learning_rate):
        return float(spec.learning_rate)
    return _at(spec.learning_rate, spec.part(opt_state, "learning_rate").count, count)


def update_count(optimizer: Any, opt_state: OptState) -> int | None:
    """The index of ``optimizer``'s next update, where its state counts the updates: an injected
    state's count, or the count of a named optimizer's scheduled learning rate; else ``None``."""
    found = find_injected_state(opt_state)
    if found is not None:
        return int(found.count)
    spec = spec_of(optimizer)
    if isinstance(spec, OptimizerSpec) and callable(spec.learning_rate):
        return int(spec.part(opt_state, "learning_rate").count)
    return None


def is_scheduled(optimizer: Any, name: str) -> bool:
    """Whether ``optimizer`` (made by :func:`inject_hyperparams`) recomputes the injected
    hyper-parameter ``name`` from a schedule at every update, so that setting it is futile."""
    spec = spec_of(optimizer)
    return isinstance(spec, InjectedSpec) and name in spec.schedules


def find_injected_state(opt_state: OptState) -> Any:
    """The first injected state in ``opt_state`` (depth first through tuples, lists and dicts:
    a chain's or a partition's), or ``None``."""
    if _is_inject_state(opt_state):
        return opt_state
    for child in _children(opt_state):
        found = find_injected_state(child)
        if found is not None:
            return found
    return None


# --- helpers ------------------------------------------------------------------------------------


def _is_inject_state(x: Any) -> bool:
    return isinstance(x, tuple) and _INJECT_FIELDS <= set(getattr(x, "_fields", ()))


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
    if _is_inject_state(tree):
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
