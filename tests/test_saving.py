"""Whole-model files: layer configs, the class registry, save_model / load_model across
backends, and files that must be refused (unknown or hostile class names, malformed configs)."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import wframe as wf
from wframe.backends import array_namespace
from wframe.layers import (
    GRU,
    LSTM,
    Activation,
    AvgPool2D,
    BatchNorm,
    Concatenate,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    LayerNorm,
    MaxPool2D,
    Residual,
    Sequential,
    SimpleRNN,
    registry,
)
from wframe.pruning import prune
from wframe.regularizers import L1, L1L2, L2, Regularizer, l1_l2
from wframe.saving import (
    ConfigError,
    layer_config,
    layer_from_config,
    load_model,
    model_config,
    model_from_config,
    save_model,
)
from wframe.saving.io import WeightsFileError, read_safetensors
from wframe.tree import flatten


@wf.layers.register
@dataclass(frozen=True)
class Rows(Layer):
    """A user layer: NHWC images as sequences of rows, (N, H, W, C) -> (N, H, W * C)."""

    def init(self, key, in_shape, *, dtype="float32"):
        n, h, w, c = in_shape
        return {}, {}, (n, h, w * c)

    def forward(self, params, state, x, *, train=False, key=None):
        xp = array_namespace(x)
        shape = tuple(x.shape)
        y = xp.reshape(x, (shape[0], shape[1], math.prod(shape[2:])))
        return y, state, lambda dy, input_grad=True: (xp.reshape(dy, shape), {})


@wf.layers.register(name="tests.Scale")
@dataclass(frozen=True)
class Scale(Layer):
    """A user layer with a param and options: ``y = factor * s * x`` with a learned ``s``."""

    factor: float = 2.0
    shape: tuple[int, ...] = (1,)

    def init(self, key, in_shape, *, dtype="float32"):
        return {"s": wf.initializers.get("ones")(key, self.shape, dtype)}, {}, tuple(in_shape)

    def forward(self, params, state, x, *, train=False, key=None):
        s = params["s"]
        xp = array_namespace(x)

        def backprop(dy, input_grad=True):
            return (dy * self.factor * s if input_grad else None), {
                "s": xp.reshape(xp.sum(dy * x * self.factor), (1,))
            }

        return self.factor * s * x, state, backprop


def json_round_trip(config):
    """``config`` as it comes back from a file (JSON text, so tuples come back as lists)."""
    return json.loads(json.dumps(config))


def host(tree):
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree or {})}


def assert_trees_equal(a, b, *, ordered=True):
    a, b = host(a), host(b)
    assert list(a) == list(b) if ordered else sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ----------------------------------------------------------------------------- layer configs
EVERY_LAYER = [
    Layer(),
    Dense(4),
    Dense(
        7,
        activation="relu",
        use_bias=False,
        kernel_init="he_normal",
        bias_init="ones",
        kernel_regularizer="l2",
        bias_regularizer=L1(0.5),
        name="head",
    ),
    Conv2D(3, 5),
    Conv2D(
        2,
        (3, 1),
        strides=(2, 1),
        padding="same",
        dilation_rate=2,
        activation="tanh",
        kernel_regularizer=l1_l2(0.1, 0.2),
    ),
    MaxPool2D(),
    MaxPool2D((3, 2), strides=1, padding="same"),
    AvgPool2D(3, strides=(1, 2)),
    GlobalAvgPool2D(),
    Activation("gelu"),
    Activation(None),
    Dropout(0.3),
    Flatten(name="flat"),
    BatchNorm(),
    BatchNorm(momentum=0.9, epsilon=1e-5, axis=1, center=False, scale=False),
    LayerNorm(epsilon=1e-3),
    SimpleRNN(4, "relu", return_sequences=True),
    LSTM(3, unit_forget_bias=False, recurrent_init="glorot_normal", recurrent_regularizer="l1"),
    GRU(2, return_sequences=True, bias_regularizer="l1_l2"),
    Sequential([Dense(3), Dropout(0.1), Dense(2)]),
    Sequential([Sequential([Dense(3), Dense(3)], name="block"), Dense(1)]),
    Residual(Dense(4)),
    Residual([Dense(4, activation="relu"), Dense(4)]),
    Concatenate([Dense(2), Sequential([Dense(3), Dense(1)])], axis=-1),
    Concatenate(axis=1),
    wf.layers.Add(),
    wf.layers.Subtract(name="diff"),
    wf.layers.Multiply(),
    wf.layers.Average(),
    wf.layers.Maximum(),
    wf.layers.Minimum(),
    wf.layers.Embedding(50, 4, mask_zero=True),
    wf.layers.PositionEmbedding(16),
    wf.layers.Reshape((2, -1)),
    wf.layers.Permute((2, 1)),
    wf.layers.Conv1D(4, 3, strides=2, padding="causal", dilation_rate=1, activation="relu"),
    wf.layers.MaxPool1D(3, strides=1, padding="same"),
    wf.layers.AvgPool1D(),
    wf.layers.GlobalAvgPool1D(),
    wf.layers.GlobalMaxPool1D(),
    wf.layers.GlobalMaxPool2D(),
    wf.layers.RMSNorm(epsilon=1e-5),
    wf.layers.LayerNorm(axis=(1, 2), center=False),
    wf.layers.Bidirectional(GRU(3, return_sequences=True), merge_mode="sum"),
    wf.layers.MultiHeadAttention(2, 4, value_dim=3, dropout=0.1, output_shape=5),
    wf.layers.Graph(
        inputs=(("x", (None, 3), "float32"),),
        layers=(Dense(2, name="d"),),
        nodes=(("d", ((0, None),), False, ()),),
        outputs=((1, None),),
        output_names=("d",),
    ),
]


@pytest.mark.parametrize("layer", EVERY_LAYER, ids=lambda la: type(la).__name__)
def test_every_builtin_layer_round_trips_to_an_equal_layer(layer):
    config = layer_config(layer)
    assert config["class"] == type(layer).__name__
    back = layer_from_config(json_round_trip(config))
    assert type(back) is type(layer)
    assert back == layer
    assert layer_config(back) == config


def test_every_exported_layer_class_is_registered_and_tested():
    exported = {
        getattr(wf.layers, n) for n in wf.layers.__all__ if isinstance(getattr(wf.layers, n), type)
    }
    assert exported == {type(layer) for layer in EVERY_LAYER}
    for cls in exported:
        assert registry.lookup(registry.name_of(cls)) is cls
    assert registry.name_of(wf.Sequential) == "wframe.Sequential"
    assert registry.lookup("Sequential") is wf.layers.Sequential


def test_config_format():
    config = layer_config(Dense(10, activation="relu", kernel_regularizer="l2", name="out"))
    assert config == {
        "class": "Dense",
        "config": {
            "name": "out",
            "units": 10,
            "activation": "relu",
            "use_bias": True,
            "kernel_init": "glorot_uniform",
            "bias_init": "zeros",
            "kernel_regularizer": {"class": "L2", "config": {"l1": 0.0, "l2": 0.01}},
            "bias_regularizer": None,
        },
    }
    conv = layer_config(Conv2D(2, 3))["config"]
    assert conv["kernel_size"] == [3, 3] and conv["strides"] == [1, 1]


@pytest.mark.parametrize("reg", [L1(), L2(0.5), L1L2(0.1, 0.2), Regularizer(l1=1.0)])
def test_regularizers_round_trip(reg):
    config = layer_config(reg)
    assert config["class"] == type(reg).__name__
    assert layer_from_config(json_round_trip(config)) == reg
    dense = Dense(3, kernel_regularizer=reg, bias_regularizer="l1_l2")
    back = layer_from_config(json_round_trip(layer_config(dense)))
    assert back == dense
    assert back.param_regularizers() == dense.param_regularizers()


def test_a_shared_instance_stays_one_child_with_one_param_set():
    shared = Dense(4, activation="relu")
    chain = Sequential([Dense(4), shared, Dropout(0.5), shared, Concatenate([shared, shared])])
    config = layer_config(chain)
    assert config["config"]["layers"][3] == {"same_as": 1}
    assert config["config"]["layers"][4]["config"]["branches"][1] == {"same_as": 0}
    back = layer_from_config(json_round_trip(config))
    assert back == chain
    assert back.layers[1] is back.layers[3]
    assert back.layers[4].branches[0] is back.layers[4].branches[1]
    model = wf.Sequential([back]).build((None, 4))
    assert sorted(model.params["sequential_0"]) == ["concatenate_0", "dense_0", "dense_1"]
    assert list(model.params["sequential_0"]["concatenate_0"]) == ["dense_0"]


def test_nested_model_and_model_config():
    inner = wf.Sequential([Dense(4, activation="tanh"), Dense(4)], seed=5, name="inner")
    model = wf.Sequential([inner, Residual(Dense(4)), Dense(2)], seed=3, dtype="float64")
    config = json_round_trip(model_config(model))
    assert "input_shape" not in config  # not built yet
    assert config["class"] == "wframe.Sequential"
    assert config["config"]["seed"] == 3 and config["config"]["dtype"] == "float64"
    assert config["config"]["layers"][0]["config"]["seed"] == 5
    back = model_from_config(config)
    assert isinstance(back, wf.Sequential) and not back.built
    assert isinstance(back.layers[0], wf.Sequential) and back.layers[0].name == "inner"
    assert model_config(back) == config
    model.build((None, 3))
    config = json_round_trip(model_config(model))
    assert config["input_shape"] == [None, 3]
    back = model_from_config(config)
    assert back.built and back.dtype == "float64"
    assert_trees_equal(back.params, model.params)  # same seed, same weights


def test_activation_and_initializer_functions_given_as_callables():
    dense = Dense(3, activation=wf.activations.relu, kernel_init=wf.initializers.he_uniform)
    config = layer_config(dense)["config"]
    assert config["activation"] == "relu" and config["kernel_init"] == "he_uniform"
    with_const = Dense(3, kernel_init=wf.initializers.constant(0.5), bias_init="ones")
    config = json_round_trip(layer_config(with_const))
    assert config["config"]["kernel_init"] == {"initializer": "constant", "config": {"value": 0.5}}
    back = layer_from_config(config)
    params = wf.Sequential([back]).build((None, 2)).params["dense_0"]
    np.testing.assert_array_equal(wf.to_numpy(params["W"]), np.full((2, 3), 0.5, np.float32))


def test_a_user_function_is_refused_naming_layer_and_field(tmp_path):
    def my_act(x):
        return x, lambda dy: dy

    model = wf.Sequential([Dense(3), Dense(2, activation=my_act)]).build((None, 4))
    with pytest.raises(ConfigError, match=r"Dense 'dense_1': field 'activation'.*my_act"):
        layer_config(model)
    path = tmp_path / "m.safetensors"
    with pytest.raises(ConfigError, match="wf.activations"):
        save_model(model, path)
    assert not path.exists()
    init = lambda key, shape, dtype="float32": wf.initializers.zeros(key, shape, dtype)  # noqa: E731
    with pytest.raises(ConfigError, match="'kernel_init'"):
        layer_config(LSTM(2, kernel_init=init))


def test_unknown_option_and_bad_values():
    config = json_round_trip(layer_config(Dense(3)))
    config["config"]["unitz"] = 4
    with pytest.raises(ConfigError, match=r"Dense has no option 'unitz'"):
        layer_from_config(config)
    config = json_round_trip(layer_config(Dense(3)))
    config["config"]["units"] = -1
    with pytest.raises(ValueError, match="units must be a positive int"):  # Dense's own error
        layer_from_config(config)
    nested = json_round_trip(layer_config(Sequential([Dense(2), Dense(1)])))
    nested["config"]["layers"][1]["class"] = "Denze"
    with pytest.raises(ConfigError, match=r"config\.layers\[1\]: unknown layer class 'Denze'"):
        layer_from_config(nested)
    for bad in (
        [],
        {"config": {}},
        {"class": 3},
        {"class": "Dense", "config": [], "x": 1},
        {"class": "Dense", "config": {"units": 2, "activation": {"foo": 1}}},
        {"class": "Sequential", "config": {"layers": [{"same_as": 0}]}},
    ):
        with pytest.raises(ConfigError):
            layer_from_config(bad)
    with pytest.raises(ConfigError, match="'Sequential' is not a model class"):
        model_from_config(layer_config(Sequential([Dense(1)])))


# ----------------------------------------------------------------------------- the registry
def other_rows():
    @dataclass(frozen=True)
    class Rows(Layer):  # another class with a taken name
        pass

    return Rows


def test_register_forms_and_name_clashes():
    assert registry.lookup("Rows") is Rows
    assert registry.lookup("tests.Scale") is Scale and registry.name_of(Scale) == "tests.Scale"
    assert wf.layers.register(Rows) is Rows  # the same class again: a no-op
    other = other_rows()
    with pytest.raises(
        ValueError,
        match=r"'Rows' is taken by .*test_saving\.Rows, cannot "
        r"register .*other_rows.<locals>.Rows",
    ):
        wf.layers.register(other)
    with pytest.raises(ValueError, match="'Dense' is taken by wframe.layers.dense.Dense"):
        wf.layers.register(other, name="Dense")
    with pytest.raises(TypeError, match="Layer"):
        wf.layers.register(dict)
    with pytest.raises(
        ValueError,
        match=r"unknown layer class 'Nope'.*@wf\.layers\.register.*"
        r"registered: \[.*'Dense'",
    ):
        registry.lookup("Nope")


def test_register_under_a_second_name_keeps_the_first_as_an_alias():
    @dataclass(frozen=True)
    class Renamed(Layer):
        pass

    try:
        wf.layers.register(Renamed)
        wf.layers.register(name="pkg.Renamed")(Renamed)
        assert registry.name_of(Renamed) == "pkg.Renamed"
        assert registry.lookup("Renamed") is Renamed is registry.lookup("pkg.Renamed")
        registry.unregister("pkg.Renamed")
        assert registry.name_of(Renamed) == "Renamed"
    finally:
        registry.unregister("Renamed")
    with pytest.raises(ValueError, match="not registered"):
        registry.name_of(Renamed)


def test_unregistered_user_layer_is_refused_at_save():
    @dataclass(frozen=True)
    class Unknown(Flatten):
        pass

    with pytest.raises(ConfigError, match=r"Unknown is not registered.*@wf\.layers\.register"):
        layer_config(Sequential([Unknown()]))


# ----------------------------------------------------------------------------- model files
def cnn_lstm(seed=0):
    """BatchNorm, Dropout, Conv2D and LSTM (via the user layer Rows), and a user param layer."""
    return wf.Sequential(
        [
            Conv2D(4, 3, padding="same", activation="relu"),
            BatchNorm(momentum=0.5),
            Dropout(0.25),
            Rows(),
            LSTM(5),
            Scale(0.5),
            Dense(3),
        ],
        seed=seed,
    )


def images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, n)


def trained(seed=0):
    """A trained, pruned cnn_lstm: non-trivial weights, BatchNorm statistics and masks."""
    x, y = images()
    model = cnn_lstm(seed)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    prune(model, 0.5)
    return model


def assert_same_model(a, b, x):
    assert model_config(a) == model_config(b)
    assert_trees_equal(a.params, b.params)
    assert_trees_equal(a.state, b.state)
    assert_trees_equal(a.masks, b.masks, ordered=False)
    np.testing.assert_array_equal(wf.to_numpy(a.predict(x)), wf.to_numpy(b.predict(x)))


def test_save_and_load_model(backend, tmp_path):
    model = trained()
    assert host(model.state) and model.masks
    path = tmp_path / "model.safetensors"
    save_model(model, path)
    assert json.loads(read_safetensors(path)[1]["config"]) == json_round_trip(model_config(model))
    loaded = load_model(path)
    assert loaded.backend.name == backend.name
    assert_same_model(model, loaded, images(seed=1)[0])
    loaded.fit(*images(), epochs=1, batch_size=8, verbose=0)  # it trains on


@pytest.mark.parametrize(("source", "target"), [("numpy", "jax"), ("jax", "numpy")])
def test_a_file_from_one_backend_loads_on_another(jax, tmp_path, source, target):
    x = images(seed=2)[0]
    with wf.use_backend(source):
        model = trained()
        expected = wf.to_numpy(model.predict(x))
        save_model(model, tmp_path / "m.safetensors")
    with wf.use_backend(target):
        loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.backend.name == target
    assert model_config(loaded) == model_config(model)
    assert_trees_equal(loaded.params, model.params)
    assert_trees_equal(loaded.state, model.state)
    assert_trees_equal(loaded.masks, model.masks, ordered=False)
    np.testing.assert_allclose(wf.to_numpy(loaded.predict(x)), expected, rtol=1e-5, atol=1e-6)


def test_nested_containers_and_a_shared_layer_through_a_file(backend, tmp_path):
    shared = Dense(6, activation="relu")
    inner = wf.Sequential([Dense(6), LayerNorm()], seed=4, name="inner")
    model = wf.Sequential(
        [
            Dense(6),
            shared,
            Residual([shared, Dense(6)]),
            shared,
            Concatenate([Sequential([Dense(2), Dropout(0.5)]), inner, Dense(3)]),
            Dense(2, kernel_regularizer="l2"),
        ],
        seed=1,
    )
    x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    model.fit(x, np.arange(16) % 2, epochs=1, batch_size=4, verbose=0)
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.layers[1] is loaded.layers[3]
    assert_same_model(model, loaded, x)


# ----------------------------------------------------------------------------- bad files
def rewrite_config(src, dst, config):
    """A copy of the file ``src`` with its metadata's config replaced by the text ``config``."""
    with safe_open(src, "numpy") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    metadata["config"] = config
    save_file(tensors, dst, metadata=metadata)
    return dst


@pytest.fixture
def small_file(tmp_path):
    model = wf.Sequential([Dense(3), Dense(2)]).build((None, 4))
    save_model(model, tmp_path / "small.safetensors")
    return tmp_path / "small.safetensors"


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "this.s", "__main__.Rows"])
def test_a_class_name_is_never_imported_or_evaluated(small_file, tmp_path, monkeypatch, name):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    had_this = "this" in sys.modules
    config = json.loads(read_safetensors(small_file)[1]["config"])
    config["config"]["layers"][1] = {"class": name, "config": {"command": "echo pwned"}}
    bad = rewrite_config(small_file, tmp_path / "bad.safetensors", json.dumps(config))
    with pytest.raises(
        WeightsFileError, match=rf"unknown layer class '{name}'.*@wf\.layers\.register"
    ):
        load_model(bad)
    assert not calls
    assert ("this" in sys.modules) == had_this


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a dict"),
        ('{"config": {}}', r"expected \{'class'"),
        ('{"class": "Dense", "config": {"units": 2}}', "'Dense' is not a model class"),
        (
            '{"class": "wframe.Sequential", "config": {"layers": [], "seed": 0, "dtype": '
            '"float32", "name": null}}',
            "no input_shape",
        ),
        (
            '{"class": "wframe.Sequential", "config": {"layers": [{"class": "Dense", '
            '"config": {"units": 2, "bad": 1}}]}, "input_shape": [null, 4]}',
            "Dense has no option 'bad'",
        ),
    ],
)
def test_malformed_configs_are_weights_file_errors(small_file, tmp_path, config, message):
    bad = rewrite_config(small_file, tmp_path / "bad.safetensors", config)
    with pytest.raises(WeightsFileError, match=message):
        load_model(bad)


@pytest.mark.parametrize("config", [None, "{}"])
def test_a_weights_only_file_says_so(small_file, tmp_path, config):
    with safe_open(small_file, "numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    metadata = None if config is None else {"format": "wframe", "config": config}
    save_file(tensors, tmp_path / "w.safetensors", metadata=metadata)
    with pytest.raises(WeightsFileError, match="holds weights only.*model.load_weights"):
        load_model(tmp_path / "w.safetensors")


@pytest.fixture
def unregistered_later():
    """A layer class that is registered now and unregistered when the test asks."""

    @dataclass(frozen=True)
    class Twice(Layer):
        def init(self, key, in_shape, *, dtype="float32"):
            return {}, {}, tuple(in_shape)

        def forward(self, params, state, x, *, train=False, key=None):
            return 2 * x, state, lambda dy, input_grad=True: (2 * dy, {})

    wf.layers.register(Twice)
    yield Twice
    if "Twice" in registry.registered():
        registry.unregister("Twice")


def test_a_user_layer_round_trips_and_an_unregistered_one_is_named(
    unregistered_later, backend, tmp_path
):
    model = wf.Sequential([Dense(3), unregistered_later(), Scale(3.0, shape=(1,))]).build((None, 2))
    path = tmp_path / "user.safetensors"
    save_model(model, path)
    x = np.ones((2, 2), np.float32)
    assert_same_model(model, load_model(path), x)
    registry.unregister("Twice")
    with pytest.raises(
        WeightsFileError, match=r"unknown layer class 'Twice'.*wf\.layers\.register"
    ):
        load_model(path)


def test_a_config_larger_than_its_weights_is_refused_before_allocating(tmp_path):
    import json
    import tracemalloc

    from wframe.saving import io

    model = wf.Sequential([wf.layers.Dense(4), wf.layers.Dense(3)]).build((None, 5))
    wf.save_model(model, tmp_path / "m.safetensors")
    tensors, meta = io.read_safetensors(tmp_path / "m.safetensors")
    config = json.loads(meta["config"])
    config["config"]["layers"][0]["config"]["units"] = 10**9  # 4 GB of float32 if built
    hostile = {**meta, "config": json.dumps(config)}
    io.write_safetensors(tmp_path / "h.safetensors", tensors, hostile)
    tracemalloc.start()
    try:
        with pytest.raises(
            WeightsFileError,
            match=r"would hold more than 156 bytes of arrays \(20000000000 bytes by the array "
            r"of shape \(5, 1000000000\)",
        ):
            wf.load_model(tmp_path / "h.safetensors")
        assert tracemalloc.get_traced_memory()[1] < 10_000_000
    finally:
        tracemalloc.stop()


def test_a_float64_model_loaded_on_jax_without_x64_says_how(jax, tmp_path):
    """The placeholders of a load never asked jax for float64: the file's arrays then looked
    mismatched ("expected float32"), where building the model gives the fix."""
    if jax.config.jax_enable_x64:
        pytest.skip("jax's 64-bit mode is on in this process")
    model = wf.Sequential([Dense(3)], seed=0, dtype="float64").build((None, 4))
    save_model(model, tmp_path / "m.safetensors")
    with wf.use_backend("jax"), pytest.raises(ValueError, match="needs 64-bit mode"):
        wf.load_model(tmp_path / "m.safetensors")
