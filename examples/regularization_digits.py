"""Measure two claims on digits: "L2 reduces overfitting by 40-60%" and "L1 encourages sparsity".

An over-parameterized MLP (64-256-256-10, relu, about 85k weights) is trained on 200 digits, far
past the point where it fits them perfectly; the other 1597 digits are the test set. It is trained
unregularized, with an L1 or an L2 penalty on every kernel (at two strengths for L2: 1e-3 and
Keras' default 1e-2), with dropout after each hidden layer, and with AdamW's decoupled weight
decay. The train-test accuracy gap measures overfitting; its reduction is computed per seed
against the unregularized run with the same split and initial weights.

python examples/regularization_digits.py              # 5 seeds
python examples/regularization_digits.py --quick      # 1 seed, 3 configurations, fewer epochs
WFRAME_BACKEND=jax python examples/regularization_digits.py --seeds 3
"""

from __future__ import annotations

import time

import numpy as np
from _claims import (
    clearly_positive,
    digits,
    mean_std,
    near_zero_fraction,
    one_blas_thread,
    parse_args,
    table,
    verdict,
)
from sklearn.model_selection import train_test_split

import wframe as wf

TRAIN_SIZE = 200
EPOCHS, QUICK_EPOCHS = 150, 60
BATCH_SIZE = 32
LR = 1e-3
NEAR_ZERO = 1e-3  # a weight is "near zero" below this fraction of its kernel's largest |w|

# name -> (kernel regularizer, dropout rate, AdamW weight decay or None for Adam)
CONFIGS = {
    "none": (None, 0.0, None),
    "L1, λ=1e-4": (wf.regularizers.l1(1e-4), 0.0, None),
    "L2, λ=1e-3": (wf.regularizers.l2(1e-3), 0.0, None),
    "L2, λ=1e-2": (wf.regularizers.l2(1e-2), 0.0, None),
    "dropout 0.5": (None, 0.5, None),
    "AdamW, wd=0.1": (None, 0.0, 0.1),
}
QUICK_CONFIGS = ("none", "L1, λ=1e-4", "L2, λ=1e-3")


def make_model(seed: int, regularizer, dropout: float) -> wf.Sequential:
    layers = []
    for _ in range(2):
        layers.append(
            wf.layers.Dense(
                256, activation="relu", kernel_init="he_normal", kernel_regularizer=regularizer
            )
        )
        if dropout:
            layers.append(wf.layers.Dropout(dropout))
    layers.append(wf.layers.Dense(10, kernel_regularizer=regularizer))
    return wf.Sequential(layers, seed=seed)


def measure(seed: int, epochs: int, configs, x, y) -> dict[str, dict[str, float]]:
    """Train ``configs`` on the split of ``seed``; their metrics by configuration name."""
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, train_size=TRAIN_SIZE, random_state=seed, stratify=y
    )
    results = {}
    for name in configs:
        regularizer, dropout, weight_decay = CONFIGS[name]
        model = make_model(seed, regularizer, dropout)
        if weight_decay is None:
            optimizer = wf.optimizers.adam(LR)
        else:
            optimizer = wf.optimizers.adamw(LR, weight_decay=weight_decay)
        model.fit(
            x_train, y_train, epochs=epochs, batch_size=BATCH_SIZE, optimizer=optimizer, verbose=0
        )
        train = model.evaluate(x_train, y_train)
        test = model.evaluate(x_test, y_test)
        results[name] = {
            "train": train["accuracy"],
            "test": test["accuracy"],
            "gap": train["accuracy"] - test["accuracy"],
            "test_loss": test["loss"],
            "zero": near_zero_fraction(model.params, NEAR_ZERO),
        }
    return results


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], seeds=5)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    configs = QUICK_CONFIGS if args.quick else tuple(CONFIGS)
    x, y = digits()
    print(
        f"backend {wf.get_backend().name}: MLP 64-256-256-10 on {TRAIN_SIZE} training digits, "
        f"{len(x) - TRAIN_SIZE} test digits; Adam lr={LR}, batch {BATCH_SIZE}, {epochs} epochs, "
        f"{args.seeds} seed(s)"
    )
    start = time.perf_counter()
    runs = [measure(seed, epochs, configs, x, y) for seed in range(args.seeds)]

    def col(name, key):
        return [r[name][key] for r in runs]

    def reduction(name):  # per seed, against the unregularized run of the same seed
        return [
            100 * (1 - r[name]["gap"] / r["none"]["gap"]) if r["none"]["gap"] > 0 else float("nan")
            for r in runs
        ]

    headers = [
        "regularization",
        "train acc",
        "test acc",
        "train-test gap",
        "gap reduction vs none (%)",
        "test loss",
        f"near-zero weights (< {NEAR_ZERO:g} × kernel max)",
    ]
    rows = [
        [
            name,
            mean_std(col(name, "train")),
            mean_std(col(name, "test")),
            mean_std(col(name, "gap")),
            "—" if name == "none" else mean_std(reduction(name), ".0f"),
            mean_std(col(name, "test_loss")),
            mean_std(col(name, "zero")),
        ]
        for name in configs
    ]
    print()
    print(table(headers, rows))
    print()
    print(
        f"mean ± std over {args.seeds} seed(s) (seed = split and initial weights); "
        f"{time.perf_counter() - start:.1f} s"
    )

    l2 = [name for name in configs if name.startswith("L2")]
    held = [
        n for n in l2 if clearly_positive(reduction(n)) and 40 <= np.nanmean(reduction(n)) <= 60
    ]
    detail = "; ".join(
        f"{n}: gap {mean_std(col('none', 'gap'))} -> {mean_std(col(n, 'gap'))}, "
        f"reduction {mean_std(reduction(n), '.0f')} %"
        for n in l2
    )
    print(verdict("L2 reduces overfitting by 40-60%", bool(held), detail))
    l1 = next(name for name in CONFIGS if name.startswith("L1"))
    sparse = [a - b for a, b in zip(col(l1, "zero"), col("none", "zero"), strict=True)]
    print(
        verdict(
            "L1 encourages sparsity",
            clearly_positive(sparse),
            f"near-zero weights {mean_std(col(l1, 'zero'))} with {l1} vs "
            f"{mean_std(col('none', 'zero'))} without, test acc "
            f"{mean_std(col(l1, 'test'))} vs {mean_std(col('none', 'test'))}",
        )
    )


if __name__ == "__main__":
    with one_blas_thread():
        main()
