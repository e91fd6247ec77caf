"""What the digits examples share: arguments, the 80/20 split, training and the accuracy report."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import wframe as wf


def run(
    make_model: Callable[[int], wf.Sequential],
    *,
    shape: tuple[int, ...],
    epochs: int,
    lr: float,
    description: str,
) -> float:
    """Train ``make_model(seed)`` on the digits reshaped to ``shape``; print and return accuracy."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, *shape)  # pixel intensities are 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=args.seed, stratify=y
    )
    model = make_model(args.seed)
    model.build((None, *shape))
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
