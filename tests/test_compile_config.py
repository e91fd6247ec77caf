"""A model file keeps the loss and metrics the model was compiled with (Keras'
``compile_config``): ``load_model`` gives them back, so the loaded model evaluates as the saved
one did; a user's function is named as missing; hostile entries are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

import wframe as wf
from wframe.saving import io
from wframe.saving.compile_config import KEY
from wframe.saving.io import WeightsFileError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 6)).astype("float32")
Y = RNG.integers(0, 3, 48)


def _model(last_activation=None, units=3):
    layers = [wf.layers.Dense(8, activation="relu"), wf.layers.Dense(units, last_activation)]
    return wf.Sequential(layers, seed=0)


def _saved(model, tmp_path, name="m.safetensors"):
    path = tmp_path / name
    wf.save_model(model, path)
    return path


def _rewrite(path, entry):
    """The file with its ``"compile"`` metadata replaced by the text ``entry``."""
    tensors, meta = io.read_safetensors(path)
    meta = {k: v for k, v in meta.items() if k != "checksums"}
    meta[KEY] = entry
    io.write_safetensors(path, tensors, meta)
    return path


@pytest.mark.parametrize(
    ("activation", "loss", "metrics", "labels"),
    [
        ("softmax", "sparse_categorical_crossentropy", ["accuracy"], Y),
        ("softmax", "categorical_crossentropy", ["accuracy", "auc"], np.eye(3)[Y]),
        (None, wf.losses.SparseCategoricalCrossentropy(from_logits=True), None, Y),
        ("sigmoid", "binary_crossentropy", ["AUC", wf.metrics.Precision(thresholds=0.3)], None),
        (None, wf.losses.Huber(delta=0.5), ["mae", wf.metrics.RootMeanSquaredError()], None),
    ],
)
def test_a_loaded_model_evaluates_as_the_saved_one(
    backend, tmp_path, activation, loss, metrics, labels
):
    units = 1 if labels is None else 3
    y = (Y == 1).astype("float32")[:, None] if labels is None else labels
    model = _model(activation, units)
    model.compile("adam", loss, metrics=metrics)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    loaded = wf.load_model(_saved(model, tmp_path))
    assert loaded.loss == model.loss
    assert loaded.evaluate(X, y) == model.evaluate(X, y)
    assert loaded.optimizer_name == "adam" and loaded.steps == model.steps


def test_the_best_checkpoint_reloads_with_its_loss(tmp_path):
    """ModelCheckpoint's best file, loaded, evaluates to the validation logs it was kept for
    (before, the loaded model took the default loss, on logits, for probabilities)."""
    model = _model("softmax")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    path = tmp_path / "best.safetensors"
    best = wf.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True)
    h = model.fit(X, Y, epochs=3, validation_data=(X, Y), callbacks=[best], verbose=0)
    logs = wf.load_model(path).evaluate(X, Y)
    assert logs["loss"] == pytest.approx(min(h.history["val_loss"]), rel=1e-12)


def test_several_outputs_keep_their_losses_weights_and_metrics(tmp_path):
    inp = wf.Input((6,))
    h = wf.layers.Dense(8, activation="relu")(inp)
    a = wf.layers.Dense(3, name="cls")(h)
    b = wf.layers.Dense(1, name="reg")(h)
    model = wf.Model(inp, [a, b])
    model.compile(
        "sgd",
        {"cls": "softmax_cross_entropy", "reg": "mse"},
        loss_weights={"cls": 1.0, "reg": 0.25},
        metrics={"cls": ["accuracy"], "reg": ["mae"]},
    )
    y = {"cls": Y, "reg": X[:, :1]}
    loaded = wf.load_model(_saved(model, tmp_path))
    assert loaded.loss == model.loss
    assert loaded.evaluate(X, y) == model.evaluate(X, y)


def test_a_users_loss_function_is_named_missing_and_compile_false_skips(tmp_path):
    def my_loss(y_true, y_pred):
        return (y_true - y_pred) ** 2

    model = _model(units=1)
    model.compile("adam", my_loss, metrics=["mae"])
    model.build((None, 6))
    path = _saved(model, tmp_path)
    with pytest.warns(UserWarning, match="its loss given as a function.*model.compile"):
        loaded = wf.load_model(path)
    assert loaded.loss == wf.losses.get("softmax_cross_entropy")
    assert loaded.compiled_metrics is None  # chosen for the missing loss: not restored
    plain = wf.load_model(path, compile=False)  # no warning (pytest's are errors)
    assert plain.compiled_metrics is None


def test_several_outputs_with_a_users_loss_still_load(tmp_path):
    """Their metrics by output name do not fit the one default loss: nothing is restored,
    with the warning, and the file loads."""
    inp = wf.Input((6,))
    h = wf.layers.Dense(4)(inp)
    model = wf.Model(inp, [wf.layers.Dense(3, name="a")(h), wf.layers.Dense(1, name="b")(h)])
    model.compile(
        "adam",
        {"a": "softmax_cross_entropy", "b": lambda t, p: (t - p) ** 2},
        metrics={"a": ["accuracy"], "b": ["mae"]},
    )
    path = _saved(model, tmp_path)
    with pytest.warns(UserWarning, match="its loss given as a function"):
        loaded = wf.load_model(path)
    assert loaded.compiled_metrics is None
    np.testing.assert_array_equal(*(wf.to_numpy(m.predict(X)[1]) for m in (model, loaded)))


def test_a_users_metric_function_keeps_the_loss(tmp_path):
    def my_metric(y_true, y_pred):
        return abs(y_true - y_pred)

    model = _model(units=1)
    model.compile("adam", "mse", metrics=["mae", my_metric])
    model.build((None, 6))
    with pytest.warns(UserWarning, match="its metrics given as a function.*metrics \\(the loss"):
        loaded = wf.load_model(_saved(model, tmp_path))
    assert loaded.loss == wf.losses.get("mse") and loaded.compiled_metrics is None


def test_a_file_without_the_entry_loads_as_before(tmp_path):
    model = _model("softmax")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.build((None, 6))
    path = _saved(model, tmp_path)
    tensors, meta = io.read_safetensors(path)
    meta = {k: v for k, v in meta.items() if k not in ("checksums", KEY)}
    io.write_safetensors(path, tensors, meta)  # an older wframe's file
    assert wf.load_model(path).loss == wf.losses.get("softmax_cross_entropy")


def _entry(loss=None, metrics=None, unstored=()):
    return json.dumps({"loss": loss, "metrics": metrics, "unstored": list(unstored)})


_MSE = {"class": "MeanSquaredError", "config": {"metric": None}}
_ONE_OUTPUT = {"class": "Outputs", "config": {"losses": [_MSE], "names": ["a"], "weights": [1]}}


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ("{not json", "malformed"),
        ('{"loss": null}', "'loss', 'metrics' and 'unstored'"),
        (_entry(unstored=["optimizer"]), "'unstored' must list"),
        (_entry({"class": "os.system", "config": {}}), "'os.system' is not one of the built-in"),
        (_entry({"class": "Dense", "config": {"units": 3}}), "'Dense' is not one of"),
        (_entry({"class": "CallableLoss", "config": {}}), "not one of the built-in"),
        (_entry({"class": "Huber", "config": {"gamma": 1}}), "Huber has no option 'gamma'"),
        (_entry({"class": "Huber", "config": {"delta": {"class": "Dense"}}}), "plain value"),
        (_entry(_MSE, ["no_such_metric"]), "Unknown metric 'no_such_metric'"),
        (_entry(_MSE, [[[["mae"]]]]), "nested deeper"),
        (_entry(_MSE, {"by_output": {"other": ["mae"]}}), "do not fit the model"),
        (_entry(_MSE, [{"class": "AUC", "config": {"num_thresholds": "many"}}]), "AUC"),
        (_entry(_ONE_OUTPUT), "do not fit the model"),
    ],
)
def test_a_malformed_or_hostile_entry_is_refused_naming_the_file(tmp_path, entry, match):
    model = _model(units=1)
    model.compile("adam", "mse")
    model.build((None, 6))
    path = _rewrite(_saved(model, tmp_path), entry)
    with pytest.raises(WeightsFileError, match=match) as caught:
        wf.load_model(path)
    assert str(path) in str(caught.value) and "compile=False" in str(caught.value)
    assert wf.load_model(path, compile=False).loss == wf.losses.get("softmax_cross_entropy")
