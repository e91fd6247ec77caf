"""Metrics against sklearn.metrics, summed over ragged batches (the statistics are additive), and
the lookup rules of ``compile(metrics=...)``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from wframe import metrics as M
from wframe.backends import array_namespace
from wframe.losses import (
    BinaryCrossEntropy,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
)

N, C = 90, 6
CUTS = (0, 45, N)  # two batches of one shape: eager jax compiles each op per new shape


def _data(seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, (N, 1))
    return {
        "p": p.astype(np.float32),  # binary probabilities (N, 1)
        "y": (rng.random(N) < p[:, 0]).astype(np.int32),  # labels (N,)
        "multi_p": rng.random((N, 3)).astype(np.float32),
        "multi_y": rng.integers(0, 2, (N, 3)).astype(np.float32),
        "logits": rng.normal(size=(N, C)).astype(np.float32),
        "classes": rng.integers(0, C, N).astype(np.int32),
        "reg_p": rng.normal(size=(N, 3)).astype(np.float32),
        "reg_y": rng.normal(size=(N, 3)).astype(np.float32),
        "w": rng.uniform(0.0, 2.0, N).astype(np.float32),
    }


D = _data()


def _epoch(backend, metric, pred, labels, w=None):
    """``metric.result`` of the stats summed over the ragged batches."""
    total = 0.0
    for a, b in zip(CUTS[:-1], CUTS[1:], strict=True):
        sw = None if w is None else backend.asarray(w[a:b])
        s = metric.stats(backend.asarray(pred[a:b]), backend.asarray(labels[a:b]), sw)
        assert s.ndim == 1 and s.shape[0] == metric.size
        total = total + backend.to_numpy(s).astype(np.float64)
    return metric.result(total)


def _rep(w, k):
    return None if w is None else np.repeat(w, k)


def _cases():
    d = D
    one_hot = np.eye(C, dtype=np.float32)[d["classes"]]
    bin_hits = (d["p"][:, 0] > 0.5).astype(int)
    pos = d["multi_p"] > 0.5
    yield (
        "binary_accuracy",
        M.BinaryAccuracy(),
        d["p"],
        d["y"],
        lambda w: skm.accuracy_score(d["y"], bin_hits, sample_weight=w),
    )
    yield (
        "binary_multi",
        M.BinaryAccuracy(),
        d["multi_p"],
        d["multi_y"],
        lambda w: skm.accuracy_score(d["multi_y"].ravel(), pos.ravel(), sample_weight=_rep(w, 3)),
    )
    argmax = d["logits"].argmax(-1)
    acc = lambda w: skm.accuracy_score(d["classes"], argmax, sample_weight=w)  # noqa: E731
    yield "categorical", M.CategoricalAccuracy(), d["logits"], one_hot, acc
    yield "sparse", M.SparseCategoricalAccuracy(), d["logits"], d["classes"], acc
    yield "sparse_column", M.SparseCategoricalAccuracy(), d["logits"], d["classes"][:, None], acc
    for k in (3, 5):
        top = lambda w, k=k: skm.top_k_accuracy_score(  # noqa: E731
            d["classes"], d["logits"], k=k, labels=range(C), sample_weight=w
        )
        yield f"top{k}", M.TopKCategoricalAccuracy(k), d["logits"], one_hot, top
        yield f"sparse_top{k}", M.SparseTopKCategoricalAccuracy(k), d["logits"], d["classes"], top
    for cls, fn in ((M.Precision, skm.precision_score), (M.Recall, skm.recall_score)):
        yield (
            cls.__name__,
            cls(),
            d["p"],
            d["y"],
            lambda w, fn=fn: fn(d["y"], bin_hits, sample_weight=w),
        )
        probs = np.exp(d["logits"]) / np.exp(d["logits"]).sum(-1, keepdims=True)
        yield (
            f"{cls.__name__}_sparse",
            cls(0.3),
            probs,
            d["classes"],
            lambda w, fn=fn, p=probs: fn(
                one_hot.ravel(), (p > 0.3).ravel(), sample_weight=_rep(w, C)
            ),
        )
    for cls, fn in (
        (M.MeanAbsoluteError, skm.mean_absolute_error),
        (M.MeanSquaredError, skm.mean_squared_error),
        (M.RootMeanSquaredError, lambda *a, **k: math.sqrt(skm.mean_squared_error(*a, **k))),
    ):
        yield (
            cls.__name__,
            cls(),
            d["reg_p"],
            d["reg_y"],
            lambda w, fn=fn: fn(d["reg_y"], d["reg_p"], sample_weight=w),
        )
    col = d["reg_y"][:, 0]  # labels (N,) for predictions (N, 1)
    yield (
        "mae_column",
        M.MeanAbsoluteError(),
        d["reg_p"][:, :1],
        col,
        lambda w: skm.mean_absolute_error(col, d["reg_p"][:, 0], sample_weight=w),
    )


CASES = {name: (metric, pred, labels, oracle) for name, metric, pred, labels, oracle in _cases()}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_metrics_match_sklearn(backend, weighted):
    w = D["w"] if weighted else None
    for name, (metric, pred, labels, oracle) in CASES.items():
        got = _epoch(backend, metric, pred, labels, w)
        np.testing.assert_allclose(got, oracle(w), rtol=1e-5, atol=1e-6, err_msg=name)


def test_sequence_accuracy_weights_broadcast_over_steps(backend):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(N, 4, C)).astype(np.float32)
    labels = rng.integers(0, C, (N, 4)).astype(np.int32)
    got = _epoch(backend, M.SparseCategoricalAccuracy(), logits, labels, D["w"])
    want = skm.accuracy_score(
        labels.ravel(), logits.argmax(-1).ravel(), sample_weight=np.repeat(D["w"], 4)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_top_k_takes_soft_labels_by_their_highest_entry(backend):
    """Keras' ``in_top_k(argmax(y_true), y_pred, k)``: a soft label row (mixup, smoothing)
    counts its highest entry's class, as CategoricalAccuracy does; with k = the number of
    classes every row is a hit."""
    xp = backend.xp
    pred = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], np.float32)
    soft = np.array([[0.4, 0.3, 0.3], [0.2, 0.45, 0.35], [0.1, 0.1, 0.8]], np.float32)
    for k, expected in ((1, 1.0), (2, 1.0), (3, 1.0)):
        metric = M.TopKCategoricalAccuracy(k)
        stats = metric.stats(xp.asarray(pred), xp.asarray(soft))
        assert metric.result(np.asarray(backend.to_numpy(stats), np.float64)) == expected
    shifted = np.array([[0.1, 0.3, 0.6]], np.float32)  # the label's class ranks last
    stats = M.TopKCategoricalAccuracy(2).stats(xp.asarray(pred[:1]), xp.asarray(shifted))
    assert M.TopKCategoricalAccuracy(2).result(np.asarray(backend.to_numpy(stats))) == 0.0


def test_auc_matches_sklearn_and_converges(backend):
    rng = np.random.default_rng(2)
    p = rng.random((400, 1)).astype(np.float32)
    y = (rng.random(400) < p[:, 0]).astype(np.float32)
    w = rng.uniform(0.0, 2.0, 400).astype(np.float32)

    def error(t, weights):  # two batches summed
        total = 0.0
        for a, b in ((0, 200), (200, 400)):
            sw = None if weights is None else backend.asarray(weights[a:b])
            s = M.AUC(t).stats(backend.asarray(p[a:b]), backend.asarray(y[a:b]), sw)
            total = total + backend.to_numpy(s).astype(np.float64)
        return abs(M.AUC(t).result(total) - skm.roc_auc_score(y, p[:, 0], sample_weight=weights))

    assert error(200, None) < 2e-3 and error(200, w) < 2e-3  # Keras' default thresholds
    coarse, fine = error(10, None), error(2001, None)  # more thresholds come closer
    assert fine < 1e-4 and fine < coarse / 10, (coarse, fine)


def test_auc_keras_example(backend):
    # keras.metrics.AUC docstring: thresholds [0 - 1e-7, 0.5, 1 + 1e-7] give 0.75, and 1.0 with
    # sample_weight=[1, 0, 0, 1].
    m = M.AUC(num_thresholds=3)
    y, p = backend.asarray([0, 0, 1, 1]), backend.asarray([0.0, 0.5, 0.3, 0.9])
    assert m.result(backend.to_numpy(m.stats(p, y))) == pytest.approx(0.75)
    w = backend.asarray([1.0, 0.0, 0.0, 1.0])
    assert m.result(backend.to_numpy(m.stats(p, y, w))) == pytest.approx(1.0)


def test_from_logits_equals_probabilities(backend):
    z = np.random.default_rng(3).normal(0, 3, (N, 1)).astype(np.float32)
    p = 1 / (1 + np.exp(-z.astype(np.float64)))
    y = D["y"]
    for cls in (M.BinaryAccuracy, M.Precision, M.Recall, M.AUC):
        on_logits = _epoch(backend, cls(from_logits=True), z, y, D["w"])
        on_probs = _epoch(backend, cls(from_logits=False), p.astype(np.float32), y, D["w"])
        assert on_logits == pytest.approx(on_probs, abs=2e-3), cls.__name__
    probs = np.exp(D["logits"]) / np.exp(D["logits"]).sum(-1, keepdims=True)
    softmax_auc = M.AUC(from_logits=True, activation="softmax")
    got = _epoch(backend, softmax_auc, D["logits"], D["classes"])
    assert got == pytest.approx(_epoch(backend, M.AUC(), probs, D["classes"]), abs=1e-6)


def test_stats_under_jit(backend):
    ms = (M.BinaryAccuracy(), M.Precision(), M.AUC(), M.get("accuracy"))
    cat = (M.SparseCategoricalAccuracy(), M.TopKCategoricalAccuracy(3))

    def stats(p, y, logits, classes, w):
        return [m.stats(p, y, w) for m in ms] + [m.stats(logits, classes, w) for m in cat]

    host = [D[k] for k in ("p", "y", "logits", "classes", "w")]
    compiled = backend.jit(stats)(*[backend.asarray(a) for a in host])
    for got, want in zip(compiled, stats(*host), strict=True):  # vs the same on NumPy
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-5)


def test_mean_metric_wrapper_matches_sklearn(backend):
    def squared_log_error(y_true, y_pred):
        xp = array_namespace(y_pred)
        d = xp.log1p(y_pred) - xp.log1p(y_true)
        return xp.mean(d * d, axis=-1)

    metric = M.get(squared_log_error)
    assert metric == M.MeanMetricWrapper(squared_log_error, "squared_log_error")
    pred, labels = np.abs(D["reg_p"]), np.abs(D["reg_y"])
    got = _epoch(backend, metric, pred, labels, D["w"])
    want = skm.mean_squared_log_error(labels, pred, sample_weight=D["w"])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_accuracy_is_chosen_by_the_loss():
    bce, bce_p = BinaryCrossEntropy(), BinaryCrossEntropy(from_logits=False)
    assert M.get("accuracy", bce) == M.BinaryAccuracy("accuracy", from_logits=True)
    assert M.get("acc", bce_p) == M.BinaryAccuracy("acc", from_logits=False)
    assert M.get("Accuracy", SoftmaxCrossEntropy()) == M.CategoricalAccuracy(
        "Accuracy", from_logits=True
    )
    assert M.get("ACC", MeanSquaredError()) == M.AutoAccuracy("ACC", from_logits=False)
    assert isinstance(M.get("accuracy"), M.AutoAccuracy)
    # Keras' own loss classes (probabilities by default) are cross-entropies too.
    assert M.get("acc", BinaryCrossentropy()) == M.BinaryAccuracy("acc", from_logits=False)
    assert M.get("acc", CategoricalCrossentropy()) == M.CategoricalAccuracy("acc", False)
    # BCE over several outputs is element-wise (Keras' binary_accuracy), not argmax-vs-argmax.
    multi = M.get("accuracy", bce_p).stats(D["multi_p"], D["multi_y"])
    want = skm.accuracy_score(D["multi_y"].ravel(), (D["multi_p"] > 0.5).ravel())
    assert M.get("accuracy", bce_p).result(multi) == pytest.approx(want)


def test_auto_accuracy_by_shape():
    z = np.array([[-1.0], [2.0], [0.3]], np.float32)
    y = np.array([0, 1, 0])
    on_logits = M.AutoAccuracy(from_logits=True)
    assert on_logits.result(on_logits.stats(z, y)) == pytest.approx(2 / 3)
    on_probs = M.AutoAccuracy(from_logits=False)
    assert on_probs.result(on_probs.stats(z, y)) == pytest.approx(1.0)  # 0.3 < 0.5 now
    logits = D["logits"]
    want = skm.accuracy_score(D["classes"], logits.argmax(-1))
    assert on_probs.result(on_probs.stats(logits, D["classes"])) == pytest.approx(want)


def test_default_metrics_are_named_accuracy_whatever_from_logits():
    for loss in (BinaryCrossEntropy(), BinaryCrossEntropy(from_logits=False)):
        (metric,) = M.default_for(loss)
        assert metric == M.BinaryAccuracy("accuracy", from_logits=loss.from_logits)
    for loss in (SoftmaxCrossEntropy(), SoftmaxCrossEntropy(from_logits=False)):
        assert [m.name for m in M.default_for(loss)] == ["accuracy"]
    assert M.default_for(MeanSquaredError()) == ()
    assert M.default_for(SoftmaxCrossEntropy(metric=None)) == ()  # the loss asks for none
    assert M.default_for(None) == ()


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("binary_accuracy", M.BinaryAccuracy),
        ("categorical_accuracy", M.CategoricalAccuracy),
        ("sparse_categorical_accuracy", M.SparseCategoricalAccuracy),
        ("top_k_categorical_accuracy", M.TopKCategoricalAccuracy),
        ("sparse_top_k_categorical_accuracy", M.SparseTopKCategoricalAccuracy),
        ("precision", M.Precision),
        ("Recall", M.Recall),
        ("AUC", M.AUC),
        ("mae", M.MeanAbsoluteError),
        ("mean_absolute_error", M.MeanAbsoluteError),
        ("MSE", M.MeanSquaredError),
        ("mean_squared_error", M.MeanSquaredError),
        ("rmse", M.RootMeanSquaredError),
        ("root_mean_squared_error", M.RootMeanSquaredError),
        ("RootMeanSquaredError", M.RootMeanSquaredError),
    ],
)
def test_names_keep_the_key_as_written(name, cls):
    metric = M.get(name)
    assert type(metric) is cls and metric.name == name
    assert M.NAMES[cls().name] is cls  # a class's default name is Keras' key


def test_metric_instances_follow_the_loss():
    assert M.get(M.Precision(), BinaryCrossEntropy()).from_logits is True
    assert M.get(M.Precision(), BinaryCrossEntropy(from_logits=False)).from_logits is False
    assert M.get(M.Recall(from_logits=False), BinaryCrossEntropy()).from_logits is False
    assert M.get(M.AUC(), None).from_logits is False  # Keras' default: probabilities
    auc = M.get(M.AUC(), SoftmaxCrossEntropy())
    assert (auc.from_logits, auc.activation) == (True, "softmax")
    assert M.get(M.MeanAbsoluteError(), BinaryCrossEntropy()) == M.MeanAbsoluteError()


def test_metrics_are_hashable_cache_keys():
    keys = {
        M.get("auc"),
        M.AUC(name="auc", from_logits=False),
        M.get("accuracy", BinaryCrossEntropy()),
    }
    assert len(keys) == 2
    assert M.AUC(50).size == 102 and M.Precision().size == 2


def test_bad_identifiers_and_inputs():
    with pytest.raises(ValueError, match=r"Unknown metric 'f1'.*'precision'"):
        M.get("f1")
    with pytest.raises(TypeError, match="got int"):
        M.get(3)
    with pytest.raises(TypeError, match="fn must be a function"):
        M.MeanMetricWrapper(3, "x")
    with pytest.raises(ValueError, match="num_thresholds must be an integer > 1"):
        M.AUC(1)
    with pytest.raises(ValueError, match=r"'binary_accuracy' expects labels of shape \(90, 3\)"):
        M.BinaryAccuracy().stats(D["multi_p"], D["multi_y"][:, :1])
    with pytest.raises(ValueError, match=r"'mean_absolute_error' expects labels of shape"):
        M.MeanAbsoluteError().stats(D["reg_p"], D["classes"])
    with pytest.raises(ValueError, match=r"sample_weight of shape \(90,\).*got shape \(3,\)"):
        M.MeanSquaredError().stats(D["reg_p"], D["reg_y"], np.ones(3, np.float32))


def test_only_standard_array_api_calls():
    xps = pytest.importorskip("array_api_strict")
    for name, (metric, pred, labels, _) in CASES.items():
        for w in (None, D["w"]):
            want = metric.stats(pred, labels, w)
            sw = None if w is None else xps.asarray(w)
            got = metric.stats(xps.asarray(pred), xps.asarray(labels), sw)
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, err_msg=name)
