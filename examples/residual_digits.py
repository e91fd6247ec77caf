"""Train a residual MLP with parallel branches on scikit-learn's bundled digits (no download).

Composition is a layer: a chain of two Dense layers inside a Residual block, used twice (one
set of weights, gradients added), then two branches concatenated, then the classifier.

python examples/residual_digits.py                # the default backend (numpy)
WFRAME_BACKEND=jax python examples/residual_digits.py
"""

from __future__ import annotations

from _digits import run

import wframe as wf


def make_model(seed: int) -> wf.Sequential:
    layers = wf.layers
    block = layers.Residual(
        layers.Sequential(
            [
                layers.Dense(64, activation="relu", kernel_init="he_normal"),
                layers.Dense(64, kernel_init="he_normal"),
            ]
        ),
        name="block",
    )
    return wf.Sequential(
        [
            layers.Dense(64, activation="relu", kernel_init="he_normal"),
            block,
            layers.Activation("relu"),
            block,  # the same block again: shared weights
            layers.Activation("relu"),
            layers.Concatenate([layers.Dense(32, activation="relu"), layers.Dense(16)]),
            layers.Dense(10),
        ],
        seed=seed,
    )


if __name__ == "__main__":
    run(make_model, shape=(64,), epochs=30, lr=1e-3, description=__doc__.splitlines()[0])
