"""Reshape and Permute (wframe/layers/core.py).

* Forward against NumPy's ``reshape``/``transpose`` on every backend, backward against central
  finite differences (float64) and against ``jax.grad``.
* Constructor and shape errors name the layer, the shapes and the fix.
* Both go through ``save_model``/``load_model`` (their tuples come back from JSON lists).
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense, Flatten, Permute, Reshape
from wframe.saving import layer_config
from wframe.saving.config import layer_from_config
from wframe.testing import assert_close, numerical_grad

FD_RTOL = 1e-6
JAX_RTOL = 1e-5

# (id, layer, input shape, what NumPy does to one batch)
CASES = {
    "reshape": (Reshape((3, 4)), (2, 12), lambda x: x.reshape(2, 3, 4)),
    "reshape-infer": (Reshape((-1, 2)), (2, 3, 4), lambda x: x.reshape(2, 6, 2)),
    "reshape-flat": (Reshape((-1,)), (2, 2, 3), lambda x: x.reshape(2, 6)),
    "permute": (Permute((2, 1)), (2, 3, 4), lambda x: x.transpose(0, 2, 1)),
    "permute-3": (Permute((3, 1, 2)), (2, 3, 4, 2), lambda x: x.transpose(0, 3, 1, 2)),
}


def _case(name, seed=0):
    layer, shape, reference = CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    return layer, x, reference, rng.standard_normal(reference(x).shape)


@pytest.mark.parametrize("name", CASES)
def test_forward_and_backward(backend, name):
    layer, x, reference, dy = _case(name)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    params, state, out = layer.init(0, (None, *x.shape[1:]))
    assert params == {} and state == {} and out == (None, *reference(x).shape[1:])
    y, _, backprop = layer.apply(params, state, backend.asarray(x32))
    dx, grads = backprop(backend.asarray(dy32))
    np.testing.assert_array_equal(wf.to_numpy(y), reference(x32))
    assert grads == {} and tuple(dx.shape) == x.shape
    # The adjoint of a permutation of entries: <dy, f(x)> = <backprop(dy), x> for every x.
    np.testing.assert_allclose(np.sum(wf.to_numpy(dx) * x32), np.sum(dy32 * reference(x32)), 1e-5)


@pytest.mark.parametrize("name", CASES)
def test_backward_finite_differences(name):
    layer, x, _, dy = _case(name, seed=1)
    with wf.use_backend("numpy"):
        dx = layer.apply({}, {}, x)[2](dy)[0]

        def f(a):
            return np.sum(layer.apply({}, {}, a)[0] * dy)

        assert_close(dx, numerical_grad(f, x), rtol=FD_RTOL, atol=1e-9)


@pytest.mark.parametrize("name", ["reshape-infer", "permute-3"])
def test_backward_matches_jax_grad(jax, name):
    layer, x, _, dy = _case(name, seed=2)
    x, dy = x.astype(np.float32), dy.astype(np.float32)
    with wf.use_backend("numpy"):
        expected = layer.apply({}, {}, x)[2](dy)[0]
    with wf.use_backend("jax") as b:
        cot = b.asarray(dy)
        got = jax.grad(lambda a: (layer.apply({}, {}, a, vjp=False)[0] * cot).sum())(b.asarray(x))
    assert_close(got, expected, rtol=JAX_RTOL)


@pytest.mark.parametrize(
    "target", [(0, 3), (-1, -1), (2, -2), "34", (2.0, 3), (True, 3), 12, None], ids=str
)
def test_bad_target_shape_fails_at_construction(target):
    with pytest.raises(ValueError, match=r"Reshape 'r': target_shape must be .* at most one -1"):
        Reshape(target, name="r")


def test_reshape_size_mismatch_names_both_shapes(backend):
    layer = Reshape((5, 2), name="r")
    with pytest.raises(ValueError, match=r"Reshape 'r'.*\(None, 3, 4\).*12 values.*\(5, 2\)"):
        layer.init(0, (None, 3, 4))
    with pytest.raises(ValueError, match=r"\(2, 7\).*7 values.*\(-1, 2\)"):
        Reshape((-1, 2)).apply({}, {}, backend.asarray(np.zeros((2, 7), np.float32)))
    # Unknown sizes leave the -1 unknown; the forward resolves it from the array.
    assert Reshape((-1, 2)).init(0, (None, None, 4))[2] == (None, None, 2)


@pytest.mark.parametrize("dims", [(1, 1), (0, 1), (1, 3), (), "21", (1.0, 2), 2], ids=str)
def test_bad_dims_fail_at_construction(dims):
    with pytest.raises(ValueError, match=r"Permute 'p': dims must be a permutation of 1\.\.n"):
        Permute(dims, name="p")


def test_permute_rank_mismatch(backend):
    layer = Permute((2, 1), name="p")
    with pytest.raises(ValueError, match=r"Permute 'p' with dims=\(2, 1\) expects 3-D inputs"):
        layer.init(0, (None, 4))
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4, 5\)"):
        layer.apply({}, {}, backend.asarray(np.zeros((2, 3, 4, 5), np.float32)))


def test_configs_round_trip():
    for layer in (Reshape([3, -1]), Permute([2, 1])):
        assert isinstance(layer.target_shape if isinstance(layer, Reshape) else layer.dims, tuple)
        assert layer_from_config(layer_config(layer)) == layer


def test_model_with_reshape_and_permute_through_a_file(backend, tmp_path):
    model = wf.Sequential([Reshape((3, 4)), Permute((2, 1)), Flatten(), Dense(2)], seed=1)
    model.build((None, 12))
    x = np.random.default_rng(3).standard_normal((6, 12)).astype(np.float32)
    wf.save_model(model, tmp_path / "m.safetensors")
    loaded = wf.load_model(tmp_path / "m.safetensors")
    assert loaded.layers[0].target_shape == (3, 4) and loaded.layers[1].dims == (2, 1)
    np.testing.assert_array_equal(wf.to_numpy(loaded.predict(x)), wf.to_numpy(model.predict(x)))
