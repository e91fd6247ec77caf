"""What the claim-measuring examples share: arguments, the digits, mean ± std, tables and verdicts.

Every number these examples print is measured in the run that prints it. A result over several
seeds is shown as ``mean ± std`` (the sample standard deviation across seeds); a claim "holds"
only when the whole ``mean ± std`` band of the per-seed difference lies on the claimed side.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

import wframe as wf


def parse_args(description: str, *, seeds: int, quick_seeds: int = 1) -> argparse.Namespace:
    """``--quick`` (a reduced run, for the tests) and ``--seeds N``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer seeds and epochs (~20 s)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"seeds to average over (default {seeds}, {quick_seeds} with --quick)",
    )
    args = parser.parse_args()
    if args.seeds is None:
        args.seeds = quick_seeds if args.quick else seeds
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    return args


def one_blas_thread() -> threadpool_limits:
    """A context in which NumPy's BLAS uses one thread.

    These models' matrices are tiny: a second BLAS thread saves little, and when the cores are
    shared with other processes its spin-waiting can make a run several times slower.
    """
    return threadpool_limits(limits=1, user_api="blas")


def digits(shape: tuple[int, ...] = (64,)) -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as float32 in [0, 1] of shape ``(n, *shape)``, and their labels."""
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32).reshape(-1, *shape), y  # pixel intensities are 0..16


def mean_std(values: Iterable[float], fmt: str = ".3f", *, sign: bool = False) -> str:
    """``"mean ± std"`` over the finite values (``sign``: ``+`` on a positive mean); ``"—"``
    when there are none."""
    v = np.asarray([float(a) for a in values], dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "—"
    mean_fmt = ("+" if sign else "") + fmt
    mean = format(v.mean() if float(format(v.mean(), fmt)) != 0 else 0.0, mean_fmt)  # no "-0.0"
    return mean if v.size == 1 else f"{mean} ± {format(v.std(ddof=1), fmt)}"


def band(values: Iterable[float]) -> tuple[float, float]:
    """``(mean - std, mean + std)`` of the values (std 0 for a single value)."""
    v = np.asarray(list(values), dtype=float)
    std = v.std(ddof=1) if v.size > 1 else 0.0
    return v.mean() - std, v.mean() + std


def clearly_positive(diffs: Iterable[float]) -> bool:
    """Whether the whole ``mean ± std`` band of the per-seed differences is above zero."""
    return band(diffs)[0] > 0


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    cells = [list(headers), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        first = row[0].ljust(widths[0])
        return (
            "| "
            + " | ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
            + " |"
        )

    rule = "|:" + "-" * (widths[0] + 1) + "|" + "|".join("-" * (w + 1) + ":" for w in widths[1:])
    return "\n".join([line(cells[0]), rule + "|", *map(line, cells[1:])])


def verdict(claim: str, holds: bool, detail: str) -> str:
    """One line: whether ``claim`` held in this measurement, and the numbers that say so."""
    return f'- "{claim}": ' + ("holds" if holds else "does not hold") + f": {detail}"


def kernels(params: dict) -> list[np.ndarray]:
    """Every weight matrix or convolution kernel (params named ``W``) as a NumPy array."""
    found = []
    for name, value in params.items():
        if isinstance(value, dict):
            found += kernels(value)
        elif name == "W":
            found.append(wf.to_numpy(value))
    return found


def near_zero_fraction(params: dict, rel: float = 1e-3) -> float:
    """The fraction of kernel weights with ``|w| < rel * max|w|`` of their own kernel."""
    ws = [np.abs(w) for w in kernels(params)]
    return sum(int((w < rel * w.max()).sum()) for w in ws) / sum(w.size for w in ws)


class EpochClock(wf.callbacks.Callback):
    """Wall-clock seconds from the start of ``fit`` to the end of each epoch (validation included).

    On JAX the first epoch includes compiling the train step.
    """

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def first_reaching(values: Sequence[float], target: float) -> int | None:
    """The index of the first value >= target, or None."""
    return next((i for i, v in enumerate(values) if v >= target), None)


def nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value
