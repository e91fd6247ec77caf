"""Interleaved timing: cold call apart, rows taking turns in rounds, medians with min/max.

A row's ``make()`` sets it up and returns ``run()``, which does one unit of work (a train step
or a ``fit`` epoch), **synchronizes** (``backend.synchronize``, ``block_until_ready``,
``torch.cuda.synchronize``, or a host read of the loss) and returns the loss. The clock is read
only around ``run()``, so what is timed is finished work. A ``run()`` that times itself (one that
asks a worker process, :mod:`wframe.bench.trees`) returns :class:`Timed`, and its seconds stand
instead of this process's clock, so the round trip to the worker is not counted.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass
class Row:
    """One runner bound to one workload and mode.

    Args:
      label: the row's name, e.g. ``"wframe[jax]"`` or ``"reference[numpy]"``.
      impl: ``"wframe"``, ``"reference"`` or a peer (``"torch"``, ``"keras"``).
      backend: where it computes: ``"numpy"``, ``"jax"``, ``"cupy"``, ``"torch"``.
      make: sets the row up and returns its ``run()``.
      ref: label of the row its ratio divides by (same backend), or ``None``.
      extra: what else the row's maker knows (``mode``, ``spe``; ``remote``: the row runs in
        another process, whose memory this one does not see).
    """

    label: str
    impl: str
    backend: str
    make: Callable[[], Callable[[], Any]]
    ref: str | None = None
    extra: dict = field(default_factory=dict)


class Timed(NamedTuple):
    """What a ``run()`` that timed itself returns: its loss and the seconds its own clock
    read around the (synchronized) work."""

    loss: float
    seconds: float


@dataclass
class Timer:
    """How rows are timed; ``clock`` and ``sleep`` are injectable (tests use a fake clock).

    Args:
      rounds: how many times every row takes its turn.
      chunk_s: target seconds of timed calls per row and round (reps = chunk_s / warm time).
      max_reps: cap on timed calls per row and round.
      pause_s: sleep before each row's turn, so spinning BLAS/OpenMP/XLA threads of the
        previous row bill no one.
      settle_below_s: rows whose warm call is faster than this get one untimed call per turn.
      max_call_s: a row whose cold call takes longer is not called again (its cold time,
        compilation included, stands for it); one whose warm call does is timed by that call
        alone. Either way it sits out the rounds and a note says so: the suite's time stays
        bounded when a runner is pathologically slow.
    """

    rounds: int = 5
    chunk_s: float = 0.25
    max_reps: int = 200
    pause_s: float = 0.1
    settle_below_s: float = 0.05
    max_call_s: float = 8.0
    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep

    def reps_for(self, warm_s: float) -> int:
        return max(1, min(self.max_reps, math.ceil(self.chunk_s / max(warm_s, 1e-9))))

    def measure(self, rows: list[Row], notes: list[str], tag: str = "") -> dict[str, dict]:
        """Time ``rows``; returns ``{label: result}`` in row order.

        First, per row: set-up, one cold call (compilation included, reported as ``cold_ms``)
        and up to 3 warm calls (the fastest sizes the round's reps). Then ``rounds`` rounds;
        round ``r`` starts at row ``r mod n``, so no row always follows the same one. A row's
        result holds ``round_ms`` (its median per round) and ``median_ms``, ``min_ms``,
        ``max_ms`` over those. A row whose set-up or first call raises is dropped and noted.
        """
        runs, res = {}, {}
        for row in rows:
            first = self._first_calls(row, notes, tag)
            if first is None:
                continue
            run, res[row.label] = first
            if res[row.label]["in_rounds"]:
                runs[row.label] = run
        labels = list(runs)
        for r in range(self.rounds if labels else 0):
            k = r % len(labels)
            for label in labels[k:] + labels[:k]:
                run, out = runs[label], res[label]
                self.sleep(self.pause_s)
                for _ in range(out["settle"]):
                    run()
                out["times"].append([self.call(run)[1] * 1e3 for _ in range(out["reps"])])
        for out in res.values():
            summarize(out)
        return res

    def call(self, run: Callable[[], Any]) -> tuple[Any, float]:
        """``(loss, seconds)`` of one ``run()``: this clock around it, or the seconds a
        :class:`Timed` result brings."""
        t0 = self.clock()
        out = run()
        seconds = self.clock() - t0
        return (out.loss, out.seconds) if isinstance(out, Timed) else (out, seconds)

    def _first_calls(self, row: Row, notes: list[str], tag: str) -> tuple | None:
        """``(run, result)`` after the row's set-up, cold and warm calls; ``None`` (noted) when
        they raise. A row too slow to repeat is marked out of the rounds (and noted)."""
        try:
            before = rss_mb()
            run = row.make()
            loss, cold = self.call(run)
            loss0 = float(loss)
            self.sleep(self.pause_s)  # compile threads may still spin after the cold call
            # Up to 3 warm calls (within chunk_s); the fastest sizes the reps.
            warms = [] if cold <= self.max_call_s else [cold]
            while len(warms) < 3 and sum(warms) < self.chunk_s:
                warms.append(self.call(run)[1])
            warm = min(warms)
        except Exception as e:  # noqa: BLE001 - a row that cannot run is reported, not fatal
            notes.append(f"{tag}{row.label}: skipped ({type(e).__name__}: {e})"[:400])
            print(f"  {notes[-1]}", file=sys.stderr)
            return None
        out = {
            "cold_ms": cold * 1e3,
            "warm_ms": warm * 1e3,
            "loss0": loss0,
            "reps": self.reps_for(warm),
            "settle": int(warm < self.settle_below_s),
            "memory": {} if row.extra.get("remote") else _memory(row.backend, before),
            "in_rounds": True,
            "cold_only": False,
            "times": [],
        }
        if warm > self.max_call_s:  # too slow to repeat: timed by the calls made so far
            # cold_only: the one time is the cold call's, compilation included; no ratio.
            out.update(times=[[warm * 1e3]], in_rounds=False, cold_only=cold > self.max_call_s)
            how = (
                "its cold call (compilation included)"
                if cold > self.max_call_s
                else "one warm call"
            )
            notes.append(
                f"{tag}{row.label}: {warm:.1f} s per call (> {self.max_call_s} s): "
                f"timed by {how} alone, not in the rounds"
            )
        return run, out


def summarize(out: dict) -> dict:
    """Turn ``out["times"]`` (one list of ms per round) into round medians and their spread."""
    times = out.pop("times")
    out["round_ms"] = [statistics.median(t) for t in times]
    out["n"] = sum(len(t) for t in times)
    rounds = out["round_ms"] or [math.nan]
    out["median_ms"] = statistics.median(rounds)
    out["min_ms"], out["max_ms"] = min(rounds), max(rounds)
    return out


def ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` over rounds of ``a[r] / b[r]`` (round medians, paired by round:
    load drift during a round hits both rows alike)."""
    pairs = [x / y for x, y in zip(a, b, strict=False) if y > 0]
    if not pairs:
        return math.nan, math.nan, math.nan
    return statistics.median(pairs), min(pairs), max(pairs)


def best_time(fn: Callable[[], Any], reps: int, clock: Callable[[], float] = time.perf_counter):
    """Seconds of the fastest of ``reps`` calls of ``fn`` (which synchronizes), after one
    untimed call: a peak, not a typical time."""
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


# ------------------------------------------------------------------------------ memory
def rss_mb() -> float | None:
    """The process's resident set now, in MiB (Linux ``/proc``), else ``None``."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        return None


def max_rss_mb() -> float | None:
    """The process's peak resident set so far (``getrusage``), in MiB."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


def device_mb(backend: str) -> dict[str, float]:
    """GPU memory of ``backend`` (in use and peak, MiB) where it reports any; ``{}`` on CPU."""
    try:
        if backend == "jax" and "jax" in sys.modules:
            dev = sys.modules["jax"].devices()[0]
            stats = dev.memory_stats() if dev.platform != "cpu" else None
            if stats:
                return {
                    "device_mb": stats.get("bytes_in_use", 0) / 2**20,
                    "device_peak_mb": stats.get("peak_bytes_in_use", 0) / 2**20,
                }
        if backend == "cupy" and "cupy" in sys.modules:
            pool = sys.modules["cupy"].get_default_memory_pool()
            return {
                "device_mb": pool.used_bytes() / 2**20,
                "device_pool_mb": pool.total_bytes() / 2**20,
            }
        if backend == "torch" and "torch" in sys.modules:
            cuda = sys.modules["torch"].cuda
            if cuda.is_available():
                return {
                    "device_mb": cuda.memory_allocated() / 2**20,
                    "device_peak_mb": cuda.max_memory_allocated() / 2**20,
                }
    except Exception:  # noqa: BLE001 - memory statistics are best effort
        return {}
    return {}


def _memory(backend: str, before: float | None) -> dict[str, float | None]:
    """Host RSS now, its growth since ``before`` and the process peak so far (MiB), plus the
    backend's device memory where it reports any."""
    now = rss_mb()
    grown = None if now is None or before is None else now - before
    return {"rss_mb": now, "rss_growth_mb": grown, "max_rss_mb": max_rss_mb(), **device_mb(backend)}


# ------------------------------------------------------------------------------ GEMM peak
def gemm_peak(backend: str, n: int, reps: int = 5) -> dict:
    """The best GFLOP/s of an ``n x n`` float32 matmul on ``backend`` (``numpy``, ``jax``,
    ``cupy`` or ``torch``), synchronized: the device's practical peak, for % of peak."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    if backend == "jax":
        import jax

        a, b, mm = jax.device_put(a), jax.device_put(b), jax.jit(lambda a, b: a @ b)
        fn = lambda: mm(a, b).block_until_ready()  # noqa: E731
    elif backend == "cupy":
        import cupy

        a, b = cupy.asarray(a), cupy.asarray(b)
        fn = lambda: (a @ b, cupy.cuda.get_current_stream().synchronize())  # noqa: E731
    elif backend == "torch":
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        a, b = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
        sync = torch.cuda.synchronize if dev == "cuda" else lambda: None
        fn = lambda: (a @ b, sync())  # noqa: E731
    else:
        fn = lambda: a @ b  # noqa: E731
    seconds = best_time(fn, reps)
    return {"n": n, "ms": seconds * 1e3, "gflops": 2 * n**3 / seconds / 1e9}
