"""What sparse inference buys: predict latency of the 784-1024-1024-10 MLP at 95% unstructured
sparsity, dense (masked) against ``wf.pruning.sparsify``, per batch size, and the crossover.

Run:  .venv/bin/python benchmarks/bench_sparse.py [--sparsity 0.95] [--batches 1,8,64,256]

The suite's mlp_large architecture (``wframe/bench/workloads.py``: relu, seeded Glorot weights;
timing needs no training) magnitude-pruned to ``--sparsity`` with one global threshold
(``wf.pruning.prune``). Three models per batch size: "dense" (the pruned model itself: dense
products of mostly zeros), "all sparse" (``sparsify(decide="sparse")``: every layer a sparse
product) and "sparsify" (``sparsify(batch_size=b)``: each layer sparse only where it measured
faster at that batch). Each row is ``model.predict(x, batch_size=b)`` on ``b`` seeded rows,
read back to the host (which synchronizes), timed by the suite's ``Timer`` (a cold and a warm
call first, then the rows take turns in ``--rounds`` rounds; medians, each ratio pairs the
rounds). The crossover is the smallest batch at which "all sparse" is no longer faster than
dense. At the smallest batch the compiled predict function alone is timed too ("layers
only"), which leaves out what ``predict`` adds per call for any model. Target (issue 21):
sparsify at batch 1 >= 2x faster than dense on numpy.
"""

from __future__ import annotations

import argparse

import numpy as np

import wframe as wf
from wframe.bench.timing import Row, Timer, ratio
from wframe.layers import Dense
from wframe.pruning import prune, sparsify


def mlp(backend: str, sparsity: float) -> wf.Sequential:
    """The 784-1024-1024-10 relu MLP on ``backend``, magnitude-pruned to ``sparsity``."""
    with wf.use_backend(backend):
        layers = [Dense(1024, activation="relu"), Dense(1024, activation="relu"), Dense(10)]
        model = wf.Sequential(layers, seed=0).build((None, 784))
    return prune(model, sparsity)


def predictor(model: wf.Sequential, batch: int, layers_only: bool = False):
    """``make()`` of a row: ``run()`` predicts one batch and reads it back; ``layers_only``:
    calls the model's compiled predict function on the backend's array instead (no input
    checks, conversion, batching or thread limit: what ``predict`` adds to the layers)."""

    def make():
        x = np.random.default_rng(0).normal(size=(batch, 784)).astype(np.float32)
        if layers_only:
            fn, arrays, xb = model.trainer.predict_fn(), model.train_state, model.backend.asarray(x)

            def run():
                with model.backend.host_threads(model.count_params() * batch):
                    return float(wf.to_numpy(fn(arrays.params, arrays.state, xb))[0, 0])

            return run

        def run():
            return float(wf.to_numpy(model.predict(x, batch_size=batch))[0, 0])

        return run

    return make


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--batches", default="1,2,4,8,16,32,64,128,256", help="comma list")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backends", default="numpy,jax", help="comma list (those available run)")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b in wf.available()]
    batches = [int(b) for b in args.batches.split(",")]
    table, choices = [], {}
    for b in backends:
        dense = mlp(b, args.sparsity)
        every = sparsify(dense, decide="sparse")
        for batch in batches:
            measured = sparsify(dense, batch_size=batch)
            choices[(b, batch)] = "".join(r["choice"][0] for r in measured.sparse_layers)
            ref = f"{b} b={batch}: dense"
            for label, model in (("dense", dense), ("all sparse", every), ("sparsify", measured)):
                table.append(
                    Row(f"{b} b={batch}: {label}", "wframe", b, predictor(model, batch), ref)
                )
            if batch == batches[0]:
                for label, model in (("dense", dense), ("sparsify", measured)):
                    make = predictor(model, batch, layers_only=True)
                    ref = f"{b} b={batch}: dense, layers only"
                    table.append(
                        Row(f"{b} b={batch}: {label}, layers only", "wframe", b, make, ref)
                    )
    notes: list[str] = []
    res = Timer(rounds=args.rounds).measure(table, notes)
    print(f"784-1024-1024-10 MLP at {args.sparsity:.0%} sparsity (global magnitude pruning)")
    heads = ("dense ms", "all sparse ms", "speedup", "sparsify ms", "speedup", "layers")
    print(f"| backend | batch | {' | '.join(heads)} |")
    print("|---|---:|---:|---:|---:|---:|---:|:---:|")
    crossover = {}
    for b in backends:
        for batch in batches:
            base = res.get(f"{b} b={batch}: dense")
            every = res.get(f"{b} b={batch}: all sparse")
            chosen = res.get(f"{b} b={batch}: sparsify")
            if base is None or every is None or chosen is None:
                continue
            s_all = ratio(base["round_ms"], every["round_ms"])[0]
            s_chosen = ratio(base["round_ms"], chosen["round_ms"])[0]
            if s_all <= 1 and b not in crossover:
                crossover[b] = batch
            print(
                f"| {b} | {batch} | {base['median_ms']:.3f} | {every['median_ms']:.3f} | "
                f"{s_all:.2f}x | {chosen['median_ms']:.3f} | {s_chosen:.2f}x | "
                f"{choices[(b, batch)]} |"
            )
    for b in backends:
        batch = batches[0]
        base = res.get(f"{b} b={batch}: dense, layers only")
        chosen = res.get(f"{b} b={batch}: sparsify, layers only")
        if base is not None and chosen is not None:
            speedup = ratio(base["round_ms"], chosen["round_ms"])[0]
            print(
                f"{b} batch {batch}, layers only (the compiled predict function): dense "
                f"{base['median_ms']:.3f} ms, sparsify {chosen['median_ms']:.3f} ms, {speedup:.2f}x"
            )
    for b in backends:
        where = crossover.get(b)
        said = f"batch {where}" if where else f"none up to batch {batches[-1]}"
        print(f"crossover ({b}: all-sparse no longer faster than dense): {said}")
    print("layers: sparsify's choice per layer (s: sparse, d: dense) at that batch")
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
