"""NumPy's fused hooks (wframe.backends.numpy_ops) against the generic code they replace, and
the host-side finite guard of a NumPy train step."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import activations
from wframe.backends import fusion, numpy_ops
from wframe.backends.numpy_xp import xp


@pytest.fixture
def generic(monkeypatch):
    """Runs its argument with NumPy's hooks off: the generic array-API code."""
    import wframe.backends.numpy  # noqa: F401 - registers the hooks

    def run(fn, *args):
        with monkeypatch.context() as m:
            m.delitem(fusion.FUSED, xp)
            return fn(*args)

    return run


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_matches_generic(generic, dtype):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((7, 5)) * 4).astype(dtype)
    labels = rng.integers(0, 5, 7).astype(np.int32)
    loss = wf.losses.get("softmax_cross_entropy")
    value, grad = loss(logits, labels)
    want_value, want_grad = generic(loss, logits, labels)
    assert value.dtype == want_value.dtype and grad.dtype == want_grad.dtype
    rtol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(value, want_value, rtol=rtol)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol * 1e-2)


def test_softmax_cross_entropy_non_finite_logits_as_generic(generic):
    logits = np.zeros((3, 4), np.float32)
    logits[1, 0] = -np.inf  # not the label's: the generic one-hot product still gives NaN
    labels = np.array([1, 2, 3], np.int32)
    loss = wf.losses.get("softmax_cross_entropy")
    with np.errstate(invalid="ignore"):
        value, grad = loss(logits, labels)
        want_value, want_grad = generic(loss, logits, labels)
    assert np.isnan(value) and np.isnan(want_value)
    np.testing.assert_array_equal(grad, want_grad)


def test_softmax_cross_entropy_leaves_other_inputs_to_generic():
    z = np.zeros((3, 4), np.float32)
    assert numpy_ops.softmax_cross_entropy(z, np.array([0, 4, 1])) is None  # label out of range
    assert numpy_ops.softmax_cross_entropy(z, np.zeros((3, 1), np.int32)) is None
    assert numpy_ops.softmax_cross_entropy(z, np.zeros((3, 4), np.float32)) is None  # one-hot
    assert numpy_ops.softmax_cross_entropy(z.astype(np.float16), np.zeros(3, np.int32)) is None
    assert numpy_ops.softmax_cross_entropy(z[None], np.zeros((1, 3), np.int32)) is None
    assert numpy_ops.softmax_cross_entropy(z, np.array([0, -1, 1])) is None  # negative label


def _probabilities(rng, dtype):
    """Softmax rows with the inputs Keras' clipping meets: a one-hot row (clipped at both
    ends), rows that do not sum to 1, a negative entry, a zero row, tiny entries."""
    p = activations.softmax(rng.standard_normal((40, 6)) * 8)[0].astype(dtype)
    p[0] = np.eye(6)[2]
    p[1] *= 3
    p[2, 0] = -0.25
    p[3] = 0.0
    p[4] = [1e-9, 1e-7, 0.5, 0.25, 0.125, 0.125]
    return p


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64, np.uint8])
def test_probability_cross_entropy_matches_generic_bit_for_bit(generic, dtype, label_dtype):
    rng = np.random.default_rng(2)
    probs = _probabilities(rng, dtype)
    labels = rng.integers(0, 6, 40).astype(label_dtype)
    labels[4] = 1  # at the clip's lower end exactly (float64: 1e-7 is EPSILON)
    loss = wf.losses.get("sparse_categorical_crossentropy")
    with np.errstate(all="ignore"):  # the zero row: 0 / 0, NaN both ways
        for args in ((probs, labels), (probs[5:], labels[5:, None])):  # and Keras' (n, 1)
            for got in (loss(*args), loss.kernel(xp)(*args)):
                want = generic(loss, *args)
                assert got[0].dtype == want[0].dtype and got[1].dtype == want[1].dtype
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
        seq = (probs[5:].reshape(5, 7, 6), labels[5:].reshape(5, 7))  # a sequence's (N, T, C)
        for got, want in zip(loss(*seq), generic(loss, *seq), strict=True):
            np.testing.assert_array_equal(got, want)


def test_probability_cross_entropy_leaves_other_inputs_to_generic():
    p, eps = np.full((3, 4), 0.25, np.float32), 1e-7
    assert numpy_ops.probability_cross_entropy(p, np.array([0, 4, 1]), eps) is None
    assert numpy_ops.probability_cross_entropy(p, np.array([0, -1, 1]), eps) is None
    assert numpy_ops.probability_cross_entropy(p, np.eye(4)[:3], eps) is None  # one-hot
    assert numpy_ops.probability_cross_entropy(p.astype(np.float16), np.zeros(3, int), eps) is None
    q = p.copy()
    q[0, 1] = np.inf  # the generic one-hot product's NaN (0 * log(nan)) for that row
    assert numpy_ops.probability_cross_entropy(q, np.zeros(3, int), eps) is None

    # A loss that computes its own terms keeps them (no kernel).
    class Halved(wf.losses.SparseCategoricalCrossentropy):
        def terms(self, xp, pred, labels, scale):
            terms, grad = super().terms(xp, pred, labels, scale)
            return terms / 2, grad / 2

    full = wf.losses.get("sparse_categorical_crossentropy")(p, np.zeros(3, int))[0]
    half = Halved()
    assert half(p, np.zeros(3, int))[0] == half.kernel(xp)(p, np.zeros(3, int))[0] == full / 2


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", ["relu", "softmax", "tanh", "sigmoid"])
def test_bias_activation_matches_generic_bit_for_bit(generic, bias, name):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 4)).astype(np.float32) * 10
    z[0, 0] = 0.0  # relu's gradient at 0 is 0
    b = rng.standard_normal(4).astype(np.float32) if bias else None
    dy = rng.standard_normal((6, 4)).astype(np.float32)
    z0, act = z.copy(), getattr(activations, name)
    y, back = activations.apply(act, z, b)
    want_y, want_back = generic(activations.apply, act, z, b)
    np.testing.assert_array_equal(z, z0)  # its input untouched
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(back(dy), want_back(dy))
    dy64 = dy.astype(np.float64)  # another dtype: the generic form, in dy's dtype
    assert back(dy64).dtype == want_back(dy64).dtype == np.float64
    np.testing.assert_array_equal(back(dy64), want_back(dy64))


class _Spiky(wf.losses.MeanSquaredError):
    """A finite loss whose gradient is not finite (what an overflowing backward pass gives)."""

    def __call__(self, pred, labels, sample_weight=None):
        value, grad = super().__call__(pred, labels, sample_weight)
        return value, grad * np.inf


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_class_hits_match_generic_accuracy(generic, dtype):
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((9, 4)).astype(dtype)
    pred[1] = pred[1, 0]  # a tie: the first maximum, as argmax
    pred[2, 3] = np.nan  # argmax of a NaN row: the NaN's index, as argmax
    metric = wf.metrics.get("sparse_categorical_accuracy")
    for labels in (rng.integers(0, 4, 9), rng.integers(0, 4, 9).astype(np.uint8)):
        got, want = metric.stats(pred, labels), generic(metric.stats, pred, labels)
        assert got.dtype == want.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want)
    assert numpy_ops.class_hits(pred, labels[:, None]) is None  # (n, 1): the generic code
    assert numpy_ops.class_hits(pred.astype(np.float16), labels) is None
    assert numpy_ops.class_hits(pred[None], labels) is None


def test_non_finite_gradient_with_finite_loss_is_skipped_on_numpy():
    # The host guard reads the gradients too, not only the loss.
    with wf.use_backend("numpy"):
        model = wf.Sequential([wf.layers.Dense(3)], seed=0).build((None, 2))
        x, y = np.ones((4, 2), np.float32), np.ones((4, 3), np.float32)
        for loss, changes in (("mse", True), (_Spiky(), False)):
            step = wf.make_train_step(model, loss, wf.optimizers.sgd(0.1))
            params = wf.tree.tree_map(np.copy, model.params)
            ts = wf.TrainState(params, model.state, wf.optimizers.sgd(0.1).init(params))
            with np.errstate(all="ignore"):
                ts, logs = step(ts, x, y)
            assert np.isfinite(logs["loss"])
            same = np.array_equal(ts.params["dense_0"]["W"], model.params["dense_0"]["W"])
            assert same is not changes


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_binary_accuracy_counts_match_generic(generic, dtype):
    rng = np.random.default_rng(3)
    metric = wf.metrics.get("binary_accuracy")
    for shape in ((9, 1), (9,), (9, 3)):  # one output per example (the hook), and three
        pred = rng.random(shape).astype(dtype)
        pred.flat[0] = 0.5  # on the threshold: not above it
        labels = (rng.random(shape) > 0.5).astype(np.float32)
        got, want = metric.stats(pred, labels), generic(metric.stats, pred, labels)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    hits = np.ones((4, 1), bool)
    assert numpy_ops.true_count(hits, np.float32).tolist() == [4.0, 4.0]
    assert numpy_ops.true_count(hits.astype(np.float32), np.float32) is None  # not booleans
    assert numpy_ops.true_count(np.ones((4, 2), bool), np.float32) is None  # a mean per row
    assert numpy_ops.true_count(np.ones((0, 1), bool), np.float32) is None
