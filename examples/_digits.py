"""What the digits examples share: arguments, the splits, training and the accuracy report.

The digits are split 80/20 into training and test data (stratified); 10% of the training
data is held out again as the validation set that ``fit`` reports each epoch (``val_loss``,
``val_accuracy``) and that one would tune on. The test set is read once, at the end: its
accuracy is the number the examples promise, reported apart from the validation accuracy.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import wframe as wf

#: The fraction of the training data held out for validation.
VALIDATION = 0.1


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
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=VALIDATION, random_state=args.seed, stratify=y_train
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
        validation_data=(x_val, y_val),
        verbose=args.verbose,
    )
    val = model.evaluate(x_val, y_val)["accuracy"]
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    name = wf.get_backend().name
    print(
        f"backend {name}: validation accuracy {val:.4f} ({len(y_val)} examples held out of "
        f"the {len(y_train) + len(y_val)} training ones, reported each epoch)"
    )
    print(
        f"backend {name}: test accuracy {accuracy:.4f} ({len(y_test)} examples never seen "
        "in training nor validation)"
    )
    return accuracy
