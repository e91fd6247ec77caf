"""wframe's own rows, as a user's code makes the calls (one train step, one ``fit`` epoch), and
the worker loop that runs them in a process of their own.

This file imports nothing of wframe but its public names (``import wframe as wf``), and, as a
worker, its sibling ``workloads.py`` by path (which does the same). So
:mod:`wframe.bench.trees` can run it in a process whose ``PYTHONPATH`` points at another
checkout of wframe with the same public API, a baseline, and time that checkout's ``fit`` in the
same rounds as this one's.

The worker reads one JSON object a line on stdin and answers each with one line on the stdout it
was started with (anything else printed goes to stderr); its first line names the ``wframe`` it
imported:

- ``{"op": "setup", "id": ..., "workload": {Workload fields}, "mode": "step" | "epoch",
  "backend": ..., "spe": ..., "kind": ...}``: make the row (its data and first weights as the
  suite's); ``kind``, when given, replaces the workload's (a graph's Sequential twin);
- ``{"op": "run", "id": ...}``: one call, answered ``{"loss": ..., "seconds": ...}``, timed
  here around the call, which synchronizes;
- ``{"op": "reset"}``: forget every row. End of input ends the worker; an error is answered
  ``{"error": "..."}``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import wframe as wf

if TYPE_CHECKING:
    from wframe.bench.workloads import Workload


def step(w: Workload, backend: str, p0: dict, xb: np.ndarray, yb: np.ndarray) -> Callable:
    """``run()``: one ``wf.make_train_step`` step on a fixed batch, synchronized; the step is
    pure and bound to its backend, so no ``use_backend`` per call."""
    with wf.use_backend(backend):
        b = wf.get_backend()
        model = w.model().build((None, *w.in_shape))
        # Fresh copies: NumPy's step updates its train state in place, JAX's donates it.
        model.params = wf.tree.tree_map(lambda v: b.asarray(np.array(v)), p0)
        opt = getattr(wf.optimizers, w.optimizer)(w.lr)
        train_step = wf.make_train_step(model, w.loss_fn(), opt)
        ts = [wf.TrainState(model.params, model.state, opt.init(model.params))]
        # Inputs keep their dtype (float32, or int32 ids); labels are int32, targets float32.
        x, y = b.asarray(xb), b.asarray(yb, dtype="float32" if yb.dtype.kind == "f" else "int32")
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


def epoch(
    w: Workload,
    backend: str,
    x: np.ndarray,
    y: np.ndarray,
    spe: int | str = 1,
    *,
    build: Callable[[], Any] | None = None,
    **fit_kw: Any,
) -> Callable:
    """``run()``: ``model.fit(x, y, epochs=1, ...)`` again on one model and optimizer, as a
    user's call (checking the data and moving it to the device included); returns the epoch's
    loss, read on the host (which synchronizes).

    Args:
      build: makes the model, under ``use_backend(backend)`` (default ``w.model()``).
      fit_kw: more arguments of ``fit`` (``strategy=``, say).
    """
    with wf.use_backend(backend):
        model = build() if build is not None else w.model()
        opt = getattr(wf.optimizers, w.optimizer)(w.lr)

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
                **fit_kw,
            )
        return history.history["loss"][0]

    return run


# ------------------------------------------------------------------------------ the worker
def _sibling(name: str):
    """This folder's ``name.py``, imported by path (not as ``wframe.bench.<name>``, which in a
    worker would be the other checkout's)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _answer(msg: dict, runs: dict, workloads) -> dict:
    op = msg.get("op")
    if op == "setup":
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in msg["workload"].items()}
        w = workloads.Workload(**{**fields, "kind": msg.get("kind", fields["kind"])})
        x, y, _ = workloads.make_data(w)
        if msg["mode"] == "step":
            p0 = workloads.initial_params(w)
            runs[msg["id"]] = step(w, msg["backend"], p0, x[: w.batch], y[: w.batch])
        else:
            runs[msg["id"]] = epoch(w, msg["backend"], x, y, msg.get("spe", 1))
        return {"ok": True}
    if op == "run":
        t0 = time.perf_counter()
        out = runs[msg["id"]]()
        seconds = time.perf_counter() - t0
        return {"loss": float(out), "seconds": seconds}
    if op == "reset":
        runs.clear()
        return {"ok": True}
    raise ValueError(f"unknown op {op!r}; expected setup, run or reset")


def serve() -> None:
    """The worker loop (see the module docstring)."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else writes to stdout lands on stderr, never among the replies
    workloads = _sibling("workloads")
    replies.write(json.dumps({"wframe": wf.__file__}) + "\n")
    runs: dict[str, Callable] = {}
    for line in sys.stdin:
        try:
            reply = _answer(json.loads(line), runs, workloads)
        except Exception as e:  # noqa: BLE001 - the parent notes the row and goes on
            reply = {"error": f"{type(e).__name__}: {e}"[:400]}
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    serve()
