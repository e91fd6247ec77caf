"""The functional API: ``wf.Input``, ``wf.Model(inputs, outputs)``, merge layers, graphs.

* Gradients of graph models (fan-out, shared layers, several inputs and outputs, merges, a
  nested model) against central finite differences (NumPy, float64, rtol 1e-6) and against
  ``jax.grad`` of the same forward (float32, rtol 1e-5); numpy and jax training runs agree.
* A straight-line graph is the ``Sequential`` of the same layers: same weights, same outputs.
* Data as arrays, lists and dicts; several losses, ``loss_weights`` and Keras' log names; files
  and configs; errors that name the layer and the tensor.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import wframe as wf
from wframe.layers import (
    Add,
    Average,
    Concatenate,
    Dense,
    Dropout,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
)
from wframe.testing import assert_close, numerical_grad
from wframe.tree import flatten

RNG = np.random.default_rng(0)


def _two_in_two_out(dtype="float32", seed=3):
    """Two inputs, a layer shared by both (fan-in of params), fan-out of ``s`` to three
    consumers, every merge kind, and two outputs."""
    a, b = wf.Input((5,), name="a"), wf.Input((5,), name="b")
    shared = Dense(4, activation="tanh", name="shared")
    ha, hb = shared(a), shared(b)
    s = Add()([ha, hb])
    m = Multiply()([s, ha])
    d = Subtract()([m, hb])
    v = Average()([d, s])
    mx = Maximum()([v, Minimum()([s, d])])
    c = Concatenate()([mx, s])
    cls = Dense(3, name="cls")(c)
    reg = Dense(2, activation="sigmoid", name="reg")(s)
    return wf.Model([a, b], [cls, reg], seed=seed, dtype=dtype)


def _data(n=6, dtype="float64"):
    xa = RNG.normal(size=(n, 5)).astype(dtype)
    xb = RNG.normal(size=(n, 5)).astype(dtype)
    labels = np.arange(n) % 3
    target = RNG.uniform(size=(n, 2)).astype(dtype)
    return [xa, xb], [labels, target]


def _host(tree):
    return {
        k: _host(v) if isinstance(v, dict) else np.asarray(wf.to_numpy(v)) for k, v in tree.items()
    }


def test_graph_structure_names_and_summary():
    model = _two_in_two_out()
    assert model.input_names == ("a", "b")
    assert model.output_names == ("cls", "reg")
    assert model.input_shape == ((None, 5), (None, 5))
    assert model.output_shape == ((None, 3), (None, 2))
    assert list(model.params) == ["shared", "cls", "reg"]
    assert model.get_layer("shared").units == 4
    lines = model.summary(print_fn=lambda s: None).splitlines()
    row = next(line for line in lines if line.startswith("concatenate_0"))
    assert row.split()[-2:] == ["maximum_0,", "add_0"]
    assert sum("shared (Dense)" in line for line in lines) == 2  # one row per call
    with pytest.raises(ValueError, match="has no layer 'nope'"):
        model.get_layer("nope")


def test_backprop_matches_finite_differences_with_fan_out_shared_layers_and_two_outputs():
    with wf.use_backend("numpy"):
        model = _two_in_two_out("float64")
        x, y = _data()
        model.compile(loss=["softmax_cross_entropy", "mse"], loss_weights=[1.0, 0.7])
        _, grads = model.value_and_grad(x, y)
        params = _host(model.params)
        for layer, entries in params.items():
            for name, value in entries.items():

                def f(v, layer=layer, name=name):
                    trial = {k: dict(e) for k, e in params.items()}
                    trial[layer][name] = v
                    model.params = trial
                    return float(model.value_and_grad(x, y)[0])

                expected = numerical_grad(f, value.copy())
                model.params = params
                assert_close(grads[layer][name], expected, rtol=1e-6, atol=1e-9)


def test_input_gradients_add_over_fan_out():
    """The graph's dx: an input read by two nodes gets the sum of both gradients."""
    with wf.use_backend("numpy"):
        model = _two_in_two_out("float64")
        x, _ = _data()
        graph_out, _, back = model.apply(model.params, model.state, tuple(x), train=True)
        dys = tuple(RNG.normal(size=o.shape) for o in graph_out)
        dxa, dxb = back(dys)[0]
        for i, dx in enumerate((dxa, dxb)):

            def f(v, i=i):
                xs = list(x)
                xs[i] = v
                out = model.apply(model.params, model.state, tuple(xs), vjp=False)[0]
                return float(sum(np.sum(o * d) for o, d in zip(out, dys, strict=True)))

            assert_close(dx, numerical_grad(f, x[i].copy()), rtol=1e-6, atol=1e-9)


def test_backprop_matches_jax_grad(jax):
    x, y = _data(dtype="float32")
    grads = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = _two_in_two_out()
            model.compile(loss={"cls": "softmax_cross_entropy", "reg": "mse"})
            value, g = model.value_and_grad(x, y)
            grads[name] = (float(value), _host(g))
    assert grads["numpy"][0] == pytest.approx(grads["jax"][0], rel=1e-5)
    for layer, entries in grads["numpy"][1].items():
        for k, v in entries.items():
            assert_close(v, grads["jax"][1][layer][k], rtol=1e-5, atol=1e-6)


def test_numpy_and_jax_training_runs_agree(jax):
    x, y = _data(n=24, dtype="float32")
    runs = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = _two_in_two_out()
            model.compile("adam", loss=["softmax_cross_entropy", "mse"], loss_weights=[1, 0.5])
            history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
            runs[name] = (history.history, _host(model.params))
    assert set(runs["numpy"][0]) == {"loss", "cls_loss", "cls_accuracy", "reg_loss"}
    for key, values in runs["numpy"][0].items():
        np.testing.assert_allclose(values, runs["jax"][0][key], rtol=1e-4, atol=1e-6)
    for layer, entries in runs["numpy"][1].items():
        for k, v in entries.items():
            assert_close(v, runs["jax"][1][layer][k], rtol=1e-4, atol=1e-5)


def test_straight_line_graph_is_the_sequential_of_its_layers(backend):
    x = RNG.normal(size=(7, 6)).astype("float32")
    layers = [Dense(5, activation="relu"), Dropout(0.5), Dense(3)]
    seq = wf.Sequential(layers, seed=11).build((None, 6))
    inp = wf.Input((6,))
    h = inp
    for layer in layers:
        h = layer(h)
    graph = wf.Model(inp, h, seed=11)
    assert list(graph.params) == list(seq.params) == ["dense_0", "dense_1"]
    for k in seq.params:
        for n in seq.params[k]:
            assert_close(graph.params[k][n], seq.params[k][n], rtol=0)
    assert_close(graph.predict(x), seq.predict(x), rtol=1e-6)
    y = np.arange(7) % 3
    seq.fit(x, y, epochs=2, batch_size=4, verbose=0)
    graph.fit(x, y, epochs=2, batch_size=4, verbose=0)  # same dropout masks, same steps
    assert_close(graph.predict(x), seq.predict(x), rtol=1e-5, atol=1e-6)


def test_data_as_lists_dicts_and_output_structures(backend):
    a, b = wf.Input((3,), name="left"), wf.Input((2,), name="right")
    h = Concatenate()([a, b])
    outs = {"p": Dense(2, name="p")(h), "q": Dense(1, name="q")(h)}
    model = wf.Model({"left": a, "right": b}, outs)
    xl, xr = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 2))
    got = model.predict({"right": xr, "left": xl})
    assert set(got) == {"p", "q"} and got["p"].shape == (5, 2) and got["q"].shape == (5, 1)
    assert_close(model.predict([xl, xr])["q"], got["q"], rtol=1e-6)
    single = wf.Model([a, b], [outs["q"]])
    assert isinstance(single.predict([xl, xr]), list)
    history = model.fit(
        [xl, xr],
        {"q": np.ones((5, 1)), "p": np.arange(5) % 2},
        loss={"q": "mse", "p": "softmax_cross_entropy"},
        epochs=1,
        verbose=0,
    )
    assert list(history.history) == ["loss", "p_loss", "p_accuracy", "q_loss"]
    one_loss = model.evaluate([xl, xr], [np.ones((5, 2)), np.ones((5, 1))], loss="mse")
    assert set(one_loss) == {"loss", "p_loss", "q_loss"}  # one loss alone: every output
    with pytest.raises(ValueError, match=r"missing \['right'\]"):
        model.predict({"left": xl})
    with pytest.raises(ValueError, match="2 inputs"):
        model.predict(xl)
    with pytest.raises(ValueError, match="same number of examples"):
        model.predict([xl, xr[:3]])


def test_a_model_of_one_input_refuses_a_tuple_of_arrays():
    model = wf.Sequential([Dense(2)])
    x = np.zeros((4, 3), "float32")
    with pytest.raises(ValueError, match="tuple of 2 arrays for a model of 1 input"):
        model.fit((x, x), np.zeros(4, int), verbose=0)


def test_models_nest_both_ways(backend):
    inner_in = wf.Input((4,))
    inner = wf.Model(inner_in, Dense(3, activation="tanh")(inner_in), name="encoder")
    x = wf.Input((4,))
    out = Dense(2)(Add()([inner(x), Dense(3)(x)]))
    outer = wf.Model(x, out)
    assert list(outer.params) == ["encoder", "dense_0", "dense_1"]
    assert list(outer.params["encoder"]) == ["dense_0"]
    chain = wf.Sequential([outer, Dense(1)])
    data = RNG.normal(size=(3, 4)).astype("float32")
    assert chain.predict(data).shape == (3, 1)
    # A built model nested in a graph starts from its own weights.
    assert_close(outer.params["encoder"]["dense_0"]["W"], inner.params["dense_0"]["W"], rtol=0)


def test_save_and_load_model_round_trip_a_graph(tmp_path, backend):
    model = _two_in_two_out()
    x, y = _data(dtype="float32")
    model.compile(loss=["softmax_cross_entropy", "mse"])
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "graph.safetensors"
    wf.save_model(model, path)
    back = wf.load_model(path)
    assert type(back) is type(model) and back.output_names == model.output_names
    for got, want in zip(back.predict(x), model.predict(x), strict=True):
        assert_close(got, want, rtol=0)
    config = json.loads(json.dumps(wf.saving.config.model_config(model)))
    assert config["class"] == "wframe.Model"
    assert wf.saving.config.model_config(wf.saving.config.model_from_config(config)) == config


def test_freezing_and_checkpoints_address_graph_layers_by_name(tmp_path):
    model = _two_in_two_out()
    x, y = _data(dtype="float32")
    model.freeze("shared")
    before = _host(model.params)["shared"]
    model.compile(loss=["softmax_cross_entropy", "mse"])
    model.fit(x, y, epochs=2, batch_size=3, verbose=0)
    for k, v in _host(model.params)["shared"].items():
        np.testing.assert_array_equal(v, before[k])
    model.save_checkpoint(tmp_path / "c.safetensors")
    other = _two_in_two_out(seed=9)
    other.load_checkpoint(tmp_path / "c.safetensors")
    assert other.steps == model.steps
    for got, want in zip(other.predict(x), model.predict(x), strict=True):
        assert_close(got, want, rtol=0)


def test_graph_errors_name_the_layer_and_the_tensor():
    a, b = wf.Input((3,), name="a"), wf.Input((4,), name="b")
    with pytest.raises(
        ValueError, match=r"Add.*merges tensors of one shape.*\(None, 3\), \(None, 4\)"
    ):
        Add()([a, b])
    stranger = wf.Input((3,), name="stranger")
    with pytest.raises(
        ValueError, match="depend on .*input 'stranger'.*not among the model's inputs"
    ):
        wf.Model(a, Add()([a, stranger]))
    with pytest.raises(ValueError, match="input 'b' is never connected"):
        wf.Model([a, b], Dense(2)(a))
    with pytest.raises(TypeError, match="Add was called on symbolic tensors and ndarray"):
        Add()([a, np.zeros((1, 3))])
    with pytest.raises(TypeError, match="description without weights"):
        Dense(2)(np.zeros((1, 3)))
    shared = Dense(2)
    with pytest.raises(ValueError, match="shared layer 'dense_0' is called on inputs of shape"):
        wf.Model([a, b], Add()([shared(a), shared(b)]))


def test_a_base_model_called_with_training_false_stays_in_inference_mode(backend):
    """Keras' transfer idiom ``base(inputs, training=False)``: BatchNorm keeps its moving
    statistics and dropout is off inside the graph while it trains; the base's weights still
    get gradients; the option survives the config."""
    base = wf.Sequential([Dense(8), wf.layers.BatchNormalization(), Dropout(0.5)], seed=0).build(
        (None, 4)
    )
    inp = wf.Input((4,))
    model = wf.Model(inp, Dense(2)(base(inp, training=False)))
    x, y = RNG.normal(size=(32, 4)).astype("float32"), np.arange(32) % 2
    stats = {k: wf.to_numpy(v).copy() for k, v in flatten(model.state)}
    kernel = wf.to_numpy(model.params["sequential_0"]["dense_0"]["W"]).copy()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert all(np.array_equal(wf.to_numpy(v), stats[k]) for k, v in flatten(model.state))
    assert not np.array_equal(wf.to_numpy(model.params["sequential_0"]["dense_0"]["W"]), kernel)
    twin = wf.Model.from_config(model.get_config())
    assert twin.get_config() == model.get_config()
    with pytest.raises(TypeError, match="training must be True, False or None"):
        base(inp, training="no")
