"""Train a small CNN on scikit-learn's bundled handwritten digits, as 8x8x1 images (no download).

python examples/cnn_digits.py                # the default backend (numpy)
WFRAME_BACKEND=jax python examples/cnn_digits.py
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import wframe as wf


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 8, 8, 1)  # pixel intensities are 0..16; NHWC, one channel
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=args.seed, stratify=y
    )
    layers = wf.layers
    model = wf.Sequential(
        [
            layers.Conv2D(16, 3, padding="same", activation="relu", kernel_init="he_normal"),
            layers.MaxPool2D(),  # 8x8 -> 4x4
            layers.Conv2D(32, 3, padding="same", activation="relu", kernel_init="he_normal"),
            layers.MaxPool2D(),  # 4x4 -> 2x2
            layers.Flatten(),
            layers.Dense(10),
        ],
        seed=args.seed,
    )
    model.build((None, 8, 8, 1))
    model.summary()
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=wf.optimizers.adam(3e-3),
        validation_data=(x_test, y_test),
        verbose=args.verbose,
    )
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    print(f"backend {wf.get_backend().name}: test accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
