"""The fit loop, train steps and callbacks: retracing, moving models, shuffles, NaN, threads."""

from __future__ import annotations

import io
import threading
import tracemalloc

import numpy as np
import pytest

import wframe as wf
from wframe.layers import LSTM, Conv2D, Dense, Dropout, Flatten, MaxPool2D
from wframe.losses import SoftmaxCrossEntropy
from wframe.random import array_key
from wframe.testing import assert_close
from wframe.tree import flatten, tree_map


def mlp(seed=0, dtype="float32", dropout=0.0):
    extra = [Dropout(dropout)] if dropout else []
    return wf.Sequential(
        [Dense(16, activation="relu", kernel_init="he_normal"), *extra, Dense(3)],
        seed=seed,
        dtype=dtype,
    )


def blobs(n=64, features=5, classes=3, seed=0):
    """Three separable Gaussian blobs: a task an MLP learns in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(0, 3, (classes, features))
    return (centers[y] + rng.normal(0, 1, (n, features))).astype(np.float32), y


def host(tree):
    """``{"dense_0/W": numpy copy, ...}`` of any backend's tree."""
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree)}


def owned_copy(tree, backend):
    """A copy a train step may consume (it donates or updates in place what it is given)."""
    return tree_map(lambda a: backend.xp.asarray(a, copy=True), tree)


def runners(model):
    return list(model.trainer.runners().values())


def assert_trees_equal(got, expected):
    got, expected = host(got), host(expected)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def assert_trees_close(got, expected, rtol, atol=1e-7):
    got, expected = host(got), host(expected)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=rtol, atol=atol, err_msg=name)


# ------------------------------------------------------------- 1. compiled code follows its arrays
def _cnn(seed=0):
    return wf.Sequential(
        [Conv2D(2, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(3)], seed=seed
    )


def _rnn(seed=0):
    return wf.Sequential([LSTM(4), Dense(3)], seed=seed)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, n)


def test_train_step_jitted_under_jax_retraces_outside_the_with_block(jax):
    x, y = _images(8)
    sgd = wf.optimizers.sgd(0.1)
    with wf.use_backend("jax") as jb:
        model = _cnn().build((None, 6, 6, 1))

        def fresh():
            return wf.TrainState(owned_copy(model.params, jb), model.state, sgd.init(model.params))

        step = wf.make_train_step(model, "softmax_cross_entropy", sgd)
        step(fresh(), jb.asarray(x), jb.asarray(y, dtype="int32"))  # traced here, 8 rows
        x5, y5 = jb.asarray(x[:5]), jb.asarray(y[:5], dtype="int32")
        same_step = wf.make_train_step(model, "softmax_cross_entropy", sgd)
        inside, inside_logs = same_step(fresh(), x5, y5)  # 5 rows, traced inside
    with wf.use_backend("numpy"):  # ambient numpy: 5 rows force a retrace out here
        outside, outside_logs = step(fresh(), x5, y5)
        assert step.compiled._cache_size() == 2
    assert wf.backend_of(*(a for _, a in flatten(outside.params))).name == "jax"
    assert float(outside_logs["loss"]) == float(inside_logs["loss"])
    assert_trees_equal(outside.params, inside.params)
    assert not np.array_equal(host(outside.params)["dense_0/W"], host(model.params)["dense_0/W"])


def test_conv_and_lstm_models_built_on_jax_run_outside_any_use_backend(jax):
    images, labels = _images(6)
    seqs = np.random.default_rng(1).standard_normal((6, 5, 3)).astype(np.float32)
    cases = []
    for make, x in ((_cnn, images), (_rnn, seqs)):
        with wf.use_backend("numpy"):
            ref = make().build((None, *x.shape[1:]))
        with wf.use_backend("jax"):
            model = make().build((None, *x.shape[1:]))  # nothing compiled yet
        cases.append((model, ref, x))
    with wf.use_backend("numpy"):
        for model, ref, x in cases:
            out = model.predict(x)  # first trace, ambient numpy
            assert wf.backend_of(out).name == "jax"
            assert_close(out, ref.predict(x), rtol=1e-5, atol=1e-6)
            got, expected = model.evaluate(x, labels), ref.evaluate(x, labels)
            assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
            assert got["accuracy"] == expected["accuracy"]
        assert wf.get_backend().name == "numpy"


# ----------------------------------------------------------------------------- 2. to_backend
def test_to_backend_inside_a_numpy_block_moves_only_that_model(jax):
    x, y = blobs(70)  # 70 = 4 * 16 + 6: two batch shapes
    with wf.use_backend("numpy"):
        model, other = mlp(), mlp(seed=1)
        model.fit(x, y, epochs=1, batch_size=16, optimizer="adam", verbose=0)
        other.fit(x, y, epochs=1, batch_size=16, optimizer="adam", verbose=0)
        other_params = host(other.params)
        before = model.predict(x)
        assert model.to_backend("jax") is model
        wf.training.forget_shared()  # a fresh trainer: no shape another test traced
        assert wf.get_backend().name == "numpy"
        assert model.backend.name == "jax"
        for tree in (model.params, model.opt_state):
            assert {wf.backend_of(a).name for _, a in flatten(tree)} == {"jax"}
        assert other.backend.name == "numpy"
        assert {type(a) for _, a in flatten(other.params)} == {np.ndarray}
        assert_close(model.predict(x), before, rtol=1e-5, atol=1e-6)

        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        (run,) = runners(model)
        assert run._cache_size() == 2  # full batches and the partial one, traced once each
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # a second fit: no new trace
        assert runners(model) == [run] and run._cache_size() == 2
        assert int(wf.to_numpy(model.opt_state.count)) == 4 * 5
        assert wf.get_backend().name == "numpy"

        model.to_backend("numpy")
        assert {(type(a), a.dtype) for _, a in flatten(model.params)} == {
            (np.ndarray, np.dtype("float32"))
        }
        count = model.opt_state.count
        assert type(count) is np.ndarray and count.dtype == np.int32 and int(count) == 20
        mu = [a for name, a in flatten(model.opt_state) if "/mu/" in name]
        assert mu and {(type(a), a.dtype) for a in mu} == {(np.ndarray, np.dtype("float32"))}
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert int(model.opt_state.count) == 25
    assert_trees_equal(other.params, other_params)  # untouched throughout


def test_float64_model_to_jax_without_x64_raises_before_moving(jax):
    if jax.config.jax_enable_x64:
        pytest.skip("64-bit mode is on")
    x, y = blobs(32)
    with wf.use_backend("numpy"):
        model = mlp(dtype="float64")
        model.fit(x, y, epochs=1, batch_size=16, optimizer="adam", verbose=0)
        params, opt_state = model.params, model.opt_state
        with pytest.raises(ValueError, match="jax_enable_x64"):
            model.to_backend("jax")
        assert model.backend.name == "numpy"
        assert model.params is params and model.opt_state is opt_state
        assert {(type(a), a.dtype) for _, a in flatten(params)} == {
            (np.ndarray, np.dtype("float64"))
        }
        assert model.predict(x).dtype == np.float64  # still usable
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert int(model.opt_state.count) == 4


# ------------------------------------------------------------------------- 3. optax off JAX
def test_optax_optimizer_on_a_numpy_model_is_refused(jax):
    optax = pytest.importorskip("optax")
    x, y = blobs(32)
    with wf.use_backend("numpy"):
        model = mlp().build((None, 5))
        params = model.params
        with pytest.raises(TypeError, match="jax backend only"):
            model.fit(x, y, optimizer=optax.adam(1e-3), verbose=0)
        assert model.params is params
        assert {type(a) for _, a in flatten(model.params)} == {np.ndarray}


def test_refused_optax_fit_leaves_the_optimizer_and_its_state(jax):
    optax = pytest.importorskip("optax")
    x, y = blobs(32)
    with wf.use_backend("numpy"):
        model = mlp()
        sgd = wf.optimizers.sgd(0.1)
        model.fit(x, y, epochs=1, batch_size=16, optimizer=sgd, verbose=0)
        opt_state = model.opt_state
        with pytest.raises(TypeError, match="jax backend only"):
            model.fit(x, y, optimizer=optax.adam(1e-3), verbose=0)
        assert model.optimizer is sgd and model.opt_state is opt_state
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # carries on with sgd


def test_to_numpy_of_a_jax_model_with_an_optax_optimizer_raises_before_moving(jax):
    optax = pytest.importorskip("optax")
    x, y = blobs(32)
    with wf.use_backend("jax"):
        model = mlp()
        model.fit(x, y, epochs=1, batch_size=16, optimizer=optax.sgd(0.1), verbose=0)
    params, opt_state = model.params, model.opt_state
    with pytest.raises(TypeError, match="jax backend only"):
        model.to_backend("numpy")
    assert model.backend.name == "jax"
    assert model.params is params and model.opt_state is opt_state
    assert {wf.backend_of(a).name for _, a in flatten(params)} == {"jax"}
    assert model.predict(x).shape == (32, 3)


# ------------------------------------------------------------- 4. arrays the user holds survive
def test_arrays_the_user_holds_survive_fit(backend):
    x, y = blobs(40)
    model = mlp().build((None, 5))
    init = model.params
    init_values = host(init)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    trained = model.params  # published by that fit; the next fit must not consume them
    trained_values = host(trained)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for held, values in ((init, init_values), (trained, trained_values)):
        for _, a in flatten(held):
            assert not getattr(a, "is_deleted", lambda: False)()
        assert_trees_equal(held, values)  # not updated in place either
    model.params = init
    np.testing.assert_array_equal(wf.to_numpy(model.predict(x)), wf.to_numpy(mlp().predict(x)))


# ---------------------------------------------------------------------------------- 5. shuffles
@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["plain", "dropout"])
def test_split_fits_replay_one_long_fit_bit_for_bit(dropout):
    x, y = blobs(40)
    with wf.use_backend("numpy"):
        whole = mlp(dropout=dropout)
        long = whole.fit(x, y, epochs=6, batch_size=16, optimizer="adam", verbose=0)
        split = mlp(dropout=dropout)
        first = split.fit(x, y, epochs=3, batch_size=16, optimizer="adam", verbose=0)
        second = split.fit(x, y, epochs=3, batch_size=16, optimizer="adam", verbose=0)
    assert first.history["loss"] + second.history["loss"] == long.history["loss"]
    assert_trees_equal(split.params, whole.params)
    assert_trees_equal(split.opt_state, whole.opt_state)


def test_each_epoch_of_a_models_life_gets_its_own_permutation():
    x, y = blobs(40)
    fit = dict(epochs=2, batch_size=16, optimizer="adam", verbose=0)
    with wf.use_backend("numpy"):
        long = mlp().fit(x, y, epochs=6, batch_size=16, optimizer="adam", verbose=0)
        model, reuse, losses, reused = mlp(), mlp(), [], []
        for _ in range(3):
            losses += model.fit(x, y, **fit).history["loss"]
            if reuse.built:  # what reusing the first two permutations at every fit gives
                reuse.commit(reuse.train_state, steps=reuse.steps, epochs=0)
            reused += reuse.fit(x, y, **fit).history["loss"]
    assert losses == long.history["loss"]
    assert reused[:2] == losses[:2] and reused[2:] != losses[2:]


# ------------------------------------------------------------------------------- 6. NaN and inf
def test_divergence_in_the_first_epoch_keeps_the_weights_before_the_bad_step(backend):
    x, y = blobs(64)
    poisoned = x.copy()
    poisoned[40] = 3e38  # finite, but x @ W overflows: batch 3 of 4 (no shuffle) goes inf/NaN
    model = mlp()
    with (
        np.errstate(all="ignore"),
        pytest.warns(RuntimeWarning, match=r"NaN or inf at step 3 \(epoch 1, batch 3\)"),
    ):
        history = model.fit(
            poisoned,
            y,
            epochs=3,
            batch_size=16,
            shuffle=False,
            optimizer=wf.optimizers.sgd(0.1),
            verbose=0,
        )
    assert history.epoch == [] and history.history == {}
    replay = mlp()  # the two finite steps, and nothing else
    replay.fit(
        x[:32],
        y[:32],
        epochs=1,
        batch_size=16,
        shuffle=False,
        optimizer=wf.optimizers.sgd(0.1),
        verbose=0,
    )
    for _, a in flatten(model.params):
        assert np.isfinite(wf.to_numpy(a)).all()
    assert_trees_close(model.params, replay.params, rtol=1e-6)


def test_divergence_after_completed_epochs_keeps_them():
    x, y = blobs(64)
    completed = [0]

    class FlakyLoss(SoftmaxCrossEntropy):
        """Cross-entropy that turns NaN once two epochs have ended (numpy: plain Python)."""

        def __call__(self, logits, labels):
            value, grad = super().__call__(logits, labels)
            return (value * np.nan if completed[0] >= 2 else value), grad

    class CountEpochs(wf.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            completed[0] += 1

    with wf.use_backend("numpy"):
        model = mlp()
        with pytest.warns(RuntimeWarning, match=r"at step 9 \(epoch 3, batch 1\)") as record:
            history = model.fit(
                x,
                y,
                epochs=5,
                batch_size=16,
                loss=FlakyLoss(),
                optimizer="adam",
                callbacks=[CountEpochs()],
                verbose=0,
            )
        assert len(record) == 1
        assert history.epoch == [0, 1] and len(history.history["loss"]) == 2
        assert completed[0] == 2
        replay = mlp()
        expected = replay.fit(x, y, epochs=2, batch_size=16, optimizer="adam", verbose=0)
    assert history.history == expected.history
    assert_trees_equal(model.params, replay.params)
    assert_trees_equal(model.opt_state, replay.opt_state)  # the NaN step counted nothing


def test_train_step_on_a_nan_batch_returns_its_input_params(backend):
    x, y = blobs(16)
    model = mlp().build((None, 5))
    adam = wf.optimizers.adam(0.1)
    step = wf.make_train_step(model, "softmax_cross_entropy", adam)
    before = host(model.params)
    ts = wf.TrainState(owned_copy(model.params, backend), model.state, adam.init(model.params))
    bad = x.copy()
    bad[3, 1] = np.nan
    yb = backend.asarray(y, dtype="int32")
    with np.errstate(invalid="ignore"):
        ts, logs = step(ts, backend.asarray(bad), yb)
    assert np.isnan(float(wf.to_numpy(logs["loss"])))
    assert_trees_equal(ts.params, before)
    assert int(wf.to_numpy(ts.opt_state[0].count)) == 0
    ts, logs = step(ts, backend.asarray(x), yb)  # a finite batch after it trains again
    assert np.isfinite(float(wf.to_numpy(logs["loss"])))
    assert int(wf.to_numpy(ts.opt_state[0].count)) == 1
    assert not np.array_equal(host(ts.params)["dense_0/W"], before["dense_0/W"])


# ------------------------------------------------------------------------ 7. steps_per_execution
def test_steps_per_execution_does_not_change_the_result(backend):
    x, y = blobs(70)  # 4 full batches of 16 and one of 6
    results = {}
    for spe in (1, 3, "epoch"):
        model = mlp()
        history = model.fit(
            x,
            y,
            epochs=2,
            batch_size=16,
            optimizer=wf.optimizers.sgd(0.1),
            steps_per_execution=spe,
            verbose=0,
        )
        results[spe] = (history.history, model.params)
    for spe in (3, "epoch"):
        assert_trees_close(results[spe][1], results[1][1], rtol=1e-5)
        for name, values in results[1][0].items():
            np.testing.assert_allclose(results[spe][0][name], values, rtol=1e-5, err_msg=name)


# ---------------------------------------------------------------------- 8. predict memory bound
def test_predict_memory_is_bounded_and_float32_input_is_not_copied():
    # The digits MLP on 500k rows of 64 features (128 MB of float32 input, 20 MB of output):
    # activations are batched, so beyond the output (and its batch parts) little is allocated.
    # A copy of the input (128 MB) or unbatched activations (500k x 128 floats) would show.
    rows = 500_000
    with wf.use_backend("numpy"):
        model = wf.Sequential(
            [Dense(128, activation="relu"), Dense(64, activation="relu"), Dense(10)]
        ).build((None, 64))
        x = np.random.default_rng(0).standard_normal((rows, 64), dtype=np.float32)
        tracemalloc.start()
        try:
            out = model.predict(x)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert out.shape == (rows, 10) and out.dtype == np.float32
    assert peak - out.nbytes < 100 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert_close(out[-7:], model.predict(x[-7:]), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ 9. threads
def _train_alone(name, x, y, out, errors):
    try:
        with wf.use_backend(name):
            model = mlp(dropout=0.2)
            model.fit(x, y, epochs=3, batch_size=16, optimizer="adam", verbose=0)
        out[name] = host(model.params)
    except BaseException as e:  # reported by the main thread
        errors.append(e)


def test_numpy_and_jax_models_train_in_two_threads(jax):
    x, y = blobs(64)
    alone, errors = {}, []
    for name in ("numpy", "jax"):
        _train_alone(name, x, y, alone, errors)
    together = {}
    threads = [
        threading.Thread(target=_train_alone, args=(name, x, y, together, errors))
        for name in ("numpy", "jax")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for name in alone["numpy"]:
        np.testing.assert_array_equal(together["numpy"][name], alone["numpy"][name])
        np.testing.assert_allclose(together["jax"][name], alone["jax"][name], rtol=1e-6)


def test_predict_from_another_thread_while_fit_runs_on_jax(jax):
    x, y = blobs(64)
    with wf.use_backend("jax"):
        model = mlp(dropout=0.2).build((None, 5))
    expected_shape = (64, 3)
    stop, errors, reads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            try:
                assert tuple(model.predict(x).shape) == expected_shape
                for name, a in flatten(model.params):
                    assert not a.is_deleted(), name
                    assert np.isfinite(wf.to_numpy(a)).all(), name
                reads[0] += 1
            except BaseException as e:
                errors.append(e)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        history = model.fit(x, y, epochs=8, batch_size=4, optimizer="adam", verbose=0)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert reads[0] > 0 and history.epoch == list(range(8))


# --------------------------------------------------------------------------------- 10. callbacks
class Recorder(wf.callbacks.Callback):
    def __init__(self):
        self.events, self.models, self.logs = [], [], []

    def _log(self, event, logs):
        self.events.append(event)
        self.models.append(self.model)
        self.logs.append(logs)

    def on_train_begin(self, logs=None):
        self._log(("train_begin",), logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._log(("epoch_begin", epoch), logs)

    def on_train_batch_end(self, batch, logs=None):
        self._log(("batch_end", batch), logs)

    def on_epoch_end(self, epoch, logs=None):
        self._log(("epoch_end", epoch), logs)

    def on_train_end(self, logs=None):
        self._log(("train_end",), logs)


class OnBatchEnd(wf.callbacks.Callback):
    """Overrides only Keras' older alias ``on_batch_end``."""

    def __init__(self):
        self.seen = []

    def on_batch_end(self, batch, logs=None):
        self.seen.append((batch, logs))


def test_callback_hooks_run_in_keras_order_with_float_logs(backend):
    x, y = blobs(48)  # 3 batches of 16
    model, recorder, alias = mlp(), Recorder(), OnBatchEnd()
    history = model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        optimizer="sgd",
        validation_data=(x, y),
        callbacks=[recorder, alias],
        verbose=0,
    )
    batches = [("batch_end", i) for i in range(3)]
    assert recorder.events == [
        ("train_begin",),
        ("epoch_begin", 0),
        *batches,
        ("epoch_end", 0),
        ("epoch_begin", 1),
        *batches,
        ("epoch_end", 1),
        ("train_end",),
    ]
    assert all(m is model for m in recorder.models)
    batch_logs = [
        logs
        for event, logs in zip(recorder.events, recorder.logs, strict=True)
        if event[0] == "batch_end"
    ]
    assert len(batch_logs) == 6  # every batch, since a batch hook is overridden
    for logs in batch_logs:
        assert set(logs) == {"loss", "accuracy"} and all(type(v) is float for v in logs.values())
    epoch_logs = [
        logs
        for event, logs in zip(recorder.events, recorder.logs, strict=True)
        if event[0] == "epoch_end"
    ]
    for logs in epoch_logs:
        assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert all(type(v) is float for v in logs.values())
    assert [batch for batch, _ in alias.seen] == [0, 1, 2, 0, 1, 2]
    assert [logs for _, logs in alias.seen] == batch_logs
    # The last batch's running mean is the epoch's mean.
    assert batch_logs[2]["loss"] == pytest.approx(epoch_logs[0]["loss"], rel=1e-6)
    assert model.history is history and history.epoch == [0, 1]
    assert history.history["loss"] == [logs["loss"] for logs in epoch_logs]
    assert history.history["val_accuracy"] == [logs["val_accuracy"] for logs in epoch_logs]


class StopAt(wf.callbacks.Callback):
    def __init__(self, hook, epoch, batch=None):
        self.hook, self.epoch, self.batch, self.batches = hook, epoch, batch, []

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append((self.current, batch))
        if self.hook == "batch" and (self.current, batch) == (self.epoch, self.batch):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.hook == "epoch" and epoch == self.epoch:
            self.model.stop_training = True


def test_stop_training_and_initial_epoch(backend):
    x, y = blobs(48)
    model = mlp()  # one model, one optimizer, one batch shape: a single compiled runner
    fit = dict(batch_size=16, optimizer="sgd", verbose=0)
    at_epoch = StopAt("epoch", 1)
    history = model.fit(x, y, epochs=5, callbacks=[at_epoch], **fit)
    assert history.epoch == [0, 1] and len(history.history["loss"]) == 2
    assert at_epoch.batches == [(e, b) for e in (0, 1) for b in range(3)]
    assert model.stop_training  # left set; the next fit resets it
    mid = StopAt("batch", 1, batch=0)
    history = model.fit(x, y, epochs=5, callbacks=[mid], **fit)
    # The partial epoch ends as Keras 3 ends it: on_epoch_end with the batches that ran.
    assert history.epoch == [0, 1] and len(history.history["loss"]) == 2
    assert mid.batches == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert model.history is history
    later = StopAt("none", None)
    history = model.fit(x, y, epochs=4, initial_epoch=2, callbacks=[later], **fit)
    assert history.epoch == [2, 3]
    assert [e for e, b in later.batches if b == 0] == [2, 3]


def test_progress_bar_prints_one_line_per_epoch_off_a_terminal(backend):
    x, y = blobs(48)
    out = io.StringIO()
    model = mlp()
    history = model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        optimizer="sgd",
        callbacks=[wf.callbacks.ProgressBar(file=out)],
        verbose=0,
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    for epoch, (line, loss) in enumerate(zip(lines, history.history["loss"], strict=True)):
        assert line.startswith(f"epoch {epoch + 1}/3: 3/3 steps")
        assert f"loss: {loss:.4f}" in line


def test_terminate_on_nan(capsys):
    x, y = blobs(64)
    poisoned = x.copy()
    poisoned[40] = 3e38
    cb = wf.callbacks.TerminateOnNaN()
    with wf.use_backend("numpy"):
        model = mlp()
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="NaN or inf at step 3"):
            history = model.fit(
                poisoned, y, epochs=2, batch_size=16, shuffle=False, callbacks=[cb], verbose=0
            )
        assert history.epoch == []
        # On its own, the callback stops at the first non-finite batch loss.
        cb.set_model(model)
        model.stop_training = False
        cb.on_train_batch_end(4, {"loss": 0.5})
        assert model.stop_training is False
        cb.on_train_batch_end(5, {"loss": float("nan")})
        assert model.stop_training is True
    assert "Batch 5: invalid loss, terminating training" in capsys.readouterr().out


def test_batch_begin_hooks_are_called():
    x, y = blobs(48)
    seen = []

    class BatchBegin(wf.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)

    with wf.use_backend("numpy"):
        mlp().fit(x, y, epochs=2, batch_size=16, callbacks=[BatchBegin()], verbose=0)
    assert seen == [0, 1, 2, 0, 1, 2]


# ------------------------------------------------------------------------- 11. parameter order
def test_parameter_order_is_the_same_on_every_backend(jax):
    x, y = blobs(32, features=4)
    names = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = wf.Sequential([Dense(4, activation="tanh") for _ in range(11)] + [Dense(3)])
            model.fit(x, y, epochs=1, batch_size=16, optimizer="sgd", verbose=0)
            _, grads = model.value_and_grad(x, y)
            names[name] = (
                [n for n, _ in flatten(model.params)],
                [n for n, _ in flatten(grads)],
                [n for n, _ in flatten(model.opt_state)],
            )
    build_order = [f"dense_{i}/{p}" for i in range(12) for p in ("W", "b")]
    assert names["numpy"][0] == build_order  # "dense_10" after "dense_9", not after "dense_1"
    assert names["jax"] == names["numpy"]
    assert names["numpy"][1] == build_order


# --------------------------------------------------------------------------- 12. across backends
def test_twenty_adam_steps_with_dropout_agree_on_numpy_and_jax(jax):
    x, y = blobs(64)
    results = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name) as b:
            model = mlp(seed=4, dropout=0.3).build((None, 5))
            adam = wf.optimizers.adam(1e-2)
            step = wf.make_train_step(model, "softmax_cross_entropy", adam, metrics=("accuracy",))
            ts = wf.TrainState(owned_copy(model.params, b), model.state, adam.init(model.params))
            xb, yb = b.asarray(x), b.asarray(y, dtype="int32")
            losses = []
            for i in range(20):
                ts, logs = step(ts, xb[i % 4 * 16 :][:16], yb[i % 4 * 16 :][:16], array_key(9, i))
                losses.append(float(wf.to_numpy(logs["loss"])))
            results[name] = (losses, ts.params)
    (np_losses, np_params), (jax_losses, jax_params) = results["numpy"], results["jax"]
    assert np_losses[-1] < np_losses[0]
    np.testing.assert_allclose(jax_losses, np_losses, rtol=1e-4)
    assert_trees_close(jax_params, np_params, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------- 13. optimizer state and runners
def test_optimizer_state_and_runners_across_fits(backend):
    x, y = blobs(32)  # 2 full batches of 16: one batch shape
    model = mlp()
    model.fit(x, y, epochs=1, batch_size=16, optimizer="adam", verbose=0)
    (run,) = runners(model)
    named = model.optimizer
    model.fit(x, y, epochs=2, batch_size=16, optimizer="adam", verbose=0)
    assert model.optimizer is named and runners(model) == [run]
    assert int(wf.to_numpy(model.opt_state.count)) == 6  # the same Adam went on counting
    adam = wf.optimizers.adam(1e-2)  # another object: a new state and a new runner
    model.fit(x, y, epochs=1, batch_size=16, optimizer=adam, verbose=0)
    assert int(wf.to_numpy(model.opt_state[0].count)) == 2
    (new_run,) = runners(model)  # the old runner is dropped, not kept next to the new one
    assert new_run is not run
    assert model.trainer.setup.optimizer is adam
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # no optimizer: the current one
    assert model.optimizer is adam and runners(model) == [new_run]
    assert int(wf.to_numpy(model.opt_state[0].count)) == 4


def test_divergence_is_exact_whatever_the_steps_per_execution(backend):
    # JAX runs unguarded and replays the calls since the last sync point, guarded, when a step
    # was not finite: the weights left must be those of the guarded run, for any split.
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((70, 5)) * 1e3).astype(np.float32)
    y = rng.integers(0, 3, 70)
    results = {}
    for spe in (1, 3, "epoch"):
        model = mlp()
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="at step 5"):
            history = model.fit(
                x,
                y,
                epochs=3,
                batch_size=16,
                optimizer=wf.optimizers.sgd(1e3),
                steps_per_execution=spe,
                verbose=0,
            )
        # Step 5 was not finite: the weights are those of the 4 steps before it.
        assert history.epoch == [] and model.steps == 4
        results[spe] = host(model.params)
    for spe in (3, "epoch"):
        for name, value in results[1].items():
            assert np.isfinite(value).all()
            np.testing.assert_allclose(results[spe][name], value, rtol=1e-5, err_msg=name)


def test_validation_split_holds_out_the_last_rows_as_keras(backend):
    x, y = blobs(50)
    split = mlp().fit(x, y, epochs=2, batch_size=8, validation_split=0.2, verbose=0)
    explicit = mlp().fit(
        x[:40], y[:40], epochs=2, batch_size=8, validation_data=(x[40:], y[40:]), verbose=0
    )  # ceil(50 * 0.8) = 40 rows train, as Keras
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(split.history[key], explicit.history[key], rtol=1e-6)
    with pytest.raises(ValueError, match=r"validation_split must be a number in \[0, 1\)"):
        mlp().fit(x, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="leaves no validation examples"):
        mlp().fit(x[:3], y[:3], validation_split=0.1, verbose=0)


def test_evaluate_logs_in_keras_order_on_every_backend(backend):
    x, y = blobs(32)
    model = mlp()
    model.fit(x, y, epochs=1, verbose=0)
    assert list(model.evaluate(x, y)) == ["loss", "accuracy"]
    assert list(model.history.history) == ["loss", "accuracy"]
