"""Whatever ends a ``fit`` (Ctrl-C, a callback's error, ``stop_training``), the model holds the
arrays of its last completed step with counters that match; threads see whole steps only; a
second ``fit`` is refused; ``build`` never re-initialises; a consumed train state is refused."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense, Dropout, Layer
from wframe.tree import flatten

X = np.random.default_rng(0).standard_normal((70, 5)).astype(np.float32)
Y = np.random.default_rng(1).integers(0, 3, 70)
FIT = dict(batch_size=16, optimizer="adam", verbose=0)  # 5 batches per epoch, the last of 6


def mlp(dropout=0.0):
    extra = [Dropout(dropout)] if dropout else []
    return wf.Sequential([Dense(8, activation="relu"), *extra, Dense(3)], seed=3)


def host(tree):
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree)}


def assert_same_arrays(got, want):
    for part in ("params", "state", "opt_state"):
        a, b = host(getattr(got, part)), host(getattr(want, part))
        assert a.keys() == b.keys(), part
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{part} {name}")


class After(wf.callbacks.Callback):
    """At the ``n``-th batch hook (a compiled call's end), raise or stop training."""

    def __init__(self, n, action):
        self.n, self.action, self.calls = n, action, 0

    def on_train_batch_end(self, batch, logs=None):
        self.calls += 1
        if self.calls == self.n:
            if self.action == "stop":
                self.model.stop_training = True
            else:
                raise self.action


def stopped_cleanly(n, spe, extra=()):
    """The model that a run stopping (``stop_training``) at the ``n``-th batch hook leaves."""
    model = mlp(dropout=0.25)
    model.fit(X, Y, epochs=3, steps_per_execution=spe, callbacks=[After(n, "stop"), *extra], **FIT)
    return model


CASES = [(spe, saving, KeyboardInterrupt) for spe in (1, 3, "epoch") for saving in (False, True)]
CASES.append((3, True, ValueError))  # a callback's error takes the same path as Ctrl-C


@pytest.mark.parametrize("spe, saving, error", CASES)
def test_an_exception_leaves_the_last_completed_step(backend, tmp_path, spe, saving, error):
    n = 2  # the second compiled call: after 2 steps, 4 steps, or the second epoch
    extra = [wf.callbacks.ModelCheckpoint(str(tmp_path / "ck"), save_freq=1)] if saving else []
    model = mlp(dropout=0.25)
    with pytest.raises(error):
        model.fit(
            X, Y, epochs=3, steps_per_execution=spe, callbacks=[After(n, error()), *extra], **FIT
        )
    # The same callbacks: publishing every step runs NumPy's pure (not in-place) optimizer.
    same = [wf.callbacks.ModelCheckpoint(str(tmp_path / "ck2"), save_freq=1)] if saving else []
    clean = stopped_cleanly(n, spe, same)
    assert model.steps == clean.steps == {1: 2, 3: 4, "epoch": 10}[spe]  # calls: 3+1+1
    assert model.epochs == (1 if spe == "epoch" else 0)  # the interrupted epoch is not counted
    assert_same_arrays(model.train_state, clean.train_state)
    # The model works: it predicts, saves, and fits on from there.
    assert np.isfinite(wf.to_numpy(model.predict(X[:4]))).all()
    model.save_weights(str(tmp_path / "w.safetensors"))
    model.fit(X, Y, epochs=1, steps_per_execution=spe, **FIT)
    assert model.steps == clean.steps + 5


@dataclass(frozen=True)
class SigintAt(Layer):
    """The identity, sending this process Ctrl-C from inside its ``n``-th training forward:
    in the middle of a compiled call on NumPy (JAX traces the forward once)."""

    n: int = 0
    seen: list = None

    def init(self, key, in_shape, *, dtype="float32"):
        return {}, {}, in_shape

    def forward(self, params, state, x, *, train=False, key=None):
        if train:
            self.seen.append(1)
            if len(self.seen) == self.n:
                os.kill(os.getpid(), signal.SIGINT)
        return x, state, lambda dy, input_grad=True, need=None: (dy, {})


def test_ctrl_c_inside_a_step_waits_for_the_step_to_finish():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a script
    try:
        _ctrl_c_inside_a_step()
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_inside_a_step():
    with wf.use_backend("numpy"):
        model = wf.Sequential([Dense(8, activation="relu"), SigintAt(7, []), Dense(3)], seed=3)
        with pytest.raises(KeyboardInterrupt):
            model.fit(X, Y, epochs=3, **FIT)
        clean = wf.Sequential([Dense(8, activation="relu"), SigintAt(0, []), Dense(3)], seed=3)
        clean.fit(X, Y, epochs=3, callbacks=[After(7, "stop")], **FIT)
        assert model.steps == clean.steps == 7 and model.epochs == 1
        assert_same_arrays(model.train_state, clean.train_state)


def test_stop_training_ends_the_epoch_as_keras(backend):
    seen = []
    log = wf.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append((e, dict(logs))))
    model = mlp()
    history = model.fit(
        X, Y, epochs=3, validation_data=(X[:20], Y[:20]), callbacks=[After(7, "stop"), log], **FIT
    )
    assert history.epoch == [0, 1] and [e for e, _ in seen] == [0, 1]
    assert "val_loss" in seen[1][1] and len(history.history["val_loss"]) == 2
    assert model.steps == 7 and model.epochs == 2  # the partial epoch ended
    # The partial epoch's loss is the mean over its two batches, as its own sums say.
    assert np.isfinite(history.history["loss"][1])


class Gate(wf.callbacks.Callback):
    """Holds training at its first batch hook until released."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def on_train_batch_end(self, batch, logs=None):
        self.entered.set()
        assert self.release.wait(30)


def test_a_second_fit_and_other_changes_are_refused_while_fitting(backend, tmp_path):
    model = mlp()
    model.build((None, 5))
    path = str(tmp_path / "w.safetensors")
    model.save_weights(path)
    gate, errors = Gate(), []

    def train():
        try:
            model.fit(X, Y, epochs=1, callbacks=[gate], **FIT)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=train)
    thread.start()
    try:
        assert gate.entered.wait(30)
        for call in (
            lambda: model.fit(X, Y, epochs=1, **FIT),
            lambda: model.to_backend("numpy"),
            lambda: model.load_weights(path),
            lambda: model.load_checkpoint(path),
        ):
            with pytest.raises(
                RuntimeError, match=r"Sequential: cannot .* while fit\(\) is running"
            ):
                call()
    finally:
        gate.release.set()
        thread.join(60)
    assert not errors and model.steps == 5
    model.fit(X, Y, epochs=1, **FIT)  # free again afterwards
    assert model.steps == 10


class Snapshots(wf.callbacks.Callback):
    """Records every published params (with ``needs_weights``: at each batch hook)."""

    def __init__(self, every_batch):
        self.needs_weights, self.seen = every_batch, []

    def on_train_batch_end(self, batch, logs=None):
        if self.needs_weights:
            self.seen.append(self.model.params)

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.model.params)


@pytest.mark.parametrize("every_batch", [False, True], ids=["epoch_callback", "batch_weights"])
def test_predict_from_eight_threads_sees_whole_steps(backend, every_batch):
    model = mlp()
    probe = X[:8]
    before = model.predict(probe)  # builds; the pre-fit weights are one whole state too
    snaps = Snapshots(every_batch)
    outputs, errors, done = [], [], threading.Event()

    def read():
        while not done.is_set():
            try:
                outputs.append(np.array(wf.to_numpy(model.predict(probe))))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        model.fit(X, Y, epochs=4, callbacks=[snaps], **FIT)
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:1]
    fn = model.trainer.predict_fn()
    state = model.state
    whole = [np.array(wf.to_numpy(before))]
    whole += [np.array(wf.to_numpy(fn(p, state, model.prepare_inputs(probe)))) for p in snaps.seen]
    whole.append(np.array(wf.to_numpy(model.predict(probe))))
    assert outputs
    for out in outputs:
        assert any(np.array_equal(out, w) for w in whole), "an output from no complete step"


def test_build_on_a_built_model_never_reinitialises(backend):
    model = mlp()
    model.fit(X, Y, epochs=1, **FIT)
    params = model.params
    assert model.build((None, 5)) is model and model.params is params
    with pytest.raises(ValueError, match=r"built for inputs \(None, 5\), got build\(\(None, 7\)\)"):
        model.build((None, 7))
    assert model.params is params


def test_a_consumed_train_state_is_refused_on_every_backend(backend):
    model = mlp()
    model.build((None, 5))
    step = wf.make_train_step(model, "softmax_cross_entropy", "sgd")
    x, y = model.prepare_inputs(X[:16]), backend.asarray(Y[:16].astype(np.int32))
    opt = wf.optimizers.get("sgd").init(model.params)
    ts0 = backend.copy(wf.TrainState(model.params, model.state, opt))
    ts1, _ = step(ts0, x, y)
    with pytest.raises(wf.training.ConsumedStateError, match="consumed by an earlier call"):
        step(ts0, x, y)
    ts2, _ = step(ts1, x, y)
    with pytest.raises(wf.training.ConsumedStateError):
        step(ts1, x, y)
    ts3, _ = step(ts2._replace(masks=None), x, y)  # a state built from a live one is fine
    assert np.isfinite(host(ts3.params)["dense_0/W"]).all()
