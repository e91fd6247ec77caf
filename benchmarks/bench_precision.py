"""What the mixed-precision policies cost or save: one fit epoch per dtype policy and backend.

Run:  .venv/bin/python benchmarks/bench_precision.py [--rounds N] [--rows N] [--width N]

MLP 784-W-W-10 (relu, W = --width, default 1024), Adam lr 1e-3, batch 256, seeded random rows
(float32), on every available backend, for dtype "float32", "mixed_bfloat16" and
"mixed_float16". Rows alternate in rounds (one untimed warm-up epoch each first); each timed
value is one epoch (perf_counter; the loss read synchronizes); medians. On CPUs without native
half-precision arithmetic the mixed policies pay for their casts; their speed-up needs a GPU
(tensor cores) where the compute dtype runs natively.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import wframe as wf

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def make(policy: str, width: int) -> wf.Sequential:
    return wf.Sequential(
        [
            wf.layers.Dense(width, activation="relu"),
            wf.layers.Dense(width, activation="relu"),
            wf.layers.Dense(10),
        ],
        seed=0,
        dtype=policy,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--width", type=int, default=1024)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, 784)).astype(np.float32)
    y = rng.integers(0, 10, args.rows)
    rows = {}
    for backend in [b for b in ("numpy", "jax", "cupy") if b in wf.available()]:
        with wf.use_backend(backend):
            for policy in POLICIES:
                model = make(policy, args.width)
                model.fit(x, y, epochs=1, batch_size=256, optimizer="adam", verbose=0)
                rows[(backend, policy)] = (model, [])
    for _ in range(args.rounds):
        for (_backend, _policy), (model, times) in rows.items():
            start = time.perf_counter()
            model.fit(x, y, epochs=1, batch_size=256, verbose=0)
            times.append(time.perf_counter() - start)
    print(f"| backend | dtype | ms per epoch ({args.rows} rows) | / float32 | final loss |")
    print("|---|---|---:|---:|---:|")
    for (backend, policy), (model, times) in rows.items():
        ms = 1e3 * float(np.median(times))
        base = 1e3 * float(np.median(rows[(backend, "float32")][1]))
        loss = model.history.history["loss"][-1]
        print(f"| {backend} | {policy} | {ms:.0f} | {ms / base:.2f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
