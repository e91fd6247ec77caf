"""The fit loop: it drives the compiled runners of :mod:`wframe.training` over the epochs,
reads the logs at sync points, replays a non-finite stretch guarded, and calls the callbacks.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import numpy as np

from wframe.callbacks import CallbackList, History, ProgressBar
from wframe.callbacks.base import _overrides
from wframe.random import array_key, fold_in, generator
from wframe.training import TrainState, log_names


def _zero_acc(backend, dtype: str, n: int, stats: int = 0) -> tuple:
    xp, dt = backend.xp, backend.dtype(dtype)
    sums = [xp.zeros((), dtype=dt) for _ in range(n + 1)]
    if stats:  # the statistics' vector, before the count
        sums.insert(n, xp.zeros((stats,), dtype=dt))
    return tuple(sums), xp.asarray(-1, dtype=xp.int32)


def _host_logs(backend, acc: tuple, names: tuple[str, ...]) -> tuple[dict[str, float], int, list]:
    """The epoch's running means of ``names`` (the first sums), the first bad step and every
    sum as a host float (the last one the example count)."""
    sums, bad = backend.to_host(acc)  # one transfer on JAX
    if len(sums) > len(names) + 1:  # spread the statistics' vector
        sums = (*sums[:-2], *sums[-2], sums[-1])
    sums = [float(s) for s in sums]
    count = sums[-1]
    totals = zip(names, sums[: len(names)], strict=True)
    logs = {name: total / count if count else math.nan for name, total in totals}
    return logs, int(bad), sums


def _call_stats(now: list, before: list, names: tuple[str, ...]) -> dict[str, float]:
    """Each statistic's mean over the steps of the call just run: the difference of two
    readings of the running sums (``names`` are the last ones before the count) over the
    examples in between; with no finite step in between, only the non-finite ones."""
    count = now[-1] - before[-1]
    out = {}
    first = len(now) - 1 - len(names)
    for name, a, b in zip(names, now[first:-1], before[first:-1], strict=True):
        if count or not math.isfinite(a - b):
            out[name] = (a - b) / count if count else a - b
    return out


def _owned(model, backend, strategy=None) -> TrainState:
    # Copies: the steps donate (JAX) or update in place (NumPy) what they are given, and the
    # arrays the user (or a callback) holds must stay valid.
    ts = backend.copy(
        TrainState(model.params, model.state, model.opt_state, model.masks, model.loss_scale)
    )
    return ts if strategy is None else strategy.place(ts)


def _arrays(model) -> tuple:
    return model._params, model._state, model.opt_state, model._masks


def _changed(model, seen: tuple) -> bool:
    """Whether a callback assigned the model's params, state, optimizer state or masks."""
    return any(a is not b for a, b in zip(_arrays(model), seen, strict=True))


def _resume(model, backend, guard: bool, acc: tuple, strategy=None) -> tuple:
    """``(ts, checkpoint, seen)`` from the arrays a callback assigned to the model (copied)."""
    ts = _owned(model, backend, strategy)
    return ts, (None if guard else (backend.copy(ts), acc)), _arrays(model)


def fit(
    model,
    x,
    y,
    *,
    epochs,
    batch_size,
    validation,
    shuffle,
    seed,
    verbose,
    callbacks,
    initial_epoch,
    steps_per_execution,
    clip=None,
    strategy=None,
) -> History:
    """The loop behind :meth:`wframe.Sequential.fit`; arguments are already checked and ``x``,
    ``y`` (and ``validation = (x_val, y_val)`` or ``None``) are on the model's backend.

    Callbacks see the model's current arrays in ``on_epoch_end`` (and, for those with
    ``needs_weights``, in ``on_train_batch_end``: the live training buffers), and whatever they
    assign to ``model.params``/``state``/``opt_state``/``masks`` there is what training goes on
    with. When a callback has ``needs_grad_stats``, the runners log per-parameter statistics
    too (:func:`wframe.grad_stats.grad_stats`), every call is read, and the callbacks overriding
    ``on_grad_stats`` get each call's means (the difference of two readings of the running
    sums); they stay out of the logs.
    """
    backend = model.backend
    loss, optimizer = model.loss, model.optimizer
    metrics = (loss.metric,) if loss.metric else ()
    names = log_names(model, loss, clip)
    n = x.shape[0]
    if strategy is not None:  # per-process data: this process's rows of each (global) batch
        batch_size = strategy.process_batch(batch_size)
    full, rest = divmod(n, batch_size)
    steps = full + (rest > 0)
    per_call = full if steps_per_execution == "epoch" else min(steps_per_execution, full)
    history = History()
    cbs = [history, *(callbacks or [])]
    if verbose:
        cbs.append(ProgressBar(lines=verbose == 2))
    cb = CallbackList(cbs, model, {"epochs": epochs, "steps": steps, "verbose": verbose})
    model.stop_training = False
    cb.on_train_begin()  # before the arrays are taken: a callback may set them up here
    # A callback that restored a backup (BackupAndRestore) sets where training stopped: the
    # epoch to go on with and how many of its batches were done. That wins over initial_epoch.
    resume, model._resume_at = model._resume_at, None
    initial_epoch, skip = resume if resume is not None else (initial_epoch, 0)
    ts = _owned(model, backend, strategy)
    # With a strategy: the data on every device (each step shards its batch), or kept by each
    # process for ``feed`` to hand each call its batches (per-process data).
    feeds = strategy is not None and strategy.feeds_batches
    if strategy is not None:
        x, y = strategy.data(x, y)
    seen = _arrays(model)
    weights = any(getattr(c, "needs_weights", False) for c in cbs)
    # Per-parameter statistics are compiled in only when a callback asks for them; they go to
    # the callbacks' on_grad_stats, one reading per compiled call, never into the logs.
    stats = any(getattr(c, "needs_grad_stats", False) for c in cbs)
    stat_names = log_names(model, loss, clip, stats=True)[len(names) :] if stats else ()
    stat_cbs = [c for c in cb.callbacks if _overrides(c, "on_grad_stats")] if stats else []
    each_batch = cb.needs_batch_logs or weights or stats
    shuffle_seed = model.seed if seed is None else seed
    # Neither is donated, so they are made once per model (eager device ops cost ~50 us each).
    key0 = model._cached(("key0", shuffle_seed), lambda: array_key(shuffle_seed, 0, backend))
    if strategy is not None:  # NcclDataParallel's ranks draw their own dropout masks
        key0 = strategy.fold_key(key0)
    width = len(names) + len(stat_names)
    acc = model._cached(
        ("acc", len(names), len(stat_names)),
        lambda: _zero_acc(backend, model.dtype, len(names), len(stat_names)),
    )
    # Only callbacks of the user's may read model.params between epochs: publish copies then.
    publish = bool(callbacks)
    runners: dict[tuple, Callable] = {}

    def runner(steps: int, tail: int, guarded: bool) -> Callable:
        return model._compiled_fn(
            "run", loss, optimizer, metrics, steps, guarded, tail, stats, clip, strategy
        )

    # A step that is not finite must change nothing. NumPy branches on it for free; under jit
    # that takes a select over the params and optimizer state, which doubles a small step's
    # cost on XLA:CPU (measured). So JAX runs unguarded and, at each sync point, checks the
    # first bad step: if there is one, it replays the calls since the last sync point, guarded,
    # from a copy taken there. Same results, and the copy costs one call per sync point.
    guard = not backend.has_autodiff
    checkpoint = None if guard else (backend.copy(ts), acc)
    pending: list = []
    epoch_logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        life = model._epochs  # the model's own epoch count: it alone picks the permutation
        order = generator(fold_in(shuffle_seed, life)).permutation(n) if shuffle else np.arange(n)
        order = order.astype(np.int32)
        # One call, the last batch in it (fed batches: the last one is a call of its own).
        whole = steps_per_execution == "epoch" and rest > 0 and not feeds
        if whole:
            flat = backend.asarray(order)
        else:
            rows = backend.asarray(order[: full * batch_size].reshape(full, batch_size))
            last = backend.asarray(order[full * batch_size :].reshape(1, rest)) if rest else None
        cb.on_epoch_begin(epoch)
        if publish and _changed(model, seen):  # e.g. a new learning rate: go on with it
            ts, checkpoint, seen = _resume(model, backend, guard, acc, strategy)
        first, skip = skip, 0  # batches of this epoch done before a restored backup
        step0, done, synced = model._steps - first, first, time.perf_counter()
        bad, before = -1, [0.0] * (width + 1)  # the sums the epoch's first call starts from
        while done < steps and not model.stop_training:
            if whole:
                spec, chunk, start = (full, rest), flat, 0
            elif done < full:
                spec, chunk, start = (min(per_call, full - done), 0), rows, done
            else:
                spec, chunk, start = (1, 0), last, 0
            run = runners.get(spec) or runners.setdefault(spec, runner(*spec, guard))
            cb.batch_begin(done)
            args = (x, y, chunk, start, (step0 + done) % 2**31, key0, done == first)
            if feeds:  # this call's batches: each process's rows, assembled over processes
                args = (*strategy.feed(x, y, chunk, start, spec[0]), *args[4:])
            ts, acc = run(ts, acc, *args)
            pending.append((spec, args))
            done += spec[0] + (spec[1] > 0)
            model._steps = step0 + done  # current in the batch hooks (checkpoints record it)
            now = time.perf_counter()
            batch_logs = None
            if each_batch or now - synced > 0.1 or done == steps:
                batch_logs, bad, sums = _host_logs(backend, acc, names)
                if bad >= 0 and not guard:  # replay since the checkpoint, guarded: exact
                    ts, acc = checkpoint
                    for (k, tail), args_ in pending:
                        ts, acc = runner(k, tail, True)(ts, acc, *args_)
                    batch_logs, bad, sums = _host_logs(backend, acc, names)
                elif not guard:
                    checkpoint = (backend.copy(ts), acc)
                pending = []
                if ts.loss_scale is not None:  # mixed_float16: the scale the next step uses
                    batch_logs["loss_scale"] = float(backend.to_numpy(ts.loss_scale.scale))
                synced, epoch_logs = now, batch_logs
                if stats:  # synced at every call: this reading minus the last is this call
                    reading, before = _call_stats(sums, before, stat_names), sums
                    for c in stat_cbs if reading else ():
                        c.on_grad_stats(step0 + done, dict(reading))
            if bad >= 0:
                break
            if weights:  # the live buffers: a callback that keeps them must copy them
                model._publish(ts)
                seen = _arrays(model)
            cb.batch_end(done - 1, batch_logs)
            if weights and _changed(model, seen):
                ts, checkpoint, seen = _resume(model, backend, guard, acc, strategy)
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
        if publish:  # copies: the next steps consume what they are given
            model._publish(backend.copy(ts))
            seen = _arrays(model)
        model._epochs += 1
        if validation is not None:
            val = model._evaluate(
                *validation, loss, max(batch_size, 256), ts.params, ts.state, strategy=strategy
            )
            epoch_logs.update({f"val_{k}": v for k, v in val.items()})
        cb.on_epoch_end(epoch, epoch_logs)
        if publish and _changed(model, seen):  # a callback set new arrays: go on with them
            ts, checkpoint, seen = _resume(model, backend, guard, acc, strategy)
        if model.stop_training:
            break
    model._publish(ts)
    cb.on_train_end(epoch_logs)
    return history
