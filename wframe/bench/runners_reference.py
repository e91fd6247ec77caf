"""Hand-written references, in this suite: what a competent user writes without wframe.

``reference[numpy]`` (and ``reference[cupy]``, the same code on CuPy): forward and backward
written out per model (:mod:`wframe.bench.reference_models`: im2col convolution, 2x2 max
pooling, LSTM/GRU backprop through time) and an in-place SGD/Adam update. ``reference[jax]``:
``jax.jit(jax.value_and_grad)`` of a plain forward (``lax.conv_general_dilated``,
``lax.reduce_window``, a ``lax.scan`` cell; the sequence kinds' in
:mod:`wframe.bench.reference_seq`) plus optax, state donated; ``reference[jax] scan``:
a whole epoch in one jit (``lax.scan`` over the batches, data on the device). Params are lists
of dicts in layer order (a jitted dict would sort its keys).

What ``fit`` logs next to the loss, an epoch reference computes too: the accuracy (argmax
against the labels, counted per batch), unless the workload's ``metric`` is ``None`` (the
variant that measures ``fit`` against the leanest loop). A step's references compute none, as
``make_train_step`` logs none.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wframe.bench.reference_models import FORWARD, jax_loss_fn
from wframe.bench.timing import Row
from wframe.bench.workloads import HAND_WRITTEN, Workload, batches, permutation


def uses_metric(w: Workload, mode: str) -> bool:
    """Whether the references of ``w`` in ``mode`` compute ``fit``'s metric (the accuracy)."""
    if w.metric not in (None, "accuracy"):
        raise ValueError(
            f"{w.name}: the references compute metric 'accuracy' or none; got {w.metric!r}"
        )
    return mode != "step" and w.metric is not None


def xp_trainer(
    w: Workload, xp, p0: dict, metric: bool = False, b1=0.9, b2=0.999, eps=1e-8
) -> Callable:
    """``train(xb, yb) -> (loss, hits)``: forward, softmax cross-entropy, backward, in-place
    update; ``hits`` the count of right argmaxes with ``metric``, else ``None``."""
    ps = [{k: xp.array(v, copy=True) for k, v in d.items()} for d in p0.values()]
    flat = [a for d in ps for a in d.values()]
    moments = [(xp.zeros_like(a), xp.zeros_like(a)) for a in flat] if w.optimizer == "adam" else []
    count, lr = [0], w.lr

    def train(xb, yb):
        logits, back = FORWARD[w.kind](xp, ps, xb)
        hits = (logits.argmax(axis=1) == yb).sum() if metric else None
        rows = xp.arange(yb.shape[0])
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = xp.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        loss = (xp.log(s[:, 0]) - shifted[rows, yb]).mean()
        d = e / s
        d[rows, yb] -= 1
        d /= yb.shape[0]
        grads = [g[k] for d_, g in zip(ps, back(d), strict=True) for k in d_]
        count[0] += 1
        c1, c2 = 1 - b1 ** count[0], 1 - b2 ** count[0]
        for i, (p, g) in enumerate(zip(flat, grads, strict=True)):
            if not moments:
                p -= lr * g
                continue
            m, v = moments[i]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (lr / c1) * m / (xp.sqrt(v / c2) + eps)
        return loss, hits

    return train


def xp_step(w, xp, p0, xb, yb, sync=lambda a: a):
    train, x, y = xp_trainer(w, xp, p0), xp.asarray(xb), xp.asarray(yb)
    return lambda: sync(train(x, y)[0])


def xp_epoch(w, xp, p0, x, y):
    """The hand-written loop: wframe's shuffle, a ``take`` gather, the partial batch kept, the
    epoch's mean loss (and accuracy) summed on the host as each step ends."""
    metric = uses_metric(w, "epoch")
    train, epoch, n, logs = xp_trainer(w, xp, p0, metric), [0], x.shape[0], {}
    x, y = xp.asarray(x), xp.asarray(y)

    def run():
        order, total, right = xp.asarray(permutation(epoch[0], n)), 0.0, 0.0
        epoch[0] += 1
        for idx in batches(order, w.batch):
            loss, hits = train(xp.take(x, idx, axis=0), xp.take(y, idx, axis=0))
            total += float(loss) * idx.size
            right += float(hits) if metric else 0.0
        logs.update(loss=total / n, accuracy=right / n if metric else None)
        return logs["loss"]

    run.logs = logs  # the last epoch's loss and accuracy
    return run


def jax_update(w: Workload, metric: bool) -> tuple:
    """``(tx, update)``: optax's optimizer and the plain step ``update(params, opt_state, xb,
    yb) -> (params, opt_state, loss, hits)`` (``hits`` ``None`` without ``metric``)."""
    import jax
    import jax.numpy as jnp
    import optax

    tx, loss_fn = getattr(optax, w.optimizer)(w.lr), jax_loss_fn(w)

    def update(params, opt_state, xb, yb):
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        hits = jnp.sum(jnp.argmax(logits, axis=-1) == yb) if metric else None
        return optax.apply_updates(params, updates), opt_state, loss, hits

    return tx, update


def jax_scan(update: Callable, batch: int, n: int) -> Callable:
    """The whole epoch as one function: ``lax.scan`` of ``update`` over the full batches of
    ``order`` (gathered on the device), then the partial one; the mean loss and the hits."""
    import jax
    import jax.numpy as jnp

    full, rem = divmod(n, batch)

    def whole(params, opt_state, x, y, order):
        def body(carry, idx):
            p, s, loss, hits = update(*carry, jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0))
            return (p, s), (loss, hits)

        idx = order[: full * batch].reshape(full, batch)
        (params, opt_state), (losses, hits) = jax.lax.scan(body, (params, opt_state), idx)
        total, right = losses.sum() * batch, None if hits is None else hits.sum()
        if rem:
            idx = order[full * batch :]
            params, opt_state, loss, hits = update(params, opt_state, x[idx], y[idx])
            total += loss * rem
            right = None if hits is None else right + hits
        return params, opt_state, total / n, right

    return whole


def jax_runner(w: Workload, p0: dict, x, y, mode: str) -> Callable:
    """``mode``: ``"step"`` (one step on ``x, y``), ``"epoch"`` (per-step jit, batches
    gathered on the host) or ``"scan"`` (the whole epoch in one jit: ``lax.scan`` over the full
    batches plus the partial one, data on the device)."""
    import jax
    import jax.numpy as jnp

    metric = uses_metric(w, mode)
    tx, update = jax_update(w, metric)
    params = jax.tree_util.tree_map(jnp.array, list(p0.values()))
    state, epoch, n, logs = [params, tx.init(params)], [0], x.shape[0], {}
    step, xd, yd = jax.jit(update, donate_argnums=(0, 1)), jnp.asarray(x), jnp.asarray(y)
    if mode == "step":

        def run_step():
            state[0], state[1], loss, _ = step(*state, xd, yd)
            return loss.block_until_ready()

        return run_step
    scan = jax.jit(jax_scan(update, w.batch, n), donate_argnums=(0, 1))

    def run():
        order = permutation(epoch[0], n)
        epoch[0] += 1
        if mode == "scan":
            state[0], state[1], loss, right = scan(*state, xd, yd, jnp.asarray(order, jnp.int32))
            logs.update(loss=float(loss), accuracy=None if right is None else float(right) / n)
            return logs["loss"]
        outs = []
        for idx in batches(order, w.batch):
            state[0], state[1], loss, hits = step(*state, x[idx], y[idx])
            outs.append((idx.size, loss, hits))
        right = sum(float(h) for _, _, h in outs) / n if metric else None
        logs.update(loss=sum(k * float(v) for k, v, _ in outs) / n, accuracy=right)
        return logs["loss"]

    run.logs = logs  # the last epoch's loss and accuracy
    return run


def _xp_maker(w: Workload, backend: str, mode: str, p0: dict, x, y) -> Callable:
    def make():
        xp, sync = np, lambda a: a
        if backend == "cupy":
            import cupy as xp

            sync = lambda a: (xp.cuda.get_current_stream().synchronize(), a)[1]  # noqa: E731
        if mode == "step":
            return xp_step(w, xp, p0, x[: w.batch], y[: w.batch], sync)
        return xp_epoch(w, xp, p0, x, y)

    return make


def rows(w: Workload, mode: str, backends: list[str], p0: dict, x, y) -> list[Row]:
    """The references of ``w`` on ``backends``: hand-written NumPy/CuPy for the kinds that
    have one (:data:`~wframe.bench.workloads.HAND_WRITTEN`), plain JAX for every kind but the
    graph (whose reference is wframe's own Sequential, :mod:`~wframe.bench.runners_wframe`)."""
    out = []
    xb, yb = x[: w.batch], y[: w.batch]
    for b in backends:
        if w.kind == "graph" or (b != "jax" and w.kind not in HAND_WRITTEN):
            continue
        if b == "jax":
            if mode == "step":
                out.append(
                    Row("reference[jax]", "reference", b, lambda: jax_runner(w, p0, xb, yb, "step"))
                )
            else:
                out.append(
                    Row("reference[jax]", "reference", b, lambda: jax_runner(w, p0, x, y, "epoch"))
                )
                out.append(
                    Row(
                        "reference[jax] scan",
                        "reference",
                        b,
                        lambda: jax_runner(w, p0, x, y, "scan"),
                    )
                )
            continue
        out.append(Row(f"reference[{b}]", "reference", b, _xp_maker(w, b, mode, p0, x, y)))
    return out
