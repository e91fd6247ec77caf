"""wframe's rows: ``make_train_step`` for one step, ``model.fit(epochs=1)`` for an epoch.

The calls themselves are :func:`wframe.bench.worker.step` and :func:`~wframe.bench.worker.epoch`,
which a worker process of another checkout runs too (``--baseline``, :mod:`wframe.bench.trees`).
"""

from __future__ import annotations

from collections.abc import Callable

from wframe.bench.timing import Row
from wframe.bench.worker import epoch, step
from wframe.bench.workloads import Workload

__all__ = ["epoch", "rows", "step"]


def rows(w: Workload, mode: str, backends: list[str], p0: dict, x, y) -> list[Row]:
    """wframe's rows of ``w`` in ``mode`` on each backend; each divides by the reference row
    of its backend (``spe=epoch`` by the whole-epoch ``lax.scan``). ``extra`` says what a worker
    needs to make the row again: ``mode`` and ``spe``."""
    xb, yb = x[: w.batch], y[: w.batch]

    def maker(backend: str, spe: int | str) -> Callable:
        if mode == "step":
            return lambda: step(w, backend, p0, xb, yb)
        return lambda: epoch(w, backend, x, y, spe)

    out = []
    for b in backends:
        extra = {"mode": mode, "spe": 1}
        out.append(Row(f"wframe[{b}]", "wframe", b, maker(b, 1), f"reference[{b}]", extra))
        if mode == "epoch" and b == "jax":
            extra = {"mode": mode, "spe": "epoch"}
            label, ref = "wframe[jax] spe=epoch", "reference[jax] scan"
            out.append(Row(label, "wframe", b, maker(b, "epoch"), ref, extra))
    return out
