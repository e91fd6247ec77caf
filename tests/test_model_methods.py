"""The model methods a Keras or PyTorch user reaches for, with Keras 3's semantics: the weights
as lists, the one-batch calls, ``model(x, training=True)``, ``Sequential.add``/``pop``,
``copy.deepcopy`` and ``pickle``."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import wframe as wf
from wframe.layers import BatchNorm, Conv2D, Dense, Dropout

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 5)).astype("float32")
Y = RNG.integers(0, 3, size=12)


def _host(a):
    return wf.backends.to_numpy(a)


def _same(a, b) -> bool:
    return all(np.array_equal(_host(u), _host(v)) for u, v in zip(a, b, strict=True))


def _model(seed: int = 0, metrics=()) -> wf.Sequential:
    """The model most tests share (one architecture: JAX compiles each program once)."""
    layers = [Dense(4, activation="relu"), Dropout(0.25), BatchNorm(), Dense(3)]
    return wf.Sequential(layers, seed=seed).compile("adam", metrics=list(metrics))


# ----------------------------------------------------------------------------- weights
def test_weights_in_keras_order_with_trainable_split(backend):
    model = _model()
    assert model.weights == model.get_weights() == model.weight_names() == []  # as Keras
    model.build((None, 5))
    model.freeze("dense_0")
    names = [
        "dense_0/W",
        "dense_0/b",
        "batch_norm_0/gamma",
        "batch_norm_0/beta",
        "batch_norm_0/mean",  # Keras: gamma, beta, moving_mean, moving_variance
        "batch_norm_0/var",
        "dense_1/W",
        "dense_1/b",
    ]
    assert model.weight_names() == names
    assert [tuple(w.shape) for w in model.weights] == [
        (5, 4), (4,), (4,), (4,), (4,), (4,), (4, 3), (3,)
    ]  # fmt: skip
    assert all(wf.backends.backend_of(w) is backend for w in model.weights)
    # Frozen params and the BatchNorm statistics are non-trainable, each list in layer order.
    assert model.trainable_weights[0] is model.params["batch_norm_0"]["gamma"]
    assert len(model.trainable_weights) == 4
    non_trainable = model.non_trainable_weights
    assert non_trainable[0] is model.params["dense_0"]["W"]
    assert non_trainable[2] is model.state["batch_norm_0"]["mean"]
    # Keras' count_params counts every weight, the moving statistics included.
    assert model.count_params() == (5 * 4 + 4) + 4 * 4 + (4 * 3 + 3) == 55
    text = model.summary(print_fn=lambda s: None)
    assert "Total params: 55" in text and "Trainable params: 23; frozen params: 24" in text

    got = model.get_weights()
    assert all(isinstance(a, np.ndarray) for a in got)
    assert _same(got, model.weights)
    got[0][:] = 7.0  # copies: the model is untouched
    assert not np.any(_host(model.params["dense_0"]["W"]) == 7.0)


def test_set_weights_round_trip_and_checks(backend):
    model, other = _model(seed=0), _model(seed=1).build((None, 5))
    model.train_on_batch(X, Y)
    values = other.get_weights()
    model.set_weights(values)
    assert _same(model.weights, other.weights)
    # As Keras: only the weights change, the optimizer state and the counters stay.
    assert model.steps == 1 and int(_host(model.opt_state.count)) == 1
    values[0][:] = 9.0  # the list stays the caller's
    assert not np.any(_host(model.params["dense_0"]["W"]) == 9.0)
    model.set_weights(other.weights)  # arrays of the backend are taken too
    assert _same(model.weights, other.weights)

    with pytest.raises(TypeError, match="takes a list of arrays"):
        model.set_weights(np.zeros(3))
    with pytest.raises(ValueError, match="has 8 weights .*got a list of 7"):
        model.set_weights(values[:-1])
    bad = list(values)
    bad[6] = np.zeros((3, 4), "float32")
    with pytest.raises(ValueError, match=r"entry 6 \(param 'dense_1/W'.*shape \(4, 3\)"):
        model.set_weights(bad)
    bad[6] = values[6].astype("float64")
    with pytest.raises(ValueError, match=r"dtype float32, got .*float64; pass \.astype"):
        model.set_weights(bad)
    with pytest.raises(RuntimeError, match="no params yet"):
        _model().set_weights(values)


# ----------------------------------------------------------------------------- one batch
def test_train_on_batch_is_one_fit_step(backend):
    stepped, fitted = _model(), _model()
    loss = stepped.train_on_batch(X, Y)
    history = fitted.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    assert isinstance(loss, float) and loss == history.history["loss"][0]
    assert _same(stepped.weights, fitted.weights)  # same step, dropout masks included
    assert (stepped.steps, stepped.epochs, stepped.history) == (1, 0, None)
    # The optimizer state carries over: a second step matches fit's second epoch.
    stepped.train_on_batch(X, Y)
    fitted.fit(X, Y, batch_size=len(X), epochs=2, initial_epoch=1, shuffle=False, verbose=0)
    assert _same(stepped.weights, fitted.weights) and stepped.steps == 2


def test_train_and_test_on_batch_return_keras_forms(backend):
    model = _model(metrics=["accuracy"])
    values = model.train_on_batch(X, Y)
    assert isinstance(values, list) and len(values) == 2 and 0 <= values[1] <= 1
    logs = model.train_on_batch(X, Y, return_dict=True)
    assert list(logs) == ["loss", "accuracy"]
    assert model.test_on_batch(X, Y) == list(model.evaluate(X, Y).values())
    assert model.test_on_batch(X, Y, return_dict=True) == model.evaluate(X, Y)
    out = model.predict_on_batch(X)
    assert wf.backends.backend_of(out) is backend
    np.testing.assert_array_equal(_host(out), _host(model.predict(X)))


def test_train_on_batch_weights_match_fit(backend):
    stepped, fitted = _model(), _model()
    weights = np.linspace(0.5, 2.0, len(X)).astype("float32")
    classes = {0: 2.0, 2: 0.5}
    loss = stepped.train_on_batch(X, Y, sample_weight=weights, class_weight=classes)
    history = fitted.fit(
        X, Y, batch_size=len(X), shuffle=False, verbose=0, sample_weight=weights,
        class_weight=classes,
    )  # fmt: skip
    assert loss == history.history["loss"][0]
    assert _same(stepped.weights, fitted.weights)
    unweighted = stepped.test_on_batch(X, Y)
    weighted = stepped.test_on_batch(X, Y, sample_weight=weights)
    assert weighted == pytest.approx(stepped.evaluate(X, Y, sample_weight=weights)["loss"])
    assert weighted != pytest.approx(unweighted)


def test_train_on_batch_keeps_the_last_finite_weights(backend):
    model = wf.Sequential([Dense(3)])
    model.compile(wf.optimizers.sgd(1e30), "mse", metrics=["mae"])
    y = np.ones((len(X), 3), "float32")
    model.train_on_batch(X, y)  # finite, but the weights are now huge
    before = model.get_weights()
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.warns(RuntimeWarning, match="NaN or inf at step 2"):
            values = model.train_on_batch(X, y)
    assert len(values) == 2 and all(np.isnan(v) for v in values)
    assert _same(model.get_weights(), before) and model.steps == 1


# ----------------------------------------------------------------------------- training mode
def test_call_in_training_mode(backend):
    model, again = _model().build((None, 5)), _model().build((None, 5))
    state = model.state
    predicted = _host(model.predict(X))
    np.testing.assert_array_equal(_host(model(X)), predicted)
    np.testing.assert_array_equal(_host(model(X, training=False)), predicted)
    first, second = _host(model(X, training=True)), _host(model(X, training=True))
    assert not np.allclose(first, predicted) and not np.allclose(first, second)  # new masks
    assert model.state is state  # the moving statistics stay (documented: unlike Keras)
    np.testing.assert_array_equal(_host(again(X, training=True)), first)  # a run repeats
    key = wf.random.array_key(3, 0, backend)
    np.testing.assert_array_equal(
        _host(model.call_training(X, key=key)), _host(model.call_training(X, key=key))
    )


def test_training_mode_normalizes_with_the_batch_statistics(backend):
    model = wf.Sequential([BatchNorm()]).build((None, 5))
    shifted = X * 3.0 + 10.0
    out = _host(model(shifted, training=True))
    mean, var = shifted.mean(0), shifted.var(0)
    eps = model.layers[0].epsilon
    np.testing.assert_allclose(out, (shifted - mean) / np.sqrt(var + eps), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- add / pop
def test_sequential_add_and_pop(backend):
    model = wf.Sequential(seed=0)
    for layer in _model().layers:  # unbuilt: added as the constructor takes them
        model.add(layer)
    assert [layer.name for layer in model.layers] == [
        "dense_0", "dropout_0", "batch_norm_0", "dense_1"
    ]  # fmt: skip
    model.compile("adam", metrics=[])
    reference = _model()
    assert model.train_on_batch(X, Y) == reference.train_on_batch(X, Y)
    kept = model.get_weights()
    steps, frozen = model.steps, model.freeze("dense_0").frozen

    model.add(Dense(2, name="head"))  # built: built again, the old layers keep their weights
    assert model.output_shape == (None, 2) and model.output_names == ("head",)
    assert _same(model.get_weights()[:8], kept) and len(model.weights) == 10
    assert model.steps == steps and model.frozen == frozen and model.opt_state is None
    assert _host(model.predict(X)).shape == (len(X), 2)

    popped = model.pop()
    assert popped.name == "head" and model.output_shape == (None, 3)
    assert _same(model.get_weights(), kept)

    with pytest.raises(ValueError):  # a 2-D conv cannot follow a Dense: nothing changes
        model.add(Conv2D(2, 3))
    assert len(model.layers) == 4 and _same(model.get_weights(), kept)
    with pytest.raises(ValueError, match="two different layers are named 'dense_0'"):
        model.add(Dense(2, name="dense_0"))
    with pytest.raises(TypeError, match="takes a wframe Layer"):
        model.add("dense")
    with pytest.raises(TypeError, match="wf.Input"):
        model.add(wf.Input((5,)))
    for _ in range(4):
        model.pop()
    assert not model.built and model.layers == ()
    with pytest.raises(TypeError, match="no layers"):
        model.pop()


# ----------------------------------------------------------------------------- copies
def test_deepcopy_and_pickle_round_trip_exactly(backend):
    model = _model()
    model.build((None, 5)).freeze("dense_0/b")
    model.fit(X, Y, epochs=2, batch_size=6, verbose=0)
    deep = copy.deepcopy(model)
    assert deep.optimizer is model.optimizer  # a stateless (init, update) pair: shared
    assert deep.opt_state is not model.opt_state
    pickled = pickle.loads(pickle.dumps(model))
    original = model.get_weights()
    for clone in (deep, pickled):
        assert clone is not model and clone.backend is backend
        assert all(wf.backends.backend_of(w) is backend for w in clone.weights)
        assert (clone.steps, clone.epochs, clone.seed) == (4, 2, 0)
        assert clone.frozen == model.frozen and clone.optimizer_name == "adam"
        assert _same(clone.weights, original)
        clone.fit(X, Y, epochs=4, initial_epoch=2, batch_size=6, verbose=0)
        assert _same(model.get_weights(), original)  # training a copy leaves the original
    model.fit(X, Y, epochs=4, initial_epoch=2, batch_size=6, verbose=0)
    for clone in (deep, pickled):  # the same training: optimizer state and counters copied
        for a, b in zip(clone.get_weights(), model.get_weights(), strict=True):
            if backend.name == "numpy":
                np.testing.assert_array_equal(a, b)  # bit for bit
            else:
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_pickle_of_an_optimizer_object_warns_and_leaves_it_out(backend):
    model = _model().compile(wf.optimizers.sgd(0.1), metrics=[])
    model.train_on_batch(X, Y)
    assert copy.deepcopy(model).optimizer is model.optimizer  # deepcopy keeps it
    with pytest.warns(UserWarning, match="optimizer=.adam."):
        data = pickle.dumps(model)
    clone = pickle.loads(data)
    assert clone.optimizer is None and clone.opt_state is None
    assert _same(clone.weights, model.weights)


def test_graph_model_deepcopies_and_pickles(backend):
    a, b = wf.Input((5,), name="a"), wf.Input((2,), name="b")
    h = Dense(4, activation="relu")(wf.layers.Concatenate()([a, b]))
    model = wf.Model({"a": a, "b": b}, {"p": Dense(3)(h), "q": Dense(1)(h)})
    model.compile("adam", {"p": "softmax_cross_entropy", "q": "mse"}, metrics=[])
    x, y = {"a": X, "b": X[:, :2]}, {"p": Y, "q": X[:, :1]}
    assert isinstance(model.train_on_batch(x, y), list)  # [loss, p_loss, q_loss]
    deep, pickled = copy.deepcopy(model), pickle.loads(pickle.dumps(model))
    for clone in (deep, pickled):
        assert type(clone) is type(model) and clone.output_names == ("p", "q")
        assert clone.input_names == ("a", "b") and _same(clone.weights, model.weights)
    out, want = pickled.predict(x), model.predict(x)
    assert all(np.array_equal(_host(out[k]), _host(want[k])) for k in ("p", "q"))


def test_a_copy_made_during_fit_holds_the_published_epoch(backend):
    copies = []

    class Keep(wf.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            copies.append(copy.deepcopy(self.model))

    model, reference = _model(), _model()
    model.fit(X, Y, epochs=2, batch_size=6, verbose=0, callbacks=[Keep()])
    reference.fit(X, Y, epochs=1, batch_size=6, verbose=0)
    first = copies[0]
    assert (first.steps, first.epochs) == (2, 1) and _same(first.weights, reference.weights)
    first.fit(X, Y, epochs=2, initial_epoch=1, batch_size=6, verbose=0)  # it is not running
    assert _same(first.weights, model.weights)


def test_a_jax_model_unpickles_on_jax(jax):
    with wf.use_backend("jax"):
        model = _model().build((None, 5))
    data = pickle.dumps(model)
    with wf.use_backend("numpy"):  # whatever is active where it loads
        clone = pickle.loads(data)
    assert clone.backend.name == "jax"
    assert all(isinstance(w, jax.Array) for w in clone.weights)
    assert _same(clone.weights, model.weights)


def test_a_lambda_metric_is_left_out_of_a_pickle_with_a_warning(backend):
    model = wf.Sequential([wf.layers.Dense(2)], seed=0)
    model.compile(loss="mse", metrics=["mae", lambda yt, yp: (yt - yp) ** 2])
    with pytest.warns(UserWarning, match="the metrics of .* do not pickle"):
        clone = pickle.loads(pickle.dumps(model))
    assert clone.compiled_metrics is None and model.compiled_metrics is not None


def test_a_lambda_loss_is_left_out_of_a_pickle_with_a_warning(jax):
    with wf.use_backend("jax"):
        model = wf.Sequential([wf.layers.Dense(2)], seed=0)
        model.compile(loss=lambda yt, yp: ((yt - yp) ** 2).mean())
        with pytest.warns(UserWarning, match="the loss of .* does not pickle"):
            clone = pickle.loads(pickle.dumps(model))
    assert clone.loss.name == "softmax_cross_entropy"
