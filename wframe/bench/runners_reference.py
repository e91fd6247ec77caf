"""Hand-written references, in this suite: what a competent user writes without wframe.

``reference[numpy]`` (and ``reference[cupy]``, the same code on CuPy): forward and backward
written out per model (:mod:`wframe.bench.reference_models`: im2col convolution, 2x2 max
pooling, LSTM/GRU backprop through time) and an in-place SGD/Adam update. ``reference[jax]``:
``jax.jit(jax.value_and_grad)`` of a plain forward (``lax.conv_general_dilated``,
``lax.reduce_window``, a ``lax.scan`` cell) plus optax, state donated; ``reference[jax] scan``:
a whole epoch in one jit (``lax.scan`` over the batches, data on the device). Params are lists
of dicts in layer order (a jitted dict would sort its keys).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wframe.bench.reference_models import FORWARD, jax_loss_fn
from wframe.bench.timing import Row
from wframe.bench.workloads import Workload, batches, permutation


def xp_trainer(w: Workload, xp, p0: dict, b1=0.9, b2=0.999, eps=1e-8) -> Callable:
    """``train(xb, yb) -> loss``: forward, softmax cross-entropy, backward, in-place update."""
    ps = [{k: xp.array(v, copy=True) for k, v in d.items()} for d in p0.values()]
    flat = [a for d in ps for a in d.values()]
    moments = [(xp.zeros_like(a), xp.zeros_like(a)) for a in flat] if w.optimizer == "adam" else []
    count, lr = [0], w.lr

    def train(xb, yb):
        logits, back = FORWARD[w.kind](xp, ps, xb)
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
        return loss

    return train


def xp_step(w, xp, p0, xb, yb, sync=lambda a: a):
    train, x, y = xp_trainer(w, xp, p0), xp.asarray(xb), xp.asarray(yb)
    return lambda: sync(train(x, y))


def xp_epoch(w, xp, p0, x, y):
    """The hand-written loop: wframe's shuffle, a ``take`` gather, the partial batch kept."""
    train, epoch, n = xp_trainer(w, xp, p0), [0], x.shape[0]
    x, y = xp.asarray(x), xp.asarray(y)

    def run():
        order, total = xp.asarray(permutation(epoch[0], n)), 0.0
        epoch[0] += 1
        for idx in batches(order, w.batch):
            total += float(train(xp.take(x, idx, axis=0), xp.take(y, idx, axis=0))) * idx.size
        return total / n

    return run


def jax_runner(w: Workload, p0: dict, x, y, mode: str) -> Callable:
    """``mode``: ``"step"`` (one step on ``x, y``), ``"epoch"`` (per-step jit, batches
    gathered on the host) or ``"scan"`` (the whole epoch in one jit: ``lax.scan`` over the full
    batches plus the partial one, data on the device)."""
    import jax
    import jax.numpy as jnp
    import optax

    tx, loss_fn = getattr(optax, w.optimizer)(w.lr), jax_loss_fn(w)

    def update(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = [{k: jnp.array(v) for k, v in d.items()} for d in p0.values()]
    state, epoch, n = [params, tx.init(params)], [0], x.shape[0]
    full, rem = divmod(n, w.batch)

    def whole(params, opt_state, x, y, order):
        def body(carry, idx):
            p, s, loss = update(*carry, jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0))
            return (p, s), loss

        idx = order[: full * w.batch].reshape(full, w.batch)
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), idx)
        total = losses.sum() * w.batch
        if rem:
            idx = order[full * w.batch :]
            params, opt_state, loss = update(params, opt_state, x[idx], y[idx])
            total += loss * rem
        return params, opt_state, total / n

    step = jax.jit(update, donate_argnums=(0, 1))
    if mode == "step":
        xd, yd = jnp.asarray(x), jnp.asarray(y)

        def run_step():
            state[0], state[1], loss = step(*state, xd, yd)
            return loss.block_until_ready()

        return run_step
    scan, xd, yd = jax.jit(whole, donate_argnums=(0, 1)), jnp.asarray(x), jnp.asarray(y)

    def run():
        order = permutation(epoch[0], n)
        epoch[0] += 1
        if mode == "scan":
            state[0], state[1], loss = scan(*state, xd, yd, jnp.asarray(order, jnp.int32))
            return float(loss)
        losses = []
        for idx in batches(order, w.batch):
            state[0], state[1], loss = step(*state, x[idx], y[idx])
            losses.append((idx.size, loss))
        return sum(k * float(v) for k, v in losses) / n

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
    out = []
    xb, yb = x[: w.batch], y[: w.batch]
    for b in backends:
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
