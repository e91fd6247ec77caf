"""``fit``/``evaluate`` with sample and class weights, and ``compile(metrics=...)``.

* A weighted step is the step of Keras' ``sum_over_batch_size`` loss: its update equals
  ``jax.grad`` of ``sum(w * l) / n`` written out by hand (float32, rtol 1e-5), on every backend
  and every ``steps_per_execution``; ``class_weight`` is the per-class ``sample_weight``.
* The logged metrics equal scikit-learn's on the model's own predictions, weighted or not, over
  several batches (the statistics add exactly); Keras' log names for one and several outputs.
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.backends import to_numpy
from wframe.testing import assert_close
from wframe.tree import tree_map

RNG = np.random.default_rng(7)
X = RNG.normal(size=(48, 5)).astype("float32")
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype("int32")
W = RNG.uniform(0.1, 2.0, size=48).astype("float32")


def _params(model):
    return tree_map(to_numpy, model.params)


def _model(units=2, seed=3, activation=None):
    return wf.Sequential(
        [wf.layers.Dense(6, activation="tanh"), wf.layers.Dense(units, activation=activation)],
        seed=seed,
    )


def _ce_step_by_hand(jax, params, x, y, w, lr):
    """Params after one SGD step on Keras' weighted softmax cross-entropy, by jax.grad."""
    jnp = jax.numpy

    def loss(p):
        h = jnp.tanh(x @ p["dense_0"]["W"] + p["dense_0"]["b"])
        logits = h @ p["dense_1"]["W"] + p["dense_1"]["b"]
        per = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
        return jnp.sum(w * per) / x.shape[0]

    grads = jax.grad(loss)(params)
    return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)


@pytest.mark.parametrize("spe", [1, "epoch"])
def test_a_weighted_step_follows_keras_sum_over_batch_size(backend, jax, spe):
    model = _model()
    model.build((None, 5))
    start = _params(model)
    model.fit(
        X,
        Y,
        batch_size=48,
        epochs=1,
        shuffle=False,
        verbose=0,
        sample_weight=W,
        optimizer=wf.optimizers.sgd(0.5),
        steps_per_execution=spe,
    )
    want = _ce_step_by_hand(jax, start, X, Y, W, 0.5)
    got = _params(model)
    for layer in ("dense_0", "dense_1"):
        for name in ("W", "b"):
            assert_close(got[layer][name], np.asarray(want[layer][name]), rtol=1e-5, atol=1e-6)


def test_class_weight_is_the_sample_weight_of_each_label(backend):
    a, b = _model(), _model()
    cw = {0: 3.0, 1: 0.5}
    a.fit(X, Y, batch_size=16, epochs=2, verbose=0, class_weight=cw)
    b.fit(X, Y, batch_size=16, epochs=2, verbose=0, sample_weight=np.where(Y == 0, 3.0, 0.5))
    assert_close(_params(a)["dense_1"]["W"], _params(b)["dense_1"]["W"], rtol=1e-6)
    assert a.history.history["loss"] == pytest.approx(b.history.history["loss"], rel=1e-6)


def test_weighted_evaluate_is_the_weighted_sum_over_the_count(backend):
    model = _model()
    model.build((None, 5))
    logits = np.asarray(model.predict(X), np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    per = np.log(np.exp(shifted).sum(1)) - shifted[np.arange(48), Y]
    got = model.evaluate(X, Y, sample_weight=W, batch_size=20)  # three batches, one ragged
    assert got["loss"] == pytest.approx(float(np.sum(W * per) / 48), rel=1e-5)
    hits = logits.argmax(1) == Y
    assert got["accuracy"] == pytest.approx(float(np.sum(W * hits) / np.sum(W)), rel=1e-5)


def test_zero_weights_train_like_the_rest_alone_scaled(backend):
    """Rows of weight 0 change nothing: the update is the unweighted one of the other rows,
    scaled by their share of the batch (sum over the batch size, as Keras)."""
    keep = np.arange(48) < 32
    a, b = _model(), _model()
    a.fit(
        X,
        Y,
        batch_size=48,
        epochs=1,
        shuffle=False,
        verbose=0,
        sample_weight=keep.astype("float32"),
        optimizer=wf.optimizers.sgd(0.3),
    )
    b.fit(
        X[keep],
        Y[keep],
        batch_size=32,
        epochs=1,
        shuffle=False,
        verbose=0,
        optimizer=wf.optimizers.sgd(0.3 * 32 / 48),
    )
    assert_close(_params(a)["dense_0"]["W"], _params(b)["dense_0"]["W"], rtol=1e-5, atol=1e-7)


def test_metrics_match_sklearn_over_several_batches(backend):
    sk = pytest.importorskip("sklearn.metrics")
    model = _model(units=1)
    model.compile(
        loss="binary_cross_entropy",
        metrics=["accuracy", "precision", "recall", wf.metrics.AUC(num_thresholds=2000)],
    )
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0)
    logs = model.evaluate(X, Y, batch_size=10, sample_weight=W)
    p = 1 / (1 + np.exp(-np.asarray(model.predict(X), np.float64)[:, 0]))
    assert list(logs) == ["loss", "accuracy", "precision", "recall", "auc"]
    assert logs["accuracy"] == pytest.approx(sk.accuracy_score(Y, p > 0.5, sample_weight=W), 1e-5)
    assert logs["precision"] == pytest.approx(
        sk.precision_score(Y, p > 0.5, sample_weight=W, zero_division=0), rel=1e-5
    )
    assert logs["recall"] == pytest.approx(sk.recall_score(Y, p > 0.5, sample_weight=W), 1e-5)
    assert logs["auc"] == pytest.approx(sk.roc_auc_score(Y, p, sample_weight=W), abs=2e-3)


def test_fit_logs_every_metric_and_its_validation_twin(backend):
    model = _model()
    model.compile(metrics=["acc", "sparse_top_k_categorical_accuracy"])
    hist = model.fit(X, Y, batch_size=16, epochs=1, verbose=0, validation_split=0.25)
    names = ["loss", "acc", "sparse_top_k_categorical_accuracy"]
    assert list(hist.history) == [*names, *(f"val_{n}" for n in names)]
    assert hist.history["sparse_top_k_categorical_accuracy"] == [1.0]  # 2 classes, k = 5


def test_probability_losses_log_plain_accuracy(backend):
    """Keras' key whatever ``from_logits`` says (it was ``probability_accuracy``)."""
    model = _model(units=1, activation="sigmoid")
    model.compile(loss=wf.losses.get("binary_cross_entropy", from_logits=False))
    hist = model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    assert set(hist.history) == {"loss", "accuracy"}
    p = np.asarray(model.predict(X))[:, 0]
    assert model.evaluate(X, Y)["accuracy"] == pytest.approx(float(np.mean((p > 0.5) == Y)))


def test_regression_metrics_and_keras_list_form(backend):
    model = _model(units=1)
    target = X[:, :1] * 2.0
    model.compile(loss="mse", metrics=["mae", "rmse"])
    model.fit(X, target, batch_size=16, epochs=1, verbose=0)
    loss, mae, rmse = model.evaluate(X, target, return_dict=False)
    err = np.asarray(model.predict(X), np.float64) - target
    assert mae == pytest.approx(float(np.abs(err).mean()), rel=1e-5)
    assert rmse == pytest.approx(float(np.sqrt((err**2).mean())), rel=1e-5)
    assert loss == pytest.approx(rmse**2, rel=1e-5)
    assert _model().compile(metrics=[]).evaluate(X, Y, return_dict=False) > 0


def test_graph_outputs_log_keras_names_per_output(backend):
    inp = wf.Input((5,), name="x")
    h = wf.layers.Dense(4, activation="relu")(inp)
    cls = wf.layers.Dense(2, name="cls")(h)
    reg = wf.layers.Dense(1, name="reg")(h)
    model = wf.Model(inp, [cls, reg], seed=1)
    model.compile(
        loss=["softmax_cross_entropy", "mse"], metrics={"cls": ["accuracy"], "reg": ["mae"]}
    )
    hist = model.fit(
        X,
        [Y, X[:, :1]],
        batch_size=16,
        epochs=1,
        verbose=0,
        sample_weight={"cls": W, "reg": np.ones(48)},
    )
    assert list(hist.history) == ["loss", "cls_loss", "cls_accuracy", "reg_loss", "reg_mae"]


def test_bad_metrics_and_weights_are_refused_before_training(backend):
    model = _model()
    with pytest.raises(ValueError, match="Unknown metric|unknown metric"):
        model.compile(metrics=["acuracy"])
    with pytest.raises(ValueError, match="one weight per example"):
        model.fit(X, Y, epochs=1, verbose=0, sample_weight=W[:10])
    with pytest.raises(TypeError, match="class_weight must be a dict"):
        model.fit(X, Y, epochs=1, verbose=0, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="logged twice"):
        model.compile(metrics=["accuracy", "accuracy"])
    assert model.steps == 0


def test_fit_warns_when_every_param_is_frozen(backend):
    model = _model()
    model.build((None, 5))
    model.freeze()
    with pytest.warns(UserWarning, match="every param .* is frozen"):
        model.fit(X, Y, epochs=1, verbose=0)
