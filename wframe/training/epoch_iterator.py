"""The batch plan of a ``fit``: each epoch's permutation, cut into compiled calls.

Separation of concerns, as Keras' ``EpochIterator``: this object alone knows how examples are
ordered and grouped (``steps_per_execution`` blocks, the last partial batch, a whole epoch in
one call, batches fed per process); the loop only runs the calls it yields.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from wframe.random import fold_in, generator
from wframe.training.runner import RunSpec


class Call(NamedTuple):
    """One compiled call of an epoch: its shape, the rows of example indices it reads from
    (``order[start : start + spec.steps]``, or the flat permutation for a whole epoch), how
    many of the epoch's batches are done once it has run, and the ``(x, y)`` it reads them
    from when they are its own (an iterable's batches; ``None``: the fit's arrays)."""

    spec: RunSpec
    order: Any
    start: int
    done: int
    data: tuple | None = None


class EpochIterator:
    """Plans the batches of ``n`` examples: ``steps`` batches per epoch of ``batch_size``
    (the last one partial, or left out with ``drop_remainder``: each epoch's permutation still
    covers all ``n``, so a different few are dropped each epoch), ``steps_per_execution`` full
    batches per call (``"epoch"``: all, the last batch in the same call unless ``feeds``: then
    it is a call of its own)."""

    def __init__(
        self,
        backend: Any,
        n: int,
        batch_size: int,
        steps_per_execution: int | str,
        *,
        shuffle: bool,
        seed: int,
        feeds: bool = False,
        drop_remainder: bool = False,
    ):
        self.backend, self.n, self.batch_size = backend, n, batch_size
        self.shuffle, self.seed = shuffle, seed
        self.full, self.rest = divmod(n, batch_size)
        if drop_remainder:
            self.rest = 0
        self.steps = self.full + (self.rest > 0)
        whole = steps_per_execution == "epoch"
        self.per_call = self.full if whole else min(steps_per_execution, self.full)
        self.whole = whole and self.rest > 0 and not feeds

    @property
    def one_call(self) -> bool:
        """Whether each epoch is one compiled call (read after it: a sync point each call)."""
        return self.whole or (self.full > 0 and self.per_call >= self.full and not self.rest)

    #: An iterable's plan (:class:`~wframe.training.pipeline.BatchPlan`) can run out; arrays never.
    exhausted = False

    def close(self) -> None:
        """Nothing to release (an iterable's plan stops its prefetching thread here)."""

    def order(self, life_epoch: int) -> np.ndarray:
        """The permutation of epoch ``life_epoch`` of the model's life (int32, on the host)."""
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int32)
        return generator(fold_in(self.seed, life_epoch)).permutation(self.n).astype(np.int32)

    def calls(self, life_epoch: int, first: int = 0) -> Iterator[Call]:
        """The calls of one epoch, from batch ``first`` on (after a restored backup).

        The rows that several calls read go to the device once; those one call reads go as
        the host array on a traced backend, whose compiled call moves it as it dispatches
        (JAX: 9 us, where an eager ``jnp.asarray`` first costs 50).
        """
        order, put = self.order(life_epoch), self.backend.asarray
        once = np.asarray if self.backend.traced else put
        if self.whole:
            yield Call(RunSpec(self.full, self.rest), once(order), 0, self.steps)
            return
        cut = self.full * self.batch_size
        rows = order[:cut].reshape(self.full, self.batch_size)
        rows = put(rows) if self.per_call < self.full - first else once(rows)
        done, spec = first, RunSpec(self.per_call)  # one object: the loop caches by identity
        while done < self.full:
            k = min(self.per_call, self.full - done)
            yield Call(spec if k == self.per_call else RunSpec(k), rows, done, done + k)
            done += k
        if self.rest and done < self.steps:
            yield Call(RunSpec(1), once(order[cut:].reshape(1, self.rest)), 0, self.steps)
