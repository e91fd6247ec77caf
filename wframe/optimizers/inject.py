"""Hyper-parameters that change during training: :func:`inject_hyperparams` keeps an optimizer's
numeric hyper-parameters in its state, where a schedule, a callback or the user can change them
between steps (under ``jax.jit`` too, with no retrace: they are array arguments), as optax's.

The transformation it makes declares an :class:`~wframe.optimizers.InjectedSpec` (what it was
made from); :mod:`wframe.optimizers.hyperparams` reads and changes the values in a state.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from wframe.backends import array_namespace
from wframe.optimizers.base import (
    GradientTransformation,
    OptState,
    safe_increment,
    zero_count,
)
from wframe.optimizers.spec import DeclaredTransformation, InjectedSpec
from wframe.tree import tree_leaves
from wframe.types import Array

# What makes a state an injected one, wframe's InjectHyperparamsState or optax's
# Inject[Stateful]HyperparamsState: these field names.
_INJECT_FIELDS = frozenset({"count", "hyperparams", "inner_state"})


class InjectHyperparamsState(NamedTuple):
    """The step count, the hyper-parameters the last update used (each a 0-d array) and the state
    of the inner transformation, under optax's field names.

    Attributes:
      count: updates taken, an int32 scalar array (as optax's); schedules are read at it.
      hyperparams: name -> the value the last update used, each a 0-d array; set new values
        with :func:`~wframe.optimizers.set_hyperparam`.
      inner_state: the state of the transformation ``inner_factory`` made.
    """

    count: Array  # shape (), int32 as in optax
    hyperparams: dict[str, Array]
    inner_state: OptState


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., DeclaredTransformation]:
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

    def wrapped(*args: Any, **kwargs: Any) -> DeclaredTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        spec = _declare(inner_factory, bound.arguments, static)
        values = {name: bound.arguments[name] for name in spec.numeric}
        return _transformation(spec, values, hyperparam_dtype)

    return wrapped


def _declare(factory: Callable, arguments: dict[str, Any], static: set[str]) -> InjectedSpec:
    # Which arguments are passed as given, stored in the state, or recomputed from a schedule.
    other, numeric, schedules = {}, [], {}
    for name, value in arguments.items():
        if name in static or value is None or isinstance(value, (bool, str, type)):
            other[name] = value  # a type: a dtype such as mu_dtype=numpy.float16
        elif callable(value):
            schedules[name] = value
        elif _is_numeric(value):
            numeric.append(name)
        else:
            other[name] = value
    return InjectedSpec(factory, other, tuple(numeric), schedules)


def _transformation(spec: InjectedSpec, values: dict, dtype_arg: Any) -> DeclaredTransformation:
    # The transformation that ``spec`` declares, its numeric values starting at ``values``.
    factory, other, numeric, schedules = spec

    def init_fn(params):
        count = zero_count(params)
        xp = array_namespace(count)
        dtype = _dtype(xp, dtype_arg, params)
        hyper = {k: _as_hyperparam(xp, v, dtype) for k, v in values.items()}
        hyper.update({k: _as_hyperparam(xp, f(count), dtype) for k, f in schedules.items()})
        inner = factory(**other, **hyper).init(params)
        return InjectHyperparamsState(count=count, hyperparams=hyper, inner_state=inner)

    def update_fn(updates, state, params=None):
        xp = array_namespace(state.count)
        dtype = _dtype(xp, dtype_arg, updates if params is None else params)
        stored = state.hyperparams
        missing = [k for k in numeric if k not in stored]
        if missing:
            raise ValueError(
                f"the state's hyperparams lack {missing} (they hold {sorted(stored)}): it was "
                f"not made by this optimizer's init. Make sure you have called init first!"
            )
        hyper = {k: _as_hyperparam(xp, stored[k], dtype) for k in numeric}
        hyper.update({k: _as_hyperparam(xp, f(state.count), dtype) for k, f in schedules.items()})
        inner_tx = factory(**other, **hyper)
        updates, inner = inner_tx.update(updates, state.inner_state, params)
        return updates, _next_state(state, hyper, inner)

    return DeclaredTransformation(init_fn, update_fn, spec)


def from_spec(
    spec: InjectedSpec, values: dict[str, Any], hyperparam_dtype: Any = None
) -> DeclaredTransformation:
    """The transformation that ``spec`` declares (what :func:`inject_hyperparams` returns), its
    stored hyper-parameters starting at ``values`` (a value for each of ``spec.numeric``)."""
    return _transformation(spec, values, hyperparam_dtype)


def is_injected_state(state: Any) -> bool:
    """Whether ``state`` is an injected state (wframe's :class:`InjectHyperparamsState` or
    optax's ``Inject[Stateful]HyperparamsState``), told by its field names."""
    fields = getattr(state, "_fields", None)  # a plain tuple (a chain's state) has none
    return fields is not None and isinstance(state, tuple) and _INJECT_FIELDS.issubset(fields)


def wrap_state(
    inner_state: OptState,
    values: dict[str, Any],
    params: Any,
    count: Array | None = None,
    hyperparam_dtype: Any = None,
) -> InjectHyperparamsState:
    """An :class:`InjectHyperparamsState` holding ``inner_state`` and ``values``, stored as
    :func:`inject_hyperparams`' ``init`` stores them (0-d arrays in the widest floating dtype of
    ``params``, or ``hyperparam_dtype``), so that an update continues it without a new dtype.

    Args:
      inner_state: the state of the inner transformation, taken as it is.
      values: name -> number.
      params: what the optimizer updates (for the backend and the dtype).
      count: the step count; default: zero.
      hyperparam_dtype: as in :func:`inject_hyperparams`.
    """
    count = zero_count(params) if count is None else count
    xp = array_namespace(count)
    dtype = _dtype(xp, hyperparam_dtype, params)
    hyper = {k: _as_hyperparam(xp, v, dtype) for k, v in values.items()}
    return InjectHyperparamsState(count=count, hyperparams=hyper, inner_state=inner_state)


def _next_state(state: Any, hyper: dict[str, Array], inner: OptState) -> Any:
    # The state's own class and keys are kept (an optax state stays one), so that the state has
    # the same structure before and after: what lax.scan's carry needs.
    stored = state.hyperparams
    new = {k: hyper.get(k, v) for k, v in stored.items()}
    new.update({k: v for k, v in hyper.items() if k not in new})
    fields = {"count": safe_increment(state.count), "hyperparams": new, "inner_state": inner}
    if hasattr(state, "hyperparams_states"):  # optax's: its schedules count on their own
        fields["hyperparams_states"] = {
            k: _advanced(s) for k, s in state.hyperparams_states.items()
        }
    return state._replace(**fields)


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
    named = isinstance(schedule_state, tuple) and hasattr(schedule_state, "_fields")
    if named and hasattr(schedule_state, "count"):
        return schedule_state._replace(count=safe_increment(schedule_state.count))
    return schedule_state
