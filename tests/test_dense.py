"""Dense on inputs of any rank >= 2 (wframe/layers/dense.py), acting on the last axis.

* Outputs and gradients against PyTorch's ``nn.Linear`` (same weights, float32) on 3-D and 4-D
  inputs, on every backend; the hand-written backprop against float64 finite differences and
  against ``jax.grad``.
* Shapes through ``init`` and a ``Sequential``; the 2-D path unchanged; error messages.
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense
from wframe.testing import assert_close, numerical_grad

RTOL, ATOL = 1e-5, 1e-6
FD_RTOL, FD_ATOL = 1e-6, 1e-9
SHAPES = {"3d": (2, 3, 4), "4d": (2, 2, 3, 4)}


def _case(shape, units, dtype, *, activation=None, use_bias=True, seed=0):
    """Layer, params (random bias, not the zero init), input and cotangent, all on the host."""
    layer = Dense(units, activation=activation, use_bias=use_bias)
    rng = np.random.default_rng(seed)
    with wf.use_backend("numpy"):
        params, state, out_shape = layer.init(seed, (None, *shape[1:]), dtype=dtype)
    assert out_shape == (None, *shape[1:-1], units) and state == {}
    params = {k: np.asarray(v) for k, v in params.items()}
    if use_bias:
        params["b"] = (rng.standard_normal(units) * 0.5).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal((*shape[:-1], units)).astype(dtype)
    return layer, params, x, dy


@pytest.mark.parametrize("case", list(SHAPES))
def test_matches_torch_linear(backend, case):
    torch = pytest.importorskip("torch")
    layer, params, x, dy = _case(SHAPES[case], 5, "float32", activation="tanh")
    dev = {k: backend.asarray(v) for k, v in params.items()}
    y, _, backprop = layer.forward(dev, {}, backend.asarray(x), train=True)
    dx, grads = backprop(backend.asarray(dy))
    assert y.shape == (*x.shape[:-1], 5) and dx.shape == x.shape

    linear = torch.nn.Linear(x.shape[-1], 5)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(params["W"].T))  # torch stores (out, in)
        linear.bias.copy_(torch.from_numpy(params["b"]))
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = torch.tanh(linear(tx))
    ty.backward(torch.from_numpy(dy))
    assert_close(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)
    assert_close(dx, tx.grad.numpy(), rtol=RTOL, atol=ATOL)
    assert_close(grads["W"], linear.weight.grad.numpy().T, rtol=RTOL, atol=ATOL)
    assert_close(grads["b"], linear.bias.grad.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", list(SHAPES))
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_backprop_matches_finite_differences(case, use_bias):
    layer, params, x, dy = _case(SHAPES[case], 3, "float64", activation="gelu", use_bias=use_bias)

    def objective(p, v):
        return np.sum(layer.forward(p, {}, v)[0] * dy)

    _, _, backprop = layer.forward(params, {}, x)
    dx, grads = backprop(dy)
    assert sorted(grads) == sorted(params)
    assert_close(dx, numerical_grad(lambda v: objective(params, v), x), rtol=FD_RTOL, atol=FD_ATOL)
    for name in params:
        fd = numerical_grad(lambda v, name=name: objective({**params, name: v}, x), params[name])
        assert_close(grads[name], fd, rtol=FD_RTOL, atol=FD_ATOL)
    # Selective gradients: only W, and no input gradient.
    none, only_w = backprop(dy, False, {"W": None})
    assert none is None and sorted(only_w) == ["W"]
    np.testing.assert_array_equal(only_w["W"], grads["W"])


def test_backprop_matches_jax_grad(jax):
    layer, params, x, dy = _case(SHAPES["4d"], 3, "float32", activation="relu")
    _, _, backprop = layer.forward(params, {}, x)
    dx, grads = backprop(dy)
    with wf.use_backend("jax") as b:
        jparams, jx, jdy = {k: b.asarray(v) for k, v in params.items()}, b.asarray(x), b.asarray(dy)

        def objective(p, v):
            return b.xp.sum(layer.forward(p, {}, v, vjp=False)[0] * jdy)

        jgrads, jdx = jax.jit(jax.grad(objective, argnums=(0, 1)))(jparams, jx)
    assert_close(jdx, dx, rtol=RTOL, atol=ATOL)
    for name in grads:
        assert_close(jgrads[name], grads[name], rtol=RTOL, atol=ATOL)


def test_sequential_on_sequences(backend):
    model = wf.Sequential([Dense(6, activation="relu"), Dense(2)], seed=3).build((None, 5, 4))
    assert model.output_shape == (None, 5, 2)
    x = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    y = wf.to_numpy(model.predict(x))
    p = {k: {n: wf.to_numpy(a) for n, a in v.items()} for k, v in model.params.items()}
    h = np.maximum(x @ p["dense_0"]["W"] + p["dense_0"]["b"], 0)
    assert_close(y, h @ p["dense_1"]["W"] + p["dense_1"]["b"], rtol=RTOL, atol=ATOL)
    # Each position is an independent row: the same as the 2-D layer on (batch * steps, 4).
    flat = wf.to_numpy(model.predict(np.reshape(x, (1, 15, 4))))
    assert_close(np.reshape(flat, (3, 5, 2)), y, rtol=RTOL, atol=ATOL)


def test_two_dimensional_path_is_unchanged(backend):
    layer, params, x, dy = _case((4, 3), 2, "float32")
    dev = {k: backend.asarray(v) for k, v in params.items()}
    y, _, backprop = layer.forward(dev, {}, backend.asarray(x))
    assert_close(y, x @ params["W"] + params["b"], rtol=RTOL, atol=ATOL)
    dx, grads = backprop(backend.asarray(dy))
    assert_close(dx, dy @ params["W"].T, rtol=RTOL, atol=ATOL)
    assert_close(grads["W"], x.T @ dy, rtol=RTOL, atol=ATOL)


def test_errors_name_the_layer_and_the_last_axis(backend):
    layer = Dense(3, name="proj")
    params, _, _ = layer.init(0, (None, 7, 4))
    wrong_last = r"Dense 'proj' expects inputs of shape \(batch, \.\.\., 4\), got .*\(2, 7, 5\)"
    with pytest.raises(ValueError, match=wrong_last):
        layer.forward(params, {}, backend.asarray(np.zeros((2, 7, 5), np.float32)))
    wrong_2d = r"Dense 'proj' expects inputs of shape \(batch, 4\), got array of shape \(2, 5\)"
    with pytest.raises(ValueError, match=wrong_2d):
        layer.forward(params, {}, backend.asarray(np.zeros((2, 5), np.float32)))
    rank = r"Dense 'proj' expects inputs \(batch, \.\.\., features\) of rank >= 2.*\(None,\)"
    with pytest.raises(ValueError, match=rank):
        layer.init(0, (None,))
    with pytest.raises(ValueError, match=r"known number of features, got shape \(None, 3, None\)"):
        layer.init(0, (None, 3, None))
