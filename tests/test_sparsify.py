"""Sparse inference (sparsify): outputs equal the dense pruned model's, the per-layer choice
and its report, the original untouched, files, backends, the sparse product itself, errors."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.backends.base import Backend
from wframe.layers import Conv1D, Conv2D, Dense, Flatten
from wframe.pruning import SparseConv1D, SparseConv2D, SparseDense, prune, sparsify
from wframe.pruning.sparse_layers import csr_of
from wframe.tree import flatten


def host(tree):
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree)}


def mixed():
    """Dense (with a nested chain and a rank-3 input), Conv2D and Conv1D of every padding."""
    image = wf.Sequential(
        [
            Conv2D(6, 3, padding="same", strides=2, activation="relu"),
            Conv2D(5, (2, 3), dilation_rate=2),
            Flatten(),
            wf.layers.Sequential([Dense(8, activation="relu"), Dense(7)], name="head"),
            Dense(4, activation="tanh"),
        ],
        seed=1,
    ).build((None, 9, 9, 3))
    seq = wf.Sequential(
        [
            Conv1D(6, 3, padding="causal", activation="relu"),
            Conv1D(5, 2, padding="same", strides=2),
            Dense(4),  # on (batch, steps, features)
            Flatten(),
            Dense(3, use_bias=False),
        ],
        seed=2,
    ).build((None, 9, 2))
    return prune(image, 0.8), prune(seq, 0.7)


def test_sparse_models_predict_as_the_dense_pruned_ones(backend):
    rng = np.random.default_rng(0)
    for model in mixed():
        x = rng.normal(size=(3, *model.input_shape[1:])).astype(np.float32)
        sparse = sparsify(model, decide="sparse", min_sparsity=0.0)
        kinds = {r["kind"] for r in sparse.sparse_layers}
        assert all(r["choice"] == "sparse" for r in sparse.sparse_layers), kinds
        want = wf.to_numpy(model.predict(x))
        np.testing.assert_allclose(wf.to_numpy(sparse.predict(x)), want, rtol=1e-5, atol=1e-6)
        if backend.name == "numpy":  # batch 1: SciPy's matrix-vector path (one compile each)
            one = wf.to_numpy(sparse.predict(x[:1]))
            np.testing.assert_allclose(one, want[:1], rtol=1e-5, atol=1e-6)
    assert isinstance(sparse.layers[0], SparseConv1D)


def test_measured_choice_and_report():
    image, _ = mixed()
    sparse = sparsify(image, seconds=0.002)
    rows = sparse.sparse_layers
    assert [r["name"] for r in rows] == [
        "conv2d_0",
        "conv2d_1",
        "head/dense_0",
        "head/dense_1",
        "dense_0",
    ]
    for row in rows:
        if row["sparsity"] < 0.5:
            assert (row["choice"], row["dense_us"]) == ("dense", None)
            continue
        assert row["dense_us"] > 0 and row["sparse_us"] > 0
        faster = row["sparse_us"] < row["dense_us"]
        assert row["choice"] == ("sparse" if faster else "dense")
    for row in rows:  # each layer is what the report says
        layer = sparse
        for part in row["name"].split("/"):
            layer = next(c for k, c in layer.children() if k == part)
        assert isinstance(layer, (SparseConv2D, SparseDense)) == (row["choice"] == "sparse")
    none = sparsify(image, decide="dense")
    assert {r["choice"] for r in none.sparse_layers} == {"dense"}
    lines = []
    sparsify(image, decide="sparse", include="head/*", print_fn=lines.append)
    assert lines[0].startswith("layer") and "head/dense_1" in lines[0]


def test_the_original_is_untouched_and_the_copy_keeps_what_stays_dense():
    image, _ = mixed()
    image.compile(metrics=["accuracy"])
    before, masks = host(image.params), host(image.masks)
    sparse = sparsify(image, decide="sparse", exclude="dense_0/*")
    for name, a in host(image.params).items():
        np.testing.assert_array_equal(a, before[name])
    assert set(host(image.masks)) == set(masks)
    assert isinstance(sparse.layers[-1], Dense)  # excluded: dense, its mask kept
    np.testing.assert_array_equal(host(sparse.masks)["dense_0/W"], masks["dense_0/W"])
    assert sparse.compiled_metrics == ["accuracy"]
    frozen = {n for n in sparse.frozen if n.endswith(("indices", "indptr"))}
    assert frozen == set(sparse.frozen) and len(frozen) == 8


def test_sparse_layers_do_not_train(backend):
    model = prune(wf.Sequential([Dense(8, activation="relu"), Dense(3)]).build((None, 5)), 0.8)
    sparse = sparsify(model, decide="sparse")
    x, y = np.ones((4, 5), np.float32), np.zeros(4, np.int32)
    with pytest.raises(TypeError, match="SparseDense 'dense_0' runs inference only"):
        sparse.fit(x, y, verbose=0)
    assert sparse.evaluate(x, y)["loss"] == pytest.approx(model.evaluate(x, y)["loss"], 1e-5)


def test_files_and_backends_round_trip(tmp_path):
    _, seq = mixed()
    sparse = sparsify(seq, decide="sparse")
    x = np.random.default_rng(1).normal(size=(2, 9, 2)).astype(np.float32)
    want = wf.to_numpy(seq.predict(x))
    path = tmp_path / "sparse.safetensors"
    wf.save_model(sparse, path)
    loaded = wf.load_model(path)
    assert [type(la) for la in loaded.layers] == [type(la) for la in sparse.layers]
    np.testing.assert_allclose(wf.to_numpy(loaded.predict(x)), want, rtol=1e-5, atol=1e-6)
    if "jax" in wf.available():
        loaded.to_backend("jax")
        np.testing.assert_allclose(wf.to_numpy(loaded.predict(x)), want, rtol=1e-5, atol=1e-6)


def test_a_residual_block_keeps_its_shape():
    block = wf.layers.Residual(Dense(6, activation="relu"))
    model = prune(wf.Sequential([block, Dense(2)]).build((None, 6)), 0.6)
    sparse = sparsify(model, decide="sparse")
    assert isinstance(sparse.layers[0], wf.layers.Residual)
    assert isinstance(sparse.layers[0].layer, SparseDense)
    x = np.random.default_rng(4).normal(size=(3, 6)).astype(np.float32)
    np.testing.assert_allclose(
        wf.to_numpy(sparse.predict(x)), wf.to_numpy(model.predict(x)), rtol=1e-5, atol=1e-6
    )


def test_a_graph_model():
    inputs = wf.Input((6,))
    hidden = Dense(16, activation="relu", name="hidden")(inputs)
    model = prune(wf.Model(inputs, Dense(3, name="out")(hidden)), 0.8)
    sparse = sparsify(model, decide="sparse")
    assert [r["name"] for r in sparse.sparse_layers] == ["hidden", "out"]
    x = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(
        wf.to_numpy(sparse.predict(x)), wf.to_numpy(model.predict(x)), rtol=1e-5, atol=1e-6
    )


def test_the_sparse_product_on_every_namespace(backend):
    """The backend's own product, and the generic array-API one (array_api_strict), against
    x @ W; a fully pruned output row and an all-zero kernel included."""
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(3)
    W = rng.normal(size=(7, 5)).astype(np.float32)
    W[rng.random(W.shape) < 0.6] = 0
    W[:, 2] = 0
    for kernel in (W, np.zeros_like(W)):
        parts = csr_of(kernel)
        for rows in (1, 4):
            x = rng.normal(size=(rows, 7)).astype(np.float32)
            y = backend.sparse_matmul(backend.asarray(x), *map(backend.asarray, parts), (5, 7))
            np.testing.assert_allclose(wf.to_numpy(y), x @ kernel, rtol=1e-5, atol=1e-6)

    class Strict(Backend):
        xp = xps

    y = Strict().sparse_matmul(xps.asarray(x), *map(xps.asarray, csr_of(W)), (5, 7))
    np.testing.assert_allclose(np.asarray(y), x @ W, rtol=1e-5, atol=1e-6)


def test_scipy_checks_arrays_once_and_refuses_out_of_range_indices():
    pytest.importorskip("scipy")
    backend = wf.backends.resolve("numpy")
    data, indices, indptr = csr_of(np.eye(3, dtype=np.float32))
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(backend.sparse_matmul(x, data, indices, indptr, (3, 3)), x)
    bad = indices.copy()
    bad[1] = 3  # past the inputs: SciPy's product would read past x
    with pytest.raises(ValueError, match="indices must be < 3"):
        backend.sparse_matmul(x, data, bad, indptr, (3, 3))


def test_bad_arguments_are_refused():
    model = prune(wf.Sequential([Dense(4)]).build((None, 3)), 0.5)
    with pytest.raises(RuntimeError, match="no params yet"):
        sparsify(wf.Sequential([Dense(4)]))
    with pytest.raises(TypeError, match="takes a built wf.Sequential"):
        sparsify(Dense(4))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        sparsify(model, batch_size=0)
    with pytest.raises(ValueError, match="decide must be one of"):
        sparsify(model, decide="fast")
    with pytest.raises(ValueError, match="min_sparsity must be a number"):
        sparsify(model, min_sparsity=1.5)
    half = wf.Sequential([Dense(4)], dtype="mixed_bfloat16").build((None, 3))
    with pytest.raises(ValueError, match="computes in bfloat16"):
        sparsify(half)
    with pytest.raises(TypeError, match="wraps a Dense layer, got Conv2D"):
        SparseDense(layer=Conv2D(2, 3), nnz=1)
    with pytest.raises(ValueError, match="nnz must be an int >= 0"):
        SparseDense(layer=Dense(2), nnz=-1)
