"""Classify scikit-learn's bundled digits with an LSTM that reads each 8x8 image row by row.

Each image is a sequence of 8 time steps of 8 pixels; the LSTM's last hidden state feeds a Dense
classifier. No download needed.

python examples/rnn_digits.py                # the default backend (numpy)
WFRAME_BACKEND=jax python examples/rnn_digits.py
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import wframe as wf


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 8, 8) / 16.0  # (images, rows = time steps, pixels = features), 0..1
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=args.seed, stratify=y
    )
    model = wf.Sequential(
        [wf.layers.LSTM(args.units), wf.layers.Dense(10)],
        seed=args.seed,
    )
    model.build((None, 8, 8))
    model.summary()
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=wf.optimizers.adam(args.lr),
        validation_data=(x_test, y_test),
        verbose=args.verbose,
    )
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    print(f"backend {wf.get_backend().name}: test accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
