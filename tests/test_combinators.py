"""Composition is a layer: nested chains, residual blocks, parallel branches, shared layers."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Concatenate, Dense, Dropout, Residual
from wframe.testing import assert_close, numerical_grad
from wframe.tree import flatten, tree_map

RTOL = 1e-6


def _data(n=6, d=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, c, n).astype(np.int32)


def _nested(dtype="float64"):
    block = wf.layers.Sequential([Dense(5, activation="tanh"), Dense(4)], name="block_0")
    return wf.Sequential(
        [
            Dense(4, activation="tanh"),
            block,
            Residual(Dense(4, activation="tanh")),
            Concatenate([Dense(3, activation="sigmoid"), wf.layers.Sequential([Dense(2)])]),
            Dense(3),
        ],
        seed=3,
        dtype=dtype,
    )


def test_nested_names_shapes_and_flat_names(backend):
    model = _nested("float32").build((None, 4))
    names = [name for name, _ in flatten(model.params)]
    assert names == [
        "dense_0/W",
        "dense_0/b",
        "block_0/dense_0/W",
        "block_0/dense_0/b",
        "block_0/dense_1/W",
        "block_0/dense_1/b",
        "residual_0/W",
        "residual_0/b",
        "concatenate_0/dense_0/W",
        "concatenate_0/dense_0/b",
        "concatenate_0/sequential_0/dense_0/W",
        "concatenate_0/sequential_0/dense_0/b",
        "dense_1/W",
        "dense_1/b",
    ]
    assert model.params["concatenate_0"]["dense_0"]["W"].shape == (4, 3)
    assert model.params["dense_1"]["W"].shape == (5, 3)
    text = model.summary(print_fn=lambda s: None)
    assert "block_0/dense_1 (Dense)" in text and "(None, 5)" in text


def test_nested_gradients_match_finite_differences(backend):
    if backend.name == "jax":
        pytest.importorskip("jax").config.update("jax_enable_x64", True)
    try:
        model = _nested()
        x, y = _data()
        model.build((None, 4))
        start = tree_map(wf.to_numpy, model.params)
        _, grads = model.value_and_grad(x, y)
        for name, value in flatten(start):

            def f(v, name=name):
                params = tree_map(lambda a: a.copy(), start)
                node = params
                *path, leaf = name.split("/")
                for p in path:
                    node = node[p]
                node[leaf] = v
                model.params = tree_map(model.backend.asarray, params)
                return float(model.value_and_grad(x, y)[0])

            expected = numerical_grad(f, value)
            got = dict(flatten(grads))[name]
            assert_close(got, expected, rtol=1e-5, atol=1e-9)
    finally:
        if backend.name == "jax":
            pytest.importorskip("jax").config.update("jax_enable_x64", False)


def test_hand_written_backprop_matches_jax_grad(jax):
    model = _nested("float32")
    x, y = _data()
    with wf.use_backend("numpy"):
        model.build((None, 4))
        ours = model.value_and_grad(x.astype(np.float32), y)[1]
    model.to_backend("jax")
    theirs = model.value_and_grad(x.astype(np.float32), y)[1]
    for (name, a), (their_name, b) in zip(flatten(ours), flatten(theirs), strict=True):
        assert name == their_name  # the same order on both backends
        assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_shared_layer_has_one_param_set_and_gradients_add(backend):
    shared = Dense(4, activation="tanh")
    model = wf.Sequential([shared, shared, Dense(3)], seed=1, dtype="float64")
    if backend.name == "jax":
        pytest.skip("float64 finite differences run on numpy; jax agrees via the test above")
    x, y = _data()
    model.build((None, 4))
    assert list(model.params) == ["dense_0", "dense_1"]
    _, grads = model.value_and_grad(x, y)
    W0 = wf.to_numpy(model.params["dense_0"]["W"])

    def f(W):
        params = tree_map(wf.to_numpy, model.params)
        params["dense_0"]["W"] = W
        model.params = tree_map(backend.asarray, params)
        return float(model.value_and_grad(x, y)[0])

    assert_close(grads["dense_0"]["W"], numerical_grad(f, W0), rtol=1e-5, atol=1e-9)


def test_trained_model_nests_with_its_weights(backend):
    x, y = _data(40, 4, 3)
    encoder = wf.Sequential([Dense(8)], seed=5)
    encoder.fit(x, y, epochs=2, verbose=0)  # 8 logits for 3 classes: a trained stack all the same
    outer = wf.Sequential([encoder, Dense(3)], seed=0).build((None, 4))
    assert list(outer.params) == ["sequential_0", "dense_0"]
    assert_close(outer.params["sequential_0"]["dense_0"]["W"], encoder.params["dense_0"]["W"])
    outer.fit(x, y, epochs=2, verbose=0)
    # Training the outer model does not change the encoder it was built from.
    assert not np.allclose(
        wf.to_numpy(outer.params["sequential_0"]["dense_0"]["W"]),
        wf.to_numpy(encoder.params["dense_0"]["W"]),
    )


def test_residual_and_concatenate_shape_errors(backend):
    with pytest.raises(ValueError, match=r"'residual_0': the wrapped Dense maps.*keep the shape"):
        wf.Sequential([Residual(Dense(3))]).build((None, 4))
    with pytest.raises(ValueError, match="must agree on every axis"):
        branches = Concatenate([wf.layers.Flatten(), wf.layers.Activation("relu")])
        wf.Sequential([branches]).build((None, 3, 4))
    with pytest.raises(TypeError, match="list of layers"):
        wf.layers.Sequential(Dense(3))
    with pytest.raises(ValueError, match="two different layers are named 'a'"):
        wf.layers.Sequential([Dense(3, name="a"), Dense(3, name="a")])


def test_dropout_inside_nested_chain_gets_keys(backend):
    model = wf.Sequential([wf.layers.Sequential([Dense(8), Dropout(0.5)]), Dense(3)], seed=2)
    assert model.uses_key
    x, y = _data(32, 4, 3)
    model.fit(x, y, epochs=1, verbose=0)
    assert model.predict(x).shape == (32, 3)
