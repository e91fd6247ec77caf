"""At a kink (a ReLU's 0, a clip's bound, a residual of exactly 0), JAX's autodiff gives the
gradient of the hand-written backward passes that NumPy and CuPy train with (PyTorch's
conventions: ``relu'(0) = 0``, ``|x|'(0) = 0``), so zero inputs or zero-initialized weights train
alike on every backend (:mod:`wframe.backends.kinks`). Elsewhere the other tests' inputs keep
away from the kinks on purpose; these sit on them."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import activations
from wframe.backends import kinks

#: Every activation's kinks, and points beside them (float32).
POINTS = np.array([-7, -6, -3, -1, 0, 0, 0.5, 3, 6, 7], dtype=np.float32)
ELEMENTWISE = [
    "relu", "relu6", "hard_sigmoid", "softplus", "leaky_relu", "elu", "selu", "silu", "gelu",
    "gelu_approximate", "sigmoid", "tanh", "linear",
]  # fmt: skip
EPS = np.float32(1e-7)


def _loss_cases() -> dict:
    """``name -> (loss, pred, labels)`` with predictions on each loss's kinks."""
    t = np.array([[1.0], [0.0], [1.0], [0.0], [1.0], [1.0]], dtype=np.float32)
    residual = np.array([[1.0], [0.0], [1.9], [-0.9], [0.5], [2.0]], dtype=np.float32)
    probs = np.array([[EPS], [1 - EPS], [0.0], [1.0], [0.5], [0.25]], dtype=np.float32)
    logits = np.array([[0.0], [0.0], [0.0], [3.0], [-2.0], [0.0]], dtype=np.float32)
    margins = np.array([[1.0], [-1.0], [1.0], [0.5], [-1.0], [2.0]], dtype=np.float32)
    kl_pred = np.array([[1.0, 0.0, 0.0], [EPS, 0.5, 0.5 - EPS]], dtype=np.float32)
    kl_labels = np.array([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]], dtype=np.float32)
    one_hot = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    get = wf.losses.get
    return {
        "mae": (get("mae"), residual, t),  # residuals 0 (and others)
        "huber": (get("huber", delta=0.9), residual, t),  # residuals 0 and exactly 0.9
        "log_cosh": (get("log_cosh"), residual, t),
        "hinge": (get("hinge"), margins, t),  # margins exactly 0
        "squared_hinge": (get("squared_hinge"), margins, t),
        "bce-logits": (get("binary_cross_entropy"), logits, t),  # logits exactly 0
        "bce-probs": (get("binary_crossentropy"), probs, t),  # on and beyond the clip bounds
        "kld": (get("kl_divergence"), kl_pred, kl_labels),  # a probability of exactly 1
        "scce-probs": (get("sparse_categorical_crossentropy"), one_hot, np.array([0, 2])),
    }


@pytest.fixture(scope="module")
def jax_grads():
    """Every activation's and loss's gradient on JAX, in one compiled function (compiling
    dominates): ``{name: jax.grad}``."""
    jax = pytest.importorskip("jax")
    from wframe.backends import backend_class

    ok, why = backend_class("jax").is_available()
    if not ok:
        pytest.skip(why)
    losses = _loss_cases()
    with wf.use_backend("jax") as b:
        dy = b.asarray(np.linspace(0.5, 1.5, POINTS.size, dtype=np.float32))

        def run(x, preds):
            out = {}
            for name in ELEMENTWISE:
                fn = activations.get(name)
                out[name] = jax.grad(lambda a, f=fn: (f(a)[0] * dy).sum())(x)
            for name, (loss, _, labels) in losses.items():
                out[name] = jax.grad(lambda p, lo=loss, y=labels: lo.value(p, y))(preds[name])
            return out

        preds = {n: b.asarray(p) for n, (_, p, _) in losses.items()}
        fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
        x = b.asarray(POINTS)
        grads = jax.jit(run).lower(x, preds).compile(compiler_options=fast)(x, preds)
    return {n: np.asarray(g) for n, g in grads.items()}


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_gradients_on_jax_are_the_hand_written_ones_at_the_kinks(jax_grads, name):
    dy = np.linspace(0.5, 1.5, POINTS.size, dtype=np.float32)
    hand = activations.get(name)(POINTS)[1](dy)  # NumPy's backward
    # float32: near saturation the two round apart (tanh: 3e-7, gelu_approximate at -7: 4e-6);
    # a kink's error is >= 0.05.
    np.testing.assert_allclose(jax_grads[name], hand, rtol=1e-5, atol=1e-5)
    if name in ("relu", "relu6", "hard_sigmoid"):  # PyTorch's: 0 on the kinks
        kinked = {"relu": [0.0], "relu6": [0.0, 6.0], "hard_sigmoid": [-3.0, 3.0]}[name]
        assert not jax_grads[name][np.isin(POINTS, kinked)].any()


@pytest.mark.parametrize("name", list(_loss_cases()))
def test_loss_gradients_on_jax_are_the_hand_written_ones_at_the_kinks(jax_grads, name):
    loss, pred, labels = _loss_cases()[name]
    np.testing.assert_allclose(jax_grads[name], loss(pred, labels)[1], rtol=1e-5, atol=1e-6)


def test_softplus_slope_at_zero_is_one_half_on_jax(jax_grads):
    """``max(x, 0) + log1p(exp(-|x|))`` differentiated as written gave 0.5 - 0.5 = 0 there."""
    dy = np.linspace(0.5, 1.5, POINTS.size, dtype=np.float32)
    np.testing.assert_array_equal(jax_grads["softplus"][POINTS == 0], 0.5 * dy[POINTS == 0])


def test_a_zero_initialized_logistic_regression_trains_alike(backend):
    """Every logit is exactly 0 at the first step: the case that trained differently on JAX."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    model = wf.Sequential([wf.layers.Dense(1, kernel_init="zeros")], seed=0)
    model.compile("sgd", "binary_cross_entropy")
    model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    # One SGD step from zeros: W = -lr * x.T @ (sigmoid(0) - y) / n.
    expected = -0.01 * x.T @ (0.5 - y) / 32
    np.testing.assert_allclose(wf.to_numpy(model.params["dense_0"]["W"]), expected, rtol=1e-6)


@pytest.mark.parametrize("fn", ["maximum", "clip", "abs", "softplus"])
def test_kinks_propagate_nan_and_keep_the_values(backend, fn):
    xp = backend.xp
    x = np.array([np.nan, -np.inf, -2.0, 0.0, 1e-7, 0.5, 6.0, np.inf], dtype=np.float32)
    call = {
        "maximum": lambda a: kinks.maximum(a, 0.0),
        "clip": lambda a: kinks.clip(a, 1e-7, 1.0),
        "abs": kinks.abs,
        "softplus": kinks.softplus,
    }[fn]
    with np.errstate(over="ignore", invalid="ignore"):
        expected = {
            "maximum": np.maximum(x, 0),
            "clip": np.clip(x, np.float32(1e-7), 1),
            "abs": np.abs(x),
            "softplus": np.logaddexp(x, np.float32(0)),
        }[fn]
    got = wf.to_numpy(call(xp.asarray(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("merge", ["Maximum", "Minimum"])
def test_a_merge_tie_sends_the_gradient_to_the_first_input_on_jax(jax, merge):
    layer = getattr(wf.layers, merge)()
    x = np.array([[1.0, 2.0, np.nan, -1.0]], dtype=np.float32)
    same, other = x.copy(), np.array([[1.0, 0.0, 5.0, 3.0]], dtype=np.float32)
    _, _, backprop = layer.forward({}, {}, (x, same), train=True)  # (NumPy's backward)
    hand = backprop(np.ones_like(x))[0]  # (dx per input, param grads)
    with wf.use_backend("jax") as b:
        xs = (b.asarray(x), b.asarray(same))
        grads = jax.grad(lambda a: layer.forward({}, {}, a, train=True)[0].sum())(xs)
        y = layer.forward({}, {}, (b.asarray(x), b.asarray(other)), train=True)[0]
    np.testing.assert_array_equal(np.asarray(grads[0]), hand[0])  # all of it to the first
    np.testing.assert_array_equal(np.asarray(grads[1]), hand[1])
    expected = (np.maximum if merge == "Maximum" else np.minimum)(x, other)
    np.testing.assert_array_equal(np.asarray(y), expected)  # NaN included
