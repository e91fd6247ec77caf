"""The compiled runner: several train steps over batches gathered on the device, in one call
(a ``lax.scan`` on JAX), with the epoch's running sums and the first non-finite step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from wframe import optimizers as optimizers_mod
from wframe.optimizers import clipping
from wframe.training.grad_stats import grad_stats
from wframe.training.step import core_step, log_names
from wframe.training.tracker import NOTHING, Tracker
from wframe.tree import split, tree_leaves
from wframe.types import Weighted


class FitSetup(NamedTuple):
    """What a ``fit`` trains with, the same for all its calls.

    Attributes:
      loss: the compiled loss.
      optimizer: the ``(init, update)`` transformation.
      metrics: what is logged after the loss (a :class:`~wframe.training.tracker.Tracker`;
        default: nothing).
      clip: gradient clipping (a :class:`~wframe.optimizers.clipping.Clip`), or ``None``.
      strategy: a distributed strategy, or ``None`` for one device.
      stats: whether per-parameter gradient statistics are logged (see :func:`make_runner`).
    """

    loss: Any
    optimizer: Any
    metrics: Tracker = NOTHING
    clip: clipping.Clip | None = None
    strategy: Any = None
    stats: bool = False


class RunSpec(NamedTuple):
    """The shape of one compiled call.

    Attributes:
      steps: the full batches it trains.
      tail: the examples of a last, partial batch (0: none); with one, the call is a whole
        epoch.
      guarded: apply the finite guard (a non-finite step changes nothing) or not.
      donate: consume its train state (donated on JAX, updated in place on NumPy) or not.
      checked: unguarded on a traced backend, check its params after its steps
        (:func:`make_params_check`), or leave that to the guard at the next sync point
        (:func:`sync_point_check`).
    """

    steps: int
    tail: int = 0
    guarded: bool = True
    donate: bool = True
    checked: bool = True


def make_runner(model, setup: FitSetup, spec: RunSpec) -> Callable:
    """``run(ts, acc, x, y, order, start, first_step, key0, fresh) -> (ts, acc)``: ``spec.steps``
    train steps on the batches ``order[start : start + steps]`` (rows of example indices),
    gathered on the device, in one compiled call (a ``lax.scan`` on JAX when ``steps > 1``).

    ``acc = (sums, bad)``: ``sums`` the size-weighted loss and metrics of the finite steps and
    their example count, ``bad`` the first non-finite step (-1 if none), after which updates are
    skipped. ``fresh`` zeroes ``acc`` first (a new epoch) without a separate device call.
    ``guarded=False`` applies non-finite steps too and still records ``bad`` (from each step,
    or from the params after the call, :func:`make_params_check`): the fit loop replays the call
    guarded only when it says so. With ``tail > 0`` the call is a whole epoch: ``order`` is the
    flat permutation, cut into ``steps`` full batches and a last batch of ``tail`` examples.

    With ``setup.stats`` the step also logs :func:`grad_stats`' per-parameter statistics, summed
    in one vector (``sums``' entry before the count) and, for the first non-finite step, its
    non-finite ones too: a reading names the params that broke. Without it none is traced.
    With a ``setup.strategy`` (:class:`wframe.distributed.DataParallel`) each batch is sharded
    over its devices and the train state kept replicated; when it feeds batches
    (per-process data) ``x``, ``y`` are the call's batches stacked, ``(steps, batch, ...)``,
    and ``order`` is ``arange(steps)``. A strategy's ``sync`` (NcclDataParallel) averages each
    step's gradients, loss and metrics over its ranks (:func:`~wframe.training.step.core_step`).

    Args:
      model: the built model whose backend and layers the call runs.
      setup: what the fit trains with (:class:`FitSetup`).
      spec: the call's shape (:class:`RunSpec`).
    """
    backend, strategy, steps, tail = model.backend, setup.strategy, spec.steps, spec.tail
    xp = backend.xp
    after = make_params_check(model, setup) if _checks_after(model, setup, spec) else None
    one = _batch_step(model, setup, spec, check=spec.guarded or not deferrable(model, setup))

    def zeroed(a):
        return tuple(xp.zeros_like(s) for s in a[0]), xp.full_like(a[1], -1)

    host = backend.on_host  # a Python branch: no closures made per call

    def run(ts, acc, x, y, order, start, first_step, key0, fresh):
        if host:
            acc = zeroed(acc) if fresh else acc
        else:
            acc = backend.cond(fresh, zeroed, lambda a: a, acc)
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
        if after is not None:
            carry = after(carry, first_step)
        if strategy is not None:
            carry = (strategy.keep_replicated(carry[0]), carry[1])
        return carry

    return backend.jit(run, donate_argnums=(0,) if spec.donate else ())


def deferrable(model, setup: FitSetup) -> bool:
    """Whether a fit's steps may go unchecked, their params checked after them
    (:func:`make_params_check`): where the optimizer declares that a non-finite gradient makes
    a non-finite param (:func:`~wframe.optimizers.propagates_nonfinite`) and nothing between
    them makes an infinity finite again (clipping, a loss scale) or needs each step's verdict
    (statistics, a rank's sync)."""
    scaler = getattr(getattr(model, "policy", None), "loss_scale", None)
    return (
        setup.clip is None
        and not setup.stats
        and scaler is None
        and getattr(setup.strategy, "sync", None) is None
        and optimizers_mod.propagates_nonfinite(setup.optimizer)
    )


def _checks_after(model, setup: FitSetup, spec: RunSpec) -> bool:
    """Whether an unguarded traced call checks its params once, after its steps, inside the
    compiled call (a host call's are checked by the fit loop's guard, at its sync points)."""
    traced = model.backend.traced
    return not spec.guarded and traced and spec.checked and deferrable(model, setup)


def make_params_check(model, setup: FitSetup) -> Callable:
    """``after((ts, acc), first_step) -> (ts, acc)``: ``first_step`` recorded in ``acc`` as the
    first non-finite step (where none is yet) when the summed loss, the summed penalty or a
    trainable param is not finite.

    A step's non-finite gradient makes a non-finite param where the optimizer propagates it,
    and a non-finite param stays so (updates are added to it, pruning masks multiply it), so
    the params after the call show what every step's gradients would have: the guarded replay
    that the recorded step sets off then finds the step itself
    (:class:`~wframe.training.guard.FiniteGuard`). The per-gradient sums and the selects on
    the running sums leave each step: a 64-64-10 MLP's step on XLA:CPU runs 26 kernels instead
    of 36 (its ``lax.scan`` body in the optimized HLO).
    """
    names = log_names(model, setup.metrics, setup.clip)
    summed = [0, *([names.index("penalty")] if "penalty" in names else [])]
    xp = model.backend.xp

    def after(carry, first_step):
        ts, (sums, bad) = carry
        frozen = model.frozen  # (a callback may freeze params between a host fit's checks)
        params = split(ts.params, frozen)[0] if frozen else ts.params
        total = sum(sums[i] for i in summed) + sum(xp.sum(p) for p in tree_leaves(params))
        first = (bad < 0) & ~xp.isfinite(total)
        return ts, (sums, xp.where(first, xp.asarray(first_step, dtype=xp.int32), bad))

    return after


def sync_point_check(model, setup: FitSetup) -> Callable:
    """:func:`make_params_check` as the finite guard runs it at a sync point, on the state the
    calls since left (calls that do not check themselves, ``RunSpec.checked`` false): on a
    traced backend one compiled call that computes only the verdict (its params are not
    copied out), compiled once per architecture and logged names (the trainer keeps it)."""
    if not model.backend.traced:
        return make_params_check(model, setup)
    trainer = model.trainer

    def compiled():
        after = make_params_check(trainer.model, setup)  # (the trainer's array-less model)
        return trainer.model.backend.jit(lambda ts, acc, first: after((ts, acc), first)[1][1])

    names = tuple(log_names(model, setup.metrics, setup.clip))
    verdict = trainer.memo(("sync point check", names), compiled)

    def check(carry, first_step):
        ts, (sums, bad) = carry
        return ts, (sums, verdict(ts, (sums, bad), first_step))

    return check


def _batch_step(model, setup: FitSetup, spec: RunSpec, check: bool = True) -> Callable:
    """``one((ts, acc), i, x, y, order, start, first_step, key0) -> ((ts, acc), None)``: the
    train step on the batch of row ``start + i`` of ``order``, gathered on the device, with
    its logged values added to the running sums (a ``lax.scan`` body on JAX); without
    ``check`` an unguarded step is not checked and always adds them."""
    backend, strategy = model.backend, setup.strategy
    stats = grad_stats(model) if setup.stats else None
    stats = stats if stats and stats.params else None  # every param frozen: nothing to measure
    core = core_step(
        model,
        setup.loss,
        setup.optimizer,
        setup.metrics,
        backend,
        spec.guarded,
        setup.clip,
        model.frozen,
        stats,
        getattr(strategy, "sync", None),
        spec.donate,
        check,
    )
    stochastic = model.uses_key
    # Means are summed weighted by the batch size; a metric's statistics as they are.
    raw = (False, *(e.metric is not None for e in setup.metrics.entries))
    xp = backend.xp
    x_buffers: dict = {}  # the batch buffers NumPy reuses (per runner: one fit at a time)
    y_buffers: dict = {}

    host = backend.on_host  # NumPy: a row by indexing, a Python branch on ok

    def one(carry, i, x, y, order, start, first_step, key0):
        ts, acc = carry
        idx = order[start + i] if host else xp.take(order, start + i, axis=0)
        # Into buffers reused from step to step where the backend can (NumPy); nothing holds
        # a batch past its step.
        if isinstance(x, tuple) or isinstance(y, tuple):  # several arrays, or Weighted labels
            xb, yb = _gather(backend, x, idx, x_buffers), _gather(backend, y, idx, y_buffers)
        else:
            xb, yb = backend.gather(x, idx, x_buffers), backend.gather(y, idx, y_buffers)
        if strategy is not None:
            xb, yb = strategy.shard_batch(xb), strategy.shard_batch(yb)
        step = first_step + i
        key = None
        if stochastic:
            counter = xp.asarray(step, dtype=xp.uint32)
            key = key0 + xp.asarray([0, 1], dtype=xp.uint32) * counter
        ts, value, values, ok = core(ts, xb, yb, key, acc[1] < 0)
        # (idx is a step index when the strategy feeds stacked batches: size from the batch)
        size = (xb[0] if isinstance(xb, tuple) else xb).shape[0]
        if host and (ok or ok is None) and stats is None:  # every step on NumPy: no _Logged
            return (ts, _host_add(acc, value, values, size, raw)), None
        logged = _Logged((value, *values), size, step, stats is not None, xp, raw)
        if ok is None:  # unchecked: its params are checked after it (make_params_check)
            return (ts, logged.add(acc)), None
        if host:
            return (ts, logged.add(acc) if ok else logged.skip(acc)), None
        return (ts, backend.cond(ok, logged.add, logged.skip, acc)), None

    return one


def _gather(backend, a, idx, buffers: dict):
    """Rows ``idx`` of an array, or of each array of a tuple (several inputs or outputs) or of
    weighted labels, each into buffers of its own."""
    if isinstance(a, Weighted):
        labels = _gather(backend, a.labels, idx, buffers.setdefault("labels", {}))
        return Weighted(labels, _gather(backend, a.weights, idx, buffers.setdefault("w", {})))
    if isinstance(a, tuple):
        return tuple(backend.gather(v, idx, buffers.setdefault(i, {})) for i, v in enumerate(a))
    return backend.gather(a, idx, buffers)


def _host_add(acc: tuple, value: Any, values: list, size: int, raw: tuple) -> tuple:
    """:meth:`_Logged.add` of a finite step without statistics, on the host: the same sums in
    the same order, without building a ``_Logged`` (every step of a NumPy ``fit``)."""
    sums = acc[0]
    out = [sums[0] + value * size]
    for i, v in enumerate(values, 1):
        out.append(sums[i] + v if i < len(raw) and raw[i] else sums[i] + v * size)
    if len(out) != len(sums) - 1:
        raise ValueError(f"runner: {len(sums) - 1} logged values expected, got {len(out)}")
    out.append(sums[-1] + size)
    return tuple(out), acc[1]


class _Logged(NamedTuple):
    """One step's logged values (the statistics' vector last when ``stats``), its batch size
    and life index: added to the running sums, or recorded as the first non-finite step."""

    values: tuple
    size: Any
    step: Any
    stats: bool
    xp: Any
    raw: tuple = ()  # the leading values summed as they are (a metric's statistics)

    def add(self, acc: tuple) -> tuple:
        # Scalars, not a stacked vector: cheaper on NumPy, the same under jit.
        raw = self.raw + (False,) * (len(self.values) - len(self.raw))
        pairs = zip(acc[0][:-1], self.values, raw, strict=True)
        sums = (a + (v if r else v * self.size) for a, v, r in pairs)
        return (*sums, acc[0][-1] + self.size), acc[1]

    def skip(self, acc: tuple) -> tuple:
        (sums, bad), xp = acc, self.xp
        first = bad < 0
        if self.stats:  # the first bad step's non-finite statistics name what broke
            v = self.values[-1]
            poisoned = sums[-2] + xp.where(first & ~xp.isfinite(v), v, xp.zeros_like(v))
            sums = (*sums[:-2], poisoned, sums[-1])
        return sums, xp.where(first, xp.asarray(self.step, dtype=xp.int32), bad)
