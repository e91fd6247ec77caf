"""One epoch of ``fit`` against hand-written loops, in one run: the suite's fit workloads.

Run:  .venv/bin/python benchmarks/bench_fit.py [--quick] [--rounds N] [--baseline PATH]
      [--out DIR] [any other option of ``python -m wframe bench``]

The same as ``python -m wframe bench --workloads fit_digits,fit_digits_sgd,fit_large --peers
keras --rounds 10 --out benchmarks/results/bench_fit`` (``--quick``: 2 rounds, smaller data).
The workloads (``wframe/bench/workloads.py``; float32, softmax cross-entropy on integer labels,
every example, the partial batch kept):

- fit_digits: MLP 64-128-10 (relu), Adam lr 1e-3, batch 32, scikit-learn's 1,797 digits (x/16):
  one ``fit`` epoch, and one train step on a fixed batch of 32 digits;
- fit_digits_sgd: the same MLP with SGD lr 0.01, one epoch, whose references log no metric;
- fit_large: MLP 784-1024-1024-10 (relu), SGD lr 0.01, batch 256, 8,192 seeded random rows.

Epoch rows time shuffle, gather, steps and the epoch's loss read on the host: wframe[numpy] and
wframe[jax] (``fit(epochs=1)`` called again on one model), wframe[jax] spe=epoch
(``steps_per_execution="epoch"``), reference[numpy] (hand-written forward, backward and in-place
update, ``take`` gather), reference[jax] (a plain per-step ``jax.jit`` of ``value_and_grad`` +
optax, donated state, batches gathered on the host), reference[jax] scan (a plain ``lax.scan``
over the epoch's batches in one jit, data on the device) and Keras 3 on JAX when installed. All
start from wframe's seed-0 weights and shuffle epoch e as ``fit`` does, so first-epoch losses
agree (checked); the references compute the accuracy ``fit`` logs, except fit_digits_sgd's.
Rows take turns in rounds; medians with min–max over rounds; ratios pair the rounds. Targets:
fit_digits epoch wframe[numpy] <= 1.3x reference[numpy], wframe[jax] <= 1.1x reference[jax],
spe=epoch <= 1.1x the scan, Keras >= 3x spe=epoch; one step <= 1.5x; fit_large <= 1.05x.

``--baseline PATH`` (another checkout, e.g. of an earlier commit): every wframe row runs on this
checkout and on PATH's, each checkout's in a worker process of its own with ``PYTHONPATH`` at it,
in the same rounds as the references; the report adds after / before ratios.
"""

from __future__ import annotations

import argparse
import sys

from wframe import bench

PRESET = {
    "workloads": "fit_digits,fit_digits_sgd,fit_large",
    "peers": "keras",
    "out": "benchmarks/results/bench_fit",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser).set_defaults(**PRESET)
    args = parser.parse_args(argv)
    if args.rounds is None and not args.quick:
        args.rounds = 10
    return bench.run(args)


if __name__ == "__main__":
    sys.exit(main())
