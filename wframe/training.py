"""Pure train and eval steps, compiled once, and the fit loop that drives them.

The model holds the params; this module runs the loop. The backend of every compiled function
is the backend of the model's arrays, never the ambient one, so a step behaves the same wherever
it is called or retraced.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe.backends import Backend, backend_of
from wframe.callbacks import CallbackList, History, ProgressBar
from wframe.layers import combinators
from wframe.random import array_key, fold_in, generator
from wframe.tree import tree_leaves
from wframe.types import Params, State


class TrainState(NamedTuple):
    """Everything a train step updates: the model's params and state, the optimizer's state."""

    params: Params
    state: State
    opt_state: Any


def make_grad_fn(layer, loss: losses_mod.Loss) -> Callable:
    """``(params, state, x, y, key) -> (loss, grads, new_state, pred)`` for any backend.

    The strategy follows the arrays: where their backend has autodiff (JAX) the gradient comes
    from differentiating ``layer``'s forward (asked for no backprop closures); elsewhere from
    the chain of hand-written ``backprop`` closures.
    """

    def grad_fn(params, state, x, y, key=None):
        backend = backend_of(x)
        if backend.has_autodiff:

            def objective(p):
                pred, new_state, _ = layer.apply(p, state, x, train=True, key=key, vjp=False)
                return loss(pred, y)[0], (new_state, pred)

            (value, (new_state, pred)), grads = backend.value_and_grad(objective, has_aux=True)(
                params
            )
            return value, grads, new_state, pred
        pred, new_state, backprop = layer.apply(params, state, x, train=True, key=key)
        value, dpred = loss(pred, y)
        return value, backprop(dpred, input_grad=False)[1], new_state, pred

    return grad_fn


def _update_fn(optimizer, backend) -> Callable:
    """``(params, grads, opt_state) -> (params, opt_state)``: fused in place where it can be."""
    # Traced code (JAX) gets the pure update, which XLA fuses; NumPy updates the owned buffers
    # in place where the optimizer has a fused form (it falls back to the pure path itself).
    fused = None if backend.has_autodiff else optimizers_mod.fused(optimizer)
    if fused is not None:
        return fused

    def update(params, grads, opt_state):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optimizers_mod.apply_updates(params, updates), opt_state

    return update


def _core(layer, loss, optimizer, metrics, backend, guard: bool = True) -> Callable:
    """``(ts, x, y, key, allowed) -> (ts, value, metric values, ok)`` with the finite guard
    (without it, ``ok`` is still computed but a bad step is applied)."""
    grad_fn = make_grad_fn(layer, loss)
    update = _update_fn(optimizer, backend)
    metric_fns = [losses_mod.METRICS[name] for name in metrics]

    def core(ts, x, y, key, allowed):
        xp = backend.xp
        value, grads, new_state, pred = grad_fn(ts.params, ts.state, x, y, key)
        # As optax.apply_if_finite: a step whose loss or gradients are not finite changes
        # nothing, so the weights left are those of the last finite step.
        total = value + sum(xp.sum(g) for g in tree_leaves(grads))
        ok = xp.isfinite(total) & allowed
        # On JAX both branches are computed and selected elementwise (fit runs unguarded and
        # replays guarded instead, see fit; make_train_step has no later point to replay from).

        def apply(ts):
            params, opt_state = update(ts.params, grads, ts.opt_state)
            return TrainState(params, new_state, opt_state)

        ts = backend.cond(ok, apply, lambda ts: ts, ts) if guard else apply(ts)
        return ts, value, [fn(pred, y) for fn in metric_fns], ok

    return core


def make_train_step(model, loss: Any, optimizer: Any, *, metrics: tuple[str, ...] = ()):
    """A pure ``step(train_state, x, y, key=None) -> (train_state, logs)``, compiled once.

    Args:
      model: a built :class:`~wframe.Sequential` (its backend compiles the step).
      loss: a loss name or :class:`~wframe.losses.Loss`.
      optimizer: an optimizer name or ``(init, update)`` transformation (optax's on JAX).
      metrics: names from :data:`wframe.losses.METRICS` to log next to the loss.

    Returns:
      The step. ``train_state`` is consumed: donated on JAX, updated in place on NumPy; keep
      the returned one. A step whose loss or gradients are not finite returns the params
      unchanged (``logs["loss"]`` shows the bad value).
    """
    loss = losses_mod.get(loss)
    optimizer = optimizers_mod.get(optimizer)
    backend = model.backend
    core = _core(model, loss, optimizer, metrics, backend)

    def step(train_state, x, y, key=None):
        ts, value, values, _ = core(train_state, x, y, key, True)
        return ts, {"loss": value, **dict(zip(metrics, values, strict=True))}

    return backend.jit(step, donate_argnums=(0,))


def make_eval_step(model, loss, *, metrics: tuple[str, ...] = ()) -> Callable:
    """A pure ``step(params, state, x, y) -> logs`` in inference mode, compiled once."""
    loss = losses_mod.get(loss)
    metric_fns = {name: losses_mod.METRICS[name] for name in metrics}

    def step(params, state, x, y):
        pred, _, _ = model.apply(params, state, x, train=False, vjp=False)
        return {"loss": loss(pred, y)[0], **{name: fn(pred, y) for name, fn in metric_fns.items()}}

    return model.backend.jit(step)


def make_runner(
    model, loss, optimizer, metrics: tuple[str, ...], steps: int, guard: bool = True,
    tail: int = 0,
) -> Callable:
    """``run(ts, acc, x, y, order, start, first_step, key0, fresh) -> (ts, acc)``: ``steps``
    train steps on the batches ``order[start : start + steps]`` (rows of example indices),
    gathered on the device, in one compiled call (a ``lax.scan`` on JAX when ``steps > 1``).

    ``acc = (sums, bad)``: ``sums`` the size-weighted loss and metrics of the finite steps and
    their example count, ``bad`` the first non-finite step (-1 if none), after which updates are
    skipped. ``fresh`` zeroes ``acc`` first (a new epoch) without a separate device call.
    ``guard=False`` applies non-finite steps too (``bad`` is still recorded): the fit loop runs
    that and replays the call guarded only when ``bad`` says so. With ``tail > 0`` the call is a
    whole epoch: ``order`` is the flat permutation, cut into ``steps`` full batches and a last
    batch of ``tail`` examples, all in the one compiled call.
    """
    backend = model.backend
    core = _core(model, loss, optimizer, metrics, backend, guard)
    stochastic = model.uses_key
    xp = backend.xp
    x_buffers: dict = {}  # the batch buffers NumPy reuses (per runner: one fit at a time)
    y_buffers: dict = {}

    def one(carry, i, x, y, order, start, first_step, key0):
        ts, (sums, bad) = carry
        idx = xp.take(order, start + i, axis=0)
        # Into buffers reused from step to step where the backend can (NumPy); nothing holds
        # a batch past its step.
        xb, yb = backend.gather(x, idx, x_buffers), backend.gather(y, idx, y_buffers)
        step = first_step + i
        key = None
        if stochastic:
            counter = xp.asarray(step, dtype=xp.uint32)
            key = key0 + xp.asarray([0, 1], dtype=xp.uint32) * counter
        ts, value, values, ok = core(ts, xb, yb, key, bad < 0)
        size = idx.shape[0]

        def add(acc):  # scalars, not a stacked vector: cheaper on NumPy, the same under jit
            new = (v * size for v in (value, *values))
            sums = (a + v for a, v in zip(acc[0][:-1], new, strict=True))
            return (*sums, acc[0][-1] + size), acc[1]

        def skip(acc):  # record the first non-finite step
            return acc[0], xp.where(acc[1] < 0, xp.asarray(step, dtype=xp.int32), acc[1])

        return (ts, backend.cond(ok, add, skip, (sums, bad))), None

    def run(ts, acc, x, y, order, start, first_step, key0, fresh):
        acc = backend.cond(
            fresh,
            lambda a: (tuple(xp.zeros_like(s) for s in a[0]), xp.full_like(a[1], -1)),
            lambda a: a,
            acc,
        )
        rows, carry = order, (ts, acc)
        if tail:
            cut = order.shape[0] - tail
            last = xp.reshape(order[cut:], (1, tail))
            rows = xp.reshape(order[:cut], (steps, cut // steps)) if steps else None
        if steps == 1:
            carry = one(carry, 0, x, y, rows, start, first_step, key0)[0]
        elif steps:
            body = lambda c, i: one(c, i, x, y, rows, start, first_step, key0)  # noqa: E731
            carry = backend.scan(body, carry, xp.arange(steps, dtype=xp.int32))[0]
        if tail:
            carry = one(carry, 0, x, y, last, 0, first_step + steps, key0)[0]
        return carry

    return backend.jit(run, donate_argnums=(0,))


def _zero_acc(backend, dtype: str, n: int) -> tuple:
    xp, dt = backend.xp, backend.dtype(dtype)
    return tuple(xp.zeros((), dtype=dt) for _ in range(n + 1)), xp.asarray(-1, dtype=xp.int32)


def _host_logs(backend, acc: tuple, names: tuple[str, ...]) -> tuple[dict[str, float], int]:
    sums, bad = backend.to_host(acc)  # one transfer on JAX
    sums = [float(s) for s in sums]
    count = sums[-1]
    totals = zip(names, sums[:-1], strict=True)
    logs = {name: total / count if count else math.nan for name, total in totals}
    return logs, int(bad)


def fit(model, x, y, *, epochs, batch_size, validation, shuffle, seed, verbose, callbacks,
        initial_epoch, steps_per_execution) -> History:
    """The loop behind :meth:`wframe.Sequential.fit`; arguments are already checked and ``x``,
    ``y`` (and ``validation = (x_val, y_val)`` or ``None``) are on the model's backend."""
    backend = model.backend
    loss, optimizer = model.loss, model.optimizer
    metrics = (loss.metric,) if loss.metric else ()
    names = ("loss", *metrics)
    n = x.shape[0]
    full, rest = divmod(n, batch_size)
    steps = full + (rest > 0)
    per_call = full if steps_per_execution == "epoch" else min(steps_per_execution, full)
    history = History()
    cbs = [history, *(callbacks or [])]
    if verbose:
        cbs.append(ProgressBar(lines=verbose == 2))
    cb = CallbackList(cbs, model, {"epochs": epochs, "steps": steps, "verbose": verbose})
    model.stop_training = False
    # Owned copies: the steps donate (JAX) or update in place (NumPy) what they are given,
    # and the arrays the user holds must stay valid.
    ts = backend.copy(TrainState(model.params, model.state, model.opt_state))
    shuffle_seed = model.seed if seed is None else seed
    # Neither is donated, so they are made once per model (eager device ops cost ~50 us each).
    key0 = model._cached(("key0", shuffle_seed), lambda: array_key(shuffle_seed, 0, backend))
    acc = model._cached(("acc", len(names)), lambda: _zero_acc(backend, model.dtype, len(names)))
    # Only callbacks of the user's may read model.params between epochs: publish copies then.
    publish = bool(callbacks)
    runners: dict[tuple, Callable] = {}
    # A step that is not finite must change nothing. NumPy branches on it for free; under jit
    # that takes a select over the params and optimizer state, which doubles a small step's
    # cost on XLA:CPU (measured). So JAX runs unguarded and, at each sync point, checks the
    # first bad step: if there is one, it replays the calls since the last sync point, guarded,
    # from a copy taken there. Same results, and the copy costs one call per sync point.
    guard = not backend.has_autodiff
    checkpoint = None if guard else (backend.copy(ts), acc)
    pending: list = []
    cb.on_train_begin()
    epoch_logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        life = model._epochs  # the model's own epoch count: it alone picks the permutation
        order = generator(fold_in(shuffle_seed, life)).permutation(n) if shuffle else np.arange(n)
        order = order.astype(np.int32)
        whole = steps_per_execution == "epoch" and rest > 0  # one call, the last batch in it
        if whole:
            flat = backend.asarray(order)
        else:
            rows = backend.asarray(order[: full * batch_size].reshape(full, batch_size))
            last = backend.asarray(order[full * batch_size :].reshape(1, rest)) if rest else None
        cb.on_epoch_begin(epoch)
        step0, done, synced = model._steps, 0, time.perf_counter()
        bad = -1
        while done < steps and not model.stop_training:
            if whole:
                spec, chunk, start = (full, rest), flat, 0
            elif done < full:
                spec, chunk, start = (min(per_call, full - done), 0), rows, done
            else:
                spec, chunk, start = (1, 0), last, 0
            run = runners.get(spec) or runners.setdefault(
                spec, model._compiled_fn("run", loss, optimizer, metrics, spec[0], guard, spec[1])
            )
            cb.batch_begin(done)
            args = (x, y, chunk, start, (step0 + done) % 2**31, key0, done == 0)
            ts, acc = run(ts, acc, *args)
            pending.append((spec, args))
            done += spec[0] + (spec[1] > 0)
            now = time.perf_counter()
            batch_logs = None
            if cb.needs_batch_logs or now - synced > 0.1 or done == steps:
                batch_logs, bad = _host_logs(backend, acc, names)
                if bad >= 0 and not guard:  # replay since the checkpoint, guarded: exact
                    ts, acc = checkpoint
                    for (k, tail), args_ in pending:
                        replay = model._compiled_fn("run", loss, optimizer, metrics, k, True, tail)
                        ts, acc = replay(ts, acc, *args_)
                    batch_logs, bad = _host_logs(backend, acc, names)
                elif not guard:
                    checkpoint = (backend.copy(ts), acc)
                pending = []
                synced, epoch_logs = now, batch_logs
            if bad >= 0:
                break
            cb.batch_end(done - 1, batch_logs)
        model._steps = step0 + done
        if bad >= 0:
            warnings.warn(
                f"fit: the loss or gradients became NaN or inf at step {bad + 1} (epoch "
                f"{epoch + 1}, batch {bad - step0 + 1}); training stopped with the weights of the "
                f"last finite step. Lower the learning rate, clip gradients or check the data.",
                RuntimeWarning,
                stacklevel=3,
            )
            break
        if done < steps:  # stop_training mid-epoch: the epoch is not complete
            break
        epoch_logs = dict(epoch_logs)  # read with the last batch: done == steps forces it
        if publish and epoch < epochs - 1:  # copies: the next steps consume what they are given
            model._publish(backend.copy(ts))
        model._epochs += 1
        if validation is not None:
            val = model._evaluate(*validation, loss, max(batch_size, 256), ts.params, ts.state)
            epoch_logs.update({f"val_{k}": v for k, v in val.items()})
        cb.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    model._publish(ts)
    cb.on_train_end(epoch_logs)
    return history


def check_optimizer(optimizer: Any, backend: Backend, *, moving: bool = False) -> None:
    """Refuse an optimizer that cannot run on ``backend`` (optax outside JAX)."""
    module = getattr(type(optimizer), "__module__", "") or ""
    if module.split(".")[0] == "optax" and not backend.has_autodiff:
        if moving:
            raise TypeError(
                f"cannot move the model to '{backend.name}': its optimizer is an optax "
                "transformation, which runs on the jax backend only. Set a wframe optimizer "
                "first (model.compile(optimizer=wf.optimizers.adam(...))), which runs on every "
                "backend"
            )
        raise TypeError(
            f"the optimizer is an optax transformation, which runs on the jax backend only, but "
            f"the model lives on '{backend.name}'. Use wframe's own (wf.optimizers.adam(...), "
            "sgd, adamw, rmsprop, chain, ...), which run on every backend, or move the model "
            "with model.to_backend('jax')"
        )


def check_opt_state(opt_state: Any, backend: Backend) -> None:
    for leaf in tree_leaves(opt_state):
        if hasattr(leaf, "shape") and backend_of(leaf) is not backend:
            raise TypeError(
                f"the optimizer built its state on backend '{backend_of(leaf).name}', but the "
                f"model lives on '{backend.name}'; use an optimizer written for "
                f"'{backend.name}' (wf.optimizers run on every backend)"
            )


def warn_softmax_with_logits(model, loss: losses_mod.Loss) -> None:
    if not getattr(loss, "from_logits", False):
        return
    layer: Any = model
    while layer.children():
        if not isinstance(layer, combinators.Sequential):
            return
        layer = layer.layers[-1]
    activation = getattr(layer, "activation", None)
    if activation == "softmax" or getattr(activation, "__name__", None) == "softmax":
        warnings.warn(
            f"the model's last layer {layer.label} applies softmax, but loss '{loss.name}' "
            "expects logits and applies softmax itself (a double softmax trains badly). Remove "
            f"the activation, or pass loss=wf.losses.get('{loss.name}', from_logits=False)",
            UserWarning,
            stacklevel=3,
        )
