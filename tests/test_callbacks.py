"""The callbacks: each one's semantics (Keras 3's), driven directly with scripted logs and inside
``fit``, where what they assign to the model is what training goes on with."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import wframe as wf
from wframe.callbacks import (
    CallbackList,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateMonitor,
    LearningRateScheduler,
    ReduceLROnPlateau,
)
from wframe.optimizers import get_hyperparam, learning_rate
from wframe.tree import flatten


def tiny(seed=0):
    return wf.Sequential([wf.layers.Dense(8, activation="relu"), wf.layers.Dense(3)], seed=seed)


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def host(tree):
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree)}


def assert_trees_equal(got, expected):
    got, expected = host(got), host(expected)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def built(optimizer="sgd"):
    """A built model with an optimizer state, for driving callbacks without ``fit``."""
    model = tiny().build((None, 4)).compile(optimizer=optimizer)
    model.opt_state = model.optimizer.init(model.params)
    return model


def drive(cb, model, values, key="val_loss"):
    """Call ``cb``'s epoch hooks with ``{key: value}`` logs until it stops training; the logs."""
    cb.set_model(model)
    model.stop_training = False
    cb.on_train_begin()
    seen = []
    for epoch, value in enumerate(values):
        logs = {key: value}
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, logs)
        seen.append(logs)
        if model.stop_training:
            break
    cb.on_train_end()
    return seen


def scripted(values, key="score"):
    """A callback that puts ``values[epoch]`` in the epoch logs (before the ones after it)."""
    return LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update({key: values[epoch]}))


class Snapshots(wf.callbacks.Callback):
    """Copies of the model's params at each epoch's end."""

    def __init__(self):
        self.kept = []

    def on_epoch_end(self, epoch, logs=None):
        self.kept.append(self.model.backend.copy(self.model.params))


# --------------------------------------------------------------------------------- EarlyStopping
@pytest.mark.parametrize(
    "kwargs, values, stopped, best",
    [
        (dict(patience=2), [1.0, 0.9, 0.95, 0.92, 0.8], 3, 0.9),
        (dict(patience=0), [1.0, 0.9, 0.95, 0.8], 2, 0.9),
        (dict(patience=1, min_delta=0.1), [1.0, 0.95, 0.85, 0.8], 1, 1.0),
        (dict(patience=2, min_delta=-0.1), [1.0, 0.95, 0.85, 0.9], None, 0.85),  # |min_delta|
        (dict(patience=2, baseline=0.5), [1.0, 0.9, 0.95], 2, 0.9),  # never beats it
        (dict(patience=2), [1.0, 0.9, 0.95], None, 0.9),  # the same without a baseline
        (dict(patience=0, start_from_epoch=2), [1.0, 2.0, 3.0, 4.0], 3, 3.0),
        (dict(patience=0), [1.0, 2.0, 3.0, 4.0], 1, 1.0),
        (dict(patience=0, mode="max"), [1.0, 2.0, 3.0, 2.5], 3, 3.0),
    ],
)
def test_early_stopping_stops_at_the_right_epoch(kwargs, values, stopped, best):
    model = built()
    cb = EarlyStopping(**kwargs)
    seen = drive(cb, model, values)
    assert cb.stopped_epoch == (stopped or 0)
    assert model.stop_training is (stopped is not None)
    assert len(seen) == (len(values) if stopped is None else stopped + 1)
    assert cb.best == best


def test_early_stopping_auto_mode_maximizes_accuracy_and_auc():
    model = built()
    for key in ("val_accuracy", "auc"):
        cb = EarlyStopping(monitor=key, patience=2)
        drive(cb, model, [0.5, 0.6, 0.6, 0.55, 0.7], key=key)
        assert (cb.stopped_epoch, cb.best, cb.wait) == (3, 0.6, 2)
    cb = EarlyStopping(monitor="val_loss", patience=2)  # the others are minimized
    drive(cb, model, [0.5, 0.6, 0.6, 0.55, 0.7])
    assert (cb.stopped_epoch, cb.best) == (2, 0.5)


def test_early_stopping_warns_once_when_the_monitor_is_missing():
    model = built()
    cb = EarlyStopping(monitor="val_loss")
    cb.set_model(model)
    cb.on_train_begin()
    with pytest.warns(UserWarning) as record:
        cb.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})
        cb.on_epoch_end(1, {"loss": 1.0, "accuracy": 0.5})
    assert len(record) == 1
    assert str(record[0].message) == (
        "Early stopping conditioned on metric `val_loss` which is not available. Available "
        "metrics are: loss,accuracy"
    )
    assert not model.stop_training


def test_early_stopping_restores_the_best_epochs_weights(backend):
    x, y = data()
    model = tiny()
    snapshots = Snapshots()
    stop = EarlyStopping(monitor="score", patience=2, restore_best_weights=True)
    history = model.fit(
        x,
        y,
        epochs=10,
        batch_size=16,
        optimizer="sgd",
        verbose=0,
        callbacks=[scripted([3.0, 1.0, 2.0, 2.5, 0.5, 0.1]), snapshots, stop],
    )
    assert history.epoch == [0, 1, 2, 3] and stop.stopped_epoch == 3
    assert stop.best_epoch == 1 and stop.best == 1.0
    assert_trees_equal(model.params, snapshots.kept[1])
    last = host(snapshots.kept[3])["dense_0/W"]
    assert not np.array_equal(host(model.params)["dense_0/W"], last)
    # without restoring, the last epoch's weights stay
    model, snapshots = tiny(), Snapshots()
    model.fit(
        x,
        y,
        epochs=10,
        batch_size=16,
        optimizer="sgd",
        verbose=0,
        callbacks=[scripted([3.0, 1.0, 2.0, 2.5]), snapshots, EarlyStopping("score", patience=2)],
    )
    assert_trees_equal(model.params, snapshots.kept[3])


def test_early_stopping_restores_even_without_stopping_and_prints(capsys):
    model = built()
    first = model.backend.copy(model.params)
    cb = EarlyStopping(patience=5, restore_best_weights=True, verbose=1)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_loss": 1.0})
    model.params = {k: {n: a + 1 for n, a in v.items()} for k, v in model.params.items()}
    cb.on_epoch_end(1, {"val_loss": 2.0})
    cb.on_train_end()
    assert_trees_equal(model.params, first)
    assert "Restoring model weights from the end of the best epoch: 1." in capsys.readouterr().out


# ----------------------------------------------------------------------------- ReduceLROnPlateau
def test_reduce_lr_on_plateau_reduces_with_patience_cooldown_and_min_lr():
    model = built("sgd")  # learning rate 0.01
    cb = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.002)
    seen = drive(cb, model, [1.0] * 10)
    expected = [0.01, 0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025, 0.002, 0.002, 0.002]
    assert [logs["learning_rate"] for logs in seen] == pytest.approx(expected, rel=1e-6)
    assert get_hyperparam(model.opt_state, "learning_rate") == pytest.approx(0.002)
    lr = model.opt_state.hyperparams["learning_rate"]
    assert lr.dtype == wf.to_numpy(model.params["dense_0"]["W"]).dtype  # float32 kept


def test_reduce_lr_on_plateau_waits_for_no_improvement():
    model = built("adam")  # 1e-3
    cb = ReduceLROnPlateau(monitor="val_accuracy", factor=0.1, patience=1, min_delta=0.01)
    seen = drive(cb, model, [0.5, 0.6, 0.605, 0.7, 0.7], key="val_accuracy")  # mode max (auto)
    assert [logs["learning_rate"] for logs in seen] == pytest.approx(
        [1e-3, 1e-3, 1e-3, 1e-4, 1e-4], rel=1e-6
    )
    assert get_hyperparam(model.opt_state, "learning_rate") == pytest.approx(1e-5, rel=1e-6)


def test_reduce_lr_on_plateau_changes_the_rate_fit_uses(backend):
    x, y = data()
    model, snapshots = tiny(), Snapshots()
    reduce = ReduceLROnPlateau(monitor="score", factor=0.0, patience=0)  # to 0: no more steps
    history = model.fit(
        x,
        y,
        epochs=4,
        batch_size=16,
        optimizer="sgd",
        verbose=0,
        callbacks=[scripted([2.0, 1.0, 1.5, 1.5]), snapshots, reduce],
    )
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.01, 0.01, 0.0])
    assert not np.array_equal(
        host(snapshots.kept[2])["dense_0/W"], host(snapshots.kept[1])["dense_0/W"]
    )
    assert_trees_equal(snapshots.kept[3], snapshots.kept[2])  # epoch 3 ran at rate 0
    assert learning_rate(model.optimizer, model.opt_state) == 0.0


def test_reduce_lr_on_plateau_refuses_a_constant_rate_before_any_step(backend):
    # wf.optimizers.sgd(0.1) is schedulable (tests/test_optimizers_more.py); a chain built by
    # hand keeps its rate as a constant: refused at on_train_begin, naming the fix.
    x, y = data()
    model = tiny()
    by_hand = wf.optimizers.chain(wf.optimizers.trace(0.9), wf.optimizers.scale(-0.1))
    with pytest.raises(TypeError, match="keeps its learning rate as a constant") as info:
        model.fit(
            x,
            y,
            epochs=2,
            batch_size=16,
            optimizer=by_hand,
            verbose=0,
            callbacks=[ReduceLROnPlateau(monitor="loss")],
        )
    assert 'optimizer="adam"' in str(info.value) and model.steps == 0


# ------------------------------------------------------------------------- LearningRateScheduler
def test_learning_rate_scheduler_sets_the_rate_each_epoch_directly(capsys):
    model = built("sgd")
    seen = drive(LearningRateScheduler(lambda epoch, lr: lr * 0.5, verbose=1), model, [0.0] * 3)
    assert [logs["learning_rate"] for logs in seen] == pytest.approx([0.005, 0.0025, 0.00125])
    # the stored float32 rate read back as the shortest decimal that rounds to it (host_float)
    assert "Epoch 3: LearningRateScheduler setting learning rate to 0.00125." in (
        capsys.readouterr().out
    )
    seen = drive(LearningRateScheduler(lambda epoch: 0.1 * (epoch + 1)), model, [0.0] * 2)
    assert [logs["learning_rate"] for logs in seen] == pytest.approx([0.1, 0.2])  # Keras' 1-arg


def test_learning_rate_scheduler_rates_appear_in_history_and_are_used(backend):
    x, y = data()
    model, snapshots = tiny(), Snapshots()
    rates = [0.05, 0.0, 0.0, 0.02]
    history = model.fit(
        x,
        y,
        epochs=4,
        batch_size=16,
        optimizer="sgd",
        verbose=0,
        callbacks=[LearningRateScheduler(lambda epoch, lr: rates[epoch]), snapshots],
    )
    assert history.history["learning_rate"] == pytest.approx(rates)
    assert_trees_equal(snapshots.kept[1], snapshots.kept[0])  # rate 0: no change
    assert_trees_equal(snapshots.kept[2], snapshots.kept[0])
    assert not np.array_equal(
        host(snapshots.kept[3])["dense_0/W"], host(snapshots.kept[2])["dense_0/W"]
    )
    assert get_hyperparam(model.opt_state, "learning_rate") == pytest.approx(0.02)
    # the first epoch's step is plain SGD at 0.05: one full batch, no shuffle
    model = tiny()
    initial = host(model.build((None, 4)).params)
    model.fit(
        x[:16],
        y[:16],
        epochs=1,
        batch_size=16,
        optimizer="sgd",
        shuffle=False,
        verbose=0,
        callbacks=[LearningRateScheduler(lambda epoch, lr: 0.05)],
    )
    _, grads = tiny().value_and_grad(x[:16], y[:16])
    expected = {name: initial[name] - np.float32(0.05) * g for name, g in host(grads).items()}
    for name, value in host(model.params).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_learning_rate_scheduler_bad_output_and_scheduled_rates():
    model = built("sgd")
    with pytest.raises(ValueError, match="should be a float. Got: 'fast'"):
        drive(LearningRateScheduler(lambda epoch, lr: "fast"), model, [0.0])
    scheduled = (
        tiny()
        .build((None, 4))
        .compile(optimizer=wf.optimizers.get("sgd", learning_rate=lambda count: 0.1 / (1 + count)))
    )
    scheduled.opt_state = scheduled.optimizer.init(scheduled.params)
    for cb in (LearningRateScheduler(lambda epoch, lr: lr), ReduceLROnPlateau()):
        with pytest.raises(TypeError, match="made with a schedule for it"):
            drive(cb, scheduled, [0.0])


# ------------------------------------------------------------------------------------- CSVLogger
def read_rows(path, separator=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=separator))


def test_csv_logger_writes_flushes_and_appends(backend, tmp_path):
    x, y = data()
    path = tmp_path / "log.csv"
    rows_seen = []
    reader = LambdaCallback(on_epoch_end=lambda epoch, logs: rows_seen.append(len(read_rows(path))))
    model = tiny()
    history = model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        optimizer="sgd",
        validation_data=(x, y),
        verbose=0,
        callbacks=[CSVLogger(path), reader],
    )
    assert rows_seen == [2, 3, 4]  # header + one row per finished epoch, read during training
    rows = read_rows(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    for epoch, row in enumerate(rows[1:]):
        assert int(row[0]) == epoch
        for key, cell in zip(rows[0][1:], row[1:], strict=True):
            assert float(cell) == history.history[key][epoch]
    # append: resumed, one header
    model.fit(
        x,
        y,
        epochs=5,
        initial_epoch=3,
        batch_size=16,
        validation_data=(x, y),
        verbose=0,
        callbacks=[CSVLogger(path, append=True)],
    )
    rows = read_rows(path)
    assert [row[0] for row in rows] == ["epoch", "0", "1", "2", "3", "4"]
    # append=False overwrites
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[CSVLogger(path)])
    rows = read_rows(path)
    assert rows[0] == ["epoch", "accuracy", "loss"] and [row[0] for row in rows] == ["epoch", "0"]


def test_csv_logger_resumes_a_files_columns_and_leaves_out_new_keys(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch;val_loss;loss\n0;0.5;0.25\n")
    cb = CSVLogger(path, separator=";", append=True)
    cb.set_model(built())
    cb.on_train_begin()
    with pytest.warns(UserWarning, match=r"CSVLogger: \['accuracy'\] are not columns of"):
        cb.on_epoch_end(1, {"loss": 0.125, "accuracy": 0.75, "val_loss": 0.375})
    cb.on_epoch_end(2, {"loss": 0.0625, "accuracy": 0.5})  # warned once; val_loss missing: NA
    cb.on_train_end()
    assert read_rows(path, ";") == [
        ["epoch", "val_loss", "loss"],
        ["0", "0.5", "0.25"],
        ["1", "0.375", "0.125"],
        ["2", "NA", "0.0625"],
    ]
    assert cb.csv_file.closed


# -------------------------------------------------------------------------------- LambdaCallback
def test_lambda_callback_hooks_are_called(backend):
    x, y = data()
    calls = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: calls.append(("train_begin", logs)),
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch)),
        on_train_batch_begin=lambda batch, logs: calls.append(("batch_begin", batch)),
        on_train_batch_end=lambda batch, logs: calls.append(("batch_end", batch, sorted(logs))),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, sorted(logs))),
        on_train_end=lambda logs: calls.append(("train_end",)),
        label="mine",
    )
    tiny().fit(x, y, epochs=2, batch_size=24, optimizer="sgd", verbose=0, callbacks=[cb])
    names = ["accuracy", "loss"]
    batches = [e for b in (0, 1) for e in (("batch_begin", b), ("batch_end", b, names))]
    assert calls == [
        ("train_begin", None),
        ("epoch_begin", 0),
        *batches,
        ("epoch_end", 0, ["accuracy", "loss"]),
        ("epoch_begin", 1),
        *batches,
        ("epoch_end", 1, ["accuracy", "loss"]),
        ("train_end",),
    ]
    assert cb.label == "mine"
    # other hooks through kwargs (Keras' older on_batch_end alias)
    seen = []
    alias = LambdaCallback(on_batch_end=lambda batch, logs: seen.append(batch))
    assert alias.needs_batch_logs
    tiny().fit(x, y, epochs=1, batch_size=16, optimizer="sgd", verbose=0, callbacks=[alias])
    assert seen == [0, 1, 2]


# --------------------------------------------------------------------------- LearningRateMonitor
def test_learning_rate_monitor_per_epoch(backend):
    x, y = data()
    monitor = LearningRateMonitor()
    schedule = LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    history = tiny().fit(
        x, y, epochs=3, batch_size=16, optimizer="sgd", verbose=0, callbacks=[schedule, monitor]
    )
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert monitor.values == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert monitor.steps == [3, 6, 9]  # the next update's index at each epoch's end
    assert history.steps == {}


@pytest.mark.parametrize("steps_per_execution", [1, 2, "epoch"])
def test_learning_rate_monitor_per_step(backend, steps_per_execution):
    x, y = data(40)  # 3 batches of 16: 2 full ones and a last one of 8

    def schedule(count):
        return 0.1 / (1.0 + count)

    monitor = LearningRateMonitor(interval="step")
    history = tiny().fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        optimizer=wf.optimizers.sgd(schedule),
        verbose=0,
        steps_per_execution=steps_per_execution,
        callbacks=[monitor],
    )
    expected = [0.1 / (1.0 + step) for step in range(6)]
    assert monitor.steps == list(range(6))
    assert monitor.values == pytest.approx(expected)
    assert history.steps["learning_rate"] == pytest.approx(expected)
    assert history.history["learning_rate"] == pytest.approx([0.1 / 4, 0.1 / 7])


def test_learning_rate_monitor_with_an_injected_rate_and_an_unknown_one():
    x, y = data()
    monitor = LearningRateMonitor(interval="step")
    reduce = ReduceLROnPlateau(monitor="score", factor=0.5, patience=0)
    with wf.use_backend("numpy"):
        history = tiny().fit(
            x,
            y,
            epochs=3,
            batch_size=16,
            optimizer="adam",
            verbose=0,
            callbacks=[scripted([1.0, 2.0, 3.0]), reduce, monitor],
        )
        assert history.steps["learning_rate"] == pytest.approx([1e-3] * 6 + [5e-4] * 3)
        hand_made = wf.optimizers.chain(wf.optimizers.scale(-0.1))
        other = LearningRateMonitor()
        with pytest.warns(UserWarning, match="learning rate of this optimizer is unknown"):
            history = tiny().fit(
                x, y, epochs=2, batch_size=16, optimizer=hand_made, verbose=0, callbacks=[other]
            )
        assert "learning_rate" not in history.history and other.values == []


# ------------------------------------------------------------------------ the contract with fit
def test_a_changed_learning_rate_does_not_retrace(jax):
    x, y = data()  # 3 full batches: one compiled runner
    with wf.use_backend("jax"):
        wf.training.forget_shared()  # a fresh trainer: no shape another test traced
        model = tiny()
        reduce = ReduceLROnPlateau(monitor="score", factor=0.5, patience=0)
        history = model.fit(
            x,
            y,
            epochs=4,
            batch_size=16,
            optimizer="adam",
            verbose=0,
            callbacks=[scripted([1.0, 2.0, 3.0, 4.0]), reduce],
        )
    assert history.history["learning_rate"] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])
    runners = list(model.trainer.runners().values())
    assert [run._cache_size() for run in runners] == [1]  # the rate is an array argument


class ZeroRateAfterFirstBatch(wf.callbacks.Callback):
    """Sets the learning rate to 0 after the first batch, from a batch hook."""

    needs_weights = True

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.after_first = self.model.backend.copy(self.model.params)
            self.model.opt_state = wf.optimizers.set_hyperparam(
                self.model.opt_state, "learning_rate", 0.0
            )


def test_needs_weights_callbacks_change_the_state_between_batches(backend):
    x, y = data()
    model, cb = tiny(), ZeroRateAfterFirstBatch()
    model.fit(x, y, epochs=1, batch_size=16, optimizer="sgd", verbose=0, callbacks=[cb])
    assert_trees_equal(model.params, cb.after_first)  # batches 1 and 2 ran at rate 0
    assert get_hyperparam(model.opt_state, "learning_rate") == 0.0
    assert int(wf.to_numpy(model.opt_state.count)) == 3


# ----------------------------------------------------------------------- the list and bad input
def test_history_comes_after_the_users_callbacks_and_is_reachable(backend):
    x, y = data()
    model = tiny()
    seen = []
    cb = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(model.history))
    history = model.fit(x, y, epochs=2, batch_size=16, optimizer="sgd", verbose=0, callbacks=[cb])
    assert seen == [history, history]
    first, second = History(), History()
    listed = CallbackList([first, cb, wf.callbacks.ProgressBar(), second], model, {})
    assert [type(c).__name__ for c in listed.callbacks] == [
        "LambdaCallback",
        "History",
        "History",
        "ProgressBar",
    ]
    assert listed.history is first and model.history is first
    assert not listed.needs_weights and not wf.callbacks.Callback.needs_weights


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: EarlyStopping(patience=-1),
            "EarlyStopping: patience must be >= 0. Received: patience=-1",
        ),
        (
            lambda: ReduceLROnPlateau(factor=1.0),
            "ReduceLROnPlateau does not support a factor >= 1.0. Received: factor=1.0",
        ),
        (
            lambda: EarlyStopping(mode="bigger"),
            "EarlyStopping: mode must be one of ['auto', 'max', 'min']. Received: mode='bigger'",
        ),
        (
            lambda: ReduceLROnPlateau(mode="up"),
            "ReduceLROnPlateau: mode must be one of ['auto', 'max', 'min']. Received: mode='up'",
        ),
        (
            lambda: LearningRateMonitor(interval="batch"),
            "LearningRateMonitor: interval must be "
            "one of ['epoch', 'step']. Received: interval='batch'",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


def test_monitor_nan_is_never_an_improvement():
    model = built()
    cb = EarlyStopping(patience=2)
    drive(cb, model, [1.0, math.nan, math.nan])
    assert (cb.stopped_epoch, cb.best) == (2, 1.0)
