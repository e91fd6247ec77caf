"""Classify scikit-learn's bundled digits with an LSTM that reads each 8x8 image row by row.

Each image is a sequence of 8 time steps of 8 pixels; the LSTM's last hidden state feeds a Dense
classifier. No download needed.

    python examples/rnn_digits.py                # the default backend (numpy)
    WFRAME_BACKEND=jax python examples/rnn_digits.py
"""

from __future__ import annotations

from _digits import run

import wframe as wf


def make_model(seed: int) -> wf.Sequential:
    return wf.Sequential([wf.layers.LSTM(64), wf.layers.Dense(10)], seed=seed)


if __name__ == "__main__":
    run(make_model, shape=(8, 8), epochs=25, lr=3e-3, description=__doc__.splitlines()[0])
