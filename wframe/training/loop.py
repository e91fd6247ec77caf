"""The fit loop: epochs of compiled calls from the :class:`~.epoch_iterator.EpochIterator`,
read at sync points through the :class:`~.guard.FiniteGuard`, published through the
:class:`~.sync.ArraySync`, with the callbacks called around them.

Whatever ends it (its end, ``stop_training``, an exception, Ctrl-C), a ``finally`` leaves the
model holding the arrays of the last completed step and counters that match them.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from wframe import data_rows
from wframe.callbacks import CallbackList, History, ProgressBar
from wframe.callbacks.fit_state import Layout as FitLayout
from wframe.random import array_key
from wframe.training import logs as logs_mod
from wframe.training.epoch_iterator import Call, EpochIterator
from wframe.training.evaluate import evaluate, evaluate_batches
from wframe.training.guard import HOST_REPLAY_BYTES, FiniteGuard
from wframe.training.runner import FitSetup, RunSpec, deferrable, sync_point_check
from wframe.training.step import log_layout, log_names
from wframe.training.sync import ArraySync, Interrupts
from wframe.tree import tree_leaves

#: Without a callback that reads every call, the logs are read at most this often (seconds).
SYNC_EVERY = 0.1


def fit(
    model: Any,
    x: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int,
    validation: tuple | None,
    shuffle: bool,
    seed: int | None,
    verbose: int,
    callbacks: list | None,
    initial_epoch: int,
    steps_per_execution: int | str,
    clip: Any = None,
    strategy: Any = None,
    plan: Any = None,
    validation_freq: int = 1,
    validation_batch_size: int | None = None,
) -> History:
    """The loop behind :meth:`wframe.Model.fit`; arguments are already checked and ``x``,
    ``y`` (and ``validation = (x_val, y_val)`` or ``None``) are on the model's backend.

    Data given as an iterable of batches come as ``plan`` (a
    :class:`~wframe.training.pipeline.BatchPlan`; ``x``, ``y`` are then ``None``), validation
    data as one as ``validation`` (an :class:`~wframe.training.pipeline.EvalBatches`).
    Validation runs after every ``validation_freq``-th epoch (Keras: ``(epoch + 1) % freq ==
    0``), array data in batches of ``validation_batch_size`` (default ``max(batch_size, 256)``).

    Callbacks see the model's arrays in ``on_epoch_end`` (and, for those with
    ``needs_weights``, in ``on_train_batch_end``), and whatever they assign to
    ``model.params``/``state``/``opt_state``/``masks`` there is what training goes on with.
    When a callback has ``needs_grad_stats``, the runners log per-parameter statistics too
    (:func:`wframe.training.grad_stats.grad_stats`), every call is read, and the callbacks
    overriding ``on_grad_stats`` get each call's means; they stay out of the logs.

    Args:
      model: the built, compiled model; its arrays and counters are updated as it trains.
      x, y: the training inputs and labels on the backend (``y`` possibly
        :class:`~wframe.types.Weighted`), or ``None`` with ``plan``.
      epochs, initial_epoch: train until epoch index ``epochs``, from ``initial_epoch``
        (a restored backup's position wins over it).
      batch_size: rows per step (per process, with a strategy that feeds batches).
      validation: ``(x_val, y_val)`` on the backend, an ``EvalBatches``, or ``None``.
      shuffle, seed: reshuffle each epoch; the seed (``None``: the model's) picks the orders.
      verbose: 0 silent, 1 a progress bar, 2 one line per epoch.
      callbacks: the user's :class:`~wframe.callbacks.Callback` instances, or ``None``.
      steps_per_execution: train steps per compiled call, or ``"epoch"``.
      clip: the checked :class:`~wframe.optimizers.clipping.Clip`, or ``None``.
      strategy: a :mod:`wframe.distributed` strategy, or ``None`` for one device.
      plan: the :class:`~wframe.training.pipeline.BatchPlan` of iterable data, or ``None``.
      validation_freq, validation_batch_size: as described above.

    Returns:
      The run's :class:`~wframe.callbacks.History`.
    """
    loop = _Loop(model, x, y, validation, batch_size, clip, strategy)
    loop.val_freq, loop.val_batch = validation_freq, validation_batch_size
    loop.plan = plan or loop.epoch_iterator(data_rows.rows(x), steps_per_execution, shuffle, seed)
    loop.connect(callbacks, epochs, verbose)
    model.stop_training = False
    loop.cb.on_train_begin()  # before the arrays are taken: a callback may set them up here
    start, skip, sums = loop.resume_point(initial_epoch)
    # Small products on one BLAS thread (the numpy backend; wframe.backends.threads).
    threads = model.backend.host_threads(model.count_params() * loop.batch_size)
    with threads, Interrupts() as loop.interrupts:
        try:
            loop.start(sums)
            for epoch in range(start, epochs):
                loop.epoch(epoch, skip, resumed=sums is not None)
                skip, sums = 0, None
                if loop.bad >= 0 or model.stop_training or loop.plan.exhausted:
                    break
        finally:
            loop.plan.close()  # an iterable's prefetching thread
            loop.close()
    if loop.plan.exhausted:
        loop.warn_exhausted()
    loop.cb.on_train_end(loop.logs)
    return loop.history


class _Loop:
    """One ``fit``'s state: the arrays it trains (``ts``), the running sums (``acc``) and the
    life counters of the last completed step (``steps``, ``epochs``)."""

    plan: EpochIterator
    interrupts: Interrupts

    def __init__(self, model, x, y, validation, batch_size, clip, strategy):
        self.model, self.backend, self.strategy = model, model.backend, strategy
        self.validation, self.batch_size, self.clip = validation, batch_size, clip
        if strategy is not None:  # per-process data: this process's rows of each batch
            self.batch_size = strategy.process_batch(batch_size)
        self.feeds = strategy is not None and strategy.feeds_batches
        # With a strategy: the data on every device (each step shards its batch), or kept by
        # each process for ``feed`` to hand each call its batches (per-process data).
        self.x, self.y = (x, y) if strategy is None else strategy.data(x, y)
        self.tracker = model.tracker(model.loss)
        self.layout = log_layout(model, self.tracker, clip)
        self.names = self.layout.names
        self.ts = self.acc = None
        self.sums: list[float] = []  # the last reading of the running sums
        self.steps, self.epochs = model.steps, model.epochs
        self.bad, self.logs, self.unread, self.step0 = -1, {}, False, self.steps
        self._trainer, self._runners, self.calling = None, {}, False
        self.last: tuple = (None, None)

    def epoch_iterator(
        self, n: int, steps_per_execution: int | str, shuffle: bool, seed: int | None
    ) -> EpochIterator:
        """The :class:`EpochIterator` of ``n`` examples (``seed`` ``None``: the model's)."""
        return EpochIterator(
            self.backend,
            n,
            self.batch_size,
            steps_per_execution,
            shuffle=shuffle,
            seed=self.model.seed if seed is None else seed,
            feeds=self.feeds,
            drop_remainder=getattr(self.strategy, "drop_remainder", False),
        )

    def resume_point(self, initial_epoch: int) -> tuple[int, int, list[float] | None]:
        """``(epoch, batch, sums)`` to start from. A callback that restored a backup
        (BackupAndRestore) has set where training stopped: the epoch to go on with, how many of
        its batches were done and their running sums; that wins over ``initial_epoch``."""
        model, state = self.model, self.cb.fit_state
        resume, model.resume_at = model.resume_at, None
        sums, state.restored_sums = state.restored_sums, None
        start, skip = resume if resume is not None else (initial_epoch, 0)
        return start, skip, (sums if resume is not None and skip > 0 else None)

    def connect(self, callbacks: list | None, epochs: int, verbose: int) -> None:
        """The callbacks, and what they make the loop do: read and publish every call or not,
        log per-parameter statistics or not."""
        model = self.model
        self.history = History()
        cbs = [self.history, *(callbacks or [])]
        if verbose:
            cbs.append(ProgressBar(lines=verbose == 2))
        params = {"epochs": epochs, "steps": self.plan.steps, "verbose": verbose}
        self.cb = cb = CallbackList(cbs, model, params)
        stats = cb.needs_grad_stats
        self.stat_names = log_names(model, self.tracker, self.clip, stats=True) if stats else ()
        self.stat_names = self.stat_names[len(self.names) :]
        # What a backup stores of the epoch in progress (BackupAndRestore): its running sums.
        cb.fit_state.layout = FitLayout(
            self.names, tuple(self.layout.sizes()), len(self.stat_names)
        )
        cb.fit_state.read_sums = lambda: self.sums
        self.setup = FitSetup(
            model.loss, model.optimizer, self.tracker, self.clip, self.strategy, stats
        )
        self.each_call = cb.needs_batch_logs or cb.needs_weights or stats
        # Only callbacks of the user's may read the model between epochs: publish copies then.
        self.sync = ArraySync(
            model, self.strategy, per_batch=cb.needs_weights, per_epoch=bool(callbacks)
        )
        # Whether a call consumes its train state. Published every call, a traced backend's
        # calls keep theirs (no donation: the same numbers, no copy); NumPy's in-place
        # optimizers stay (a callback never changes the numbers) and what is published is a copy.
        # An epoch in one call on a traced backend is read after every call: not donated, the
        # call's input stays valid as the guard's replay copy (no copy of the state per epoch).
        once = getattr(self.plan, "one_call", False)
        self.consume = not (self.backend.traced and (cb.needs_weights or once))
        self.guard = self.finite_guard()

    def finite_guard(self) -> FiniteGuard:
        """The guard: in the steps on NumPy, unless the train state is small, the data arrays
        and no callback reads every call, where the optimizer lets the steps go unchecked: then
        the params are checked at each sync point and a bad stretch replayed, as on JAX. On a
        traced backend the same holds for calls of one step (a check in each would be a
        reduction over the params at every step); longer calls check themselves."""
        model, backend, plan = self.model, self.backend, self.plan
        deferred = (
            not self.each_call and isinstance(plan, EpochIterator) and deferrable(model, self.setup)
        )
        if backend.on_host:
            state = sum(getattr(a, "nbytes", 8) for a in tree_leaves(model.train_state))
            at_sync = deferred and state <= HOST_REPLAY_BYTES
        else:  # (CuPy, which does not trace, checks in its steps)
            traced = backend.traced and self.strategy is None
            at_sync = deferred and traced and plan.per_call == 1 and not plan.whole
        check = sync_point_check(model, self.setup) if at_sync else None
        return FiniteGuard(backend, self.layout, self.runner, check)

    def runner(self, spec: RunSpec, guarded: bool | None = None) -> Any:
        """The compiled runner of the iterator's ``spec``, guarded as the guard runs it (or
        as ``guarded`` says: the guard's replay), consuming its input or not; kept per fit."""
        key = spec if guarded is None else (spec, guarded)
        run = self._runners.get(key)
        if run is None:
            guarded = self.guard.in_step if guarded is None else guarded
            checked = self.guard.check is None  # or at the sync points (the guard's check)
            run = self.model.trainer.runner(
                self.setup, spec._replace(guarded=guarded, donate=self.consume, checked=checked)
            )
            self._runners[key] = run
        return run

    def start(self, sums: list[float] | None = None) -> None:
        """Take the model's arrays (after ``on_train_begin``: a callback may have set them),
        and the running sums of the epoch a restored backup was taken in (``sums``, as a
        reading's)."""
        model, backend, seed = self.model, self.backend, self.plan.seed
        self.steps, self.epochs = model.steps, model.epochs
        # Neither is donated, so they are made once per build (eager device ops cost ~50 us).
        key0 = model.trainer.memo(("key0", seed), lambda: array_key(seed, 0, backend))
        # NcclDataParallel's ranks draw their own dropout masks.
        self.key0 = key0 if self.strategy is None else self.strategy.fold_key(key0)
        layout, stats = self.layout, len(self.stat_names)
        self.acc = model.trainer.memo(
            ("acc", layout.names, tuple(layout.sizes()), stats),
            lambda: logs_mod.zero_sums(backend, model.dtype, layout, stats),
        )
        if sums is not None:
            self.acc = logs_mod.restored_sums(backend, model.dtype, layout, stats, sums)
            self.sums = list(sums)
        self.take()

    def take(self) -> None:
        """Go on from the model's arrays (copied where the steps consume what they are given)."""
        if self.model.trainer is not self._trainer:  # a callback changed the frozen set
            self._trainer, self._runners = self.model.trainer, {}
        self.last = (None, None)  # (spec, runner) of the last call; reset with the runners
        self.ts = self.sync.take(copy=self.consume)
        if self.consume and self.strategy is None:  # the calls train a copy of the model's
            self.guard.mark(self.model.train_state, self.acc, copy=False, shared=True)
        else:
            self.guard.mark(self.ts, self.acc, copy=self.consume)

    def epoch(self, epoch: int, first: int, *, resumed: bool = False) -> None:
        """Epoch ``epoch`` from its batch ``first``, then its end as Keras 3 ends it (also
        when a hook set ``stop_training``): the logs of the batches that ran, validation,
        ``on_epoch_end``. ``resumed``: the running sums hold the ``first`` batches already
        (a restored backup's), so its calls add to them and its logs cover all its batches."""
        cb = self.cb
        cb.on_epoch_begin(epoch)
        if self.sync.per_epoch and self.sync.changed():  # e.g. a new learning rate
            self.take()
        self.step0 = self.steps - first
        synced, before, fresh = time.perf_counter(), None, not resumed
        if resumed:  # read at the end even if no call runs (the backup came after the last)
            before, self.unread = self.sums, True
        # A backup after the epoch's last call (before its end) leaves no call to run.
        done = self.plan.steps is not None and first >= self.plan.steps
        if first and not done and getattr(self.plan, "whole", False):
            raise ValueError(
                f"fit: the restored backup stopped after batch {first} of epoch {epoch + 1}, "
                "and steps_per_execution='epoch' runs an epoch in one call from its start; "
                "resume with the steps_per_execution of the interrupted run"
            )
        calls = () if done else self.plan.calls(self.epochs, first)
        for call in calls:
            if self.model.stop_training:
                break
            self.run(call, fresh=fresh)
            fresh, reading, now = False, None, time.perf_counter()
            if self.each_call or now - synced > SYNC_EVERY or call.done == self.plan.steps:
                reading, synced = self.read(), now
                if self.cb.needs_grad_stats:  # a non-finite call's too: they name the culprit
                    self.grad_stats(reading, before, self.step0 + call.done)
                    before = reading.sums
                if self.bad >= 0:
                    return self.warn_bad(epoch)
            if self.sync.per_batch:
                self.sync.publish(self.ts, self.steps, self.epochs, copy=self.consume)
            if cb.has_batch_end:
                cb.batch_end(call.done - 1, reading.logs if reading is not None else None)
            if self.sync.per_batch and self.sync.changed():
                self.take()
        self.end_epoch(epoch)

    def run(self, call: Call, *, fresh: bool) -> None:
        """One compiled call, taken in whole (Ctrl-C waits for it); ``fresh`` zeroes the
        running sums first (an epoch's first call)."""
        spec = call.spec
        done = call.done - spec.steps - (spec.tail > 0)  # batches before the call
        if self.cb.has_batch_begin:
            self.cb.batch_begin(done)
        x, y = (self.x, self.y) if call.data is None else call.data  # an iterable's: its own
        step0 = self.step0
        args = (x, y, call.order, call.start, (step0 + done) % 2**31, self.key0, fresh)
        if self.feeds:  # this call's batches: each process's rows, assembled over processes
            fed = self.strategy.feed(x, y, call.order, call.start, spec.steps)
            args = (*fed, *args[4:])
        interrupts = self.interrupts
        interrupts.holding = self.calling = True  # (inline: this runs at every call)
        try:
            if self.guard.unkept:  # the replay's copy of the state, before this call takes it
                self.guard.keep()
            if spec is self.last[0]:  # the same spec as the last call (the iterator's object)
                run = self.last[1]
            else:
                run = self._runners.get(spec) or self.runner(spec)
                self.last = (spec, run)
            self.ts, self.acc = run(self.ts, self.acc, *args)
            if not self.guard.in_step:
                self.guard.record(spec, args)
            self.steps, self.unread, self.calling = step0 + call.done, True, False
        finally:
            interrupts.holding = False
        if interrupts.pending:
            interrupts.raise_pending()

    def read(self) -> logs_mod.Reading:
        """Read the running sums (replaying a non-finite stretch guarded): a sync point."""
        with self.interrupts.held:
            self.ts, self.acc, reading = self.guard.settle(self.ts, self.acc, copy=self.consume)
            self.unread, self.sums = False, reading.sums
            if reading.bad >= 0:  # the weights are those of the steps before it
                self.bad, self.steps = reading.bad, reading.bad
        logs = dict(reading.logs)
        if self.ts.loss_scale is not None:  # mixed_float16: the scale the next step uses
            logs["loss_scale"] = float(self.backend.to_numpy(self.ts.loss_scale.scale))
        self.logs = logs
        return reading._replace(logs=logs)

    def grad_stats(self, reading: logs_mod.Reading, before: list | None, step: int) -> None:
        """This call's statistics, ``step`` the steps run after it (a non-finite one
        included): this reading of the running sums minus the last one."""
        base = before if before is not None else [0.0] * len(reading.sums)
        stats = logs_mod.call_stats(reading.sums, base, self.stat_names)
        if stats:
            self.cb.on_grad_stats(step, stats)

    def end_epoch(self, epoch: int) -> None:
        if self.unread:  # stop_training after a call that was not read: read it now
            self.read()
            if self.bad >= 0:
                return self.warn_bad(epoch)
        self.epochs += 1
        if self.sync.per_epoch:  # copies where the next steps consume what they are given
            self.sync.publish(self.ts, self.steps, self.epochs, copy=self.consume)
        logs = dict(self.logs)
        if self.validation is not None and (epoch + 1) % self.val_freq == 0:
            logs.update({f"val_{k}": v for k, v in self.validate().items()})
        self.logs = logs
        self.cb.on_epoch_end(epoch, logs)
        if self.sync.per_epoch and self.sync.changed():  # a callback set new arrays
            self.take()

    def validate(self) -> dict[str, float]:
        """The validation logs of the arrays trained so far (``self.ts``)."""
        model = self.model
        if isinstance(self.validation, tuple):
            size = self.val_batch or max(self.batch_size, 256)
            return evaluate(model, *self.validation, model.loss, size, self.ts, self.strategy)
        with self.validation.batches() as batches:  # an iterable's, prepared ahead
            return evaluate_batches(model, batches, model.loss, self.ts)

    def warn_exhausted(self) -> None:
        warnings.warn(
            "fit: the data ran out before epochs * steps_per_epoch batches; training stopped "
            f"after epoch {self.epochs}. Use a generator that does not end, or fewer steps.",
            RuntimeWarning,
            stacklevel=4,
        )

    def warn_bad(self, epoch: int) -> None:
        warnings.warn(
            f"fit: the loss or gradients became NaN or inf at step {self.bad + 1} (epoch "
            f"{epoch + 1}, batch {self.bad - self.step0 + 1}); training stopped with the weights "
            "of the last finite step. Lower the learning rate, clip gradients or check the data.",
            RuntimeWarning,
            stacklevel=5,
        )

    def close(self) -> None:
        """Whatever ends the loop: read what was not read (a non-finite stretch is undone)
        and give the model the arrays and counters of the last completed step. A compiled call
        that itself failed may have consumed its input on a traced backend: the model then
        keeps what was last published (arrays and counters of one step still)."""
        if self.ts is None or (self.calling and self.backend.traced):
            return
        if self.unread:
            self.read()
        self.sync.publish(self.ts, self.steps, self.epochs, copy=False)
