"""Dropout (wframe/layers/core.py) and its stateless generator (wframe/random.py).

The masks come from a counter-based hash of an array key on xp uint32 arithmetic, so one key gives
the same bits on NumPy, CuPy and JAX (eager or jitted), and a training run with dropout is the
same run on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense, Dropout
from wframe.random import array_key, fold_in, random_bits, uniform
from wframe.testing import assert_close
from wframe.tree import flatten

EPS = 1e-6


def _host(a) -> np.ndarray:
    return np.asarray(wf.to_numpy(a))


def _numpy_reference(fn):
    with wf.use_backend("numpy"):
        return _host(fn())


def _dropout(rate, x, key, *, train=True):
    """``(y, dx)`` of a Dropout on ``x`` with cotangent ones, on the active backend."""
    b = wf.get_backend()
    y, _, backprop = Dropout(rate).forward({}, {}, b.asarray(x), train=train, key=key)
    dx, grads = backprop(b.xp.ones_like(y))
    assert grads == {}
    return y, dx


# ----------------------------------------------------------------------------- the generator
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_mask_rate_within_one_percent(backend, rate):
    x = np.ones((1000, 1000), np.float32)
    y, _ = _dropout(rate, x, fold_in(array_key(3, 11), 2))
    dropped = float(np.mean(_host(y) == 0))
    assert abs(dropped - rate) < 0.01 * rate


def test_uniform_is_in_unit_interval_and_uniform(backend):
    u = _host(uniform(array_key(5, 0), (1 << 20,)))
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    counts = np.histogram(u, bins=16, range=(0, 1))[0]
    # 65536 draws per bin in expectation, std ~250 (0.4%): 2% is a 5-sigma bound.
    assert np.abs(counts / (len(u) / 16) - 1).max() < 0.02
    assert abs(float(np.corrcoef(u[:-1], u[1:])[0, 1])) < 5e-3  # no serial correlation


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_uniform_dtypes_never_reach_one(dtype):
    with wf.use_backend("numpy"):
        u = uniform(array_key(0, 1), (4096,), dtype)
    assert u.dtype == np.dtype(dtype) and u.min() >= 0 and u.max() < 1
    precision = {"float16": 11, "float32": 24, "float64": 32}[dtype]
    scaled = u.astype(np.float64) * 2.0**precision
    np.testing.assert_array_equal(scaled, np.floor(scaled))  # multiples of 2**-precision


def test_same_key_same_bits_on_every_backend(backend):
    shape = (7, 33, 5)
    ref_bits = _numpy_reference(lambda: random_bits(fold_in(array_key(42, 9), 3), shape))
    ref_u = _numpy_reference(lambda: uniform(array_key(42, 9), shape))
    bits = random_bits(fold_in(array_key(42, 9), 3), shape)
    assert wf.backends.array_namespace(bits) is backend.xp
    np.testing.assert_array_equal(_host(bits), ref_bits)
    np.testing.assert_array_equal(_host(uniform(array_key(42, 9), shape)), ref_u)

    x = np.random.default_rng(0).standard_normal((64, 40)).astype(np.float32)
    key = fold_in(array_key(1, 2), 5)
    ref_y = _numpy_reference(lambda: _dropout(0.3, x, fold_in(array_key(1, 2), 5))[0])
    np.testing.assert_array_equal(_host(_dropout(0.3, x, key)[0]), ref_y)


def test_different_keys_steps_and_layers_give_different_masks():
    with wf.use_backend("numpy"):
        masks = {
            name: random_bits(key, (4096,)) > 2**31
            for name, key in {
                "base": array_key(0, 0),
                "step": array_key(0, 1),
                "seed": array_key(1, 0),
                "layer": fold_in(array_key(0, 0), 1),
            }.items()
        }
        again = random_bits(array_key(0, 0), (4096,)) > 2**31
    np.testing.assert_array_equal(again, masks["base"])
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            agree = float(np.mean(masks[a] == masks[b]))
            assert 0.45 < agree < 0.55, (a, b, agree)  # independent masks agree half the time


def test_jit_gives_the_masks_of_eager_numpy(jax):
    x = np.random.default_rng(1).standard_normal((32, 17)).astype(np.float32)
    with wf.use_backend("jax") as b:
        traces = []

        def f(x, key):
            traces.append(1)
            return Dropout(0.4).forward({}, {}, x, train=True, key=key)[0]

        f_jit = jax.jit(f)
        jx = b.asarray(x)
        for step in range(3):
            got = f_jit(jx, fold_in(array_key(7, step), 1))
            ref = _numpy_reference(
                lambda step=step: _dropout(0.4, x, fold_in(array_key(7, step), 1))[0]
            )
            np.testing.assert_array_equal(_host(got), ref)
    assert len(traces) == 1  # the key is data: a new step does not recompile


# ----------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_kept_values_are_scaled(backend, rate):
    x = np.random.default_rng(2).uniform(1, 2, (50, 40)).astype(np.float32)
    y, dx = _dropout(rate, x, array_key(0, 4))
    y, dx = _host(y), _host(dx)
    kept = y != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    # The gradient flows through the same mask, with the same scale.
    np.testing.assert_array_equal(dx != 0, kept)
    np.testing.assert_allclose(dx[kept], 1 / (1 - rate), rtol=1e-6)


def test_identity_in_eval_mode_and_at_rate_zero(backend):
    x = backend.asarray(np.arange(12.0, dtype=np.float32).reshape(3, 4))
    for layer, train, key in [(Dropout(0.5), False, None), (Dropout(0), True, None)]:
        y, state, backprop = layer.forward({}, {}, x, train=train, key=key)
        assert y is x and state == {}
        dy = backend.xp.ones_like(x)
        assert backprop(dy)[0] is dy


def test_backprop_matches_finite_differences():
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    layer, key = Dropout(0.5), array_key(9, 9)
    with wf.use_backend("numpy"):
        _, _, backprop = layer.forward({}, {}, x, train=True, key=key)
        dx, _ = backprop(dy)

        def f(v):
            return np.sum(layer.forward({}, {}, v, train=True, key=key)[0] * dy)

        fd = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            e = np.zeros_like(x)
            e[i] = EPS
            fd[i] = (f(x + e) - f(x - e)) / (2 * EPS)
    assert 0 < np.mean(dx == 0) < 1
    assert_close(dx, fd, rtol=1e-6, atol=1e-9)


def test_backprop_matches_jax_grad(jax):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    dy = rng.standard_normal((8, 6)).astype(np.float32)
    layer = Dropout(0.3)
    with wf.use_backend("numpy"):
        _, _, backprop = layer.forward({}, {}, x, train=True, key=array_key(2, 3))
        dx, _ = backprop(dy)
    with wf.use_backend("jax") as b:
        key, jdy = array_key(2, 3), b.asarray(dy)
        jdx = jax.grad(lambda v: b.xp.sum(layer.forward({}, {}, v, train=True, key=key)[0] * jdy))(
            b.asarray(x)
        )
    assert_close(dx, jdx, rtol=1e-6)


def test_runs_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    x = np.random.default_rng(5).standard_normal((9, 7))
    with wf.use_backend("numpy"):
        ref, ref_dx = _dropout(0.5, x, array_key(4, 4))
    with wf.use_backend("numpy"):
        key = xps.asarray(array_key(4, 4))
    y, _, backprop = Dropout(0.5).forward({}, {}, xps.asarray(x), train=True, key=key)
    dx, _ = backprop(xps.ones_like(y))
    np.testing.assert_array_equal(np.asarray(y), ref)
    np.testing.assert_array_equal(np.asarray(dx), ref_dx)


# ----------------------------------------------------------------------------- in a model
def _blobs(n=48, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(0, 3, (classes, features))
    return (centers[y] + rng.normal(0, 1, (n, features))).astype(np.float32), y


def _dropout_model():
    return wf.Sequential(
        [
            Dense(16, activation="relu"),
            Dropout(0.5),
            Dense(16, activation="tanh"),
            Dropout(0.2),
            Dense(3),
        ],
        seed=0,
    )


def test_fit_with_dropout_is_the_same_run_on_numpy_and_jax(jax):
    x, y = _blobs()
    runs = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = _dropout_model()
            adam = wf.optimizers.adam(1e-2)
            history = model.fit(x, y, epochs=4, batch_size=16, optimizer=adam, verbose=0).history
            runs[name] = (history, {k: _host(v) for k, v in flatten(model.params)})
    (h_np, p_np), (h_jax, p_jax) = runs["numpy"], runs["jax"]
    assert h_np["loss"][-1] < h_np["loss"][0]  # it trains
    for k in h_np:
        np.testing.assert_allclose(h_jax[k], h_np[k], rtol=1e-4, err_msg=k)
    for name in p_np:
        np.testing.assert_allclose(p_jax[name], p_np[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_predict_is_deterministic_and_dropout_free(backend):
    x, y = _blobs(n=16)
    model = _dropout_model()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    first, second = _host(model.predict(x)), _host(model.predict(x))
    np.testing.assert_array_equal(first, second)
    plain = model.apply(model.params, model.state, backend.asarray(x), train=False)[0]
    assert_close(first, plain, rtol=1e-5)  # compiled vs op by op: float32 rounding
    # Training-mode passes with different keys do differ.
    xs = backend.asarray(x)
    a = model.apply(model.params, {}, xs, train=True, key=array_key(0, 0))[0]
    b = model.apply(model.params, {}, xs, train=True, key=array_key(0, 1))[0]
    assert not np.allclose(_host(a), _host(b))


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_layer():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"Dropout 'drop' draws a random mask.*key=None"):
        Dropout(0.5, name="drop").forward({}, {}, x, train=True)
    for rate in (1, 1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError, match=r"Dropout: rate must be a number in \[0, 1\)"):
            Dropout(rate)
    with pytest.raises(TypeError, match=r"need an array key .*got int 3"):
        Dropout(0.5).forward({}, {}, x, train=True, key=3)
    with pytest.raises(ValueError, match=r"uint32 array of shape \(2,\).*int64.*\(3,\)"):
        random_bits(np.arange(3), (2,))
    with wf.use_backend("numpy"), pytest.raises(ValueError, match=r"floating dtype"):
        uniform(array_key(0, 0), (2,), "int32")
