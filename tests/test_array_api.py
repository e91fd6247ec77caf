"""The generic code uses only standard array-API calls (DESIGN.md §9).

Layers, activations and losses run on ``array_api_strict`` arrays -- which reject anything
outside the standard -- and give the same numbers as on NumPy. ``fit``/``predict`` are not used:
they convert inputs through the active backend; ``apply``, the losses and ``backprop`` are called
directly.
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense
from wframe.testing import assert_close
from wframe.tree import tree_map

xps = pytest.importorskip("array_api_strict")

ACTIVATIONS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "gelu"]
LOSSES = [
    "softmax_cross_entropy-int",
    "softmax_cross_entropy-onehot",
    "binary_cross_entropy",
    "mse",
]
RTOL = 1e-6


@pytest.fixture(autouse=True)
def _numpy_backend():
    with wf.use_backend("numpy"):
        yield


def _strict(a):
    return xps.asarray(np.asarray(a))


def _host(a):
    assert isinstance(a, type(xps.asarray(0.0))), f"expected an array_api_strict array, got {a!r}"
    return np.asarray(a)


def _case(case: str, n: int = 6, c: int = 3):
    rng = np.random.default_rng(0)
    if case == "softmax_cross_entropy-int":
        return "softmax_cross_entropy", rng.integers(0, c, n).astype(np.int32)
    if case == "softmax_cross_entropy-onehot":
        return "softmax_cross_entropy", np.eye(c)[rng.integers(0, c, n)]
    if case == "binary_cross_entropy":
        return case, rng.uniform(0, 1, (n, c))
    return case, rng.standard_normal((n, c))


def _forward_backward(model, params, x, loss, labels):
    y, state, backprop = model.apply(params, {}, x, train=True)
    value, dpred = loss(y, labels)
    dx, grads = backprop(dpred, input_grad=True)
    return {"y": y, "value": value, "dpred": dpred, "dx": dx}, grads, state


@pytest.mark.parametrize("case", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_network_runs_on_array_api_strict(activation, case):
    model = wf.Sequential(
        [Dense(5, activation=activation), Dense(3, use_bias=False)], seed=0, dtype="float64"
    ).build((None, 4))
    loss_name, labels = _case(case)
    loss = wf.losses.get(loss_name)
    x = np.random.default_rng(1).standard_normal((6, 4))

    ref, ref_grads, _ = _forward_backward(model, model.params, x, loss, labels)
    out, grads, state = _forward_backward(
        model, tree_map(_strict, model.params), _strict(x), loss, _strict(labels)
    )

    assert state == {}
    for key in ref:
        try:
            assert_close(_host(out[key]), ref[key], rtol=RTOL)
        except AssertionError as e:
            raise AssertionError(f"{key} differs:\n{e}") from None
    assert grads.keys() == ref_grads.keys()
    for layer in ref_grads:
        assert grads[layer].keys() == ref_grads[layer].keys()
        for name in ref_grads[layer]:
            assert_close(_host(grads[layer][name]), ref_grads[layer][name], rtol=RTOL)


@pytest.mark.parametrize("case", ["softmax_cross_entropy-int", "binary_cross_entropy"])
def test_accuracy_metric_runs_on_array_api_strict(case):
    loss_name, labels = _case(case)
    pred = np.random.default_rng(2).standard_normal(labels.shape if labels.ndim == 2 else (6, 3))
    ref = wf.losses.accuracy(pred, labels)
    got = wf.losses.accuracy(_strict(pred), _strict(labels))
    assert_close(_host(got), ref, rtol=RTOL)
