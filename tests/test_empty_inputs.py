"""Inputs that used to pass silently: complex arrays (a cast dropped their imaginary parts),
evaluate on no examples (it returned ``{}``) and empty validation data (it logged nothing) are
refused, naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf

X = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
Y = X[:, :2] * 2


def _model():
    model = wf.Sequential([wf.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.build((None, 3))
    return model


def _on(backend, a):
    """``a`` as an array of ``backend`` (its own complex arrays must be refused too)."""
    return backend.xp.asarray(a)


def test_complex_inputs_are_refused_naming_the_argument(backend):
    model, z = _model(), (X + 1j * X).astype(np.complex64)
    with pytest.raises(TypeError, match=r"^x holds complex numbers \(dtype complex64\)"):
        model.fit(z, Y, verbose=0)
    with pytest.raises(TypeError, match="^x holds complex numbers"):
        model.fit(_on(backend, z), Y, verbose=0)
    with pytest.raises(TypeError, match="^y holds complex numbers"):
        model.fit(X, Y + 0j, verbose=0)
    with pytest.raises(TypeError, match="^x_val holds complex numbers"):
        model.fit(X, Y, validation_data=(z, Y), verbose=0)
    with pytest.raises(TypeError, match="^sample_weight holds complex numbers"):
        model.fit(X, Y, sample_weight=np.ones(8, np.complex64), verbose=0)
    with pytest.raises(TypeError, match="^x holds complex numbers"):
        model.predict(z)
    with pytest.raises(TypeError, match="^x holds complex numbers"):
        model.predict(_on(backend, z))
    with pytest.raises(TypeError, match="^x holds complex numbers"):
        model.evaluate(z, Y)
    with pytest.raises(TypeError, match="^y holds complex numbers"):
        model.evaluate(X, Y.astype(np.complex128))
    assert model.steps == 0


def test_complex_torch_tensors_are_refused():
    torch = pytest.importorskip("torch")
    with wf.use_backend("numpy"):
        with pytest.raises(TypeError, match="^x holds complex numbers"):
            _model().predict(torch.zeros((2, 3), dtype=torch.complex64))


def test_evaluate_on_no_examples_is_refused(backend):
    model = _model()
    with pytest.raises(ValueError, match=r"^evaluate: x has no examples \(0 rows\)"):
        model.evaluate(X[:0], Y[:0])
    with pytest.raises(ValueError, match="^no examples to evaluate"):
        model.evaluate([(X[:0], Y[:0])])  # an iterable of empty batches
    assert model.predict(X[:0]).shape == (0, 2)  # predict on nothing is nothing


def test_empty_validation_data_is_refused(backend):
    model = _model()
    before = wf.to_numpy(model.params["dense_0"]["W"]).copy()
    with pytest.raises(ValueError, match=r"^fit: validation_data has no examples \(0 rows\)"):
        model.fit(X, Y, validation_data=(X[:0], Y[:0]), verbose=0)
    with pytest.raises(ValueError, match="^fit: validation_data has no examples"):
        model.fit([(X, Y)], validation_data=(X[:0], Y[:0]), verbose=0)  # batches and arrays
    assert model.steps == 0
    assert np.array_equal(wf.to_numpy(model.params["dense_0"]["W"]), before)


def test_empty_validation_batches_are_refused_when_evaluated():
    # Batches are only seen when they are evaluated, after the first epoch (any backend).
    with wf.use_backend("numpy"):
        with pytest.raises(ValueError, match="fit's validation_data\\) hold 0 rows"):
            _model().fit(X, Y, validation_data=[(X[:0], Y[:0])], verbose=0)
