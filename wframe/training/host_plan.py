"""A host backend's train step compiled per architecture (NumPy's counterpart of ``jax.jit``).

A small model's step on NumPy is a few dozen array calls on tiny arrays; what wframe adds
around them (each layer's checks and dispatch, the loss's and the metrics' lookups, the
gradient function's partitions) costs as much again in Python. A model without state has a
:meth:`~wframe.layers.Layer.plan` (each layer's own ``apply`` by default; Dense layers and
chains of them unchecked kernels), and its step is built once from the plan, the loss's
:meth:`~wframe.losses.Loss.kernel` and the metrics' functions, all looked up when the step is
made: each step then checks only that its batch is what the plan was made for (a NumPy array
of the dtype and input shape the model takes, plain labels, no pruning masks) and otherwise
runs the general step, which stays the reference. Both compute the same expressions in the
same order, so they give the same weights bit for bit (tests/test_host_plan.py). ``predict``
and ``evaluate`` run the model's inference plan the same way (:func:`planned_forward`:
tests/test_host_inference.py).

Measured on the 64-64-10 MLP at batch 32 (``benchmarks/bench_small.py``): see
docs/benchmarks.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from wframe.training.tracker import Tracker
from wframe.tree import tree_leaves
from wframe.types import Params


def host_finite(value: Any, penalty: Any, grads: Params, xp: Any) -> bool:
    """Whether the loss, the penalty and every gradient are finite: host arrays read as
    Python floats (one reduction per gradient; the sum of finite values is finite, that of a
    NaN or an inf is not, and float64 does not overflow on float32 sums)."""
    total = float(value) + float(penalty)
    for g in tree_leaves(grads):
        total += float(xp.sum(g))
    return math.isfinite(total)


def _batch_spec(layer) -> tuple[np.dtype, tuple] | None:
    """``(dtype, feature_shape)`` of the batches a built model's plan is made for (its float
    dtype, or a first Embedding's integers), or ``None`` (not built, several inputs)."""
    in_shape = getattr(layer, "input_shape", None) if getattr(layer, "built", False) else None
    if not isinstance(in_shape, tuple) or any(isinstance(d, tuple) for d in in_shape):
        return None  # (several inputs: a tuple of shapes)
    return np.dtype(getattr(layer, "input_dtype", None) or layer.dtype), tuple(in_shape[1:])


def planned_forward(layer, backend) -> Callable | None:
    """``forward(params, state, x) -> y`` in inference mode from ``layer``'s inference plan
    (:meth:`~wframe.layers.Layer.plan` with ``train=False``), for ``predict`` and
    ``evaluate`` on a host backend; ``None`` where there is none. A batch the plan was not
    made for (another dtype or shape, several inputs) runs ``layer.apply``, the reference;
    both give the same outputs bit for bit."""
    spec = _batch_spec(layer) if backend.on_host else None
    planned = None if spec is None else layer.planned(backend.xp, layer.input_shape, False)
    if planned is None:
        return None
    (dtype, feature_shape), run, nd = spec, planned[0], np.ndarray

    def forward(params, state, x):
        if type(x) is not nd or x.dtype != dtype or x.shape[1:] != feature_shape:
            return layer.apply(params, state, x, train=False, vjp=False)[0]
        return run(params, x, False)[0]

    return forward


def planned_step(
    layer, loss, tracker: Tracker, backend, update: Callable, general: Callable, *, guard, check
) -> Callable | None:
    """``core(ts, x, y, key, allowed) -> (ts, value, logged, ok)`` as
    :func:`~wframe.training.step.core_step`'s, from ``layer``'s plan, or ``None`` where
    there is none (a layer without one, a model not built, several outputs). ``general`` is
    the general step, run for a batch the plan does not cover; ``update(params, grads,
    opt_state) -> (params, opt_state)`` the optimizer's.

    Only for what the plan covers: the caller has ruled out frozen params, regularizers,
    clipping, loss scaling, gradient statistics and a rank's sync.
    """
    spec, metrics = _batch_spec(layer), [e.metric for e in tracker.entries]
    if spec is None or any(m is None for m in metrics):
        return None
    xp = backend.xp
    planned = layer.planned(xp, layer.input_shape)
    if planned is None:
        return None
    (dtype, feature_shape), run = spec, planned[0]
    loss_fn, stats = loss.kernel(xp), [m.stats for m in metrics]
    checked, nd = guard or check, np.ndarray

    def core(ts, x, y, key, allowed):
        if (
            type(x) is not nd
            or type(y) is not nd
            or x.dtype != dtype
            or x.shape[1:] != feature_shape
            or ts.masks
        ):
            return general(ts, x, y, key, allowed)
        pred, backprop = run(ts.params, x, True, key)
        value, dpred = loss_fn(pred, y)
        logged = [fn(pred, y, None) for fn in stats]
        grads = backprop(dpred, input_grad=False)[1]
        ok = (bool(allowed) and host_finite(value, 0.0, grads, xp)) if checked else None
        if ok or not guard:  # the guard skips a non-finite step's update
            params, opt_state = update(ts.params, grads, ts.opt_state)
            if params is not ts.params or opt_state is not ts.opt_state:  # (not in place)
                ts = ts._replace(params=params, opt_state=opt_state)
        return ts, value, logged, ok

    return core
