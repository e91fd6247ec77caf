"""The transformation type, the optax-named state classes, and the helpers every transformation
shares: :class:`GradientTransformation`, :func:`identity`, :func:`chain` and
:func:`apply_updates`, as in optax's ``base`` and ``combine``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy

from wframe.backends import array_namespace
from wframe.tree import tree_leaves, tree_map
from wframe.types import Array, Grads, Params

OptState = Any
Schedule = Callable[[Array], Any]
ScalarOrSchedule = float | Schedule


class GradientTransformation(NamedTuple):
    """``init(params) -> state`` and ``update(updates, state, params=None) -> (updates, state)``.

    Attributes:
      init: builds the state from the params (a tree like them, or an empty state).
      update: turns gradients into updates, given the state and (where needed) the params.
    """

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Grads, OptState]]


class EmptyState(NamedTuple):
    """State of stateless transformations."""


AddDecayedWeightsState = EmptyState  # optax's name for add_decayed_weights' state


class TraceState(NamedTuple):
    """State of :func:`trace`.

    Attributes:
      trace: the momentum, a tree like the params.
    """

    trace: Params


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam` (and of the optimizers built on it, and of Adamax).

    Attributes:
      count: steps taken, an int32 scalar array (as optax's).
      mu: the first moment, a tree like the params.
      nu: the second (Adamax: infinity) moment, likewise.
    """

    count: Array  # shape (), int32 as in optax
    mu: Params
    nu: Params


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms` without bias correction.

    Attributes:
      nu: the moving average of squared updates, a tree like the params.
    """

    nu: Params


class ScaleByRmsWithCountState(NamedTuple):
    """State of :func:`scale_by_rms` with ``bias_correction=True``.

    Attributes:
      count: steps taken, an int32 scalar array (as optax's).
      nu: the moving average of squared updates.
    """

    count: Array
    nu: Params


class ScaleByRStdDevState(NamedTuple):
    """State of :func:`scale_by_stddev` without bias correction.

    Attributes:
      mu: the moving average of updates, a tree like the params.
      nu: the moving average of squared updates, likewise.
    """

    mu: Params
    nu: Params


class ScaleByRStdDevWithCountState(NamedTuple):
    """State of :func:`scale_by_stddev` with ``bias_correction=True``.

    Attributes:
      count: steps taken, an int32 scalar array (as optax's).
      mu: the moving average of updates.
      nu: the moving average of squared updates.
    """

    count: Array
    mu: Params
    nu: Params


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`.

    Attributes:
      count: steps taken, an int32 scalar array (as optax's).
    """

    count: Array


class WeightDecaySchedule(NamedTuple):
    """State of :func:`add_decayed_weights` with a scheduled ``weight_decay``.

    Attributes:
      count: steps taken, an int32 scalar array (as optax's).
    """

    count: Array


class MaskedState(NamedTuple):
    """State of a transformation applied under a mask (``add_decayed_weights(mask=...)``).

    Attributes:
      inner_state: the masked transformation's own state.
    """

    inner_state: Any


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss` (Adagrad).

    Attributes:
      sum_of_squares: the running sum of squared updates, a tree like the params.
    """

    sum_of_squares: Params


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`.

    Attributes:
      count: steps taken, an int32 scalar array (as optax's).
      mu: the moving average of updates, a tree like the params.
    """

    count: Array
    mu: Params


class EmaState(NamedTuple):
    """State of :func:`ema`.

    Attributes:
      count: steps taken, an int32 scalar array (as optax's).
      ema: the moving average, a tree like the params.
    """

    count: Array
    ema: Params


class FactoredState(NamedTuple):
    """Adafactor's second moments: per leaf, the row and column means (``v_row``, ``v_col``) of
    a factored leaf or the full moment ``v`` of another; the unused ones are ``(1,)`` zeros.

    Attributes:
      count: steps taken, an int32 scalar array.
      v_row: per factored leaf, the squared gradients' moving mean over one of its two
        largest axes.
      v_col: per factored leaf, the same over the other of those axes.
      v: per unfactored leaf, the full moving average of squared gradients.
    """

    count: Array
    v_row: Params
    v_col: Params
    v: Params


# --- helpers the transformations share (pure xp; jit-traceable) ------------------------------
# Public to the modules of this package (transforms, inject, clipping); not re-exported.


def zero_count(params: Params) -> Array:
    """A 0-d int32 step count of zero on the backend of ``params`` (host NumPy for no leaf)."""
    leaves = tree_leaves(params)
    if not leaves:  # no array to ask for a namespace: a host count, which every backend accepts
        return numpy.zeros((), dtype=numpy.int32)
    xp = array_namespace(leaves[0])
    return xp.zeros((), dtype=xp.int32)


def safe_increment(count: Array) -> Array:
    """``count + 1``, saturating at the dtype's maximum instead of wrapping, as optax's."""
    xp = array_namespace(count)
    return xp.where(count < xp.iinfo(count.dtype).max, count + 1, count)


def per_dtype(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``dtype -> make(dtype)``, computed once per dtype: step scalars once per step, not per
    leaf."""
    cache: dict = {}

    def get(dtype):
        out = cache.get(dtype)
        if out is None:
            out = cache[dtype] = make(dtype)
        return out

    return get


def count_as_float(count: Array, dtype: Any) -> Array:
    """``count`` in float32 (float64 for float64 leaves), like JAX's promotion in optax."""
    xp = array_namespace(count)
    return xp.astype(count, xp.float64 if dtype == xp.float64 else xp.float32)


def cast(xp, dtype: Any, *values: Array) -> list:
    """``values`` in ``dtype``; those already in it are returned as they are."""
    return [v if v.dtype == dtype else xp.astype(v, dtype) for v in values]


def astype(t: Array, dtype: Any) -> Array:
    """``t`` in ``dtype``, with no copy when it already is (``xp.astype`` copies by default)."""
    return t if t.dtype == dtype else array_namespace(t).astype(t, dtype)


def full_like(params: Params, value: float) -> Params:
    """A tree like ``params`` filled with ``value``."""
    return tree_map(lambda p: array_namespace(p).full_like(p, value), params)


def zeros_like(params: Params, dtype: Any = None) -> Params:
    """A tree of zeros like ``params`` (in ``dtype`` when given)."""
    return tree_map(lambda p: array_namespace(p).zeros_like(p, dtype=dtype), params)


def empty_init(params: Params) -> EmptyState:
    """The ``init`` of stateless transformations."""
    del params
    return EmptyState()


# --- building blocks ---------------------------------------------------------------------------


def identity() -> GradientTransformation:
    """Pass updates through unchanged."""

    def update_fn(updates, state, params=None):
        del params
        return updates, state

    return GradientTransformation(empty_init, update_fn)


def chain(*txs: GradientTransformation) -> GradientTransformation:
    """Apply transformations in order; the state is the tuple of their states, as in optax.

    Args:
      *txs: the transformations (any objects with ``init`` and ``update``, optax's included).
    """
    # By attribute, not by unpacking: any object with init and update chains (optax's too).
    init_fns = tuple(tx.init for tx in txs)
    update_fns = tuple(tx.update for tx in txs)

    def init_fn(params):
        return tuple(fn(params) for fn in init_fns)

    def update_fn(updates, state, params=None):
        if len(update_fns) != len(state):
            raise ValueError(
                f"chain expected a state of {len(update_fns)} entries, received "
                f"{len(state)}. Make sure you have called init first!"
            )
        new_state = []
        for s, fn in zip(state, update_fns, strict=True):
            updates, s = fn(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init_fn, update_fn)


def apply_updates(params: Params, updates: Grads) -> Params:
    """Return ``params + updates``, keeping each param's dtype.

    Args:
      params: the params, a tree of arrays.
      updates: a tree of the same structure (an optimizer's output).
    """

    def add(p, u):
        new = p + u
        return new if new.dtype == p.dtype else array_namespace(p).astype(new, p.dtype)

    return tree_map(add, params, updates)
