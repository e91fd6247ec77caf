"""Structured pruning (wf.pruning.prune_units): the smaller model equals the original with the
removed units' outgoing weights zeroed (written out by hand here, per layer kind), fully masked
units fold into the next bias so the masked model's outputs stay, scores and selection, fit,
files and the error messages."""

from __future__ import annotations

import os

import numpy as np
import pytest

import wframe as wf
from wframe.layers import (
    GRU,
    LSTM,
    Activation,
    Add,
    BatchNorm,
    Concatenate,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool1D,
    LayerNorm,
    MaxPool2D,
    MultiHeadAttention,
    SimpleRNN,
)
from wframe.pruning import prunable_units, prune, prune_units, remove_units, select_units
from wframe.pruning.structured import unit_scores
from wframe.pruning.unit_graph import unit_layers
from wframe.tree import flatten

RNG = np.random.default_rng(0)


def host(tree):
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree)}


def nest(flat, like, prefix=""):
    return {
        k: nest(flat, v, f"{prefix}{k}/") if isinstance(v, dict) else flat[f"{prefix}{k}"]
        for k, v in like.items()
    }


def with_arrays(model, params=None, state=None):
    """A copy of ``model`` whose params/state are the given host dicts (flat names)."""
    out = model.copy()
    b = out.backend
    if params is not None:
        out.params = nest({n: b.asarray(a) for n, a in params.items()}, model.params)
    if state is not None:
        out.state = nest({n: b.asarray(a) for n, a in state.items()}, model.state)
    return out


def randomize(model, scale=0.5):
    """Random params (biases too) and BatchNorm statistics, so nothing is trivially zero."""
    params = {
        n: (RNG.normal(size=a.shape) * scale).astype(a.dtype) for n, a in host(model.params).items()
    }
    state = {}
    for n, a in host(model.state).items():
        v = RNG.normal(size=a.shape) * 0.3
        state[n] = (np.abs(v) + 0.5 if n.endswith("var") else v).astype(a.dtype)
    return with_arrays(model, params, state)


def removed(keep, name, units):
    return np.setdiff1d(np.arange(units), keep[name])


def zeroed(model, cuts):
    """``model`` with ``cuts`` ``{flat param name: (axis, indices)}`` set to zero."""
    params = host(model.params)
    for name, (axis, idx) in cuts.items():
        a = np.moveaxis(params[name], axis, 0)
        a[idx] = 0
    return with_arrays(model, params)


def same(a, b, tol=1e-5):
    a, b = np.asarray(wf.to_numpy(a)), np.asarray(wf.to_numpy(b))
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def x_of(*shape):
    return RNG.normal(size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- per layer kind
def test_dense_chain(backend):
    model = wf.Sequential(
        [
            Dense(8, activation="relu"),
            BatchNorm(),
            Dropout(0.3),
            Dense(6, activation="tanh"),
            Activation("relu"),
            Dense(3),
        ],
        seed=1,
    )
    model = randomize(model.build((None, 5)))
    keep = select_units(model, 0.5)
    assert {n: len(k) for n, k in keep.items()} == {"dense_0": 4, "dense_1": 3}
    small = remove_units(model, keep)
    assert [getattr(layer, "units", None) for layer in small.layers] == [4, None, None, 3, None, 3]
    assert host(small.state)["batch_norm_0/mean"].shape == (4,)
    ref = zeroed(
        model,
        {
            "dense_1/W": (0, removed(keep, "dense_0", 8)),
            "dense_2/W": (0, removed(keep, "dense_1", 6)),
        },
    )
    x = x_of(9, 5)
    same(small.predict(x), ref.predict(x))
    # the kept arrays are the original's, unchanged
    np.testing.assert_array_equal(
        host(small.params)["dense_0/W"], host(model.params)["dense_0/W"][:, keep["dense_0"]]
    )


def test_cnn_with_batchnorm_and_flatten(backend):
    model = wf.Sequential(
        [
            Conv2D(6, 3, activation="relu"),
            BatchNorm(),
            MaxPool2D(2),
            Conv2D(5, 2, padding="same", activation="relu"),
            Flatten(),
            Dense(7, activation="relu"),
            Dense(3),
        ],
        seed=2,
    )
    model = randomize(model.build((None, 8, 8, 2)))
    small = prune_units(model, 0.4, scope="layer", criterion="l1")
    sizes = [getattr(layer, "filters", getattr(layer, "units", None)) for layer in small.layers]
    assert sizes == [4, None, None, 3, None, 4, 3]
    keep = select_units(model, 0.4, criterion="l1")
    # by hand: conv_1 reads conv_0's channels on axis 2; the Dense after Flatten (3x3x5) reads
    # conv_1's channel c at rows (i * 3 + j) * 5 + c.
    rows = np.arange(3 * 3 * 5).reshape(3, 3, 5)[:, :, removed(keep, "conv2d_1", 5)].ravel()
    ref = zeroed(
        model,
        {
            "conv2d_1/W": (2, removed(keep, "conv2d_0", 6)),
            "dense_0/W": (0, rows),
            "dense_1/W": (0, removed(keep, "dense_0", 7)),
        },
    )
    x = x_of(4, 8, 8, 2)
    same(small.predict(x), ref.predict(x))


def test_conv1d(backend):
    model = wf.Sequential(
        [
            Conv1D(6, 3, activation="relu"),
            Conv1D(5, 3, padding="causal"),
            GlobalAvgPool1D(),
            Dense(2),
        ],
        seed=3,
    )
    model = randomize(model.build((None, 10, 3)))
    keep = select_units(model, 0.5)
    small = remove_units(model, keep)
    assert [layer.filters for layer in small.layers[:2]] == [3, 2]
    ref = zeroed(
        model,
        {
            "conv1d_1/W": (1, removed(keep, "conv1d_0", 6)),
            "dense_0/W": (0, removed(keep, "conv1d_1", 5)),
        },
    )
    x = x_of(4, 10, 3)
    same(small.predict(x), ref.predict(x))


def test_lstm_units(backend):
    model = randomize(wf.Sequential([LSTM(6), Dense(2)], seed=4).build((None, 3, 3)))
    keep = select_units(model, 0.5)
    small = remove_units(model, keep)
    assert small.layers[0].units == 3
    assert host(small.params)["lstm_0/W_h"].shape == (3, 12)
    # a removed recurrent unit: its feedback row W_h[j] and the reader's rows are zero
    gone = removed(keep, "lstm_0", 6)
    ref = zeroed(model, {"lstm_0/W_h": (0, gone), "dense_0/W": (0, gone)})
    x = x_of(3, 3, 3)
    same(small.predict(x), ref.predict(x))


def test_gru_and_simple_rnn_units(backend):
    model = wf.Sequential([GRU(5, return_sequences=True), SimpleRNN(4), Dense(2)], seed=4)
    model = randomize(model.build((None, 3, 3)))
    keep = select_units(model, 0.5)
    small = remove_units(model, keep)
    assert [layer.units for layer in small.layers] == [2, 2, 2]
    assert host(small.params)["gru_0/b_h"].shape == (6,)
    r1, r2 = removed(keep, "gru_0", 5), removed(keep, "simple_rnn_0", 4)
    cuts = {"gru_0/W_h": (0, r1), "simple_rnn_0/W_x": (0, r1)}
    cuts.update({"simple_rnn_0/W_h": (0, r2), "dense_0/W": (0, r2)})
    x = x_of(3, 3, 3)
    same(small.predict(x), zeroed(model, cuts).predict(x))


def test_attention_heads_and_projections(backend):
    """Cross-attention in a graph: heads go, and the query's and the value's (= key's)
    producers cut the rows of their projections."""
    q, v = wf.Input((5, 4)), wf.Input((6, 3))
    a, b = Dense(6, name="a")(q), Dense(8, name="b")(v)
    att = MultiHeadAttention(4, 3, name="mha")(a, b)
    model = randomize(wf.Model([q, v], Dense(2, name="out")(GlobalAvgPool1D()(att))))
    keep = select_units(model, 0.5)
    small = remove_units(model, keep)
    mha = small.layers[2]
    assert (mha.num_heads, mha.output_shape) == (2, 6)
    assert host(small.params)["mha/key/W"].shape == (4, 2, 3)
    ra, rb = removed(keep, "a", 6), removed(keep, "b", 8)
    cuts = {"mha/output/W": (0, removed(keep, "mha", 4)), "mha/query/W": (0, ra)}
    cuts.update({"mha/key/W": (0, rb), "mha/value/W": (0, rb)})
    x = [x_of(3, 5, 4), x_of(3, 6, 3)]
    same(small.predict(x), zeroed(model, cuts).predict(x))


def test_self_attention_in_a_chain(backend):
    model = wf.Sequential([Dense(6), MultiHeadAttention(2, 3), GlobalAvgPool1D(), Dense(2)])
    model = randomize(model.build((None, 4, 3)))
    keep = {"dense_0": [0, 2, 5]}
    small = remove_units(model, keep)
    gone = removed(keep, "dense_0", 6)
    cuts = {f"multi_head_attention_0/{p}/W": (0, gone) for p in ("query", "key", "value")}
    x = x_of(2, 4, 3)
    same(small.predict(x), zeroed(model, cuts).predict(x))


def test_graph_model(backend):
    inp = wf.Input((6,))
    a = Dense(8, activation="relu", name="a")(inp)
    b = Dense(5, activation="relu", name="b")(a)  # read by c and d: both cut
    c = Dense(4, name="c")(b)
    d = Dense(4, name="d")(b)
    s = Add(name="add")([c, d])  # c and d reach a merge: left alone
    e = Dense(6, activation="relu", name="e")(inp)
    f = Concatenate(name="cat")([s, e])
    model = randomize(wf.Model(inp, Dense(3, name="out")(f)))
    reasons = prunable_units(model)
    assert reasons["a"] == 8 and reasons["b"] == 5
    assert "cannot be cut" in reasons["c"] and "cannot be cut" in reasons["e"]
    assert reasons["out"] == "it is an output layer"
    keep = select_units(model, 0.5)
    assert set(keep) == {"a", "b"}
    small = remove_units(model, keep)
    assert isinstance(small, type(model))
    ra, rb = removed(keep, "a", 8), removed(keep, "b", 5)
    ref = zeroed(model, {"b/W": (0, ra), "c/W": (0, rb), "d/W": (0, rb)})
    x = x_of(5, 6)
    same(small.predict(x), ref.predict(x))
    with pytest.raises(ValueError, match="layer 'c' cannot lose units: .*Add 'add'"):
        prune_units(model, 0.5, include="c")


def test_layernorm_and_outputs_are_left_alone():
    model = wf.Sequential([Dense(4), LayerNorm(), Dense(4), Dense(2)]).build((None, 3))
    reasons = prunable_units(model)
    assert "LayerNorm" in reasons["dense_0"] and reasons["dense_1"] == 4
    assert reasons["dense_2"] == "it is an output layer"


# ----------------------------------------------------------------------------- masked units fold
def test_masked_units_fold_into_the_next_bias(backend):
    """Units whose weights prune() masked entirely score 0, go first, and the smaller model
    equals the masked model itself: their constant relu(b), through BatchNorm, Flatten and a
    'valid' conv, is added to the reader's bias."""
    model = wf.Sequential(
        [
            Conv2D(4, 3, activation="relu"),
            BatchNorm(),
            Conv2D(4, 2, activation="sigmoid"),
            Flatten(),
            Dense(6, activation="relu"),
            Dense(2),
        ],
        seed=6,
    )
    model = randomize(model.build((None, 6, 6, 1)))
    params = host(model.params)
    params["conv2d_0/b"] = np.abs(params["conv2d_0/b"]) + 0.2  # relu(b) > 0: a real constant
    model = with_arrays(model, params)
    masks = {n: np.ones_like(a) for n, a in host(model.params).items() if a.ndim > 1}
    masks["conv2d_0/W"][..., [1, 3]] = 0
    masks["conv2d_1/W"][..., [0, 2]] = 0
    masks["dense_0/W"][:, [0, 4, 5]] = 0
    model.masks = masks
    # the masked weights are zero, as prune() and fit leave them
    model.params = nest(
        {
            n: model.backend.asarray(np.where(masks.get(n, 1) != 0, a, 0))
            for n, a in host(model.params).items()
        },
        model.params,
    )
    keep = select_units(model, 0.5)
    kept = [list(keep[n]) for n in ("conv2d_0", "conv2d_1", "dense_0")]
    assert kept == [[0, 2], [1, 3], [1, 2, 3]]
    small = remove_units(model, keep)
    x = x_of(3, 6, 6, 1)
    same(small.predict(x), model.predict(x))
    assert set(host(small.masks)) == set(masks)
    assert host(small.masks)["dense_0/W"].shape == host(small.params)["dense_0/W"].shape


def test_masked_units_before_a_same_conv_count_as_zero(backend):
    """A 'same' conv's borders see the padding, so a constant cannot move into its bias: a
    masked unit read by one is removed like any other (its outgoing weights zeroed)."""
    model = wf.Sequential(
        [Conv2D(3, 2, activation="relu"), Conv2D(2, 3, padding="same"), Flatten(), Dense(2)]
    )
    model = randomize(model.build((None, 5, 5, 1)))
    masks = {"conv2d_0/W": np.ones((2, 2, 1, 3), np.float32)}
    masks["conv2d_0/W"][..., 1] = 0
    model.masks = masks
    params = host(model.params)
    params["conv2d_0/W"][..., 1] = 0
    params["conv2d_0/b"][1] = 0.7  # emits relu(0.7) everywhere
    model = with_arrays(model, params)
    small = remove_units(model, {"conv2d_0": [0, 2]})
    x = x_of(2, 5, 5, 1)
    same(small.predict(x), zeroed(model, {"conv2d_1/W": (2, [1])}).predict(x))


def test_pruned_then_structured(backend):
    """prune() then prune_units on a Dense chain: fully masked columns are removed first."""
    model = randomize(wf.Sequential([Dense(6, activation="relu"), Dense(2)]).build((None, 4)))
    model = prune(model, 0.5, include="dense_0/W")
    masks = host(model.masks)["dense_0/W"]
    masks[:, [0, 3]] = 0
    model.masks = {"dense_0/W": masks}
    model.params = nest(
        {
            n: model.backend.asarray(a * (masks if n == "dense_0/W" else 1))
            for n, a in host(model.params).items()
        },
        model.params,
    )
    small = prune_units(model, 2 / 6)
    assert small.layers[0].units == 4
    x = x_of(5, 4)
    same(small.predict(x), model.predict(x))


# ----------------------------------------------------------------------------- scores
def test_scores_by_hand():
    model = randomize(wf.Sequential([LSTM(3), Dense(2)]).build((None, 2, 3)))
    plans = {n: p for n, p in unit_layers(model).items() if not isinstance(p, str)}
    p = host(model.params)
    l1, l2 = unit_scores(model, plans, "l1"), unit_scores(model, plans, "l2")
    for j in range(3):
        cols = [j, 3 + j, 6 + j, 9 + j]  # unit j of the four gates
        w = np.concatenate([p["lstm_0/W_x"][:, cols].ravel(), p["lstm_0/W_h"][:, cols].ravel()])
        np.testing.assert_allclose(l1["lstm_0"][j], np.abs(w).sum(), rtol=1e-6)
        np.testing.assert_allclose(l2["lstm_0"][j], np.sqrt((w * w).sum()), rtol=1e-6)


def test_taylor_scores(backend):
    model = randomize(wf.Sequential([Dense(4), Dense(2)]).build((None, 3)))
    plans = {n: p for n, p in unit_layers(model).items() if not isinstance(p, str)}
    x, y = x_of(8, 3), RNG.integers(0, 2, 8)
    _, grads = model.value_and_grad(x, y)
    w, g = host(model.params)["dense_0/W"], host(grads)["dense_0/W"]
    taylor = unit_scores(model, plans, "taylor", (x, y))["dense_0"]
    np.testing.assert_allclose(taylor, np.abs(w * g).sum(0), rtol=1e-5)
    keep = select_units(model, 0.5, criterion="taylor", data=(x, y))
    assert list(keep["dense_0"]) == sorted(np.argsort(taylor, kind="stable")[2:])


def test_global_scope_normalizes_per_layer():
    model = wf.Sequential([Dense(4), Dense(6), Dense(2)], seed=7).build((None, 3))
    p = host(model.params)
    p["dense_0/W"] = p["dense_0/W"] * 100  # a layer of large weights is not spared for it
    model = with_arrays(model, p)
    plans = {n: q for n, q in unit_layers(model).items() if not isinstance(q, str)}
    s = unit_scores(model, plans, "l2")
    keep = select_units(model, 0.5, scope="global")
    pooled = sorted(
        [(v / s[n].mean(), n, j) for n in s for j, v in enumerate(s[n])], key=lambda t: t[0]
    )
    gone = {(n, j) for _, n, j in pooled[:5]}
    for n in s:
        assert list(keep[n]) == [j for j in range(len(s[n])) if (n, j) not in gone]
    # every layer keeps one unit, whatever the fraction
    assert all(len(k) >= 1 for k in select_units(model, 0.99, scope="global").values())
    assert all(len(k) == 1 for k in select_units(model, 0.99).values())


# ----------------------------------------------------------------------------- fit and files
def data_bytes(path) -> int:
    """A safetensors file's size less its header (8 bytes of length, then the JSON)."""
    with open(path, "rb") as f:
        return os.path.getsize(path) - 8 - int.from_bytes(f.read(8), "little")


def test_fit_and_save_load(backend, tmp_path):
    model = wf.Sequential([Dense(64, activation="relu"), BatchNorm(), Dense(3)], seed=8)
    model = model.build((None, 32)).compile(optimizer="sgd", loss="softmax_cross_entropy")
    small = prune_units(model, 0.75)
    assert small.layers[0].units == 16 and small.optimizer_name == "sgd"
    x, y = x_of(32, 32), RNG.integers(0, 3, 32)
    history = small.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    big, path = tmp_path / "big.safetensors", tmp_path / "small.safetensors"
    wf.save_model(model, str(big))
    wf.save_model(small, str(path))
    assert data_bytes(path) < 0.4 * data_bytes(big)  # the arrays (the metadata stays alike)
    loaded = wf.load_model(str(path))
    assert loaded.layers[0].units == 16
    for tree in ("params", "state"):
        got, want = host(getattr(loaded, tree)), host(getattr(small, tree))
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[n], want[n]) for n in want)


def test_original_is_unchanged_and_fraction_zero_copies():
    model = randomize(wf.Sequential([Dense(5), Dense(2)]).build((None, 3)))
    before = host(model.params)
    small = prune_units(model, 0.0)
    assert small is not model and small.layers[0].units == 5
    after = host(model.params)
    assert all(np.array_equal(before[n], after[n]) for n in before)


# ----------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def mlp():
    return wf.Sequential([Dense(4), Dense(3), Dense(2)]).build((None, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fraction": 1.0}, r"fraction must be a number in \[0, 1\), got 1.0"),
        ({"fraction": "0.5"}, "fraction must be a number"),
        ({"fraction": 0.5, "scope": "model"}, "scope must be one of"),
        (
            {"fraction": 0.5, "criterion": "l3"},
            r"criterion must be one of \('l2', 'l1', 'taylor'\)",
        ),
        ({"fraction": 0.5, "criterion": "taylor"}, r"needs data=\(x, y\)"),
        ({"fraction": 0.5, "data": (1, 2)}, "data is used only by criterion='taylor'"),
        ({"fraction": 0.5, "criterion": "taylor", "data": (1,)}, "data must be a pair"),
        ({"fraction": 0.5, "include": "conv*"}, "'conv\\*' names no layer with units"),
        ({"fraction": 0.5, "include": "dense_2"}, "'dense_2' cannot lose units: it is an output"),
        ({"fraction": 0.5, "exclude": ["dense_0", "dense_1"]}, "no layer to prune"),
    ],
)
def test_bad_arguments(mlp, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prune_units(mlp, **kwargs)


@pytest.mark.parametrize(
    ("keep", "match"),
    [
        ({"dense_9": [0]}, "'dense_9' is no layer with units; these can lose units"),
        ({"dense_2": [0]}, "cannot lose units: it is an output layer"),
        ({"dense_0": []}, "keeps no unit"),
        ({"dense_0": [1, 1]}, "lists a unit twice"),
        ({"dense_0": [0, 4]}, r"\[4\] are not units of a layer of 4"),
        ({"dense_0": [0.5]}, "must be unit indices"),
    ],
)
def test_bad_keep(mlp, keep, match):
    with pytest.raises(ValueError, match=match):
        remove_units(mlp, keep)


def test_bad_models():
    with pytest.raises(TypeError, match="takes a wframe model"):
        prune_units(Dense(3), 0.5)
    with pytest.raises(RuntimeError, match="build it first"):
        prune_units(wf.Sequential([Dense(3), Dense(2)]), 0.5)
    with pytest.raises(TypeError, match="keep must be a dict"):
        remove_units(wf.Sequential([Dense(3), Dense(2)]).build((None, 2)), [0])
    frozen = wf.Sequential([Dense(3), Dense(2)]).build((None, 2)).freeze("dense_0")
    with pytest.raises(ValueError, match="'dense_0/W', which is frozen"):
        prune_units(frozen, 0.5, criterion="taylor", data=(x_of(4, 2), np.array([0, 1, 0, 1])))
