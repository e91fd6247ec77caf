"""Gradient clipping: fit's Keras shortcuts, the transformations, and an LSTM it rescues."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import wframe as wf
from wframe.layers import LSTM, Dense
from wframe.optimizers import clipping
from wframe.testing import assert_close


def _grads(backend, scale=10.0):
    rng = np.random.default_rng(0)
    return {
        "a": {"W": backend.asarray((scale * rng.standard_normal((4, 3))).astype(np.float32))},
        "b": {"W": backend.asarray((0.01 * rng.standard_normal(5)).astype(np.float32))},
    }


def _host(tree):
    return {k: {n: wf.to_numpy(v) for n, v in sub.items()} for k, sub in tree.items()}


def test_global_clipnorm_gives_the_bound(backend):
    grads = _grads(backend)
    norm = clipping.global_norm(grads)
    clipped = clipping.apply(grads, clipping.Clip(global_clipnorm=1.5), norm)
    assert_close(clipping.global_norm(clipped), 1.5, rtol=1e-6)
    # the direction is kept
    h, c = _host(grads), _host(clipped)
    assert_close(c["a"]["W"] / h["a"]["W"], np.full((4, 3), 1.5 / float(norm)), rtol=1e-5)
    # under the bound nothing changes
    same = clipping.apply(grads, clipping.Clip(global_clipnorm=1e6), norm)
    assert_close(same["a"]["W"], grads["a"]["W"], rtol=0)


def test_clipnorm_is_per_parameter_and_clipvalue_per_element(backend):
    grads = _grads(backend)
    norm = clipping.global_norm(grads)
    per = _host(clipping.apply(grads, clipping.Clip(clipnorm=1.0), norm))
    assert_close(np.linalg.norm(per["a"]["W"]), 1.0, rtol=1e-6)
    assert_close(per["b"]["W"], _host(grads)["b"]["W"], rtol=0)  # small leaf untouched
    val = _host(clipping.apply(grads, clipping.Clip(clipvalue=0.5), norm))
    assert_close(val["a"]["W"], np.clip(_host(grads)["a"]["W"], -0.5, 0.5), rtol=0)
    # the same as transformations to chain before an optimizer
    tx_norm = clipping.clip_by_norm(1.0).update(grads, None)[0]
    assert_close(tx_norm["a"]["W"], per["a"]["W"], rtol=1e-6)
    tx_val = clipping.clip(0.5).update(grads, None)[0]
    assert_close(tx_val["a"]["W"], val["a"]["W"], rtol=0)
    tx_glob = wf.optimizers.clip_by_global_norm(1.5).update(grads, None)[0]
    assert_close(clipping.global_norm(tx_glob), 1.5, rtol=1e-6)


def test_fit_logs_pre_clip_norm_and_steps_by_the_clipped_gradient(backend):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 3, 16)
    model = wf.Sequential([Dense(5, activation="tanh"), Dense(3)], seed=3)
    before = _host(model.build((None, 4)).params)
    _, grads = model.value_and_grad(x, y)
    norm = float(clipping.global_norm(grads))
    lr, bound = 0.1, norm / 4
    hist = model.fit(
        x,
        y,
        epochs=1,
        batch_size=16,
        optimizer=wf.optimizers.sgd(lr),
        global_clipnorm=bound,
        verbose=0,
    )
    assert list(hist.history) == ["loss", "accuracy", "grad_norm"]
    assert_close(hist.history["grad_norm"][0], norm, rtol=1e-5)
    after = _host(model.params)
    step = np.sqrt(sum(((after[k][n] - before[k][n]) ** 2).sum() for k in after for n in after[k]))
    assert_close(step, lr * bound, rtol=1e-4)
    plain = wf.Sequential([Dense(5, activation="tanh"), Dense(3)], seed=3)
    assert "grad_norm" not in plain.fit(x, y, epochs=1, verbose=0).history


def test_make_train_step_clips_too(backend):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8)
    model = wf.Sequential([Dense(3)], seed=0).build((None, 4))
    sgd = wf.optimizers.sgd(1.0)
    step = wf.make_train_step(model, "softmax_cross_entropy", sgd, clipvalue=1e-3)
    ts = wf.TrainState(backend.copy(model.params), model.state, sgd.init(model.params))
    ts, logs = step(ts, backend.asarray(x), backend.asarray(y))
    assert set(logs) == {"loss", "grad_norm"}
    delta = wf.to_numpy(ts.params["dense_0"]["W"]) - wf.to_numpy(model.params["dense_0"]["W"])
    assert np.abs(delta).max() == pytest.approx(1e-3, rel=1e-5)


def test_lstm_with_large_learning_rate_diverges_unclipped_and_trains_clipped(backend):
    """SGD at lr 1 on a 40-step sum regression: measured on numpy, the unclipped run's loss
    goes 4e8 -> 4e17 -> inf in 3 epochs (fit stops on the non-finite step), the run clipped to
    a global norm of 1 goes 48 -> 24 in 10 epochs (the target's variance is 40)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 40, 2)).astype(np.float32)
    y = x[:, :, 0].sum(1, keepdims=True)
    runs = {}
    for clip in (None, 1.0):
        model = wf.Sequential([LSTM(16), Dense(1)], seed=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hist = model.fit(
                x,
                y,
                epochs=10,
                batch_size=32,
                optimizer=wf.optimizers.sgd(1.0),
                loss="mse",
                global_clipnorm=clip,
                verbose=0,
            )
        runs[clip] = (hist.history["loss"], [str(w.message) for w in caught])
    loss, messages = runs[None]
    assert loss[0] > 1e6 and len(loss) < 10
    assert any("NaN or inf" in m for m in messages)
    loss, messages = runs[1.0]
    assert len(loss) == 10 and not messages
    assert loss[-1] < 0.6 * loss[0] and loss[-1] < 30


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clipnorm": 0.0}, r"fit: clipnorm must be a finite number > 0, got 0.0"),
        ({"clipvalue": -1}, r"fit: clipvalue must be a finite number > 0, got -1"),
        ({"global_clipnorm": float("inf")}, r"global_clipnorm must be a finite number > 0"),
        (
            {"clipnorm": 1.0, "clipvalue": 1.0},
            r"only one of clipnorm, clipvalue and "
            r"global_clipnorm can be set \(as Keras\), got clipnorm=1.0, clipvalue=1.0",
        ),
    ],
)
def test_bad_clipping_is_refused_before_training(kwargs, match):
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, int)
    model = wf.Sequential([Dense(2)])
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, verbose=0, **kwargs)
