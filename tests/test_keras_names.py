"""Keras' names work: constructor keywords (``kernel_initializer=``), layer class names
(``BatchNormalization``, ``MaxPooling2D``, ...) in code and in configs, and backend names in any
case (``"JAX"``, ``"NumPy"``)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import wframe as wf
from wframe import backends
from wframe.layers import registry
from wframe.saving import layer_config, layer_from_config, load_model, save_model
from wframe.tree import flatten

L = wf.layers

#: Keras 3's common layer names (keras.layers.*) and wframe's class for each.
KERAS_LAYERS = {
    "Dense": L.Dense,
    "Activation": L.Activation,
    "Dropout": L.Dropout,
    "Flatten": L.Flatten,
    "Reshape": L.Reshape,
    "Permute": L.Permute,
    "Conv1D": L.Conv1D,
    "Conv2D": L.Conv2D,
    "MaxPooling1D": L.MaxPool1D,
    "MaxPooling2D": L.MaxPool2D,
    "AveragePooling1D": L.AvgPool1D,
    "AveragePooling2D": L.AvgPool2D,
    "GlobalAveragePooling1D": L.GlobalAvgPool1D,
    "GlobalAveragePooling2D": L.GlobalAvgPool2D,
    "GlobalMaxPooling1D": L.GlobalMaxPool1D,
    "GlobalMaxPooling2D": L.GlobalMaxPool2D,
    "BatchNormalization": L.BatchNorm,
    "LayerNormalization": L.LayerNorm,
    "RMSNormalization": L.RMSNorm,
    "Embedding": L.Embedding,
    "SimpleRNN": L.SimpleRNN,
    "LSTM": L.LSTM,
    "GRU": L.GRU,
    "Bidirectional": L.Bidirectional,
    "MultiHeadAttention": L.MultiHeadAttention,
    "Concatenate": L.Concatenate,
    "Add": L.Add,
    "Subtract": L.Subtract,
    "Multiply": L.Multiply,
    "Average": L.Average,
    "Maximum": L.Maximum,
    "Minimum": L.Minimum,
}


@pytest.mark.parametrize("keras_name", list(KERAS_LAYERS))
def test_keras_layer_names_are_wframe_classes_and_load_from_configs(keras_name):
    cls = KERAS_LAYERS[keras_name]
    assert getattr(L, keras_name) is cls
    assert keras_name in L.__all__
    assert registry.lookup(keras_name) is cls
    # files keep writing wframe's own name
    assert registry.name_of(cls) == cls.__name__


def test_a_config_naming_keras_classes_loads_and_saves_under_wframe_names(tmp_path):
    config = {"class": "BatchNormalization", "config": {"name": "bn", "epsilon": 1e-5}}
    layer = layer_from_config(config)
    assert type(layer) is L.BatchNorm and layer.epsilon == 1e-5
    assert layer_config(layer)["class"] == "BatchNorm"
    model = wf.Sequential(
        [L.Conv2D(2, 3, padding="same"), L.BatchNormalization(), L.MaxPooling2D(2)]
        + [L.AveragePooling2D(1), L.GlobalAveragePooling2D(), L.LayerNormalization()]
    ).build((None, 4, 4, 1))
    save_model(model, tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors")
    assert [type(a) for a in again.layers] == [type(b) for b in model.layers]


def test_global_average_pooling_2d_keeps_dims_as_keras(backend):
    x = backend.asarray(np.arange(2 * 2 * 3 * 4, dtype="float32").reshape(2, 2, 3, 4))
    layer = L.GlobalAveragePooling2D(keepdims=True)
    assert layer.init(0, (None, 2, 3, 4))[2] == (None, 1, 1, 4)
    y, _, back = layer.apply({}, {}, x)
    expect = wf.to_numpy(x).mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(wf.to_numpy(y), expect, rtol=1e-6)
    dx = wf.to_numpy(back(backend.xp.ones_like(y))[0])
    np.testing.assert_allclose(dx, np.full((2, 2, 3, 4), 1 / 6), rtol=1e-6)


KERAS_KEYWORDS = [
    (L.Dense, (3,), "kernel_initializer", "kernel_init"),
    (L.Dense, (3,), "bias_initializer", "bias_init"),
    (L.Conv2D, (2, 3), "kernel_initializer", "kernel_init"),
    (L.Conv1D, (2, 3), "bias_initializer", "bias_init"),
    (L.SimpleRNN, (3,), "recurrent_initializer", "recurrent_init"),
    (L.LSTM, (3,), "kernel_initializer", "kernel_init"),
    (L.GRU, (3,), "bias_initializer", "bias_init"),
    (L.MultiHeadAttention, (2, 4), "kernel_initializer", "kernel_init"),
]


@pytest.mark.parametrize("cls, args, keras, own", KERAS_KEYWORDS)
def test_keras_constructor_keywords_set_wframe_fields(cls, args, keras, own):
    layer = cls(*args, **{keras: "he_normal"})
    assert getattr(layer, own) == "he_normal"
    assert layer == cls(*args, **{own: "he_normal"})
    config = layer_config(layer)["config"]  # configs keep wframe's field names only
    assert config[own] == "he_normal" and keras not in config


def test_layer_signatures_show_the_fields_not_the_metaclass():
    params = inspect.signature(L.Dense).parameters  # help(), config checks read it
    assert list(params)[:2] == ["units", "activation"] and "kernel_init" in params
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())


def test_keras_initializers_give_the_same_weights():
    kw = {"kernel_initializer": "he_normal", "bias_initializer": "ones"}
    keras = wf.Sequential([L.Dense(4, **kw)], seed=3).build((None, 5))
    own = wf.Sequential([L.Dense(4, kernel_init="he_normal", bias_init="ones")], seed=3)
    own.build((None, 5))
    for (n, a), (m, b) in zip(flatten(keras.params), flatten(own.params), strict=True):
        assert n == m
        np.testing.assert_array_equal(wf.to_numpy(a), wf.to_numpy(b))
    np.testing.assert_array_equal(wf.to_numpy(keras.params["dense_0"]["b"]), np.ones(4))


def test_keras_regularizer_keywords_are_wframe_fields():
    layer = L.Dense(3, kernel_regularizer="l2", bias_regularizer="l1")
    assert set(layer.param_regularizers()) == {"W", "b"}


def test_both_spellings_of_one_setting_are_refused():
    with pytest.raises(TypeError, match=r"Dense got both kernel_initializer= .* and kernel_init="):
        L.Dense(3, kernel_initializer="zeros", kernel_init="ones")


def test_a_keras_keyword_the_layer_lacks_is_refused_by_name():
    with pytest.raises(TypeError, match="kernel_initializer"):
        L.Dropout(0.5, kernel_initializer="zeros")


def test_keras_concatenate_axis_given_positionally_is_explained():
    with pytest.raises(TypeError, match=r"give the axis by keyword: Concatenate\(axis=1\)"):
        L.Concatenate(1)


# ------------------------------------------------------------------- backend names
def test_backend_names_are_case_insensitive(monkeypatch):
    assert backends.resolve("NumPy") is backends.resolve("numpy")
    assert backends.backend_class("NUMPY").name == "numpy"
    assert backends.why_unavailable("Numpy") == ""
    before = wf.get_backend()
    try:
        assert wf.set_backend("NumPy").name == "numpy"
    finally:
        wf.set_backend(before)
    with wf.use_backend("NUMPY") as b:
        assert b.name == "numpy"
    # WFRAME_BACKEND=NumPy, read at first use
    monkeypatch.setattr(backends, "_default", None)  # both restored after the test
    monkeypatch.setattr(backends, "_env_seen", backends._env_seen)
    monkeypatch.setenv("WFRAME_BACKEND", "NumPy")
    assert wf.get_backend().name == "numpy"


def test_unknown_backend_names_still_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown backend 'Tensorflow'. Expected one of"):
        backends.resolve("Tensorflow")


def test_model_to_backend_takes_any_case(jax):
    model = wf.Sequential([L.Dense(2)]).build((None, 3))
    assert model.to_backend("JAX").backend.name == "jax"
    assert model.to_backend("NumPy").backend.name == "numpy"


def test_sequential_takes_an_input_first_as_keras_does(backend):
    model = wf.Sequential(
        [wf.Input((5,)), wf.layers.Dense(3, activation="relu"), wf.layers.Dense(2)]
    )
    assert model.built and model.input_shape == (None, 5)
    assert [layer.name for layer in model.layers] == ["dense_0", "dense_1"]
    assert model.predict(np.ones((4, 5), "float32")).shape == (4, 2)
    inner = wf.layers.Dense(2)(wf.Input((5,)))
    with pytest.raises(TypeError, match="first item may be one wf.Input"):
        wf.Sequential([inner, wf.layers.Dense(2)])
