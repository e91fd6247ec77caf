"""The three kinds of file and who reads them: weights (arrays), model (architecture, arrays,
optimizer state, counters), checkpoint (a model file plus where fit goes on)."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.saving.io import WeightsFileError, read_metadata
from wframe.tree import flatten


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 5)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def _model(seed=0):
    layers = [wf.layers.Dense(8, activation="relu"), wf.layers.Dropout(0.2), wf.layers.Dense(2)]
    return wf.Sequential(layers, seed=seed).build((None, 5))


def _host(tree):
    return {k: np.asarray(wf.to_numpy(a)) for k, a in flatten(tree)}


def _same(a, b):
    x, y = _host(a), _host(b)
    assert x.keys() == y.keys()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_each_file_says_its_kind(backend, tmp_path):
    model = _model()
    model.save_weights(tmp_path / "w.safetensors")
    wf.save_model(model, tmp_path / "m.safetensors")
    model.save_checkpoint(tmp_path / "c.safetensors")
    kinds = {k: read_metadata(tmp_path / f"{k[0]}.safetensors") for k in ("w", "m", "c")}
    assert [kinds[k]["kind"] for k in ("w", "m", "c")] == ["weights", "model", "checkpoint"]
    assert "config" not in kinds["w"] and "config" in kinds["m"] and "config" in kinds["c"]
    with pytest.raises(WeightsFileError, match="holds weights only.*load_weights"):
        wf.load_model(tmp_path / "w.safetensors")
    for name in ("m", "c"):  # a checkpoint of a describable model rebuilds too
        loaded = wf.load_model(tmp_path / f"{name}.safetensors")
        assert _host(loaded.params).keys() == _host(model.params).keys()


def test_a_model_file_goes_on_training_where_it_stopped(backend, tmp_path):
    """Keras' model.save keeps the optimizer's state: so does save_model, with the counters,
    so fit after load_model continues exactly as without the file."""
    x, y = _data()
    options = {"epochs": 1, "batch_size": 8, "verbose": 0}
    straight = _model()
    straight.compile(optimizer="adam", loss="softmax_cross_entropy")
    straight.fit(x, y, **options)
    wf.save_model(straight, tmp_path / "m.safetensors")
    loaded = wf.load_model(tmp_path / "m.safetensors")
    assert loaded.optimizer_name == "adam" and loaded.steps == straight.steps == 6
    _same(loaded.opt_state, straight.opt_state)
    loaded.compile(optimizer=None, loss="softmax_cross_entropy")  # None: keep the restored one
    straight.fit(x, y, **options)
    loaded.fit(x, y, **options)
    tol = 0 if backend.name == "numpy" else 1e-6
    for k, a in _host(straight.params).items():
        np.testing.assert_allclose(_host(loaded.params)[k], a, rtol=tol, atol=tol)


def test_an_object_optimizer_state_waits_for_load_checkpoint(tmp_path):
    x, y = _data()
    with wf.use_backend("numpy"):
        model = _model()
        optimizer = wf.optimizers.adam(1e-2)
        model.compile(optimizer=optimizer, loss="softmax_cross_entropy")
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        wf.save_model(model, tmp_path / "m.safetensors")
        loaded = wf.load_model(tmp_path / "m.safetensors")  # the weights; no optimizer
        assert loaded.optimizer is None
        _same(loaded.params, model.params)
        loaded.compile(optimizer=optimizer)
        loaded.load_checkpoint(tmp_path / "m.safetensors")
        _same(loaded.opt_state, model.opt_state)
