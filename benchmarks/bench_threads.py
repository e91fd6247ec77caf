"""NumPy training on a busy machine: the BLAS thread policy against BLAS's own threads.

Run:  .venv/bin/python benchmarks/bench_threads.py [--busy N] [--rounds N]

An MNIST-1D-sized MLP (40-100-100-10, Adam, batch 100, 3,000 seeded rows: 30 steps an epoch)
trains one epoch at a time on numpy, idle and then beside ``--busy`` processes spinning on the
cores (``while True: pass``). Rows alternate in ``--rounds`` rounds; the table gives medians:
"policy" is wframe's default (one BLAS thread for small work, :mod:`wframe.backends.threads`),
"all cores" is ``wf.num_threads(os.cpu_count())``, what NumPy's BLAS does by itself. Run it
without ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` set, as a user's shell would be.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import wframe as wf


def epoch_seconds(model, x, y, threads: int | None) -> float:
    with wf.num_threads(threads):
        start = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=100, verbose=0)
        return time.perf_counter() - start


def measure(rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3000, 40)).astype("float32"), rng.integers(0, 10, 3000)
    dense = wf.layers.Dense
    model = wf.Sequential([dense(100, activation="relu"), dense(100, activation="relu"), dense(10)])
    with wf.use_backend("numpy"):
        model.fit(x[:100], y[:100], epochs=1, batch_size=100, verbose=0)  # built, warm
        rows = {"policy": None, "all cores": os.cpu_count() or 1}
        times = {k: [] for k in rows}
        for _ in range(rounds):
            for label, threads in rows.items():
                times[label].append(epoch_seconds(model, x, y, threads))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=2, help="competing busy processes")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    idle = measure(args.rounds)
    spin = [sys.executable, "-c", "while True: pass"]
    busy = [subprocess.Popen(spin) for _ in range(args.busy)]
    try:
        time.sleep(0.5)
        loaded = measure(args.rounds)
    finally:
        for p in busy:
            p.kill()
    print(f"| BLAS threads | idle epoch | beside {args.busy} busy processes | loaded / idle |")
    print("|---|---|---|---|")
    for k in idle:
        a, b = idle[k] * 1e3, loaded[k] * 1e3
        print(f"| {k} | {a:.1f} ms | {b:.1f} ms | {b / a:.1f}x |")


if __name__ == "__main__":
    main()
