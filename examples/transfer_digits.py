"""Measure a claim on digits: "with 20 labelled images per class, transfer beats scratch".

The CNN of cnn_digits.py (8x8x1 images) is pretrained on 80% of the digits 0-4 (a 5-way head,
that example's Adam learning rate) and checked on the other 20%, written to a temporary folder
with ``wf.save_model`` and read back with ``wf.load_model``. ``wf.transfer.replace_head`` then
keeps its body (both convolutions) and gives it a fresh 5-way ``Dense`` named ``head`` for the
digits 5-9. Each seed draws 20 training images per class of 5-9 (100 images); the test set is
every other image of 5-9. Three models train on those 100 images for the same number of
epochs:

- (a) frozen body: ``model.freeze(...)`` of everything but the head, Adam HEAD_LR on the head;
- (b) fine-tune: nothing frozen, ``wf.optimizers.partition`` gives the head Adam HEAD_LR and
  the body Adam BODY_LR (10x lower);
- (c) scratch: the same architecture from fresh weights, Adam HEAD_LR on everything;
- (d) a control: (c)'s fresh weights with the body frozen, so only the head trains (as in (a)).
  What (a) gains over (d) is what the pretrained features are worth on their own.

The seed sets the pretraining (its 80/20 split and initial weights: pretraining is done once
per seed), the 100-image sample, the head's and the scratch model's initial weights and the
shuffles. Transfer "beats" scratch when the whole mean ± std band of the per-seed paired
difference (transfer minus scratch test accuracy, same seed, same 100 images) is above zero.

python examples/transfer_digits.py               # 5 seeds
python examples/transfer_digits.py --quick       # 1 seed, fewer epochs
WFRAME_BACKEND=jax python examples/transfer_digits.py --seeds 3
"""

from __future__ import annotations

import os
import tempfile
import time

import cnn_digits
import numpy as np
from _claims import (
    EpochClock,
    clearly_positive,
    digits,
    mean_std,
    one_blas_thread,
    parse_args,
    table,
    verdict,
)
from sklearn.model_selection import train_test_split

import wframe as wf

SHAPE = (8, 8, 1)
PER_CLASS = 20  # labelled training images per class of 5-9
PRETRAIN_EPOCHS, QUICK_PRETRAIN_EPOCHS = 10, 5
EPOCHS, QUICK_EPOCHS = 60, 30  # on the 100 images, the same for (a), (b) and (c)
BATCH_SIZE = 20
PRETRAIN_LR = 3e-3  # cnn_digits.py's
HEAD_LR, BODY_LR = 3e-3, 3e-4
METHODS = {
    "frozen": "(a) frozen body + new head",
    "tuned": "(b) fine-tune, body lr / 10",
    "scratch": "(c) scratch",
    "random": "(d) control: frozen random body",
}


def five_way(seed: int) -> wf.Sequential:
    """cnn_digits.py's CNN with a 5-way head named ``head``."""
    body = cnn_digits.make_model(seed).layers[:-1]
    return wf.Sequential([*body, wf.layers.Dense(5, name="head")], seed=seed)


def pretrain(seed: int, x: np.ndarray, y: np.ndarray, epochs: int, folder: str):
    """Train on 80% of the digits 0-4 and save the model; its path and held-out accuracy."""
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    model = five_way(seed)
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=32,
        optimizer=wf.optimizers.adam(PRETRAIN_LR),
        verbose=0,
    )
    path = os.path.join(folder, f"pretrained_{seed}.safetensors")
    wf.save_model(model, path)
    return path, model.evaluate(x_test, y_test)["accuracy"]


def sample(seed: int, y: np.ndarray) -> np.ndarray:
    """Indices of PER_CLASS images of each class in ``y``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.choice(np.flatnonzero(y == c), PER_CLASS, replace=False) for c in np.unique(y)]
    )


def train(model, optimizer, data, epochs: int) -> dict:
    x_train, y_train, x_test, y_test = data
    clock = EpochClock()
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        optimizer=optimizer,
        verbose=0,
        callbacks=[clock],
    )
    return {
        "test": model.evaluate(x_test, y_test)["accuracy"],
        "train": model.evaluate(x_train, y_train)["accuracy"],
        "seconds": clock.seconds[-1],
    }


def measure(seed: int, quick: bool, x, y, folder: str) -> dict:
    low = y < 5
    path, pre = pretrain(
        seed, x[low], y[low], QUICK_PRETRAIN_EPOCHS if quick else PRETRAIN_EPOCHS, folder
    )
    x_new, y_new = x[~low], y[~low] - 5  # digits 5-9 as labels 0-4
    chosen = np.zeros(len(y_new), bool)
    chosen[sample(seed, y_new)] = True
    data = (x_new[chosen], y_new[chosen], x_new[~chosen], y_new[~chosen])
    epochs = QUICK_EPOCHS if quick else EPOCHS

    def transferred():
        loaded = wf.load_model(path)
        return wf.transfer.replace_head(loaded, wf.layers.Dense(5, name="head"), seed=seed)

    frozen = transferred()
    frozen.freeze([n for n in frozen.trainable if not n.startswith("head/")])
    tuned_opt = wf.optimizers.partition(
        {"body": wf.optimizers.adam(BODY_LR), "head": wf.optimizers.adam(HEAD_LR)},
        {"head": "head", "*": "body"},
    )
    random = five_way(seed).build((None, *SHAPE))
    random.freeze([n for n in random.trainable if not n.startswith("head/")])
    return {
        "pretrain": pre,
        "test_size": len(data[3]),
        "frozen": train(frozen, wf.optimizers.adam(HEAD_LR), data, epochs),
        "tuned": train(transferred(), tuned_opt, data, epochs),
        "scratch": train(five_way(seed), wf.optimizers.adam(HEAD_LR), data, epochs),
        "random": train(random, wf.optimizers.adam(HEAD_LR), data, epochs),
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], seeds=5)
    x, y = digits(SHAPE)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    pre_epochs = QUICK_PRETRAIN_EPOCHS if args.quick else PRETRAIN_EPOCHS
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        runs = [measure(seed, args.quick, x, y, folder) for seed in range(args.seeds)]
    print(
        f"backend {wf.get_backend().name}: CNN pretrained on digits 0-4 ({pre_epochs} epochs, "
        f"once per seed; held-out 0-4 accuracy {mean_std(r['pretrain'] for r in runs)}), then "
        f"{PER_CLASS} images per class of 5-9 ({5 * PER_CLASS} images, {epochs} epochs), "
        f"tested on the other {runs[0]['test_size']}; {args.seeds} seed(s)"
    )

    def col(method, field):
        return [r[method][field] for r in runs]

    rows = [
        [
            label,
            mean_std(col(m, "test")),
            mean_std(col(m, "train")),
            str(epochs),
            mean_std(col(m, "seconds"), ".2f"),
        ]
        for m, label in METHODS.items()
    ]
    print()
    print(table(["model", "test acc", "train acc", "epochs", "seconds"], rows))
    print()
    print(
        f"mean ± std over {args.seeds} seed(s); seconds: fit's wall clock (on JAX including "
        f"compilation); {time.perf_counter() - start:.1f} s in all"
    )

    test = {m: np.array(col(m, "test")) for m in METHODS}

    def gain(m, base):  # points, paired per seed
        return mean_std(100 * (test[m] - test[base]), ".1f", sign=True)

    # Measured, not guessed: the pretrained body's worth over a random one, frozen, against
    # what training the body on the 100 images is worth.
    why = (
        f"frozen, the body pretrained on 0-4 adds {gain('frozen', 'random')} points over a "
        f"random body ({mean_std(test['frozen'])} vs {mean_std(test['random'])}), while "
        f"training the body on the 100 images adds {gain('scratch', 'random')} points "
        f"(scratch {mean_std(test['scratch'])})"
    )
    for m in ("frozen", "tuned"):
        diffs = test[m] - test["scratch"]
        holds = clearly_positive(diffs)
        detail = (
            f"{METHODS[m][:3]} minus (c), paired per seed: {gain(m, 'scratch')} points "
            f"({int((diffs > 0).sum())} of {len(diffs)} seeds above zero)"
        )
        print(
            verdict(
                f"transfer beats scratch {METHODS[m][:3]}",
                holds,
                detail if holds else f"{detail}; why: {why}",
            )
        )


if __name__ == "__main__":
    with one_blas_thread():
        main()
