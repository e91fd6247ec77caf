"""Every bad input to a public entry point gets a clear error naming the argument and the fix.

Messages are asserted with ``match=``. Cases already covered by test_model.py (wrong feature
count, label shapes and dtypes, NaN in NumPy inputs, unknown names) and test_combinators.py are
not repeated here.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Concatenate, Conv2D, Dense, Flatten, Residual
from wframe.tree import flatten


def mlp(seed=0, dtype="float32"):
    return wf.Sequential(
        [Dense(16, activation="relu", kernel_init="he_normal"), Dense(3)], seed=seed, dtype=dtype
    )


def blobs(n=64, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(0, 3, (classes, features))
    return (centers[y] + rng.normal(0, 1, (n, features))).astype(np.float32), y


# ----------------------------------------------------------------------------- fit arguments
@pytest.mark.parametrize(
    ("validation_data", "got"),
    [
        (lambda x, y: (x,), "a tuple of length 1"),
        (lambda x, y: (x, y, y, y), "a tuple of length 4"),
        (lambda x, y: x, "ndarray"),
    ],
    ids=["one", "four", "array"],
)
def test_validation_data_must_be_a_pair(backend, validation_data, got):
    x, y = blobs(8)
    model = mlp()
    with pytest.raises(
        ValueError,
        match=rf"fit: validation_data must be a tuple \(x_val, y_val\), got {got}$",
    ):
        model.fit(x, y, validation_data=validation_data(x, y), verbose=0)


def test_validation_data_is_checked_like_the_training_data(backend):
    x, y = blobs(8)
    with pytest.raises(ValueError, match=r"y_val must have one row per example \(6 rows"):
        mlp().fit(x, y, validation_data=(x[:6], y[:5]), verbose=0)
    bad = x.copy()
    bad[2, 4] = np.inf
    with pytest.raises(ValueError, match=r"x_val contains NaN or inf \(first at index \(2, 4\)"):
        mlp().fit(x, y, validation_data=(bad, y), verbose=0)


def test_model_without_layers_says_so(backend):
    x, y = blobs(8)
    with pytest.raises(ValueError, match="Sequential has no layers; pass a non-empty list"):
        wf.Sequential([]).fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="has no layers"):
        wf.Sequential([]).build((None, 5))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m, x, y: m.evaluate(x, y, batch_size=-1),
            r"evaluate: batch_size must be an int >= 1, got -1",
        ),
        (
            lambda m, x, y: m.predict(x, batch_size=0),
            r"predict: batch_size must be an int >= 1, got 0",
        ),
        (lambda m, x, y: m.fit(x, y, epochs=-1, verbose=0), r"fit: epochs must be an int >= 0"),
        (
            lambda m, x, y: m.fit(x, y, initial_epoch=-2, verbose=0),
            r"fit: initial_epoch must be an int >= 0, got -2",
        ),
        (
            lambda m, x, y: m.fit(x, y, steps_per_execution=0, verbose=0),
            r"fit: steps_per_execution \('epoch' or an int\) must be an int >= 1, got 0",
        ),
        (lambda m, x, y: m.fit(x, y, seed=-1, verbose=0), r"fit: seed must be an int >= 0"),
        (lambda m, x, y: m.fit(x, y, verbose=3), r"fit: verbose must be 0, 1, 2 or 'auto', got 3"),
        (lambda m, x, y: m.fit(x[:0], y[:0], verbose=0), r"fit: x has no examples"),
    ],
    ids=[
        "evaluate-batch",
        "predict-batch",
        "epochs",
        "initial-epoch",
        "steps-per-execution",
        "seed",
        "verbose",
        "empty",
    ],
)
def test_bad_numbers_raise_value_errors_naming_the_argument(backend, call, message):
    x, y = blobs(8)
    with pytest.raises(ValueError, match=message):
        call(mlp(), x, y)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 2.5}, r"fit: batch_size must be an int >= 1, got float 2.5"),
        ({"batch_size": "32"}, r"fit: batch_size must be an int >= 1, got str '32'"),
        ({"batch_size": True}, r"fit: batch_size must be an int >= 1, got bool True"),
        ({"epochs": 2.0}, r"fit: epochs must be an int >= 0, got float 2.0"),
        (
            {"steps_per_execution": "epochs"},
            r"steps_per_execution \('epoch' or an int\) must be an int >= 1, got str 'epochs'",
        ),
    ],
    ids=["float", "str", "bool", "epochs-float", "spe-str"],
)
def test_non_integers_raise_type_errors(backend, kwargs, message):
    x, y = blobs(8)
    with pytest.raises(TypeError, match=message):
        mlp().fit(x, y, verbose=0, **kwargs)


def test_numpy_integers_are_accepted(backend):
    x, y = blobs(32)
    model = mlp()
    history = model.fit(x, y, batch_size=np.int64(16), epochs=np.int32(2), verbose=0)
    assert history.epoch == [0, 1] and len(history.history["loss"]) == 2
    assert model.predict(x, batch_size=np.uint8(16)).shape == (32, 3)


def test_callbacks_must_be_callback_instances(backend):
    x, y = blobs(8)
    with pytest.raises(
        TypeError, match="callbacks must be wframe.callbacks.Callback instances, got function"
    ):
        mlp().fit(x, y, callbacks=[lambda logs: None], verbose=0)


def test_a_single_callback_is_accepted_or_named_in_the_error():
    x, y = blobs(8)
    with wf.use_backend("numpy"):
        try:
            mlp().fit(x, y, callbacks=wf.callbacks.TerminateOnNaN(), verbose=0)
        except TypeError as e:
            assert "callbacks" in str(e), str(e)


def test_bad_optimizer_and_loss_objects(backend):
    x, y = blobs(8)
    with pytest.raises(TypeError, match=r"optimizer name or a GradientTransformation.*int"):
        mlp().fit(x, y, optimizer=3, verbose=0)
    with pytest.raises(TypeError, match=r"loss must be a name or a wframe.losses.Loss, got int"):
        mlp().fit(x, y, loss=3, verbose=0)


# ----------------------------------------------------------------------------- layers and build
def test_numpy_function_as_activation_explains_the_contract():
    with pytest.raises(TypeError, match=r"must return \(y, backprop\)") as info:
        Dense(3, activation=np.tanh)
    assert "activation='tanh'" in str(info.value)
    assert "returned ndarray" in str(info.value)
    with pytest.raises(TypeError, match=r"Conv2D: activation tanh must return \(y, backprop\)"):
        Conv2D(2, 3, activation=np.tanh)
    with pytest.raises(TypeError, match="activation must be a name or a callable, got int"):
        Dense(3, activation=3)


@pytest.mark.parametrize(
    ("shape", "error", "message"),
    [
        (
            64,
            TypeError,
            r"input_shape must be a tuple with the batch axis first, e\.g\. "
            r"\(None, 64\) for 64 features, got int 64",
        ),
        (np.int64(64), TypeError, r"e\.g\. \(None, 64\)"),
        ("64", TypeError, r"got str '64'"),
        ((None,), ValueError, r"at least one more, e\.g\. \(None, 64\); got \(None,\)"),
        ((None, 0), ValueError, r"input_shape\[1\] must be an int >= 1, got 0"),
    ],
    ids=["int", "numpy-int", "str", "no-features", "zero"],
)
def test_build_needs_a_shape_with_a_batch_axis(backend, shape, error, message):
    with pytest.raises(error, match=message):
        mlp().build(shape)


def test_one_dimensional_x_names_x_and_its_shape():
    x, y = blobs(40)
    with wf.use_backend("numpy"), pytest.raises(ValueError, match=r"(?s)\bx\b.*\(40,\)"):
        mlp().fit(x[:, 0], y, verbose=0)


def test_scalar_input_is_refused(backend):
    with pytest.raises(ValueError, match="x must have a batch axis, got a scalar"):
        mlp().predict(np.float32(3.0))


def test_unsupported_dtypes():
    with pytest.raises(ValueError, match=r"float16 is not supported.*dtype='float32'"):
        wf.Sequential([Dense(1)], dtype="float16")
    with pytest.raises(ValueError, match=r"float16 is not supported"):
        wf.Sequential([Dense(1)], dtype=np.float16)
    with pytest.raises(ValueError, match=r"bfloat16 is not supported.*dtype='mixed_bfloat16'"):
        wf.Sequential([Dense(1)], dtype="bfloat16")
    with pytest.raises(ValueError, match=r"dtype must be one of \('float32', 'float64', 'mixed"):
        wf.Sequential([Dense(1)], dtype="int8")
    with pytest.raises(TypeError, match="Sequential: seed must be an int >= 0, got float 1.5"):
        wf.Sequential([Dense(1)], seed=1.5)


# ----------------------------------------------------------------------------- data and labels
def test_softmax_output_with_the_logits_loss_warns():
    x, y = blobs(96)
    with wf.use_backend("numpy"):
        probs = wf.Sequential([Dense(16, activation="relu"), Dense(3, activation="softmax")])
        with pytest.warns(UserWarning, match=r"applies softmax.*from_logits=False") as record:
            probs.fit(x, y, epochs=1, verbose=0)
        assert "Dense 'dense_1'" in str(record[0].message)
        assert record[0].filename == __file__  # points at the user's fit call


def test_softmax_output_with_from_logits_false_trains_without_warning(backend):
    x, y = blobs(96)  # 6 full batches of 16
    fit = dict(epochs=8, batch_size=16, verbose=0)
    loss = wf.losses.get("softmax_cross_entropy", from_logits=False)
    probs = wf.Sequential([Dense(16, activation="relu"), Dense(3, activation="softmax")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = probs.fit(x, y, loss=loss, optimizer=wf.optimizers.adam(0.02), **fit)
    logits = wf.Sequential([Dense(16, activation="relu"), Dense(3)])
    expected = logits.fit(x, y, optimizer=wf.optimizers.adam(0.02), **fit)
    accuracy = got.history["accuracy"][-1]
    assert accuracy > 0.85 and accuracy == pytest.approx(expected.history["accuracy"][-1], abs=0.1)
    assert got.history["loss"][-1] < got.history["loss"][0] / 2
    out = wf.to_numpy(probs.predict(x))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_binary_labels_in_minus_one_one_suggest_the_mapping(backend):
    x, y = blobs(16)
    signs = np.where(y > 0, 1.0, -1.0).astype(np.float32)
    model = wf.Sequential([Dense(1)])
    with pytest.raises(
        ValueError,
        match=r"expects labels in \[0, 1\], got values in \[-1\.0, 1\.0\] \(labels in \{-1, 1\}\? "
        r"map them with \(y \+ 1\) / 2\)",
    ):
        model.fit(x, signs, loss="binary_cross_entropy", verbose=0)
    with pytest.raises(ValueError, match=r"got values in \[0\.0, 2\.0\]$"):
        model.fit(x, signs + 1, loss="binary_cross_entropy", verbose=0)


def test_values_that_overflow_the_model_dtype(backend):
    x, y = blobs(16)
    big = x.astype(np.float64)
    big[5, 2] = 1e39
    with pytest.raises(
        ValueError,
        match=r"x holds values up to 1e\+39, which overflow the model dtype float32 "
        r"\(max 3\.4e\+38\); rescale the data or use a float64 model",
    ):
        mlp().fit(big, y, verbose=0)
    with pytest.raises(ValueError, match=r"x_val holds values up to 1e\+39.*overflow"):
        mlp().fit(x, y, validation_data=(big, y), verbose=0)


def test_nan_in_a_jax_array_names_its_index(jax):
    x, y = blobs(16)
    with wf.use_backend("jax") as jb:
        bad = jb.asarray(x).at[7, 3].set(np.nan)
        with pytest.raises(
            ValueError, match=r"x contains NaN or inf \(first at index \(7, 3\): nan\)"
        ):
            mlp().fit(bad, y, verbose=0)
        with pytest.raises(ValueError, match=r"y contains NaN or inf \(first at index \(2, 0\)"):
            labels = jb.asarray(np.eye(3, dtype=np.float32)[y]).at[2, 0].set(np.inf)
            mlp().fit(x, labels, verbose=0)


# ----------------------------------------------------------------------------- backends
def test_unknown_backend_in_to_backend_lists_the_names(backend):
    model = mlp().build((None, 5))
    with pytest.raises(ValueError, match=r"Unknown backend 'jaxx'\. Expected one of \[.*'numpy'"):
        model.to_backend("jaxx")
    with pytest.raises(TypeError, match=r"a backend is a name such as 'numpy' or a Backend, got 3"):
        model.to_backend(3)
    assert model.backend is backend  # nothing moved


def test_broken_registration_is_left_out_and_named(monkeypatch):
    backends = wf.backends
    active = wf.get_backend()  # resolved before the registry is swapped for a copy
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    monkeypatch.setattr(backends, "_instances", dict(backends._instances))
    monkeypatch.setattr(backends, "_types", dict(backends._types))
    backends.register("broken", "no.such.module:Cls")
    names = wf.available()
    assert "broken" not in names and "numpy" in names
    with pytest.raises(
        wf.BackendUnavailableError,
        match=r"backend 'broken' is registered as 'no\.such\.module:Cls', which cannot be loaded: "
        r"ModuleNotFoundError",
    ):
        wf.set_backend("broken")
    assert wf.get_backend() is active
    backends.register("not_a_backend", "wframe.tree:flatten")
    with pytest.raises(wf.BackendUnavailableError, match="not a subclass of"):
        with wf.use_backend("not_a_backend"):
            pass  # pragma: no cover
    with pytest.raises(wf.BackendUnavailableError, match=r"'wframe\.tree:Missing'.*AttributeError"):
        backends.register("missing_attr", "wframe.tree:Missing")
        mlp().build((None, 5)).to_backend("missing_attr")
    with pytest.raises(ValueError, match="backend name must be a non-empty str"):
        backends.register("", "a:b")


def test_mixing_arrays_of_two_backends_names_both(jax):
    with wf.use_backend("jax") as jb:
        on_jax = jb.asarray(np.zeros(2, np.float32))
    with pytest.raises(
        TypeError, match=r"arrays of two backends are mixed: 'numpy' and 'jax'; move them"
    ):
        wf.backend_of(np.zeros(2), on_jax)
    with pytest.raises(TypeError, match=r"mixed: 'jax' and 'numpy'.*to_backend\('jax'\)"):
        wf.backend_of(on_jax, on_jax, np.zeros(2))
    with pytest.raises(TypeError, match=r"expected an array, got list \[1, 2\]"):
        wf.backend_of([1, 2])
    with pytest.raises(TypeError, match="backend_of needs at least one array"):
        wf.backend_of()


# ----------------------------------------------------------------------------- params setter
def _params_copy(model):
    return {name: dict(layer) for name, layer in model.params.items()}


def test_params_setter_refuses_wrong_dtype_names_and_types(backend):
    model = mlp().build((None, 5))
    params = model.params
    wrong = _params_copy(model)
    wrong["dense_0"]["b"] = backend.xp.zeros((16,), dtype=backend.xp.int32)
    with pytest.raises(
        ValueError,
        match=r"params 'dense_0/b' must have shape \(16,\) and dtype float32, got shape \(16,\) "
        r"and dtype int32",
    ):
        model.params = wrong
    renamed = _params_copy(model)
    renamed["dense_0"]["kernel"] = renamed["dense_0"].pop("W")
    with pytest.raises(
        ValueError,
        match=r"params names differ: missing \['dense_0/W'\], unexpected "
        r"\['dense_0/kernel'\]",
    ):
        model.params = renamed
    extra = _params_copy(model)
    extra["dense_9"] = dict(extra["dense_1"])
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['dense_9/W', 'dense_9/b'\]"):
        model.params = extra
    with pytest.raises(TypeError, match="params must be a dict like model.params, got list"):
        model.params = list(params.values())
    leaf = _params_copy(model)
    leaf["dense_1"]["b"] = 0.5
    with pytest.raises(ValueError, match=r"'dense_1/b' must have shape \(3,\).*got float"):
        model.params = leaf
    with pytest.raises(ValueError, match=r"state names differ: missing \[\], unexpected \['x'\]"):
        model.state = {"x": backend.xp.zeros(2)}
    assert model.params is params  # every refusal left the params alone
    assert [name for name, _ in flatten(model.params)] == [
        "dense_0/W",
        "dense_0/b",
        "dense_1/W",
        "dense_1/b",
    ]


def test_unbuilt_model_says_how_to_build(backend):
    for touch in (
        lambda m: m.params,
        lambda m: setattr(m, "params", {}),
        lambda m: m.summary(),
        lambda m: wf.make_train_step(m, "mse", "sgd"),
    ):
        with pytest.raises(RuntimeError, match=re.escape("call model.build((None, features))")):
            touch(mlp())


# ----------------------------------------------------------------------------- composition
def test_residual_whose_layer_changes_the_shape(backend):
    with pytest.raises(
        ValueError,
        match=r"Residual 'residual_0': the wrapped Sequential maps inputs of shape \(None, 4\) "
        r"to \(None, 2\); y = x \+ f\(x\) needs f to keep the shape",
    ):
        wf.Sequential([Residual([Dense(4), Dense(2)])]).build((None, 4))
    with pytest.raises(
        ValueError,
        match=r"wrapped Conv2D maps .*\(None, 5, 5, 1\) to "
        r"\(None, 3, 3, 1\)",
    ):
        wf.Sequential([Residual(Conv2D(1, 3))]).build((None, 5, 5, 1))
    with pytest.raises(TypeError, match="Residual wraps a wframe Layer or a list of them, got int"):
        Residual(3)


def test_concatenate_branches_that_do_not_line_up(backend):
    with pytest.raises(
        ValueError,
        match=r"Concatenate 'concatenate_0': branch outputs \[\(None, 3, 3, 2\), "
        r"\(None, 5, 5, 2\)\] must agree on every axis but -1",
    ):
        wf.Sequential([Concatenate([Conv2D(2, 3), Conv2D(2, 1)])]).build((None, 5, 5, 1))
    with pytest.raises(ValueError, match=r"axis=0 must name a non-batch axis"):
        wf.Sequential([Concatenate([Dense(3), Dense(2)], axis=0)]).build((None, 4))
    with pytest.raises(ValueError, match=r"Concatenate 'concatenate_0' has no branches"):
        wf.Sequential([Concatenate([])]).build((None, 4))
    with pytest.raises(ValueError, match=r"must agree"):
        wf.Sequential([Concatenate([Flatten(), Conv2D(2, 1)])]).build((None, 5, 5, 1))


def test_two_different_layers_with_the_same_name():
    with pytest.raises(
        ValueError,
        match=r"Sequential: two different layers are named 'dense_0' \(items 0 and 1\); give "
        r"them distinct names, or pass the same instance twice to share its params",
    ):
        wf.Sequential([Dense(3), Dense(3, name="dense_0")])
    with pytest.raises(ValueError, match=r"Concatenate: two different layers are named 'b'"):
        Concatenate([Dense(3, name="b"), Dense(2, name="b")])
    shared = Dense(3, name="b")
    model = wf.Sequential([Dense(3), shared, shared])  # the same instance twice is sharing
    assert [layer.name for layer in model.layers] == ["dense_0", "b", "b"]


def test_built_model_nested_on_other_inputs(backend):
    inner = mlp().build((None, 5))
    with pytest.raises(
        ValueError,
        match=r"was built for inputs \(None, 5\) in float32, but is used on inputs \(None, 4\) "
        r"in float32; nest an unbuilt model instead",
    ):
        wf.Sequential([inner, Dense(2)]).build((None, 4))


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: wf.layers.Dense(3, use_bias="no"), "use_bias"),
        (lambda: wf.layers.Conv2D(3, 3, use_bias=1), "use_bias"),
        (lambda: wf.layers.Conv1D(3, 3, use_bias="False"), "use_bias"),
        (lambda: wf.layers.LSTM(4, return_sequences="False"), "return_sequences"),
        (lambda: wf.layers.LSTM(4, unit_forget_bias=0), "unit_forget_bias"),
        (lambda: wf.layers.GRU(4, return_sequences="yes"), "return_sequences"),
        (lambda: wf.layers.SimpleRNN(4, return_sequences=[]), "return_sequences"),
        (lambda: wf.layers.BatchNorm(center="yes"), "center"),
        (lambda: wf.layers.LayerNorm(scale=None), "scale"),
    ],
)
def test_a_bool_option_takes_only_true_or_false(make, field):
    """A truthy string (``use_bias="no"``) was taken as True, in code and from a file."""
    with pytest.raises(ValueError, match=rf"{field} must be True or False, got"):
        make()


def test_a_model_file_with_a_non_bool_option_is_refused(tmp_path):
    model = wf.Sequential([wf.layers.Dense(3), wf.layers.Dense(2)], seed=0).build((None, 4))
    wf.save_model(model, tmp_path / "m.safetensors")
    tensors, meta = wf.io.read_safetensors(tmp_path / "m.safetensors")
    config = json.loads(meta["config"])
    config["config"]["layers"][0]["config"]["use_bias"] = "maybe"
    meta = {k: v for k, v in meta.items() if k != "checksums"} | {"config": json.dumps(config)}
    wf.io.write_safetensors(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(wf.WeightsFileError, match="use_bias must be True or False"):
        wf.load_model(tmp_path / "bad.safetensors")


def test_a_layer_is_not_an_activation(tmp_path):
    """It built, and failed at the first call deep in activations.apply; from a file too."""
    with pytest.raises(TypeError, match="activation must be a name or a callable, got Dense"):
        wf.layers.Dense(4, activation=wf.layers.Dense(3))
    model = wf.Sequential([wf.layers.Dense(3), wf.layers.Dense(2)], seed=0).build((None, 4))
    wf.save_model(model, tmp_path / "m.safetensors")
    tensors, meta = wf.io.read_safetensors(tmp_path / "m.safetensors")
    config = json.loads(meta["config"])
    dense = {"class": "Dense", "config": {"units": 3}}
    config["config"]["layers"][0]["config"]["activation"] = dense
    meta = {k: v for k, v in meta.items() if k != "checksums"} | {"config": json.dumps(config)}
    wf.io.write_safetensors(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(wf.WeightsFileError, match="activation must be a name"):
        wf.load_model(tmp_path / "bad.safetensors")


def test_keras_layer_options_wframe_does_not_hold():
    """channels_last is what every layer does (accepted, dropped: configs stay as they were);
    channels_first and a layer's input_shape / input_dim say what to do instead."""
    conv = wf.layers.Conv2D(3, 3, data_format="channels_last")
    assert conv == wf.layers.Conv2D(3, 3)
    with pytest.raises(TypeError, match=r"data_format='channels_first'.*transpose"):
        wf.layers.Conv2D(3, 3, data_format="channels_first")
    for key, value in (("input_shape", (4,)), ("input_dim", 4)):
        with pytest.raises(TypeError, match=rf"Dense: {key}= .*wf\.Input\(shape\) first"):
            wf.layers.Dense(3, **{key: value})
    assert wf.layers.Embedding(input_dim=5, output_dim=2).input_dim == 5  # its own field
    assert wf.layers.GRU(4, reset_after=True) == wf.layers.GRU(4)  # the GRU wframe has
    with pytest.raises(TypeError, match=r"GRU: reset_after=False is not supported"):
        wf.layers.GRU(4, reset_after=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'reset_after'"):
        wf.layers.LSTM(4, reset_after=True)  # not an LSTM's option, in Keras either
