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


@pytest.mark.parametrize("bias", [True, False])
def test_bias_relu_matches_generic(generic, bias):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 4)).astype(np.float32)
    z[0, 0] = 0.0  # the gradient at 0 is 0
    b = rng.standard_normal(4).astype(np.float32) if bias else None
    dy = rng.standard_normal((6, 4)).astype(np.float32)
    z0 = z.copy()
    y, back = activations.apply(activations.relu, z, b)
    want_y, want_back = generic(activations.apply, activations.relu, z, b)
    np.testing.assert_array_equal(z, z0)  # its input untouched
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(back(dy), want_back(dy))
    dy64 = dy.astype(np.float64)  # another dtype: the generic form, in dy's dtype
    assert back(dy64).dtype == want_back(dy64).dtype == np.float64


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
