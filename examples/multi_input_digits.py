"""Two inputs, two outputs, one shared layer: scikit-learn's digits seen as a top and a bottom
half, classified (which digit) and measured (how much ink, standardized), saved and reloaded.

The two halves of each 8x8 image go through the same Dense encoder (one set of weights, its
gradients summed over both uses); the two codes are merged, and two heads read the merge: a
softmax over the 10 digits and a regression of the image's mean intensity. The model is saved
with ``wf.save_model``, reloaded from the file alone, and predicts the same on another backend.

    python examples/multi_input_digits.py
    WFRAME_BACKEND=jax python examples/multi_input_digits.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import wframe as wf
from wframe.layers import Concatenate, Dense, Dropout, Multiply


def make_model(seed: int) -> wf.Model:
    top, bottom = wf.Input((32,), name="top"), wf.Input((32,), name="bottom")
    encoder = Dense(64, activation="relu", name="encoder")  # shared by both halves
    a, b = encoder(top), encoder(bottom)
    merged = Concatenate(name="merge")([a, b, Multiply(name="interact")([a, b])])
    hidden = Dropout(0.2)(Dense(64, activation="relu", name="trunk")(merged))
    digit = Dense(10, name="digit")(hidden)
    ink = Dense(1, name="ink")(hidden)
    return wf.Model({"top": top, "bottom": bottom}, {"digit": digit, "ink": ink}, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args()
    x, labels = load_digits(return_X_y=True)
    x = x / 16.0
    ink = x.mean(axis=1, keepdims=True)
    ink = (ink - ink.mean()) / ink.std()  # standardized: predicting the mean scores mse 1
    split = train_test_split(x, labels, ink, test_size=0.2, random_state=args.seed, stratify=labels)
    x_train, x_test, d_train, d_test, i_train, i_test = split

    def halves(a):
        return {"top": a[:, :32], "bottom": a[:, 32:]}

    model = make_model(args.seed)
    model.summary()
    model.compile(
        optimizer=wf.optimizers.adam(3e-3),
        loss={"digit": "softmax_cross_entropy", "ink": "mse"},
        loss_weights={"digit": 1.0, "ink": 0.5},
    )
    model.fit(
        halves(x_train),
        {"digit": d_train, "ink": i_train},
        epochs=args.epochs,
        validation_data=(halves(x_test), {"digit": d_test, "ink": i_test}),
        verbose=args.verbose,
    )
    logs = model.evaluate(halves(x_test), {"digit": d_test, "ink": i_test})
    backend = model.backend.name
    print(
        f"backend {backend}: test accuracy {logs['digit_accuracy']:.4f}, ink mse "
        f"{logs['ink_loss']:.4f} (predicting the mean: {np.var(i_test):.4f})"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "two_heads.safetensors"
        wf.save_model(model, path)
        other = "numpy" if backend != "numpy" else "jax" if "jax" in wf.available() else "numpy"
        with wf.use_backend(other):
            again = wf.load_model(path)
        got, want = again.predict(halves(x_test)), model.predict(halves(x_test))
        gap = max(float(np.max(np.abs(wf.to_numpy(got[k]) - wf.to_numpy(want[k])))) for k in want)
        print(f"reloaded on {other}: largest difference from the original's outputs {gap:.2e}")


if __name__ == "__main__":
    main()
