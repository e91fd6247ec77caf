"""Measure a claim on digits: "removing up to 90% of parameters costs < 2% accuracy".

The digits MLP of train_digits.py (64-128-64-10) and the CNN of cnn_digits.py are trained on 80%
of the digits (with those examples' optimizer, learning rate and epochs) and tested on the other
20%. Their weight matrices and kernels are then magnitude-pruned (one global threshold; biases
are kept) to each sparsity in three ways, starting from the same trained weights:

- one-shot: ``wframe.pruning.prune``, no further training;
- one-shot + fine-tuning: the same, then FINE_TUNE_EPOCHS epochs of ``fit`` with a fresh Adam at
  the model's learning rate (the masks keep the pruned weights at zero);
- gradual: FINE_TUNE_EPOCHS epochs of ``fit`` with a ``PruningSchedule`` callback that raises the
  sparsity from 0 (Zhu & Gupta's cubic schedule) over the first half, then holds it: the same
  training budget as one-shot + fine-tuning.

The drop is the dense model's test accuracy minus the pruned one's, per seed, in points.

python examples/prune_digits.py              # 3 seeds
python examples/prune_digits.py --quick      # 1 seed, MLP only, fewer sparsities and epochs
WFRAME_BACKEND=jax python examples/prune_digits.py --seeds 2
"""

from __future__ import annotations

import math
import time

import cnn_digits
import train_digits
from _claims import band, digits, mean_std, one_blas_thread, parse_args, table, verdict
from sklearn.model_selection import train_test_split

import wframe as wf
from wframe import pruning

SPARSITIES, QUICK_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95), (0.5, 0.9)
FINE_TUNE_EPOCHS, QUICK_FINE_TUNE_EPOCHS = 8, 4
BATCH_SIZE = 32
CLAIM_UP_TO, CLAIM_DROP = 0.9, 2.0  # "up to 90%", "< 2% accuracy" (points)

QUICK_MODELS = ("MLP",)
# name -> (make_model, input shape, Adam learning rate, epochs, quick epochs): as the examples
MODELS = {
    "MLP": (train_digits.make_model, (64,), 1e-3, 30, 15),
    "CNN": (cnn_digits.make_model, (8, 8, 1), 3e-3, 20, 10),
}


def total_sparsity(model) -> float:
    """The fraction of all params (biases included) that are exactly zero."""
    return pruning.sparsity_report(model, print_fn=None)[-1]["sparsity"]


def copy_of(make_model, seed, shape, params):
    """A fresh model holding ``params`` (the trained dense weights; prune replaces, not mutates)."""
    model = make_model(seed)
    model.build((None, *shape))
    model.params = params
    return model


def train(model, data, lr: float, epochs: int, callbacks=()):
    x_train, y_train, _, _ = data
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        optimizer=wf.optimizers.adam(lr),
        verbose=0,
        callbacks=list(callbacks),
    )
    return model


def accuracy(model, data) -> float:
    _, _, x_test, y_test = data
    return model.evaluate(x_test, y_test)["accuracy"]


def measure(seed: int, quick: bool, x, y, show_report: bool) -> dict:
    sparsities = QUICK_SPARSITIES if quick else SPARSITIES
    fine_tune = QUICK_FINE_TUNE_EPOCHS if quick else FINE_TUNE_EPOCHS
    results = {}
    for name in QUICK_MODELS if quick else MODELS:
        make_model, shape, lr, epochs, quick_epochs = MODELS[name]
        x_train, x_test, y_train, y_test = train_test_split(
            x.reshape(-1, *shape), y, test_size=0.2, random_state=seed, stratify=y
        )
        data = (x_train, y_train, x_test, y_test)

        dense = train(make_model(seed), data, lr, quick_epochs if quick else epochs)
        results[(name, 0.0)] = {"dense": accuracy(dense, data)}
        steps = math.ceil(len(x_train) / BATCH_SIZE)
        for sparsity in sparsities:
            model = pruning.prune(copy_of(make_model, seed, shape, dense.params), sparsity=sparsity)
            one_shot = accuracy(model, data)
            tuned = accuracy(train(model, data, lr, fine_tune), data)
            gradual = copy_of(make_model, seed, shape, dense.params)
            schedule = pruning.PruningSchedule(
                final_sparsity=sparsity,
                begin_step=0,
                end_step=steps * max(fine_tune // 2, 1),
                frequency=max(steps // 4, 1),
            )
            train(gradual, data, lr, fine_tune, [schedule])
            if show_report and name == "MLP" and sparsity == CLAIM_UP_TO:
                print(
                    f"\nsparsity_report of the MLP after gradual pruning to {sparsity:.0%} "
                    f"(seed {seed}):"
                )
                pruning.sparsity_report(gradual)
            results[(name, sparsity)] = {
                "one_shot": one_shot,
                "tuned": tuned,
                "gradual": accuracy(gradual, data),
                "zeros_tuned": total_sparsity(model),
                "zeros_gradual": total_sparsity(gradual),
            }
    return results


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], seeds=3)
    x, y = digits()
    fine_tune = QUICK_FINE_TUNE_EPOCHS if args.quick else FINE_TUNE_EPOCHS
    print(
        f"backend {wf.get_backend().name}: {' and '.join(QUICK_MODELS if args.quick else MODELS)}"
        ", 80/20 split of the digits, "
        f"{fine_tune} epochs of fine-tuning or gradual pruning, {args.seeds} seed(s)"
    )
    start = time.perf_counter()
    runs = [
        measure(seed, args.quick, x, y, seed == 0 and not args.quick) for seed in range(args.seeds)
    ]

    def col(key, field):
        return [r[key][field] for r in runs]

    def drop(key, field):  # points, per seed, against the same seed's dense model
        return [100 * (r[(key[0], 0.0)]["dense"] - r[key][field]) for r in runs]

    methods = {"one_shot": "one-shot", "tuned": "one-shot + fine-tune", "gradual": "gradual"}
    headers = ["model", "dense acc", "sparsity", "zeros (all params)"]
    for label in methods.values():
        headers += [f"{label} acc", "drop (points)"]
    rows = []
    for key in runs[0]:
        model, sparsity = key
        if sparsity == 0.0:
            continue
        zeros = [100 * z for z in col(key, "zeros_tuned") + col(key, "zeros_gradual")]
        dense = mean_std(col((model, 0.0), "dense"))
        row = [model, dense, f"{sparsity:.0%}", mean_std(zeros, ".1f") + " %"]
        for field in methods:
            row += [mean_std(col(key, field)), mean_std(drop(key, field), ".1f", sign=True)]
        rows.append(row)
    print()
    print(table(headers, rows))
    print()
    print(
        f"zeros: sparsity_report's total over all params after fine-tuning and after gradual "
        f"pruning (biases are not pruned); mean ± std over {args.seeds} seed(s) "
        f"(seed = split and initial weights); {time.perf_counter() - start:.1f} s"
    )

    claim = "removing up to 90% of parameters costs < 2% accuracy"
    for field, label in methods.items():
        kept, details = True, []
        for model in dict.fromkeys(key[0] for key in runs[0]):
            keys = [k for k in runs[0] if k[0] == model and 0 < k[1] <= CLAIM_UP_TO]
            # The largest sparsity up to which the whole mean ± std band of the drop is < 2.
            upto = 0.0
            for k in keys:  # in increasing sparsity
                if band(drop(k, field))[1] >= CLAIM_DROP:
                    break
                upto = k[1]
            kept &= upto == keys[-1][1]
            last = keys[-1]
            reach = (
                f"mean + std < {CLAIM_DROP:g} up to {upto:.0%}"
                if upto
                else f"mean + std >= {CLAIM_DROP:g} already at {keys[0][1]:.0%}"
            )
            details.append(
                f"{model}: drop at {last[1]:.0%} "
                f"{mean_std(drop(last, field), '.1f', sign=True)} points, {reach}"
            )
        print(verdict(f"{claim} ({label})", kept, "; ".join(details)))


if __name__ == "__main__":
    with one_blas_thread():
        main()
