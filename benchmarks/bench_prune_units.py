"""What structured pruning buys: predict latency and file size of the 784-1024-1024-10 MLP
with a fraction of its units removed (``wf.pruning.prune_units``), against the dense model.

Run:  .venv/bin/python benchmarks/bench_prune_units.py [--fraction 0.5] [--batches 1,8,64,256]

The suite's mlp_large architecture (``wframe/bench/workloads.py``: relu, seeded Glorot
weights; timing needs no training) pruned with ``scope="layer"``: 50% leaves 784-512-512-10.
Each row is ``model.predict(x, batch_size=b)`` on ``b`` seeded rows, read back to the host
(which synchronizes), timed by the suite's ``Timer`` (a cold and a warm call first, then the
rows take turns in ``--rounds`` rounds; medians, each ratio pairs the rounds). Files are
``wf.save_model`` of each model. Targets (issue 21): predict at batch 256 >= 2.5x faster than
dense on numpy and jax, file <= 30% of dense.

The arithmetic sets both: the first layer keeps its 784 inputs, so 50% of the units leaves
(784*512 + 512*512 + 512*10) / (784*1024 + 1024*1024 + 1024*10) = 35.9% of the weights and of
the multiply-adds (2.78x fewer); the file reaches 30% from ``--fraction 0.57`` (29.2%).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import wframe as wf
from wframe.bench.timing import Row, Timer, ratio
from wframe.layers import Dense
from wframe.pruning import prune_units


def mlp(backend: str) -> wf.Sequential:
    """The dense 784-1024-1024-10 relu MLP on ``backend``."""
    with wf.use_backend(backend):
        layers = [Dense(1024, activation="relu"), Dense(1024, activation="relu"), Dense(10)]
        return wf.Sequential(layers, seed=0).build((None, 784))


def predictor(model: wf.Sequential, batch: int):
    """``make()`` of a row: ``run()`` predicts one batch and reads it back."""

    def make():
        x = np.random.default_rng(0).normal(size=(batch, 784)).astype(np.float32)

        def run():
            return float(wf.to_numpy(model.predict(x, batch_size=batch))[0, 0])

        return run

    return make


def file_bytes(model: wf.Sequential, folder: str, name: str) -> int:
    path = os.path.join(folder, f"{name}.safetensors")
    wf.save_model(model, path)
    return os.path.getsize(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--scope", default="layer", choices=("layer", "global"))
    ap.add_argument("--batches", default="256", help="comma list of batch sizes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backends", default="numpy,jax", help="comma list (those available run)")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b in wf.available()]
    batches = [int(b) for b in args.batches.split(",")]
    table = []
    sizes = {}
    for b in backends:
        dense = mlp(b)
        small = prune_units(dense, args.fraction, args.scope)
        sizes[b] = [layer.units for layer in small.layers]
        for batch in batches:
            for label, model in (("dense", dense), ("pruned", small)):
                ref = f"{b} b={batch}: dense"
                table.append(
                    Row(f"{b} b={batch}: {label}", "wframe", b, predictor(model, batch), ref)
                )
    notes: list[str] = []
    res = Timer(rounds=args.rounds).measure(table, notes)
    print(f"units kept ({args.scope}, fraction {args.fraction}): {sizes}")
    print("| backend | batch | dense ms | pruned ms | speedup |")
    print("|---|---:|---:|---:|---:|")
    for row in table:
        if not row.label.endswith("pruned"):
            continue
        r, base = res.get(row.label), res.get(row.ref)
        if r is None or base is None:
            continue
        backend, batch = row.label.split(":")[0].split(" b=")
        speedup = ratio(base["round_ms"], r["round_ms"])[0]
        print(
            f"| {backend} | {batch} | {base['median_ms']:.3f} | {r['median_ms']:.3f} | "
            f"{speedup:.2f}x |"
        )
    with tempfile.TemporaryDirectory() as folder:
        dense = mlp(backends[0])
        small = prune_units(dense, args.fraction, args.scope)
        big, little = file_bytes(dense, folder, "dense"), file_bytes(small, folder, "pruned")
    print(
        f"save_model: dense {big / 1e6:.2f} MB, pruned {little / 1e6:.2f} MB = "
        f"{little / big:.1%} of dense (target <= 30%)"
    )
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
