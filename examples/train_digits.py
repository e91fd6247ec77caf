"""Train an MLP on scikit-learn's bundled handwritten digits (8x8 images, no download).

python examples/train_digits.py                # the default backend (numpy)
WFRAME_BACKEND=jax python examples/train_digits.py
"""

from __future__ import annotations

from _digits import run

import wframe as wf


def make_model(seed: int) -> wf.Sequential:
    return wf.Sequential(
        [
            wf.layers.Dense(128, activation="relu", kernel_init="he_normal"),
            wf.layers.Dense(64, activation="relu", kernel_init="he_normal"),
            wf.layers.Dense(10),
        ],
        seed=seed,
    )


if __name__ == "__main__":
    run(make_model, shape=(64,), epochs=30, lr=1e-3, description=__doc__.splitlines()[0])
