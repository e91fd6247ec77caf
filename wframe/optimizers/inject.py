"""Hyper-parameters that change during training: :func:`inject_hyperparams` keeps an optimizer's
numeric hyper-parameters in its state, where a schedule, a callback or the user can change them
between steps (under ``jax.jit`` too, with no retrace: they are array arguments), as optax's.

:func:`get_hyperparam` and :func:`set_hyperparam` read and replace one in any optimizer state
that holds such a state (wframe's or optax's); :func:`learning_rate` says which learning rate an
update uses.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from wframe.backends import array_namespace
from wframe.optimizers.base import (
    GradientTransformation,
    OptState,
    _safe_increment,
    _zero_count,
)
from wframe.tree import _is_namedtuple, tree_leaves
from wframe.types import Array


class InjectHyperparamsState(NamedTuple):
    """The step count, the hyper-parameters the last update used (each a 0-d array) and the state
    of the inner transformation, under optax's field names."""

    count: Array  # shape (), int32 as in optax
    hyperparams: dict[str, Array]
    inner_state: OptState


class _Injected(NamedTuple):
    # What an injected transformation was made from (read by fused() and learning_rate()).
    factory: Callable[..., GradientTransformation]
    other: dict[str, Any]  # passed to the factory as given
    numeric: tuple[str, ...]  # stored in the state, read back at each update
    schedules: dict[str, Callable]  # evaluated at the state's count at each update


# update function -> _Injected, for every transformation inject_hyperparams made.
_INJECTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# update function -> (learning rate or schedule, index of its state in the chain's), recorded by
# the named optimizers of ``alias``.
_LEARNING_RATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Wrap ``inner_factory`` so that its numeric hyper-parameters live in the optimizer state.

    ``inject_hyperparams(adam)(learning_rate=1e-3)`` makes an Adam whose state is an
    :class:`InjectHyperparamsState`; any numeric argument may also be a ``step -> value``
    schedule, evaluated at the state's count at each update. Numeric values are read back from
    ``state.hyperparams`` at every update, so a new value set there (best with
    :func:`set_hyperparam`) is used from the next step on; scheduled ones are recomputed and
    cannot be set. Bools, ``None`` and other objects are passed to the factory as given.

    The same code runs on every backend, under ``jax.jit`` included, with wframe's factories or
    optax's (on JAX). States interchange with optax's: an optax state converted leaf-wise
    continues here and back. Differences from optax: Python ints are stored as floats (an
    integer-valued argument that must stay an integer belongs in ``static_args``), and schedules
    take only the step count (no stateful schedules).

    Args:
      inner_factory: a function returning a :class:`GradientTransformation`, e.g. :func:`adam`.
      static_args: names of arguments passed as given even if callable or numeric (e.g. a
        ``mask`` function, which would otherwise be taken for a schedule).
      hyperparam_dtype: dtype of the stored floating hyper-parameters; default: the widest
        floating dtype of the params (so a float32 model keeps float32 arithmetic on NumPy).

    Returns:
      A function taking ``inner_factory``'s arguments (numbers or schedules) and returning the
      transformation.
    """
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static <= set(signature.parameters):
        raise ValueError(
            f"static_args must name parameters of {_name(inner_factory)}: expected a subset of "
            f"{sorted(signature.parameters)}. Received: static_args={sorted(static)}"
        )

    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        other, numeric, schedules = {}, [], {}
        for name, value in bound.arguments.items():
            if name in static or value is None or isinstance(value, (bool, str, type)):
                other[name] = value  # a type: a dtype such as mu_dtype=numpy.float16
            elif callable(value):
                schedules[name] = value
            elif _is_numeric(value):
                numeric.append(name)
            else:
                other[name] = value
        values = {name: bound.arguments[name] for name in numeric}

        def init_fn(params):
            count = _zero_count(params)
            xp = array_namespace(count)
            dtype = _dtype(xp, hyperparam_dtype, params)
            hyper = {k: _as_hyperparam(xp, v, dtype) for k, v in values.items()}
            hyper.update({k: _as_hyperparam(xp, f(count), dtype) for k, f in schedules.items()})
            inner = inner_factory(**other, **hyper).init(params)
            return InjectHyperparamsState(count=count, hyperparams=hyper, inner_state=inner)

        def update_fn(updates, state, params=None):
            xp = array_namespace(state.count)
            dtype = _dtype(xp, hyperparam_dtype, updates if params is None else params)
            stored = state.hyperparams
            missing = [k for k in numeric if k not in stored]
            if missing:
                raise ValueError(
                    f"the state's hyperparams lack {missing} (they hold {sorted(stored)}): it was "
                    f"not made by this optimizer's init. Make sure you have called init first!"
                )
            hyper = {k: _as_hyperparam(xp, stored[k], dtype) for k in numeric}
            hyper.update(
                {k: _as_hyperparam(xp, f(state.count), dtype) for k, f in schedules.items()}
            )
            updates, inner = inner_factory(**other, **hyper).update(
                updates, state.inner_state, params
            )
            # The state's own class and keys are kept (an optax state stays one), so that the
            # state has the same structure before and after: what lax.scan's carry needs.
            new = {k: hyper.get(k, v) for k, v in stored.items()}
            new.update({k: v for k, v in hyper.items() if k not in new})
            fields = {
                "count": _safe_increment(state.count),
                "hyperparams": new,
                "inner_state": inner,
            }
            if hasattr(state, "hyperparams_states"):  # optax's: its schedules count on their own
                fields["hyperparams_states"] = {
                    k: _advanced(s) for k, s in state.hyperparams_states.items()
                }
            return updates, state._replace(**fields)

        tx = GradientTransformation(init_fn, update_fn)
        _INJECTED[update_fn] = _Injected(inner_factory, other, tuple(numeric), schedules)
        return tx

    return wrapped


# --- reading and changing hyper-parameters ------------------------------------------------------


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
    changes nothing.

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
      learning rate they were made with, or its schedule at ``count``; otherwise ``None``.
    """
    update = getattr(optimizer, "update", None)
    found = _find_state(opt_state)
    if found is not None and "learning_rate" in found.hyperparams:
        info = _lookup(_INJECTED, update)
        schedule = None if info is None else info.schedules.get("learning_rate")
        if schedule is None:
            return float(found.hyperparams["learning_rate"])
        return _at(schedule, found.count, count)
    recorded = _lookup(_LEARNING_RATES, update)
    if recorded is None:
        return None
    value, index = recorded
    if not callable(value):
        return float(value)
    return _at(value, opt_state[index].count, count)


def _update_count(optimizer: Any, opt_state: OptState) -> int | None:
    """The index of ``optimizer``'s next update where its state counts them, else ``None``."""
    found = _find_state(opt_state)
    if found is not None:
        return int(found.count)
    recorded = _lookup(_LEARNING_RATES, getattr(optimizer, "update", None))
    if recorded is not None and callable(recorded[0]):
        return int(opt_state[recorded[1]].count)
    return None


def _is_scheduled(optimizer: Any, name: str) -> bool:
    """Whether ``optimizer`` recomputes ``name`` from a schedule at every update."""
    info = _lookup(_INJECTED, getattr(optimizer, "update", None))
    return info is not None and name in info.schedules


# --- helpers ------------------------------------------------------------------------------------


def _name(factory: Any) -> str:
    return getattr(factory, "__qualname__", None) or repr(factory)


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) or (hasattr(value, "dtype") and hasattr(value, "shape"))


def _dtype(xp: Any, dtype: Any, tree: Any) -> Any:
    # The requested dtype, else the widest floating dtype of the tree (float32 without one).
    if dtype is not None:
        return getattr(xp, dtype) if isinstance(dtype, str) else dtype
    found = None
    for leaf in tree_leaves(tree):
        kind = getattr(leaf, "dtype", None)
        if kind is not None and xp.isdtype(kind, "real floating"):
            if found is None or xp.finfo(kind).bits > xp.finfo(found).bits:
                found = kind
    return xp.float32 if found is None else found


def _as_hyperparam(xp: Any, value: Any, dtype: Any) -> Any:
    # Floating values (numbers, float arrays) as 0-d arrays of ``dtype``; integer arrays as given.
    # JAX's weakly typed values (a schedule's output) are made strong, as optax does: a stored
    # value must keep one type from step to step (a lax.scan carry, a cached trace).
    if not hasattr(value, "dtype"):
        return xp.asarray(value, dtype=dtype)
    if not xp.isdtype(value.dtype, "real floating"):
        return value
    if value.dtype == dtype and not getattr(value, "weak_type", False):
        return value
    return xp.astype(xp.asarray(value), dtype)


def _advanced(schedule_state: Any) -> Any:
    # optax's WrappedScheduleState(count): one more step. Other schedule states are left alone.
    if _is_namedtuple(schedule_state) and hasattr(schedule_state, "count"):
        return schedule_state._replace(count=_safe_increment(schedule_state.count))
    return schedule_state


def _is_inject_state(x: Any) -> bool:
    # wframe's InjectHyperparamsState or optax's (Inject[Stateful]HyperparamsState), duck-typed.
    return _is_namedtuple(x) and {"count", "hyperparams", "inner_state"} <= set(x._fields)


def _children(tree: Any) -> Iterable[Any]:
    if isinstance(tree, dict):
        return tree.values()
    if isinstance(tree, (tuple, list)):
        return tree
    return ()


def _find_state(tree: Any) -> Any:
    # The first injected state in ``tree``, depth first, or None.
    if _is_inject_state(tree):
        return tree
    for child in _children(tree):
        found = _find_state(child)
        if found is not None:
            return found
    return None


def _find(opt_state: OptState, name: str) -> Any:
    found = _find_state(opt_state)
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
                return (type(tree)(*items) if _is_namedtuple(tree) else type(tree)(items)), True
    return tree, False


def _lookup(registry: weakref.WeakKeyDictionary, key: Any) -> Any:
    try:
        return registry.get(key)
    except TypeError:  # not weak-referenceable (None, a builtin)
        return None


def _at(schedule: Callable, state_count: Array, count: int | None) -> float:
    # The schedule at ``count`` (default: the state's), given as an array like the state's count.
    if count is None:
        return float(schedule(state_count))
    xp = array_namespace(state_count)
    return float(schedule(xp.asarray(count, dtype=state_count.dtype)))
