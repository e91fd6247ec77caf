"""wframe's rows: ``make_train_step`` for one step, ``model.fit(epochs=1)`` for an epoch.

The calls themselves are :func:`wframe.bench.worker.step` and :func:`~wframe.bench.worker.epoch`,
which a worker process of another checkout runs too (``--baseline``, :mod:`wframe.bench.trees`).
A ``graph`` workload's rows (a functional ``wf.Model``) come with a Sequential twin each (the
label plus ``" sequential"``: the same MLP, weights and data as a ``wf.Sequential``), which
they divide by.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from wframe.bench.timing import Row
from wframe.bench.worker import epoch, step
from wframe.bench.workloads import HAND_WRITTEN, TORCH_TWINS, Workload

__all__ = ["epoch", "reference_of", "rows", "step"]

TWIN = " sequential"


def reference_of(w: Workload, backend: str) -> str | None:
    """The row a wframe row of ``w`` on ``backend`` divides by: the hand-written reference of
    its backend, or (kinds that have none) PyTorch on NumPy/CuPy and plain JAX on JAX."""
    if backend == "jax" or w.kind in HAND_WRITTEN:
        return f"reference[{backend}]"
    if w.kind in TORCH_TWINS:
        return "torch[cpu]" if backend == "numpy" else "torch[cuda]"
    return None


def rows(w: Workload, mode: str, backends: list[str], p0: dict, x, y) -> list[Row]:
    """wframe's rows of ``w`` in ``mode`` on each backend; each divides by the reference row
    of its backend (``spe=epoch`` by the whole-epoch ``lax.scan``). ``extra`` says what a worker
    needs to make the row again: ``mode``, ``spe`` (and ``kind`` for a graph's twin)."""
    xb, yb = x[: w.batch], y[: w.batch]

    def maker(w: Workload, backend: str, spe: int | str) -> Callable:
        if mode == "step":
            return lambda: step(w, backend, p0, xb, yb)
        return lambda: epoch(w, backend, x, y, spe)

    out = []
    for b in backends:
        extra = {"mode": mode, "spe": 1}
        out.append(Row(f"wframe[{b}]", "wframe", b, maker(w, b, 1), reference_of(w, b), extra))
        if mode == "epoch" and b == "jax":
            extra = {"mode": mode, "spe": "epoch"}
            label, ref = "wframe[jax] spe=epoch", "reference[jax] scan"
            out.append(Row(label, "wframe", b, maker(w, b, "epoch"), ref, extra))
    if w.kind != "graph":
        return out
    chain, twins = replace(w, kind="mlp"), []
    for row in out:
        make = maker(chain, row.backend, row.extra["spe"])
        extra = {**row.extra, "kind": "mlp"}
        twins += [
            replace(row, ref=row.label + TWIN),
            Row(row.label + TWIN, "wframe", row.backend, make, None, extra),
        ]
    return twins
