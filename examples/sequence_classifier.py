"""Classify generated 1-D signals with Conv1D and a bidirectional GRU.

Each of 10 classes is a smooth motif of 12 samples drawn once from a seeded generator; an example
is its class's motif, stretched, scaled, sheared and placed at a random offset in a sequence of
64 samples, under correlated and independent noise (the recipe of MNIST-1D, Greydanus 2020, on
motifs of our own). A Conv1D front end finds the motif wherever it is; a bidirectional GRU reads
the feature sequence both ways. A plain unidirectional GRU on the raw signal is the baseline.

    python examples/sequence_classifier.py
    WFRAME_BACKEND=jax python examples/sequence_classifier.py
    python examples/sequence_classifier.py --quick
"""

from __future__ import annotations

import argparse

import numpy as np

import wframe as wf
from wframe.layers import (
    GRU,
    Bidirectional,
    Conv1D,
    Dense,
    Dropout,
    MaxPool1D,
)

LENGTH, MOTIF, CLASSES = 64, 12, 10


def _smooth(a: np.ndarray, width: float) -> np.ndarray:
    """``a`` convolved along its last axis with a normalized Gaussian of ``width`` samples."""
    t = np.arange(-3 * int(width) - 1, 3 * int(width) + 2)
    kernel = np.exp(-0.5 * (t / width) ** 2)
    kernel /= kernel.sum()
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), -1, a)


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` signals of shape (64, 1) and their classes; the motifs come from seed 12345 always."""
    motifs = _smooth(np.random.default_rng(12345).normal(size=(CLASSES, MOTIF)), 1.0)
    motifs /= np.abs(motifs).max(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    x = np.zeros((n, LENGTH))
    grid = np.linspace(0, 1, MOTIF)
    for i, c in enumerate(labels):
        size = rng.integers(14, 26)  # stretched to 14..25 samples
        shape = np.interp(np.linspace(0, 1, size), grid, motifs[c])
        shape = shape * rng.uniform(0.7, 1.3) + rng.uniform(-0.4, 0.4) * np.linspace(
            -0.5, 0.5, size
        )
        start = rng.integers(0, LENGTH - size + 1)
        x[i, start : start + size] = shape
    x += _smooth(rng.normal(scale=0.6, size=x.shape), 2.0) + rng.normal(scale=0.05, size=x.shape)
    return x[..., None].astype(np.float32), labels


def conv_bigru(seed: int) -> wf.Sequential:
    return wf.Sequential(
        [
            Conv1D(32, 5, padding="same", activation="relu"),
            Conv1D(32, 5, padding="same", activation="relu"),
            MaxPool1D(2),
            Bidirectional(GRU(32)),
            Dropout(0.2),
            Dense(CLASSES),
        ],
        seed=seed,
    )


def plain_gru(seed: int) -> wf.Sequential:
    return wf.Sequential([GRU(64), Dense(CLASSES)], seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small dataset, few epochs")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args()
    n, epochs = (800, 4) if args.quick else (4000, 30)
    epochs = args.epochs or epochs
    x, y = make_data(n, args.seed)
    x_test, y_test = make_data(n // 4, args.seed + 1)
    backend = wf.get_backend().name
    for name, make in (("Conv1D + bidirectional GRU", conv_bigru), ("GRU", plain_gru)):
        model = make(args.seed)
        model.compile(optimizer=wf.optimizers.adam(3e-3))
        model.fit(x, y, epochs=epochs, batch_size=64, verbose=args.verbose)
        accuracy = model.evaluate(x_test, y_test)["accuracy"]
        params = model.count_params()
        print(f"backend {backend}: {name}: test accuracy {accuracy:.4f} ({params:,} params)")


if __name__ == "__main__":
    main()
