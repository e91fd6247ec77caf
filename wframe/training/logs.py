"""The epoch's running sums on the device and their reading on the host."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np


class Layout(NamedTuple):
    """What the running sums hold, in order after nothing: ``names`` (the loss first), each
    a mean summed weighted by the batch size unless ``metrics`` names it: then its sum is a
    metric's vector of statistics (:class:`wframe.metrics.Metric`), summed as they are."""

    names: tuple[str, ...]
    metrics: dict[str, Any]

    def sizes(self) -> list[int]:
        """Each entry's length (0: a scalar)."""
        return [self.metrics[n].size if n in self.metrics else 0 for n in self.names]


class Reading(NamedTuple):
    """One host reading of the running sums: the epoch's means by name, the first non-finite
    step (-1: none) and every sum as a float, vectors spread (the last one the example
    count)."""

    logs: dict[str, float]
    bad: int
    sums: list[float]


def zero_sums(backend: Any, dtype: str, layout: Layout, stats: int = 0) -> tuple:
    """``(sums, bad)`` for the entries of ``layout`` (and a vector of ``stats`` statistics)."""
    # Made on the host and moved: on JAX, zeros made on the device are a program each.
    shapes = [(n,) if n else () for n in layout.sizes()]
    if stats:  # the statistics' vector, before the count
        shapes.append((stats,))
    sums = (backend.asarray(np.zeros(shape, np.float32), dtype) for shape in [*shapes, ()])
    return tuple(sums), backend.asarray(np.asarray(-1, np.int32))


def restored_sums(backend: Any, dtype: str, layout: Layout, stats: int, flat: list) -> tuple:
    """``(sums, bad)`` as :func:`zero_sums` makes them, holding ``flat`` (a
    :class:`Reading`'s ``sums``: every value as a float, vectors spread, the count last) and no
    non-finite step: the running sums of an epoch a backup was taken in. Exact: each float
    was read from the model's dtype."""
    xp, host = backend.xp, np.dtype(dtype)
    lengths = [*(n or 1 for n in layout.sizes()), *([stats] if stats else []), 1]
    if len(flat) != sum(lengths):
        raise ValueError(f"restored_sums: {sum(lengths)} values expected, got {len(flat)}")
    sums, at = [], 0
    for n, size in zip(lengths, [*layout.sizes(), *([stats] if stats else []), 0], strict=True):
        values = np.asarray(flat[at : at + n], dtype=np.float64).reshape((size,) if size else ())
        sums.append(backend.asarray(values.astype(host)))
        at += n
    return tuple(sums), xp.asarray(-1, dtype=xp.int32)


def results(layout: Layout, totals: list, count: float) -> dict[str, float]:
    """The logs from the sums of ``layout``'s entries over ``count`` examples."""
    logs = {}
    for name, total in zip(layout.names, totals, strict=False):
        metric = layout.metrics.get(name)
        if metric is not None:
            logs[name] = float(metric.result(np.asarray(total, dtype=np.float64)))
        else:
            logs[name] = float(total) / count if count else math.nan
    return logs


def read(backend: Any, acc: tuple, layout: Layout) -> Reading:
    """The epoch's running values of ``layout`` (the first sums), in one transfer on JAX."""
    packed = _packed(backend, acc)
    sums, bad = backend.to_host(packed)
    if packed is not acc:  # one vector: cut back into the sums
        flat, sums = np.asarray(sums), []
        for shape in (tuple(s.shape) for s in acc[0]):
            size = math.prod(shape)
            sums.append(flat[:size].reshape(shape))
            flat = flat[size:]
    sums = [np.asarray(s, dtype=np.float64) for s in sums]
    count = float(sums[-1])
    logs = results(layout, sums[: len(layout.names)], count)
    flat = [float(v) for s in sums for v in np.ravel(s)]
    return Reading(logs, int(bad), flat)


#: backend name -> the compiled packer of a traced backend's running sums (jit caches shapes).
_PACKERS: dict[str, Any] = {}
#: Running sums packed into one vector before reading only when there are more than this
#: many: packing costs a compiled call (~40 us on XLA:CPU), each array read ~10 us (4 read
#: directly: 36 us, packed: 76 us, measured).
PACK_ABOVE = 6


def _packed(backend: Any, acc: tuple) -> tuple:
    """``acc`` with its sums in one vector on a traced backend (one compiled call: each
    array read on its own costs a transfer, ~10 us on XLA:CPU), when they share a dtype and
    are more than :data:`PACK_ABOVE`; else ``acc`` as it is."""
    sums = acc[0]
    if not backend.traced or len(sums) <= PACK_ABOVE or len({s.dtype for s in sums}) != 1:
        return acc
    pack = _PACKERS.get(backend.name)
    if pack is None:
        xp = backend.xp

        def flat(a):
            return xp.concat([xp.reshape(s, (-1,)) for s in a[0]]), a[1]

        pack = _PACKERS[backend.name] = backend.jit(flat)
    return pack(acc)


def call_stats(now: list, before: list, names: tuple[str, ...]) -> dict[str, float]:
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
