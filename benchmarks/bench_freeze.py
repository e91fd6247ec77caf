"""What freezing saves: one fit epoch of the large MLP with its body frozen vs fully trainable.

Run:  .venv/bin/python benchmarks/bench_freeze.py [--rounds N] [--rows N]

MLP 784-1024-1024-10 (relu), SGD lr 0.01, batch 256, seeded random rows (float32). "frozen":
``model.freeze(["dense_0", "dense_1"])``: only the 1024x10 head trains. On NumPy the backward
then stops at the head (no weight gradients, no input gradients below it); on JAX only the
head's partition is differentiated. Rows alternate in rounds (one untimed warm-up epoch each
first); each timed value is one epoch (perf_counter, the loss read synchronizes); medians.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import wframe as wf


def make(frozen: bool) -> wf.Sequential:
    model = wf.Sequential(
        [
            wf.layers.Dense(1024, activation="relu"),
            wf.layers.Dense(1024, activation="relu"),
            wf.layers.Dense(10),
        ],
        seed=0,
    )
    model.build((None, 784))
    return model.freeze(["dense_0", "dense_1"]) if frozen else model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=4096)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, 784)).astype(np.float32)
    y = rng.integers(0, 10, args.rows)
    rows = {}
    for backend in [b for b in ("numpy", "jax") if b in wf.available()]:
        with wf.use_backend(backend):
            for frozen in (False, True):
                model = make(frozen)
                model.fit(
                    x, y, epochs=1, batch_size=256, optimizer=wf.optimizers.sgd(0.01), verbose=0
                )
                rows[(backend, frozen)] = (model, [])
    for _ in range(args.rounds):
        for (_backend, _frozen), (model, times) in rows.items():
            start = time.perf_counter()
            model.fit(x, y, epochs=1, batch_size=256, verbose=0)
            times.append(time.perf_counter() - start)
    print(f"| backend | trainable | ms per epoch ({args.rows} rows) | frozen / trainable |")
    print("|---|---|---:|---:|")
    for (backend, frozen), (_, times) in rows.items():
        ms = 1e3 * float(np.median(times))
        base = 1e3 * float(np.median(rows[(backend, False)][1]))
        what = "head only (body frozen)" if frozen else "all"
        print(f"| {backend} | {what} | {ms:.0f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
