"""``predict`` and ``evaluate`` under a mesh strategy (:class:`~wframe.distributed.DataParallel`,
:class:`~wframe.distributed.ModelParallel`): each batch split along the data axis, the params
placed as the strategy places them (replicated, or split by the rules).

Batches need not divide over the devices: every batch is padded to the same size (a multiple
of the data-axis devices, so one compiled function serves them all) with masked rows. The
predictions of the padding are dropped, and ``evaluate`` sums the loss and metric of the real
rows only (each example's value from the loss on that one row, ``jax.vmap``), so results are the
unpadded ones: those of single-device inference, to float32 rounding. This holds for losses
that are a mean over examples, as all of wframe's are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wframe import data
from wframe import losses as losses_mod
from wframe.training import TrainState
from wframe.training.logs import Layout, results


def _plan(strategy: Any, n: int, size: int) -> tuple[int, int, list[int]]:
    """``(rows, steps, counts)``: the rows this process passes per batch (``size`` split over
    the processes that feed, rounded up to a multiple of their devices), the number of
    batches (the same in every process) and every process's example count."""
    p = strategy.feeders
    counts = strategy.gather_ints(n)[0] if p > 1 else [n]
    per_process = strategy.num_devices // p
    rows = -(-max(1, -(-size // p)) // per_process) * per_process
    return rows, max(1, -(-max(counts) // rows)), counts


def _padded(a: Any, start: int, rows: int, shape: tuple, dtype: Any, xp: Any) -> tuple[Any, int]:
    """``a[start : start + rows]`` padded with zero rows to ``rows``, and how many are real."""
    part = a[start : start + rows]
    real = part.shape[0]
    if real == rows:
        return part, real
    pad = xp.zeros((rows - real, *shape), dtype=dtype)
    return (xp.concat([part, pad], axis=0) if real else pad), real


def _mask(real: int, rows: int) -> np.ndarray:
    return np.arange(rows) < real


def _placed(strategy: Any, model: Any, params: Any, state: Any) -> tuple[Any, Any]:
    if params is not None:  # fit's train state: already placed
        return params, state
    arrays = model.train_state
    ts = strategy.place(TrainState(arrays.params, arrays.state, None))
    return ts.params, ts.state


def predict(strategy: Any, model: Any, x: Any, size: int) -> Any:
    """Outputs of ``model`` on ``x`` in inference mode, batches of about ``size`` rows split
    over the strategy's devices (padded, the padding's outputs dropped); an array of the
    model's backend. With per-process data ``x`` is this process's share and so is the result.
    """
    strategy.check_model(model, "predict")
    n = data.shape_of(x, "x")[0]
    rows, steps, _ = _plan(strategy, n, size)
    params, state = _placed(strategy, model, None, None)
    twin = model.trainer.model  # array-less: the memo must not keep this model's arrays
    fn = model.trainer.memo(("strategy_predict", strategy), lambda: _predict_fn(strategy, twin))
    xp, dt = model.backend.xp, model.backend.dtype(model.dtype)
    features = tuple(model.input_shape[1:])
    outs = []
    for i in range(steps):
        start = min(i * rows, n)
        empty = xp.zeros((0, *features), dt)
        xb = model.prepare_inputs(x[start : start + rows]) if start < n else empty
        xb, real = _padded(xb, 0, rows, features, dt, xp)
        outs.append((fn(params, state, strategy.assemble(xb, strategy.batch_sharding)), real))
    parts = [strategy.local_rows(out)[:real] for out, real in outs]
    return model.backend.asarray(np.concatenate(parts, axis=0))


def _predict_fn(strategy: Any, model: Any) -> Any:
    jax = strategy.jax
    # Every process wants all the outputs unless each passed its own share.
    gather = jax.process_count() > 1 and strategy.feeders == 1

    def fn(params, state, x):
        y = model.apply(params, state, strategy.shard_batch(x), train=False, vjp=False)[0]
        return jax.lax.with_sharding_constraint(y, strategy.replicated) if gather else y

    return model.backend.jit(fn)


def evaluate(
    strategy: Any,
    model: Any,
    x: Any,
    y: Any,
    loss: losses_mod.Loss,
    size: int,
    params: Any = None,
    state: Any = None,
) -> dict[str, float]:
    """Mean loss (and the loss's metric) over the examples of ``x``, ``y`` (checked and on the
    backend), batches split over the strategy's devices, padding masked out. With per-process
    data the mean is over every process's examples and every process gets it."""
    strategy.check_model(model, "evaluate")
    n = x.shape[0]
    rows, steps, counts = _plan(strategy, n, size)
    params, state = _placed(strategy, model, params, state)
    tracker = model.tracker(loss)
    make = lambda: _eval_fn(strategy, model.trainer.model, loss, tracker)  # noqa: E731
    fn = model.trainer.memo(("strategy_eval", strategy, loss, tracker), make)
    xp = model.backend.xp
    sums = []
    for i in range(steps):
        start = min(i * rows, n)
        xb, real = _padded(x, start, rows, x.shape[1:], x.dtype, xp)
        yb, _ = _padded(y, start, rows, y.shape[1:], y.dtype, xp)
        batch = [strategy.assemble(a, strategy.batch_sharding) for a in (xb, yb, _mask(real, rows))]
        sums.append(fn(params, state, *batch))
    total = sum(counts)
    if not total:
        return {}
    host = model.backend.to_host(sums)  # one transfer, after every batch is queued
    layout = Layout(("loss", *tracker.names), tracker.metrics)
    return results(layout, [sum(s[k] for s in host) for k in layout.names], total)


def check_single_io(strategy: Any, model: Any, what: str) -> None:
    """Refuse a graph model of several inputs or outputs (the strategies shard one array)."""
    several = [
        f"{len(s)} {kind}"
        for kind, s in (("inputs", model.input_shape), ("outputs", model.output_shape))
        if s and isinstance(s[0], tuple)
    ]
    if several:
        raise ValueError(
            f"{what}: strategy={strategy!r} shards models of one input and one output; "
            f"{model.label} has {' and '.join(several)}: train it without a strategy"
        )


def _eval_fn(strategy: Any, model: Any, loss: losses_mod.Loss, tracker: Any) -> Any:
    """The masked sums of one padded batch: the loss of the real rows, and each metric's
    statistics (additive, so the sum over rows is the batch's)."""
    jax = strategy.jax
    jnp = jax.numpy
    per_example = {"loss": lambda p, t: loss(p[None], t[None])[0]}
    for entry in tracker.entries:
        metric = entry.metric
        per_example[entry.name] = lambda p, t, metric=metric: metric.stats(p[None], t[None])

    def fn(params, state, x, y, mask):
        x, y, mask = (strategy.shard_batch(a) for a in (x, y, mask))
        pred = model.apply(params, state, x, train=False, vjp=False)[0]
        out = {}
        for name, value in per_example.items():
            v = jax.vmap(value)(pred, y)
            v = v.astype(jnp.promote_types(v.dtype, jnp.float32))
            rows = jnp.reshape(mask, mask.shape + (1,) * (v.ndim - 1))
            out[name] = jnp.sum(jnp.where(rows, v, jnp.zeros_like(v)), axis=0)
        return out

    return model.backend.jit(fn)
