"""The non-finite guard: a step whose loss or gradients are not finite changes nothing.

Under jit a guarded step takes a select over the params and optimizer state, which doubles a
small step's cost on XLA:CPU (measured), so on a traced backend the steps run unguarded and, at
each sync point, the first bad step is checked: if there is one, the calls since the last sync
point are replayed guarded, from a copy taken there. Same results; the copy costs one call per
sync point, taken just before the next call (a fit's last sync point copies nothing; at its
start the model's own arrays serve, which the calls, training a copy of them, leave as they
are, and are copied only for a replay). Where the optimizer propagates a non-finite gradient
into the params (:func:`~wframe.training.runner.deferrable`), the steps do not even check
themselves: the params after them are checked (in the compiled call on JAX; here, at the sync
point, on NumPy).

A call of one step on a traced backend leaves that check to the sync point too (a reduction over
the params in every call cost JAX:CPU ~4% of a small MLP's step). NumPy branches inside the step
on a check of each gradient (~15 us of a small MLP's ~200 us step), unless its train state is
small (:data:`HOST_REPLAY_BYTES`, so that the copy at each sync
point costs less than the checks it saves) and the steps may go unchecked: then it replays too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wframe.training import logs as logs_mod
from wframe.training.runner import RunSpec

#: The largest host train state (params and optimizer state, bytes) that a NumPy ``fit`` copies
#: at each sync point (at most every 0.1 s, or each epoch) instead of checking every gradient at
#: every step: 1 MiB copies in ~0.5 ms on a 2-core VM, 0.5% of 0.1 s.
HOST_REPLAY_BYTES = 2**20


class FiniteGuard:
    """Owns the replay: the copy of the train state at the last sync point and the calls run
    since. ``check((ts, acc), step)``, given where the steps check nothing and nothing else
    checks them (NumPy; calls of one step on a traced backend), marks ``acc`` bad when the
    state is not finite, at each sync point (:func:`~wframe.training.runner.sync_point_check`).
    ``in_step`` says whether the steps guard themselves (no replay needed): on a backend that
    does not trace, without ``check``."""

    def __init__(
        self,
        backend: Any,
        layout: logs_mod.Layout,
        runner: Callable[[RunSpec, bool], Any],
        check: Callable | None = None,
    ):
        self.backend, self.layout, self.runner = backend, layout, runner  # runner(spec, guarded)
        self.in_step = not backend.traced and check is None
        self.check = check
        self._saved: tuple | None = None
        self._pending: list[tuple[RunSpec, tuple]] = []
        #: Whether the marked ``ts`` is to be copied (:meth:`keep`) before the next call.
        self.unkept = False
        self._shared = False

    def mark(self, ts: Any, acc: tuple, *, copy: bool = True, shared: bool = False) -> None:
        """A sync point: ``(ts, acc)`` is what a replay would start from. ``copy``: the next
        call consumes ``ts``, so the loop has it copied first (:meth:`keep`; a mark that no
        call follows, a fit's last, copies nothing). ``shared``: ``ts`` is arrays the calls
        leave as they are (the model's, when the calls train a copy of them), copied only
        if a replay runs."""
        if not self.in_step:
            self._saved, self._pending = (ts, acc), []
            self.unkept, self._shared = copy, shared

    def keep(self) -> None:
        """Copy the marked ``ts``: the loop calls this before a call that would consume it."""
        ts, acc = self._saved
        self._saved, self.unkept = (self.backend.copy(ts), acc), False

    def record(self, spec: RunSpec, args: tuple) -> None:
        """A call run since the last sync point (replayed guarded if a step was bad)."""
        if not self.in_step:
            self._pending.append((spec, args))

    def settle(
        self, ts: Any, acc: tuple, *, copy: bool = True
    ) -> tuple[Any, tuple, logs_mod.Reading]:
        """``(ts, acc, reading)`` at a sync point: the running sums read on the host and, when
        a step was bad and the steps ran unguarded, the state replayed so that nothing after
        the first bad step applied. Marks a new sync point (``copy`` as in :meth:`mark`)."""
        if self.check is not None and self._pending:
            ts, acc = self.check((ts, acc), 0)  # any step: the replay finds the first bad one
        reading = logs_mod.read(self.backend, acc, self.layout)
        if reading.bad >= 0 and not self.in_step and self._pending:
            ts, acc = self._saved
            ts = self.backend.copy(ts) if self._shared else ts  # (the replay consumes it)
            for spec, args in self._pending:
                ts, acc = self.runner(spec, True)(ts, acc, *args)
            reading = logs_mod.read(self.backend, acc, self.layout)
        self.mark(ts, acc, copy=copy)
        return ts, acc, reading
