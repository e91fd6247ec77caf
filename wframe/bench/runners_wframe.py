"""wframe's rows: ``make_train_step`` for one step, ``model.fit(epochs=1)`` for an epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import wframe as wf
from wframe.bench.timing import Row
from wframe.bench.workloads import Workload


def step(w: Workload, backend: str, p0: dict, xb: np.ndarray, yb: np.ndarray) -> Callable:
    """``run()``: one ``wf.make_train_step`` step on a fixed batch, synchronized; the step is
    pure and bound to its backend, so no ``use_backend`` per call."""
    with wf.use_backend(backend):
        b = wf.get_backend()
        model = w.model().build((None, *w.in_shape))
        # Fresh copies: NumPy's step updates its train state in place, JAX's donates it.
        model.params = {k: {p: b.asarray(np.array(v)) for p, v in d.items()} for k, d in p0.items()}
        opt = getattr(wf.optimizers, w.optimizer)(w.lr)
        train_step = wf.make_train_step(model, "softmax_cross_entropy", opt)
        ts = [wf.TrainState(model.params, model.state, opt.init(model.params))]
        x, y = b.asarray(xb), b.asarray(yb, dtype="int32")
    call = _calling_convention(train_step)

    def run() -> Any:
        ts[0], logs = call(ts[0], x, y)
        return b.synchronize(logs["loss"])

    return run


def _calling_convention(train_step: Callable) -> Callable:
    """``step(ts, x, y)`` today; ``step(ts, (x, y))`` is accepted too, should the step take a
    batch tuple. The spelling is chosen at the first call (a signature error donates nothing)."""
    chosen: list[Callable] = []

    def call(ts, x, y):
        if chosen:
            return chosen[0](ts, x, y)
        try:
            out = train_step(ts, x, y)
            chosen.append(lambda ts, x, y: train_step(ts, x, y))
        except TypeError:
            out = train_step(ts, (x, y))
            chosen.append(lambda ts, x, y: train_step(ts, (x, y)))
        return out

    return call


def epoch(w: Workload, backend: str, x: np.ndarray, y: np.ndarray, spe: int | str = 1):
    """``run()``: ``model.fit(x, y, epochs=1, ...)`` again on one model and optimizer, as a
    user's call (checking the data and moving it to the device included); returns the epoch's
    loss, read on the host (which synchronizes)."""
    with wf.use_backend(backend):
        model, opt = w.model(), getattr(wf.optimizers, w.optimizer)(w.lr)

    def run() -> float:
        with wf.use_backend(backend):
            history = model.fit(
                x,
                y,
                epochs=1,
                batch_size=w.batch,
                optimizer=opt,
                verbose=0,
                steps_per_execution=spe,
            )
        return history.history["loss"][0]

    return run


def rows(w: Workload, mode: str, backends: list[str], p0: dict, x, y) -> list[Row]:
    """wframe's rows of ``w`` in ``mode`` on each backend; each divides by the reference row
    of its backend (``spe=epoch`` by the whole-epoch ``lax.scan``)."""
    out, xb, yb = [], x[: w.batch], y[: w.batch]
    for b in backends:
        if mode == "step":
            make = lambda b=b: step(w, b, p0, xb, yb)  # noqa: E731
        else:
            make = lambda b=b: epoch(w, b, x, y)  # noqa: E731
        out.append(Row(f"wframe[{b}]", "wframe", b, make, ref=f"reference[{b}]"))
        if mode == "epoch" and b == "jax":
            make = lambda: epoch(w, "jax", x, y, spe="epoch")  # noqa: E731
            out.append(Row("wframe[jax] spe=epoch", "wframe", b, make, ref="reference[jax] scan"))
    return out
