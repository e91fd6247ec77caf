"""The epoch's running sums on the device and their reading on the host."""

from __future__ import annotations

import math
from typing import Any, NamedTuple


class Reading(NamedTuple):
    """One host reading of the running sums: the epoch's means by name, the first non-finite
    step (-1: none) and every sum as a float (the last one the example count)."""

    logs: dict[str, float]
    bad: int
    sums: list[float]


def zero_sums(backend: Any, dtype: str, n: int, stats: int = 0) -> tuple:
    """``(sums, bad)`` for ``n`` logged values (and a vector of ``stats`` statistics)."""
    xp, dt = backend.xp, backend.dtype(dtype)
    sums = [xp.zeros((), dtype=dt) for _ in range(n + 1)]
    if stats:  # the statistics' vector, before the count
        sums.insert(n, xp.zeros((stats,), dtype=dt))
    return tuple(sums), xp.asarray(-1, dtype=xp.int32)


def read(backend: Any, acc: tuple, names: tuple[str, ...]) -> Reading:
    """The epoch's running means of ``names`` (the first sums), in one transfer on JAX."""
    sums, bad = backend.to_host(acc)
    if len(sums) > len(names) + 1:  # spread the statistics' vector
        sums = (*sums[:-2], *sums[-2], sums[-1])
    sums = [float(s) for s in sums]
    count = sums[-1]
    totals = zip(names, sums[: len(names)], strict=True)
    logs = {name: total / count if count else math.nan for name, total in totals}
    return Reading(logs, int(bad), sums)


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
