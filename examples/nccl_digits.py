"""The digits MLP trained data-parallel with wf.distributed.NcclDataParallel: one process per
GPU, each with its own share of the data, the gradients all-reduced by NCCL every step.

    python -m wframe.distributed.launch --nproc 2 examples/nccl_digits.py        # 2 GPUs, cupy
    python -m wframe.distributed.launch --nproc 2 examples/nccl_digits.py --comm tcp   # CPU

(torchrun --nproc-per-node 2 examples/nccl_digits.py works too.) With ``--comm tcp`` the model
runs on NumPy and the all-reduce goes through rank 0 over TCP, so the script runs anywhere.
Rank 0 prints the test accuracy (the mean over every rank's share of the test set); every rank
prints a checksum of its params, the same on every rank.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import wframe as wf


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comm", choices=("nccl", "tcp"), default="nccl")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args()

    # First: with NCCL this makes GPU LOCAL_RANK current, so the model's arrays go there.
    strategy = wf.distributed.NcclDataParallel(comm=args.comm)
    rank, world = strategy.rank, strategy.world_size
    backend = "cupy" if args.comm == "nccl" else "numpy"

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # pixel intensities are 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=args.seed, stratify=y
    )

    def share(a: np.ndarray) -> np.ndarray:
        """This rank's rows (rank, rank + world, ...): as many on every rank."""
        return a[: len(a) - len(a) % world][rank::world]

    with wf.use_backend(backend):
        model = wf.Sequential(
            [wf.layers.Dense(64, activation="relu"), wf.layers.Dense(10)], seed=args.seed
        )
        model.fit(
            share(x_train),
            share(y_train),
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=wf.optimizers.adam(args.lr),
            validation_data=(share(x_test), share(y_test)),
            verbose=args.verbose if rank == 0 else 0,
            strategy=strategy,
        )
        accuracy = model.evaluate(share(x_test), share(y_test), strategy=strategy)["accuracy"]
        checksum = sum(
            float(np.abs(wf.to_numpy(a)).sum())
            for layer in model.params.values()
            for a in layer.values()
        )
    writes = wf.distributed.is_writer()  # checkpoints: rank 0 only
    print(f"rank {rank}: params checksum {checksum:.6f}, writes files {writes}", flush=True)
    if rank == 0:
        print(f"{world} ranks ({backend}): test accuracy {accuracy:.4f}", flush=True)
    strategy.close()
    return accuracy


if __name__ == "__main__":
    main()
