"""The ``pruned`` workload of ``python -m wframe bench``: what pruning buys, as issue 21's targets,
each a ratio of two measurements of the same run.

The model is the suite's ``mlp_large`` architecture, a 784-1024-1024-10 relu MLP with its seed-0
Glorot weights (timing needs no training; a dense product's time does not depend on its values):

- **sparse inference**: magnitude-pruned to 95% (``wf.pruning.prune``, one global threshold),
  ``model.predict`` on one row, the dense model against ``wf.pruning.sparsify(batch_size=1)``
  (each layer sparse where it measured faster). Target on numpy: at least 2x faster (time
  ratio <= 0.5). Where a target is missed, the rows "layers only" (the compiled predict
  function alone, without what ``predict`` adds per call for any model) say where the time
  goes. The **crossover**: on each backend, "all sparse" (``sparsify(decide="sparse")``) against
  dense at batch 1, 2, 4, ..., 256; the smallest batch at which all-sparse is no longer faster
  (reported, no target).
- **structured**: ``wf.pruning.prune_units(model, 0.5)`` (half of each hidden layer's units,
  lowest L2 norm) leaves 784-512-512-10; ``predict`` on 256 rows against dense on numpy and
  jax. Target: at least 2.5x faster (ratio <= 0.4); its ``save_model`` file at most 30% of
  the dense model's.
- **sparse file**: pruned to 90% (one global threshold), ``wf.save_model`` (``sparse="auto"``)
  against the dense model's file. Target: at most 15%.

Rows are timed by the suite's :class:`~wframe.bench.timing.Timer` (interleaved rounds; each
time ratio pairs the rounds: median, and min/max for the noise). ``--quick`` shrinks the MLP
to 784-256-256-10 and the crossover to batches 1, 16 and 256: a smoke test.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

import wframe as wf
from wframe.bench.timing import Row, Timer, ratio
from wframe.layers import Dense
from wframe.pruning import prune, prune_units, sparsify

IN, HIDDEN, QUICK_HIDDEN = 784, (1024, 1024), (256, 256)
SPARSE, FILE_SPARSE, UNITS = 0.95, 0.9, 0.5
BATCHES, QUICK_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256), (1, 16, 256)
#: (what, limit): the time or size ratio each target allows
LIMITS = {"sparsify b=1": 0.5, "structured b=256": 0.4, "structured file": 0.3, "sparse file": 0.15}


def mlp(backend: str, hidden: tuple[int, ...]) -> wf.Sequential:
    """The seed-0 ``784-hidden-10`` relu MLP, built on ``backend``."""
    with wf.use_backend(backend):
        layers = [*(Dense(k, activation="relu") for k in hidden), Dense(10)]
        return wf.Sequential(layers, seed=0).build((None, IN))


def predictor(model: wf.Sequential, batch: int, layers_only: bool = False) -> Callable:
    """``make()`` of a row: ``run()`` predicts ``batch`` seeded rows and reads them back (which
    synchronizes); ``layers_only`` calls the compiled predict function on the backend's array
    instead (no input checks, conversion, batching or thread limit)."""

    def make() -> Callable[[], float]:
        x = np.random.default_rng(0).normal(size=(batch, IN)).astype(np.float32)
        if layers_only:
            fn, arrays, xb = model.trainer.predict_fn(), model.train_state, model.backend.asarray(x)

            def run() -> float:
                with model.backend.host_threads(model.count_params() * batch):
                    return float(wf.to_numpy(fn(arrays.params, arrays.state, xb))[0, 0])

            return run
        return lambda: float(wf.to_numpy(model.predict(x, batch_size=batch))[0, 0])

    return make


def _rows(backends: list[str], hidden: tuple, batches: tuple, seconds: float) -> list[Row]:
    """Every timed row: dense, all-sparse, sparsified, structured, per backend and batch."""
    rows = []
    for b in backends:
        dense = mlp(b, hidden)
        pruned = prune(mlp(b, hidden), SPARSE)
        every = sparsify(pruned, decide="sparse")
        chosen = sparsify(pruned, batch_size=1, seconds=seconds)
        small = prune_units(dense, UNITS)
        for batch in batches:
            ref = f"{b} b={batch}: dense"
            rows.append(Row(ref, "wframe", b, predictor(dense, batch)))
            rows.append(
                Row(f"{b} b={batch}: all sparse", "wframe", b, predictor(every, batch), ref)
            )
        choices = "".join(r["choice"][0] for r in chosen.sparse_layers)
        ref = f"{b} b=1: dense"
        rows.append(Row(f"{b} b=1: sparsify", "wframe", b, predictor(chosen, 1), ref))
        rows[-1].extra["layers"] = choices
        ref = f"{b} b=1: dense, layers only"
        rows.append(Row(ref, "wframe", b, predictor(dense, 1, layers_only=True)))
        make = predictor(chosen, 1, layers_only=True)
        rows.append(Row(f"{b} b=1: sparsify, layers only", "wframe", b, make, ref))
        last = f"{b} b={batches[-1]}"
        make = predictor(small, batches[-1])
        rows.append(Row(f"{last}: structured", "wframe", b, make, f"{last}: dense"))
        rows[-1].extra["layers"] = "-".join(str(layer.units) for layer in small.layers)
    return rows


def _file_ratios(hidden: tuple) -> dict[str, dict[str, int]]:
    """``save_model`` bytes: the structured model against dense, and a 90%-pruned model saved
    with ``sparse="auto"`` against ``sparse=False``."""
    dense = mlp("numpy", hidden)
    small, pruned = prune_units(dense, UNITS), prune(mlp("numpy", hidden), FILE_SPARSE)
    out = {}
    with tempfile.TemporaryDirectory(prefix="wframe-pruned-") as folder:

        def size(model: wf.Sequential, name: str, **kw: Any) -> int:
            path = os.path.join(folder, f"{name}.safetensors")
            wf.save_model(model, path, **kw)
            return os.path.getsize(path)

        out["structured file"] = {
            "bytes": size(small, "small"),
            "ref_bytes": size(dense, "dense"),
            "weights_share": small.count_params() / dense.count_params(),
        }
        out["sparse file"] = {
            "bytes": size(pruned, "sparse"),
            "ref_bytes": out["structured file"]["ref_bytes"],
            "unpacked_bytes": size(pruned, "off", sparse=False),  # its masks a byte each
        }
    return out


def run(
    quick: bool, timer: Timer, backends: list[str], notes: list[str], say: Callable = print
) -> dict:
    """Every measurement and target of the workload (see the module); JSON-ready."""
    hidden, batches = (QUICK_HIDDEN, QUICK_BATCHES) if quick else (HIDDEN, BATCHES)
    rows = _rows(backends, hidden, batches, 0.01 if quick else 0.05)
    res = timer.measure(rows, notes, tag="pruned: ")
    pairs = {}
    for row in rows:
        r, ref = res.get(row.label), res.get(row.ref) if row.ref else None
        if r is not None:
            entry = {"median_ms": r["median_ms"], "round_ms": r["round_ms"], "ref": row.ref}
            entry.update(row.extra)
            if ref is not None:
                entry["ratio"] = ratio(r["round_ms"], ref["round_ms"])
            pairs[row.label] = entry
    crossover = {b: _crossover(pairs, b, batches) for b in backends}
    files = _file_ratios(hidden)
    say(f"pruned: {len(res)} rows timed, crossover {crossover}")
    name = "x".join(map(str, (IN, *hidden, 10)))
    return {
        "model": f"MLP {name}",
        "rows": pairs,
        "crossover": crossover,
        "files": files,
        "targets": _targets(pairs, files, backends, batches[-1], quick),
    }


def _crossover(pairs: dict, backend: str, batches: tuple) -> str:
    """Where all-sparse and dense take turns being faster, batch by batch: ``"sparse b=1-8,
    dense b=16-256"`` (the crossover is where the name changes)."""
    runs: list[list] = []  # [winner, first batch, last batch]
    for n in batches:
        got = pairs.get(f"{backend} b={n}: all sparse", {}).get("ratio")
        if got is None:
            continue
        winner = "sparse" if got[0] < 1 else "dense"
        if runs and runs[-1][0] == winner:
            runs[-1][2] = n
        else:
            runs.append([winner, n, n])
    parts = [f"{w} b={a}" + (f"-{z}" if z != a else "") for w, a, z in runs]
    return ", ".join(parts) or "not measured"


def _targets(pairs: dict, files: dict, backends: list[str], last: int, quick: bool) -> list[dict]:
    """The verdicts, in the suite's form (:func:`wframe.bench.report.targets`)."""
    wanted = [("predict b=1", "numpy b=1: sparsify", "numpy b=1: dense", "sparsify b=1")]
    wanted += [
        (
            f"predict b={last}",
            f"{b} b={last}: structured",
            f"{b} b={last}: dense",
            "structured b=256",
        )
        for b in ("numpy", "jax")
        if b in backends
    ]
    out = []
    for mode, runner, ref, what in wanted:
        got = pairs.get(runner, {}).get("ratio")
        out.append(_verdict(mode, runner, ref, LIMITS[what], got, quick))
    names = {
        "structured file": ("structured 50% save_model", "dense save_model"),
        "sparse file": ("90% sparse save_model", "dense save_model"),
    }
    for what, sizes in files.items():
        share = sizes["bytes"] / sizes["ref_bytes"]
        out.append(_verdict("file", *names[what], LIMITS[what], (share,) * 3, quick))
    return out


def _verdict(mode: str, runner: str, ref: str, limit: float, got: Any, quick: bool) -> dict:
    t = {"workload": "pruned", "mode": mode, "runner": runner, "ref": ref, "limit": limit}
    if got is None or not np.isfinite(got[0]):
        return {**t, "ratio": None, "ratio_min": None, "ratio_max": None, "status": "not measured"}
    med, lo, hi = got
    met = "met" if med <= limit else "missed within noise" if lo <= limit else "MISSED"
    status = "not judged (--quick)" if quick else met
    return {**t, "ratio": med, "ratio_min": lo, "ratio_max": hi, "status": status}


def markdown(result: dict) -> str:
    """The workload's table (Markdown): each pair's times and speedup, crossover, files."""
    lines = [
        f"\n### pruned ({result['model']}; issue 21)\n",
        "| row | ms | reference ms | speedup |",
        "|---|---:|---:|---:|",
    ]
    rows = result["rows"]
    for label, r in rows.items():
        ref = rows.get(r.get("ref") or "")
        if ref is None or "ratio" not in r:
            continue
        name = f"{label} ({r['layers']})" if r.get("layers") else label
        lines.append(
            f"| {name} | {r['median_ms']:.3f} | {ref['median_ms']:.3f} | {1 / r['ratio'][0]:.2f}x |"
        )
    lines.append(
        "\nlayers only: the compiled predict function alone; the rest of a ``predict`` call "
        "is per-call work (input checks, conversion, batching) that pruning does not shrink"
    )
    said = "; ".join(f"{b}: {text}" for b, text in result["crossover"].items())
    lines.append(f"\ncrossover (the faster of all-sparse and dense, by batch): {said}")
    for what, sizes in result["files"].items():
        why = ""
        if "weights_share" in sizes:  # the first layer keeps its inputs: the arithmetic
            why = f" (it holds {sizes['weights_share']:.1%} of the dense model's params)"
        if "unpacked_bytes" in sizes:
            unpacked = sizes["unpacked_bytes"] / 1e6
            why = f" (saved with sparse=False, masks included: {unpacked:.2f} MB)"
        lines.append(
            f"\n{what}: {sizes['bytes'] / 1e6:.2f} MB of {sizes['ref_bytes'] / 1e6:.2f} MB = "
            f"{sizes['bytes'] / sizes['ref_bytes']:.1%}{why}"
        )
    return "\n".join(lines) + "\n"
