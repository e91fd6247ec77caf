"""Regularizers: Keras' l1/l2/l1_l2, their closed-form gradients, the penalty in training."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import regularizers as R
from wframe.layers import GRU, LSTM, Conv2D, Dense, Flatten, SimpleRNN
from wframe.testing import assert_close, numerical_grad

CASES = {
    "l1": (R.l1(0.03), lambda w: 0.03 * np.abs(w).sum(), lambda w: 0.03 * np.sign(w)),
    "l2": (R.l2(0.05), lambda w: 0.05 * (w * w).sum(), lambda w: 0.1 * w),
    "l1_l2": (
        R.l1_l2(l1=0.02, l2=0.04),
        lambda w: 0.02 * np.abs(w).sum() + 0.04 * (w * w).sum(),
        lambda w: 0.02 * np.sign(w) + 0.08 * w,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_penalty_and_gradient_match_closed_form(backend, case):
    reg, value, grad = CASES[case]
    w = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    w[0, 0] = 0.0  # the subgradient at 0 is 0, on every backend
    a = backend.asarray(w)
    assert_close(reg(a), value(w), rtol=1e-6)
    assert_close(reg.grad(a), grad(w), rtol=1e-6)
    assert float(wf.to_numpy(reg.grad(a))[0, 0]) == 0.0


@pytest.mark.parametrize("case", list(CASES))
def test_autodiff_of_penalty_equals_closed_form(jax, case):
    reg = CASES[case][0]
    w = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    w[2, 1] = 0.0
    with wf.use_backend("jax"):
        auto = jax.grad(reg)(jax.numpy.asarray(w))
    assert_close(auto, reg.grad(w), rtol=1e-6)


def test_names_defaults_and_keras_factors():
    assert Dense(3, kernel_regularizer="l2").kernel_regularizer == R.L2(l2=0.01)
    assert R.get("l1") == R.L1(l1=0.01)
    assert R.get("L1_L2") == R.L1L2(l1=0.0, l2=0.0)  # Keras' L1L2 defaults
    assert R.l1_l2(l1=0.1, l2=0.2) == R.L1L2(l1=0.1, l2=0.2)
    assert R.get(None) is None


def test_every_weight_layer_takes_regularizers():
    assert set(Dense(2, kernel_regularizer="l2", bias_regularizer="l1").param_regularizers()) == {
        "W",
        "b",
    }
    assert set(Dense(2, use_bias=False, bias_regularizer="l1").param_regularizers()) == set()
    assert set(Conv2D(2, 3, kernel_regularizer="l2").param_regularizers()) == {"W"}
    lstm = LSTM(4, kernel_regularizer="l2", recurrent_regularizer="l1", bias_regularizer="l2")
    assert set(lstm.param_regularizers()) == {"W_x", "W_h", "b"}
    assert set(GRU(4, bias_regularizer="l2").param_regularizers()) == {"b", "b_h"}
    assert set(SimpleRNN(4, recurrent_regularizer="l2").param_regularizers()) == {"W_h"}


def test_penalty_collects_nested_and_shared_layers():
    shared = Dense(4, kernel_regularizer=R.l2(0.1))
    inner = wf.layers.Sequential([shared, shared], name="block")
    model = wf.Sequential([Dense(4, kernel_regularizer="l1"), inner, Dense(2)])
    terms = R.collect(model)
    assert terms == {("dense_0", "W"): R.L1(), ("block", "dense_0", "W"): R.L2(l2=0.1)}


def _regularized_model(dtype="float64"):
    return wf.Sequential(
        [
            Dense(
                6,
                activation="tanh",
                kernel_regularizer=R.l1_l2(l1=0.01, l2=0.02),
                bias_regularizer=R.l2(0.3),
            ),
            Dense(3, kernel_regularizer=R.l2(0.05)),
        ],
        seed=2,
        dtype=dtype,
    )


def test_loss_plus_penalty_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    with wf.use_backend("numpy"):
        model = _regularized_model().build((None, 4))
        # Biases start at 0, where |b| has a kink: move them off it.
        model.params = {k: dict(v, b=v["b"] + 0.05) for k, v in model.params.items()}
        value, grads = model.value_and_grad(x, y)
        loss = wf.losses.get("softmax_cross_entropy")
        terms = R.collect(model)

        def objective(p):
            return loss(model.apply(p, {}, x, train=True)[0], y)[0] + R.penalty(p, terms)

        params = {k: dict(v) for k, v in model.params.items()}
        assert_close(value, objective(params), rtol=1e-12)
        for layer, sub in params.items():
            for name, a in sub.items():

                def f(v, layer=layer, name=name):
                    return objective({**params, layer: {**params[layer], name: v}})

                assert_close(grads[layer][name], numerical_grad(f, a), rtol=1e-6, atol=1e-9)


def test_numpy_and_jax_train_the_same_with_penalties(jax):
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((48, 4)).astype(np.float32), rng.integers(0, 3, 48)
    runs = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = _regularized_model("float32")
            hist = model.fit(x, y, epochs=3, batch_size=16, optimizer="adam", verbose=0)
            runs[name] = (hist.history, model.params)
    assert list(runs["numpy"][0]) == ["loss", "accuracy", "penalty"]
    for key in ("loss", "penalty"):
        assert_close(runs["numpy"][0][key], runs["jax"][0][key], rtol=1e-4)
    for layer in runs["numpy"][1]:
        for p in runs["numpy"][1][layer]:
            assert_close(runs["numpy"][1][layer][p], runs["jax"][1][layer][p], rtol=1e-4, atol=1e-6)


def test_penalty_logged_separately_and_equal_to_closed_form(backend):
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 3, 32)
    model = _regularized_model("float32")
    # A learning rate of 0: the params never move, so every step's penalty is the initial one.
    hist = model.fit(x, y, epochs=1, batch_size=32, optimizer=wf.optimizers.sgd(0.0), verbose=0)
    p = {k: {n: wf.to_numpy(a) for n, a in v.items()} for k, v in model.params.items()}
    W0, W1 = p["dense_0"]["W"], p["dense_1"]["W"]
    expected = 0.01 * np.abs(W0).sum() + 0.02 * (W0**2).sum() + 0.05 * (W1**2).sum()
    assert_close(hist.history["penalty"][0], expected, rtol=1e-5)
    data_loss = model.evaluate(x, y)["loss"]
    assert_close(hist.history["loss"][0], data_loss, rtol=1e-5)


def test_conv_and_recurrent_penalties_train(backend):
    rng = np.random.default_rng(8)
    img = rng.standard_normal((8, 6, 6, 1)).astype(np.float32)
    seq = rng.standard_normal((8, 5, 3)).astype(np.float32)
    y = rng.integers(0, 2, 8)
    for x, first in (
        (img, Conv2D(2, 3, kernel_regularizer="l2")),
        (seq, LSTM(4, kernel_regularizer="l2", recurrent_regularizer="l2")),
    ):
        model = wf.Sequential([first, Flatten(), Dense(2)])
        hist = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
        assert hist.history["penalty"][1] < hist.history["penalty"][0]


def test_sgd_with_l2_in_the_loss_equals_decoupled_decay(backend):
    """Plain SGD: l2(λ) in the loss and decay 2λ on the weights are the same step."""
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 3, 16)
    lam, lr = 0.01, 0.1
    a = wf.Sequential([Dense(3, kernel_regularizer=R.l2(lam), bias_regularizer=R.l2(lam))])
    b = wf.Sequential([Dense(3)])
    a.fit(x, y, epochs=2, batch_size=16, optimizer=wf.optimizers.sgd(lr), verbose=0)
    decayed = wf.optimizers.chain(wf.optimizers.add_decayed_weights(2 * lam), wf.optimizers.sgd(lr))
    b.fit(x, y, epochs=2, batch_size=16, optimizer=decayed, verbose=0)
    assert_close(a.params["dense_0"]["W"], b.params["dense_0"]["W"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: Dense(3, kernel_regularizer="l3"),
            r"Dense: kernel_regularizer: unknown "
            r"regularizer 'l3'; expected one of 'l1', 'l2', 'l1_l2'",
        ),
        (lambda: R.l2(-0.1), r"L2: l2 must be >= 0 \(a negative penalty"),
        (lambda: R.l1(float("nan")), r"L1: l1 must be a finite number >= 0, got nan"),
        (lambda: LSTM(3, recurrent_regularizer=0.1), r"LSTM: recurrent_regularizer: unknown"),
    ],
)
def test_bad_regularizers_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
