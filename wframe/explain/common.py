"""What every attribution method shares: the targets, the selected outputs and their input
gradients, and the chunks of rows that each compiled call evaluates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wframe.backends import backend_of, to_numpy
from wframe.types import Array


# ----------------------------------------------------------------- chunks of rows
def rows_per_call(model) -> int:
    """Rows per compiled call: as many as keep one activation near 4M elements (<= 4096)."""
    return model.default_batch_size(1 << 30)


def per_call(model, rows_each: int = 1) -> int:
    """Samples per compiled call when each sample takes ``rows_each`` rows (at least 1)."""
    return max(1, rows_per_call(model) // rows_each)


def chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def concat(parts: list[Array]) -> Array:
    return parts[0] if len(parts) == 1 else backend_of(*parts).xp.concat(parts, axis=0)


def repeat_rows(a: Array, times: int) -> Array:
    """Each row of ``a`` ``times`` times in a row: (m, ...) -> (m * times, ...)."""
    xp = backend_of(a).xp
    tiled = xp.broadcast_to(xp.expand_dims(a, axis=1), (a.shape[0], times, *a.shape[1:]))
    return xp.reshape(tiled, (a.shape[0] * times, *a.shape[1:]))


def compiled(model, name: str, fn) -> Any:
    """``fn(model, params, state, *arrays)`` compiled once per model build and backend."""
    return model.trainer.memo(
        ("explain", name),
        lambda: model.backend.jit(lambda p, s, *a: fn(model, p, s, *a)),
    )


# ----------------------------------------------------------------- targets and inputs
def n_outputs(model) -> int:
    return math.prod(model.output_shape[1:])


def target_indices(model, x: Array, target: Any) -> np.ndarray:
    """One output index per sample, checked on the host."""
    n, k = x.shape[0], n_outputs(model)
    if target is None:
        pred = to_numpy(model.predict(x))
        return np.argmax(pred.reshape(n, -1), axis=1)
    t = to_numpy(target) if hasattr(target, "shape") else np.asarray(target)
    if t.dtype == np.bool_ or not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must be an int or an array of ints, got {t.dtype} {target!r}")
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != n):
        raise ValueError(
            f"target must be an int or one index per sample (shape ({n},)), got shape {t.shape}"
        )
    if t.size and (t.min() < 0 or t.max() >= k):
        bad = t[(t < 0) | (t >= k)].ravel()[0]
        raise ValueError(f"target must be in [0, {k}): the model has {k} outputs, got {bad}")
    return np.broadcast_to(t, (n,)).astype(np.int64)


def onehot(model, t: np.ndarray) -> Array:
    """The one-hot rows that select the targets: ``dy`` of the backprop, weights of the scores."""
    hot = np.eye(n_outputs(model), dtype=model.dtype)[t]
    return model.backend.asarray(hot.reshape(len(t), *model.output_shape[1:]), dtype=model.dtype)


def prepare(model, x: Any, target: Any) -> tuple[Array, Array]:
    """``x`` on the model's backend and the one-hot rows of its targets."""
    x = model.prepare_inputs(x)
    if x.shape[0] == 0:
        raise ValueError(f"x has no examples (shape {tuple(x.shape)})")
    return x, onehot(model, target_indices(model, x, target))


def broadcast_baseline(model, x: Array, baseline: Any, what: str = "baseline") -> Array:
    """``baseline`` broadcast to ``x``: a number, one input (``x.shape[1:]``) or one per sample."""
    xp = model.backend.xp
    if baseline is None:
        return xp.zeros_like(x)
    if not hasattr(baseline, "shape"):
        baseline = np.asarray(baseline)
    shape = tuple(baseline.shape)
    if shape not in ((), tuple(x.shape), tuple(x.shape[1:])):
        raise ValueError(
            f"{what} must be a number, one input of shape {tuple(x.shape[1:])} or one per sample "
            f"of shape {tuple(x.shape)}, got shape {shape}"
        )
    whole = shape == tuple(x.shape)
    b = model.prepare_inputs(baseline if whole else baseline.reshape(1, *shape), what)
    return xp.broadcast_to(b, x.shape)


# ----------------------------------------------------------------- outputs and gradients
def scores(model, params, state, x: Array, w: Array) -> Array:
    """The selected output of each row: ``sum(f(x) * w)`` over the output axes."""
    xp = backend_of(x).xp
    y = model.apply(params, state, x, train=False, vjp=False)[0]
    return xp.sum(xp.reshape(y * w, (y.shape[0], -1)), axis=1)


def input_grads(model, params, state, x: Array, w: Array) -> Array:
    """The gradient of each row's selected output w.r.t. that row (traceable)."""
    backend = backend_of(x)
    if backend.has_autodiff:
        total = lambda x: backend.xp.sum(scores(model, params, state, x, w))  # noqa: E731
        return backend.value_and_grad(total)(x)[1]
    backprop = model.apply(params, state, x, train=False)[2]
    return backprop(w, input_grad=True, need={})[0]  # need={}: no parameter gradients
