"""Gradient checks (DESIGN.md §3, §9).

* The hand-written backprop of every activation, loss, Dense configuration and a 3-layer
  Sequential against central finite differences in float64 on NumPy (rtol 1e-6).
* Loss values against oracles no one here wrote (PyTorch, SciPy), and stability at logits ±1000.
* Where jax is installed: the hand-written backprop (NumPy, float32) against ``jax.grad`` of the
  same forward on the jax backend (float32, rtol 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense
from wframe.testing import assert_close, numerical_grad

ACTIVATIONS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "gelu"]
LOSSES = [
    "softmax_cross_entropy-int",
    "softmax_cross_entropy-onehot",
    "binary_cross_entropy",
    "mse",
]

# Central differences in float64: the truncation error is ~eps²·f''' ≈ 1e-12 and the round-off
# error ~ulp(f)/eps ≈ 1e-10·|f|, both far below rtol 1e-6 for entries of order 1e-2 or more.
EPS = 1e-6
FD_RTOL = 1e-6
# Entries whose true value is (near) zero -- e.g. tanh' far out, a softmax VJP that nearly
# cancels -- can only be matched down to the round-off floor of the difference quotient.
FD_ATOL = 1e-9


@pytest.fixture(autouse=True)
def _numpy_backend():
    """Finite-difference checks run on NumPy whatever the process default backend is."""
    with wf.use_backend("numpy"):
        yield


# ----------------------------------------------------------------------------- helpers
def _away_from_kinks(a: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Move every entry at least ``margin`` away from 0 (the relu/leaky_relu kink)."""
    return np.where(a >= 0, a + margin, a - margin)


def _fd_grad_tree(f, params: dict, eps: float = EPS) -> dict:
    """Central-difference gradient of ``f(params)`` w.r.t. every entry of a 2-level dict."""
    out = {}
    for layer, sub in params.items():
        out[layer] = {}
        for name, a in sub.items():

            def f_entry(v, layer=layer, name=name):
                new = {lk: dict(lv) for lk, lv in params.items()}
                new[layer][name] = v
                return f(new)

            out[layer][name] = numerical_grad(f_entry, np.asarray(a), eps)
    return out


def _assert_tree_close(actual: dict, expected: dict, *, rtol: float, atol: float) -> None:
    assert actual.keys() == expected.keys()
    for layer in expected:
        assert actual[layer].keys() == expected[layer].keys(), layer
        for name in expected[layer]:
            try:
                assert_close(actual[layer][name], expected[layer][name], rtol=rtol, atol=atol)
            except AssertionError as e:
                raise AssertionError(f"gradient of {layer}/{name} differs:\n{e}") from None


def _loss_case(case: str, n: int = 6, c: int = 4, dtype=np.float64, seed: int = 0):
    """``(loss name, pred, labels)`` for a loss test case id."""
    rng = np.random.default_rng(seed)
    pred = (rng.standard_normal((n, c)) * 2).astype(dtype)
    if case == "softmax_cross_entropy-int":
        return "softmax_cross_entropy", pred, rng.integers(0, c, n).astype(np.int32)
    if case == "softmax_cross_entropy-onehot":
        return "softmax_cross_entropy", pred, np.eye(c, dtype=dtype)[rng.integers(0, c, n)]
    if case == "binary_cross_entropy":
        return case, pred, rng.uniform(0, 1, (n, c)).astype(dtype)
    return case, pred, rng.standard_normal((n, c)).astype(dtype)


# ----------------------------------------------------------------------------- activations
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backprop_matches_finite_differences(name):
    rng = np.random.default_rng(1)
    x = _away_from_kinks(rng.standard_normal((4, 5)) * 1.5)
    dy = rng.standard_normal((4, 5))
    act = wf.activations.get(name)

    _, backprop = act(x)
    dx = backprop(dy)
    expected = numerical_grad(lambda v: np.sum(act(v)[0] * dy), x)
    assert_close(dx, expected, rtol=FD_RTOL, atol=FD_ATOL)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_is_finite_at_large_inputs(name):
    x = np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]])
    y, backprop = wf.activations.get(name)(x)  # filterwarnings=error: no overflow warnings
    dx = backprop(np.ones_like(x))
    assert np.isfinite(y).all() and np.isfinite(dx).all()


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("case", LOSSES)
def test_loss_gradient_matches_finite_differences(case):
    name, pred, labels = _loss_case(case)
    loss = wf.losses.get(name)
    _, dpred = loss(pred, labels)
    expected = numerical_grad(lambda p: loss(p, labels)[0], pred)
    assert_close(dpred, expected, rtol=FD_RTOL, atol=FD_ATOL)


def _reference_value(oracle: str, case: str, pred: np.ndarray, labels: np.ndarray) -> float:
    if oracle == "torch":
        torch = pytest.importorskip("torch")
        F = torch.nn.functional
        p = torch.from_numpy(pred)
        if case == "softmax_cross_entropy-int":
            return float(F.cross_entropy(p, torch.from_numpy(labels.astype(np.int64))))
        t = torch.from_numpy(labels)
        if case == "softmax_cross_entropy-onehot":
            return float(F.cross_entropy(p, t))  # class-probability targets
        if case == "binary_cross_entropy":
            return float(F.binary_cross_entropy_with_logits(p, t))
        return float(F.mse_loss(p, t))
    special = pytest.importorskip("scipy.special")
    if case == "softmax_cross_entropy-int":
        return float(np.mean(special.logsumexp(pred, axis=1) - pred[np.arange(len(pred)), labels]))
    if case == "softmax_cross_entropy-onehot":
        return float(np.mean(-np.sum(labels * special.log_softmax(pred, axis=1), axis=1)))
    if case == "binary_cross_entropy":
        ll = labels * special.log_expit(pred) + (1 - labels) * special.log_expit(-pred)
        return float(-np.mean(ll))
    return float(np.mean(np.square(pred - labels)))


@pytest.mark.parametrize("oracle", ["torch", "scipy"])
@pytest.mark.parametrize("case", LOSSES)
def test_loss_value_matches_reference(case, oracle):
    name, pred, labels = _loss_case(case)
    value, _ = wf.losses.get(name)(pred, labels)
    assert_close(value, _reference_value(oracle, case, pred, labels), rtol=1e-12)


@pytest.mark.parametrize("labels_kind", ["int", "onehot"])
def test_softmax_cross_entropy_is_stable_at_large_logits(labels_kind):
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0], [1000.0, 0.0, -1000.0]])
    labels = np.array([0, 2, 2], dtype=np.int32)
    if labels_kind == "onehot":
        labels = np.eye(3)[labels]
    value, dpred = wf.losses.get("softmax_cross_entropy")(logits, labels)
    # Per-row losses: 0, log 2, 2000 (exact up to e^-1000 terms).
    assert_close(value, (0.0 + np.log(2.0) + 2000.0) / 3, rtol=1e-12)
    expected = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, -0.5], [1.0, 0.0, -1.0]]) / 3
    assert np.isfinite(dpred).all()
    assert_close(dpred, expected, rtol=1e-12, atol=1e-300)


def test_binary_cross_entropy_is_stable_at_large_logits():
    logits = np.array([[1000.0, -1000.0, 1000.0, -1000.0]])
    labels = np.array([[1.0, 0.0, 0.0, 1.0]])
    value, dpred = wf.losses.get("binary_cross_entropy")(logits, labels)
    assert_close(value, 2000.0 / 4, rtol=1e-12)
    assert np.isfinite(dpred).all()
    assert_close(dpred, np.array([[0.0, 0.0, 1.0, -1.0]]) / 4, rtol=1e-12, atol=1e-300)


# ----------------------------------------------------------------------------- Dense
def _dense_case(activation: str, use_bias: bool, dtype="float64"):
    """A Dense(4) on 3 features, its params (random bias), an input and an output cotangent."""
    layer = Dense(4, activation=activation, use_bias=use_bias)
    params, _, out_shape = layer.init(0, (None, 3), dtype=dtype)
    assert out_shape == (None, 4)
    params = {k: np.asarray(v) for k, v in params.items()}
    rng = np.random.default_rng(2)
    if use_bias:
        params["b"] = rng.standard_normal(4).astype(dtype) * 0.5
    x = rng.standard_normal((5, 3)).astype(dtype)
    dy = rng.standard_normal((5, 4)).astype(dtype)
    return layer, params, x, dy


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_backprop_matches_finite_differences(activation, use_bias):
    layer, params, x, dy = _dense_case(activation, use_bias)
    z = x @ params["W"] + params.get("b", 0.0)
    # Precondition: no pre-activation within reach of the relu kink for the FD step.
    assert np.abs(z).min() > 1e-3

    def objective(p, v):
        return np.sum(layer.forward(p, {}, v, train=True)[0] * dy)

    _, _, backprop = layer.forward(params, {}, x, train=True)
    dx, grads = backprop(dy, input_grad=True)
    assert sorted(grads) == sorted(params)

    fd = _fd_grad_tree(lambda tree: objective(tree["layer"], x), {"layer": params})["layer"]
    fd_x = numerical_grad(lambda v: objective(params, v), x)
    for name in params:
        assert_close(grads[name], fd[name], rtol=FD_RTOL, atol=FD_ATOL)
    assert_close(dx, fd_x, rtol=FD_RTOL, atol=FD_ATOL)

    dx_none, grads_again = backprop(dy, input_grad=False)
    assert dx_none is None
    for name in params:
        assert_close(grads_again[name], grads[name], rtol=0)


# ----------------------------------------------------------------------------- Sequential
def _sequential_case(case: str, dtype: str, backend: str = "numpy"):
    """A built 3-layer model on ``backend``, inputs and labels for a loss case id."""
    loss_name, _, labels = _loss_case(case, n=8, c=3, dtype=np.dtype(dtype), seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 4)).astype(dtype)
    with wf.use_backend(backend):
        model = wf.Sequential(
            [Dense(6, activation="relu"), Dense(5, activation="tanh"), Dense(3)],
            seed=0,
            dtype=dtype,
        ).build((None, 4))
    return model, loss_name, x, labels


@pytest.mark.parametrize("case", LOSSES)
def test_sequential_value_and_grad_matches_finite_differences(case):
    model, loss_name, x, labels = _sequential_case(case, "float64")
    params = {k: {n: np.asarray(a) for n, a in v.items()} for k, v in model.params.items()}
    # Precondition: the first layer's pre-activations stay clear of the relu kink.
    assert np.abs(x @ params["dense_0"]["W"] + params["dense_0"]["b"]).min() > 1e-3
    loss = wf.losses.get(loss_name)

    value, grads = model.value_and_grad(x, labels, loss=loss_name)

    def objective(p):
        return loss(model.apply(p, {}, x, train=True)[0], labels)[0]

    assert_close(value, objective(params), rtol=1e-12)
    _assert_tree_close(grads, _fd_grad_tree(objective, params), rtol=FD_RTOL, atol=FD_ATOL)


# ----------------------------------------------------------------------------- jax.grad
# float32 on both sides: the tests must not turn on jax's x64 mode (other tests rely on the
# default), and jax 0.10 has no warning-free local x64 switch. NumPy and XLA evaluate the same
# formulas in float32 with different op orders (matmul sums, tanh/exp kernels), so entries agree
# to a few ulp relative to the *largest* terms that were summed, not to the entry itself.
# Entries that are exactly zero (relu's masked gradients) or that come from cancelling sums
# (softmax VJP, CE gradients p - y of a confident class) therefore get an absolute floor of
# 1e-6, about 10 float32 ulps of the O(1) terms they are made of.
JAX_RTOL = 1e-5
JAX_ATOL = 1e-6


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backprop_matches_jax_grad(jax, name):
    rng = np.random.default_rng(5)
    x = _away_from_kinks(rng.standard_normal((4, 5)) * 1.5).astype(np.float32)
    dy = rng.standard_normal((4, 5)).astype(np.float32)
    act = wf.activations.get(name)

    y, backprop = act(x)
    dx = backprop(dy)
    assert dx.dtype == np.float32

    with wf.use_backend("jax") as b:
        jx, jdy = b.asarray(x), b.asarray(dy)
        jy = act(jx)[0]
        jdx = jax.grad(lambda v: b.xp.sum(act(v)[0] * jdy))(jx)
    assert jdx.dtype == np.float32
    assert_close(y, jy, rtol=JAX_RTOL, atol=JAX_ATOL)
    assert_close(dx, jdx, rtol=JAX_RTOL, atol=JAX_ATOL)


@pytest.mark.parametrize("case", LOSSES)
def test_loss_gradient_matches_jax_grad(jax, case):
    name, pred, labels = _loss_case(case, dtype=np.float32)
    loss = wf.losses.get(name)
    value, dpred = loss(pred, labels)
    assert dpred.dtype == np.float32

    with wf.use_backend("jax") as b:
        jpred, jlabels = b.asarray(pred), b.asarray(labels)
        jvalue, jdpred_own = loss(jpred, jlabels)
        jdpred = jax.grad(lambda p: loss(p, jlabels)[0])(jpred)
    assert_close(value, jvalue, rtol=JAX_RTOL)
    assert_close(dpred, jdpred, rtol=JAX_RTOL, atol=JAX_ATOL)
    # The hand-written dpred also matches autodiff when evaluated by jax itself.
    assert_close(jdpred_own, jdpred, rtol=JAX_RTOL, atol=JAX_ATOL)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_backprop_matches_jax_grad(jax, activation, use_bias):
    layer, params, x, dy = _dense_case(activation, use_bias, dtype="float32")
    _, _, backprop = layer.forward(params, {}, x, train=True)
    dx, grads = backprop(dy)

    with wf.use_backend("jax") as b:
        jparams = {k: b.asarray(v) for k, v in params.items()}
        jx, jdy = b.asarray(x), b.asarray(dy)

        def objective(p, v):
            return b.xp.sum(layer.forward(p, {}, v, train=True)[0] * jdy)

        jgrads, jdx = jax.jit(jax.grad(objective, argnums=(0, 1)))(jparams, jx)
    assert sorted(jgrads) == sorted(grads)
    for name in params:
        assert_close(grads[name], jgrads[name], rtol=JAX_RTOL, atol=JAX_ATOL)
    assert_close(dx, jdx, rtol=JAX_RTOL, atol=JAX_ATOL)


@pytest.mark.parametrize("case", LOSSES)
def test_sequential_value_and_grad_matches_jax(jax, case):
    np_model, loss_name, x, labels = _sequential_case(case, "float32", "numpy")
    jax_model, _, _, _ = _sequential_case(case, "float32", "jax")
    # Same seed: bit-identical initial weights on both backends.
    np_params = np_model.params
    for layer in np_params:
        for name in np_params[layer]:
            np.testing.assert_array_equal(
                np.asarray(jax_model.params[layer][name]), np_params[layer][name]
            )

    value, grads = np_model.value_and_grad(x, labels, loss=loss_name)
    with wf.use_backend("jax"):
        jvalue, jgrads = jax_model.value_and_grad(x, labels, loss=loss_name)
    assert_close(value, jvalue, rtol=JAX_RTOL)
    _assert_tree_close(grads, jgrads, rtol=JAX_RTOL, atol=JAX_ATOL)
