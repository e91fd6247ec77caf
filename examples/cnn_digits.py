"""Train a small CNN on scikit-learn's bundled handwritten digits, as 8x8x1 images (no download).

python examples/cnn_digits.py                # the default backend (numpy)
WFRAME_BACKEND=jax python examples/cnn_digits.py
"""

from __future__ import annotations

from _digits import run

import wframe as wf


def make_model(seed: int) -> wf.Sequential:
    layers = wf.layers
    return wf.Sequential(
        [
            layers.Conv2D(16, 3, padding="same", activation="relu", kernel_init="he_normal"),
            layers.MaxPool2D(),  # 8x8 -> 4x4
            layers.Conv2D(32, 3, padding="same", activation="relu", kernel_init="he_normal"),
            layers.MaxPool2D(),  # 4x4 -> 2x2
            layers.Flatten(),
            layers.Dense(10),
        ],
        seed=seed,
    )


if __name__ == "__main__":
    run(make_model, shape=(8, 8, 1), epochs=20, lr=3e-3, description=__doc__.splitlines()[0])
