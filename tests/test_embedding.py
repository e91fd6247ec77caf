"""Embedding and PositionEmbedding (wframe/layers/embedding.py), and Backend.scatter_add.

* Embedding's output and weight gradient against ``torch.nn.functional.embedding`` (same
  weights, repeated ids, 2-D and 3-D id arrays) on every backend; its hand-written backprop
  against ``jax.grad`` of the forward; the out-of-range, float-id and constructor errors.
* PositionEmbedding against central finite differences (float64) and ``jax.grad``.
* ``scatter_add`` of every backend against ``numpy.add.at``.
* Models holding them through ``save_weights``/``load_weights`` and ``save_model``/``load_model``.
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.backends.base import Backend
from wframe.layers import Dense, Embedding, Flatten, PositionEmbedding
from wframe.testing import assert_close, numerical_grad

torch = pytest.importorskip("torch")

TORCH_RTOL, TORCH_ATOL = 1e-5, 1e-6
JAX_RTOL = 1e-5
FD_RTOL = 1e-6
VOCAB, WIDTH = 7, 3


def _weights(dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal((VOCAB, WIDTH)).astype(dtype)


def _ids(shape, seed=1):
    ids = np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)
    ids.flat[:3] = 2  # repeated ids: their gradient rows add up
    return ids


# ----------------------------------------------------------------------------- Embedding
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4)], ids=["2d", "3d"])
def test_embedding_matches_torch(backend, shape):
    layer = Embedding(VOCAB, WIDTH)
    W, ids = _weights(), _ids(shape)
    dy = np.random.default_rng(2).standard_normal((*shape, WIDTH)).astype(np.float32)
    y, _, backprop = layer.apply(
        {"embeddings": backend.asarray(W)}, {}, backend.asarray(ids), train=True
    )
    dx, grads = backprop(backend.asarray(dy))

    tw = torch.tensor(W, requires_grad=True)
    ty = torch.nn.functional.embedding(torch.tensor(ids, dtype=torch.int64), tw)
    ty.backward(torch.tensor(dy))
    assert dx is None and tuple(y.shape) == (*shape, WIDTH) and y.dtype == backend.dtype("float32")
    assert_close(y, ty.detach().numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    assert_close(grads["embeddings"], tw.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)


def test_embedding_backprop_matches_jax_grad(jax):
    layer = Embedding(VOCAB, WIDTH)
    W, ids = _weights(), _ids((3, 6))
    dy = np.random.default_rng(3).standard_normal((3, 6, WIDTH)).astype(np.float32)
    with wf.use_backend("numpy"):
        _, _, backprop = layer.apply({"embeddings": W}, {}, ids, train=True)
        expected = backprop(dy)[1]["embeddings"]
    with wf.use_backend("jax") as b:
        x, cot = b.asarray(ids), b.asarray(dy)

        def loss(params):
            y = layer.apply(params, {}, x, train=True, vjp=False)[0]
            return (y * cot).sum()

        got = jax.jit(jax.grad(loss))({"embeddings": b.asarray(W)})["embeddings"]
    assert_close(got, expected, rtol=JAX_RTOL)


def test_embedding_init_and_options(backend):
    layer = Embedding(50, 4, embeddings_regularizer="l2", mask_zero=True)
    params, state, out = layer.init(0, (None, 6, 2))
    W = wf.to_numpy(params["embeddings"])
    assert out == (None, 6, 2, 4) and state == {} and W.shape == (50, 4)
    assert np.all(np.abs(W) <= 0.05) and W.std() > 0.01  # Keras' "uniform": U(-0.05, 0.05)
    with wf.use_backend("numpy"):  # one seed, the same weights on every backend
        np.testing.assert_array_equal(W, layer.init(0, (None, 6, 2))[0]["embeddings"])
    assert set(layer.param_regularizers()) == {"embeddings"}
    assert Embedding.input_dtype == "int32"
    ids = backend.asarray(np.array([[0, 1], [49, 0]], dtype=np.int32))
    _, _, backprop = layer.apply(params, {}, ids)
    assert backprop(backend.asarray(np.ones((2, 2, 4), np.float32)), need={}) == (None, {})
    assert layer.apply(params, {}, ids, vjp=False)[2] is None


@pytest.mark.parametrize("bad", [VOCAB, -1], ids=["too-big", "negative"])
def test_out_of_range_ids_raise_on_concrete_arrays(backend, bad):
    layer = Embedding(VOCAB, WIDTH, name="tokens")
    ids = np.array([[0, bad]], dtype=np.int32)
    if not backend.concrete(backend.asarray(ids)):  # under a trace nothing can be checked
        pytest.skip(f"backend {backend.name!r} checks no values")
    with pytest.raises(ValueError, match=rf"Embedding 'tokens'.*input_dim={VOCAB}.*id {bad}"):
        layer.apply({"embeddings": backend.asarray(_weights())}, {}, backend.asarray(ids))


def test_out_of_range_ids_read_nan_and_get_no_gradient_under_jit(jax):
    layer = Embedding(VOCAB, WIDTH)
    with wf.use_backend("jax") as b:
        W = b.asarray(_weights())
        ids = b.asarray(np.array([[1, VOCAB, -1, 3]], dtype=np.int32))

        def loss(params):
            y = layer.apply(params, {}, ids, vjp=False)[0]
            return b.xp.nansum(y), y

        (_, y), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))({"embeddings": W})
    y, grad = wf.to_numpy(y)[0], wf.to_numpy(grad["embeddings"])
    assert np.isnan(y[1:3]).all() and np.isfinite(y[[0, 3]]).all()
    expected = np.zeros((VOCAB, WIDTH), np.float32)
    expected[[1, 3]] = 1.0
    np.testing.assert_array_equal(grad, expected)


def test_float_ids_are_refused_with_the_fix(backend):
    layer = Embedding(VOCAB, WIDTH)
    params = {"embeddings": backend.asarray(_weights())}
    with pytest.raises(ValueError, match=r"integer ids.*float32.*astype\('int32'\)"):
        layer.apply(params, {}, backend.asarray(np.zeros((2, 3), np.float32)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_dim": 0, "output_dim": 2}, "input_dim must be a positive int"),
        ({"input_dim": 5, "output_dim": 2.0}, "output_dim must be a positive int"),
        ({"input_dim": 1, "output_dim": 2, "mask_zero": True}, "at least 2"),
        ({"input_dim": 5, "output_dim": 2, "mask_zero": 1}, "mask_zero must be a bool"),
        ({"input_dim": 5, "output_dim": 2, "embeddings_initializer": "nope"}, "Unknown init"),
        ({"input_dim": 5, "output_dim": 2, "embeddings_regularizer": "l3"}, "embeddings_reg"),
    ],
)
def test_bad_embedding_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        Embedding(**kwargs, name="emb")
    assert "Embedding 'emb'" in str(info.value)


# ----------------------------------------------------------------------------- scatter_add
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scatter_add_matches_numpy_add_at(backend, dtype):
    if dtype == "float64" and backend.name == "jax":
        pytest.skip("float64 on jax needs x64 mode")
    rng = np.random.default_rng(4)
    idx = np.array([3, 0, 3, 5, 3, 0, 1], dtype=np.int32)
    values = rng.standard_normal((7, 2, 3)).astype(dtype)
    expected = np.zeros((6, 2, 3), dtype)
    np.add.at(expected, idx, values)
    got = backend.scatter_add((6, 2, 3), backend.asarray(idx), backend.asarray(values))
    assert got.dtype == backend.dtype(dtype)
    assert_close(got, expected, rtol=1e-6 if dtype == "float32" else 1e-12)
    empty = backend.scatter_add((4, 3), backend.asarray(idx[:0]), backend.asarray(values[:0, 0]))
    np.testing.assert_array_equal(wf.to_numpy(empty), np.zeros((4, 3), dtype))


def test_generic_scatter_add_in_chunks():
    # The base class's one-hot matmul; 2**20 rows make chunks of 4 ids.
    idx = np.array([5, 1048575, 5, 0, 7, 5, 1], dtype=np.int32)
    values = np.arange(7, dtype=np.float32)[:, None] + 1
    expected = np.zeros((1 << 20, 1), np.float32)
    np.add.at(expected, idx, values)
    np.testing.assert_array_equal(Backend().scatter_add((1 << 20, 1), idx, values), expected)


def test_embedding_runs_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    layer, W, ids = Embedding(VOCAB, WIDTH), _weights(), _ids((2, 4))
    dy = np.random.default_rng(6).standard_normal((2, 4, WIDTH)).astype(np.float32)
    with wf.use_backend("numpy"):
        y, _, backprop = layer.apply({"embeddings": W}, {}, ids)
        expected = backprop(dy)[1]["embeddings"]
    ys, _, backprop = layer.apply({"embeddings": xps.asarray(W)}, {}, xps.asarray(ids))
    got = backprop(xps.asarray(dy))[1]["embeddings"]
    assert isinstance(got, type(ys)) and isinstance(ys, type(xps.asarray(0.0)))
    np.testing.assert_array_equal(np.asarray(ys), y)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 6\], got id 11"):
        layer.apply({"embeddings": xps.asarray(W)}, {}, xps.asarray(ids + 5))


# ----------------------------------------------------------------------------- PositionEmbedding
def _positions(shape, length=6, seed=5):
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((length, shape[-1]))
    return PositionEmbedding(length), P, rng.standard_normal(shape), rng.standard_normal(shape)


@pytest.mark.parametrize(
    ("shape", "start"),
    [((2, 4, 3), 0), ((2, 6, 3), 0), ((2, 2, 3, 2), 1)],
    ids=["short", "full", "4d-start"],
)
def test_position_embedding_finite_differences(shape, start):
    layer, P, x, dy = _positions(shape)
    options = {"start_index": start} if start else {}
    with wf.use_backend("numpy"):
        params, _, out = layer.init(0, (None, *shape[1:]), dtype="float64")
        assert out == (None, *shape[1:]) and params["embeddings"].shape == P.shape
        y, _, backprop = layer.apply({"embeddings": P}, {}, x, **options)
        dx, grads = backprop(dy)

        def f(p):
            return np.sum(layer.apply({"embeddings": p}, {}, x, **options)[0] * dy)

    T = shape[-2]
    np.testing.assert_array_equal(y, np.broadcast_to(P[start : start + T], shape))
    np.testing.assert_array_equal(dx, np.zeros(shape))
    assert_close(grads["embeddings"], numerical_grad(f, P), rtol=FD_RTOL, atol=1e-9)


def test_position_embedding_matches_jax_grad(jax):
    layer, P, x, dy = _positions((3, 4, 2))
    with wf.use_backend("numpy"):
        expected = layer.apply({"embeddings": P.astype(np.float32)}, {}, x)[2](dy)[1]
    with wf.use_backend("jax") as b:
        xj, cot = b.asarray(x, "float32"), b.asarray(dy, "float32")

        def loss(params):
            return (layer.apply(params, {}, xj, vjp=False)[0] * cot).sum()

        got = jax.grad(loss)({"embeddings": b.asarray(P, "float32")})
    assert_close(got["embeddings"], expected["embeddings"], rtol=JAX_RTOL, atol=1e-6)


def test_position_embedding_errors(backend):
    layer = PositionEmbedding(4, name="pos")
    with pytest.raises(ValueError, match=r"PositionEmbedding 'pos'.*sequence_length=4"):
        layer.init(0, (None, 5, 3))
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., sequence, features\)"):
        layer.init(0, (None, 3))
    params, _, _ = layer.init(0, (None, 4, 3))
    x = backend.asarray(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"positions 2 to 4"):
        layer.apply(params, {}, x, start_index=2)
    with pytest.raises(ValueError, match=r"built for 3 features"):
        layer.apply(params, {}, backend.asarray(np.zeros((2, 3, 2), np.float32)))
    with pytest.raises(ValueError, match="sequence_length must be a positive int"):
        PositionEmbedding(0)
    with pytest.raises(ValueError, match=r"start_index must be an int >= 0"):
        layer.call_args(x, start_index=-1)
    assert layer.call_args(x, start_index=2) == (x, {"start_index": 2})


# ----------------------------------------------------------------------------- models and files
def _token_model(seed=3):
    return wf.Sequential(
        [Embedding(VOCAB, WIDTH, name="emb"), Flatten(), Dense(2, name="out")], seed=seed
    )


def test_embedding_model_weights_round_trip(backend, tmp_path):
    ids = _ids((4, 5))
    model = _token_model().build((None, 5))
    expected = wf.to_numpy(model.predict(ids))  # int32 ids reach the Embedding uncast
    model.save_weights(tmp_path / "w.safetensors")
    other = _token_model(seed=4).build((None, 5))
    other.load_weights(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(
        wf.to_numpy(other.params["emb"]["embeddings"]),
        wf.to_numpy(model.params["emb"]["embeddings"]),
    )
    wf.save_model(model, tmp_path / "m.safetensors")
    loaded = wf.load_model(tmp_path / "m.safetensors")
    assert isinstance(loaded.layers[0], Embedding) and loaded.layers[0].input_dim == VOCAB
    np.testing.assert_array_equal(wf.to_numpy(loaded.predict(ids)), expected)


def test_embedding_model_trains_the_same_on_numpy_and_jax(jax):
    # Hand-written backprop (NumPy) and jax.grad of the forward (JAX) through fit.
    ids, labels = _ids((8, 5)), np.arange(8) % 2
    weights = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = _token_model().build((None, 5))
            initial = wf.to_numpy(model.params["emb"]["embeddings"])
            model.fit(ids, labels, epochs=3, batch_size=4, optimizer="sgd", verbose=0)
            weights[name] = wf.to_numpy(model.params["emb"]["embeddings"])
            assert np.abs(weights[name] - initial).max() > 1e-4
    np.testing.assert_allclose(weights["jax"], weights["numpy"], rtol=1e-4, atol=1e-6)
