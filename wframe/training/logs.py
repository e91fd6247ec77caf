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
    xp, dt = backend.xp, backend.dtype(dtype)
    sums = [xp.zeros((n,) if n else (), dtype=dt) for n in layout.sizes()]
    if stats:  # the statistics' vector, before the count
        sums.append(xp.zeros((stats,), dtype=dt))
    return (*sums, xp.zeros((), dtype=dt)), xp.asarray(-1, dtype=xp.int32)


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
    sums, bad = backend.to_host(acc)
    sums = [np.asarray(s, dtype=np.float64) for s in sums]
    count = float(sums[-1])
    logs = results(layout, sums[: len(layout.names)], count)
    flat = [float(v) for s in sums for v in np.ravel(s)]
    return Reading(logs, int(bad), flat)


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
