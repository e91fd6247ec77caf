"""In-place updates for the named optimizers on backends with in-place kernels (NumPy)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from wframe.backends import backend_of
from wframe.optimizers.base import OptState, ScalarOrSchedule, apply_updates
from wframe.tree import tree_map
from wframe.types import Grads, Params

# update function -> (kind, hyper-parameters) of the transformations fused() can run in place.
_FUSABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fused(tx: Any) -> Callable[[Params, Grads, OptState], tuple[Params, OptState]] | None:
    """An in-place ``update`` + :func:`apply_updates` for a transformation made by :func:`sgd`,
    :func:`adam` or :func:`adamw` (constant or scheduled learning rate and weight decay).

    The returned ``apply(params, grads, opt_state) -> (params, opt_state)`` overwrites the
    param and state leaves (and the step counts) and returns the same objects, when the backend
    of the arrays has in-place kernels (NumPy: :meth:`NumpyBackend.fusable` says which arrays
    qualify). Otherwise it runs ``tx.update`` and :func:`apply_updates` and returns new trees,
    leaving its inputs untouched. Results equal that pure path to float32 rounding, and the
    state keeps its structure, classes and dtypes, so either path (or optax) can continue it.
    The caller must own the buffers (arrays a user still holds are overwritten) and check the
    gradients first where a step must be skippable: nothing is kept to undo one.

    Args:
      tx: any transformation.

    Returns:
      ``apply``, or ``None`` for transformations not made by those factories (chains built by
      hand, optax objects, :func:`rmsprop`, ``nesterov`` Adam, a ``mu_dtype`` or
      ``accumulator_dtype``).
    """
    try:
        kind, hyper = _FUSABLE[tx.update]
    except (AttributeError, KeyError, TypeError):
        return None

    def pure(params, grads, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return apply_updates(params, updates), opt_state

    if kind == "sgd":
        learning_rate, momentum, nesterov = hyper

        def apply(params, grads, opt_state):
            first, lr_state = opt_state
            trees = (params, grads) if momentum is None else (params, grads, first.trace)
            groups = _groups(*trees)
            backend = _inplace_backend(groups, [lr_state.count] if callable(learning_rate) else [])
            if backend is None:
                return pure(params, grads, opt_state)
            lr = _host_value(backend, learning_rate, lr_state)
            backend.sgd_inplace(groups, lr, momentum, nesterov)
            return params, opt_state

        return apply

    learning_rate, b1, b2, eps, eps_root, weight_decay, mask = hyper
    decoupled = weight_decay is not None  # adamw

    def apply(params, grads, opt_state):  # adam and adamw
        adam_state, lr_state = opt_state[0], opt_state[-1]
        wd_state = opt_state[1] if decoupled else None
        if mask is not None:
            wd_state = wd_state.inner_state
        counts = [adam_state.count]
        if callable(learning_rate):
            counts.append(lr_state.count)
        if callable(weight_decay):
            counts.append(wd_state.count)
        groups = _groups(params, grads, adam_state.mu, adam_state.nu)
        backend = _inplace_backend(groups, counts)
        if backend is None:
            return pure(params, grads, opt_state)
        if mask is not None:  # before any write, in case the mask raises
            keep = [k for _, k in _groups(params, mask(params) if callable(mask) else mask)]
        lr = _host_value(backend, learning_rate, lr_state)
        wd = _host_value(backend, weight_decay, wd_state) if decoupled else 0.0
        args = (backend.increment_inplace(adam_state.count), lr, b1, b2, eps, eps_root)
        if mask is None:
            backend.adam_inplace(groups, *args, wd)
        else:  # masked weight decay: one kernel call with, one without
            backend.adam_inplace([gr for gr, k in zip(groups, keep, strict=True) if k], *args, wd)
            backend.adam_inplace([gr for gr, k in zip(groups, keep, strict=True) if not k], *args)
        return params, opt_state

    return apply


def _groups(*trees: Any) -> list:
    # [param, grad, *state] per leaf; a plain walk over nested dicts, twice as fast as tree_map.
    first = trees[0]
    if isinstance(first, dict):
        out = []
        for k, v in first.items():
            sub = [t[k] for t in trees]
            out += [sub] if hasattr(v, "shape") else _groups(*sub)
        return out
    out = []
    tree_map(lambda *leaves: out.append(list(leaves)), *trees)
    return out


def _inplace_backend(groups: list[tuple], counts: list) -> Any:
    # The backend of the arrays if it has in-place kernels and they accept every array, else None.
    if not groups:
        return None
    backend = backend_of(groups[0][0])
    return backend if backend.fusable(groups, counts) else None


def _host_value(backend: Any, value: ScalarOrSchedule, state: Any) -> float:
    # A schedule is read at the pre-increment count, as scale_by_schedule does.
    if not callable(value):
        return value
    out = float(value(state.count))
    backend.increment_inplace(state.count)
    return out
