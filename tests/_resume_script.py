"""Run by tests/test_checkpoint.py in a subprocess: ``fit`` with BackupAndRestore on NumPy, with
a callback that SIGKILLs the process in the middle of an epoch the first time (a marker file
says it already did). Run again, it resumes from the backup and finishes; the final params go to
``final.npz``.

Usage: python tests/_resume_script.py WORKDIR SAVE_FREQ
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

import wframe as wf
from wframe.tree import flatten

EPOCHS, KILL_EPOCH, KILL_BATCH = 5, 2, 5  # 60 examples in batches of 8: 8 batches an epoch


def dataset():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 6)).astype("float32"), rng.integers(0, 3, 60)


def make_model():
    layers = [wf.layers.Dense(16, activation="relu"), wf.layers.Dropout(0.3), wf.layers.Dense(3)]
    return wf.Sequential(layers, seed=1)


class KillOnce(wf.callbacks.Callback):
    """SIGKILL this process after batch ``KILL_BATCH`` of epoch ``KILL_EPOCH``, once."""

    def __init__(self, marker):
        self.marker, self.epoch = marker, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (KILL_EPOCH, KILL_BATCH) and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def train(workdir, save_freq, callbacks=True):
    """The run: with the backup (and the kill) when ``callbacks``, else a plain fit."""
    x, y = dataset()
    model = make_model()
    model.compile(optimizer="adam")
    cbs = [
        wf.callbacks.BackupAndRestore(os.path.join(workdir, "backup"), save_freq=save_freq),
        KillOnce(os.path.join(workdir, "killed")),
    ]
    history = model.fit(
        x, y, epochs=EPOCHS, batch_size=8, verbose=0, callbacks=cbs if callbacks else None
    )
    return model, history


def params_dict(model):
    return {name: wf.to_numpy(a) for name, a in flatten(model.params)}


if __name__ == "__main__":
    workdir, freq = sys.argv[1], sys.argv[2]
    with wf.use_backend("numpy"):
        model, history = train(workdir, freq if freq == "epoch" else int(freq))
    np.savez(
        os.path.join(workdir, "final.npz"),
        epochs_run=len(history.history["loss"]),
        **params_dict(model),
    )
