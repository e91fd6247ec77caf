"""Every loss's value (plain and weighted) against Keras' formulas by hand and PyTorch, its
hand-written gradient against float64 finite differences and jax.grad, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import losses as L
from wframe.backends import backend_class

N = 4
FD_RTOL, FD_ATOL = 1e-6, 1e-9
JAX_RTOL, JAX_ATOL = 1e-5, 1e-6


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _case(name: str, dtype=np.float64, seed: int = 0):
    """``(loss, pred, labels)``: data away from every kink (|x| = delta, margin 1, 0)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, 3))
    sign = rng.choice([-1.0, 1.0], (N, 3))
    gap = sign * np.where(rng.random((N, 3)) < 0.5, rng.uniform(0.1, 0.6, (N, 3)), 1.2)
    classes = rng.integers(0, 3, N)
    cases = {
        "mse": (L.MeanSquaredError(), z, z + gap),
        "mae": (L.MeanAbsoluteError(), z, z + gap),
        "huber": (L.Huber(delta=0.9), z, z + gap),
        "log_cosh": (L.LogCosh(), z, z + 3 * gap),
        "poisson": (L.Poisson(), np.exp(z), rng.poisson(2.0, (N, 3)).astype(float)),
        "kld": (L.KLDivergence(), _softmax(z), _softmax(rng.standard_normal((N, 3)))),
        "cosine": (L.CosineSimilarity(), z, z + gap),
        "cosine-axis1": (
            L.CosineSimilarity(axis=1),
            rng.standard_normal((N, 2, 3)),
            rng.standard_normal((N, 2, 3)),
        ),
        "hinge-01": (L.Hinge(), 2 * z, (sign > 0).astype(float)),
        "hinge-pm1": (L.Hinge(), 2 * z, sign),
        "squared_hinge": (L.SquaredHinge(), 2 * z, sign),
        "cce-probs": (L.CategoricalCrossentropy(), _softmax(z) * 0.9, np.eye(3)[classes]),
        "scce-probs": (L.SparseCategoricalCrossentropy(), _softmax(z), classes),
        "scce-logits": (L.SparseCategoricalCrossentropy(from_logits=True), z, classes),
        "sce-soft": (L.SoftmaxCrossEntropy(), z, _softmax(rng.standard_normal((N, 3)))),
        "sce-seq": (
            L.SoftmaxCrossEntropy(),
            rng.standard_normal((N, 2, 3)),
            rng.integers(0, 3, (N, 2)),
        ),
        "bce-probs": (L.BinaryCrossentropy(), 1 / (1 + np.exp(-z)), rng.random((N, 3))),
        "bce-logits": (L.BinaryCrossEntropy(), z, (sign > 0).astype(float)),
    }
    loss, pred, labels = cases[name]
    floats = labels.astype(dtype) if labels.dtype.kind == "f" else labels.astype(np.int32)
    return loss, pred.astype(dtype), floats


CASES = [
    "mse", "mae", "huber", "log_cosh", "poisson", "kld", "cosine", "cosine-axis1", "hinge-01",
    "hinge-pm1", "squared_hinge", "cce-probs", "scce-probs", "scce-logits", "sce-soft", "sce-seq",
    "bce-probs", "bce-logits",
]  # fmt: skip


def _per_sample(name, p, y):
    """Keras' per-sample losses, written out by hand in float64."""
    if y.ndim < p.ndim:  # class indices
        y = np.eye(p.shape[-1])[y]
    d, t = p - y, np.where(np.all((y == 0) | (y == 1)), 2 * y - 1, y)
    logp = {
        "cce-probs": lambda: np.log(p / p.sum(-1, keepdims=True)),
        "scce-probs": lambda: np.log(p / p.sum(-1, keepdims=True)),
    }.get(name, lambda: p - np.log(np.exp(p).sum(-1, keepdims=True)))
    unit = lambda a, ax: a / np.linalg.norm(a, axis=ax, keepdims=True)  # noqa: E731
    return {
        "mse": lambda: np.mean(d**2, -1),
        "mae": lambda: np.mean(np.abs(d), -1),
        "huber": lambda: np.mean(np.where(abs(d) <= 0.9, d**2 / 2, 0.9 * abs(d) - 0.405), -1),
        "log_cosh": lambda: np.mean(np.log(np.cosh(d)), -1),
        "poisson": lambda: np.mean(p - y * np.log(p + 1e-7), -1),
        "kld": lambda: np.sum(y * np.log(y / p), -1),
        "cosine": lambda: -np.sum(unit(p, -1) * unit(y, -1), -1),
        "cosine-axis1": lambda: -np.sum(unit(p, 1) * unit(y, 1), 1),
        "hinge-01": lambda: np.mean(np.maximum(1 - t * p, 0), -1),
        "hinge-pm1": lambda: np.mean(np.maximum(1 - t * p, 0), -1),
        "squared_hinge": lambda: np.mean(np.maximum(1 - t * p, 0) ** 2, -1),
        "bce-probs": lambda: -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p), -1),
        "bce-logits": lambda: np.mean(np.logaddexp(0, p) - p * y, -1),
    }.get(name, lambda: -np.sum(y * logp(), -1))()


def _weights(pred, seed=1):
    return np.random.default_rng(seed).uniform(0.2, 2.0, pred.shape[0])


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("name", CASES)
def test_value_is_keras_reduction_of_the_per_sample_losses(name, weighted):
    loss, pred, labels = _case(name)
    w = _weights(pred) if weighted else None
    l = _per_sample(name, pred, labels)  # noqa: E741
    expected = np.mean(l) if w is None else np.sum(w.reshape(-1, *(1,) * (l.ndim - 1)) * l) / l.size
    np.testing.assert_allclose(loss(pred, labels, w)[0], expected, rtol=1e-12)
    if not weighted:  # no weights and weights of 1 are the same loss
        ones = loss(pred, labels, np.ones(N))
        np.testing.assert_allclose(ones[0], expected, rtol=1e-12)
        np.testing.assert_allclose(ones[1], loss(pred, labels)[1], rtol=1e-12)


def _numerical_grad(f, x, eps=1e-6):
    x, g = x.copy(), np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        g[i] = (up - f(x)) / (2 * eps)
        x[i] = old
    return g


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("name", CASES)
def test_gradient_matches_finite_differences(name, weighted):
    loss, pred, labels = _case(name)
    w = _weights(pred) if weighted else None
    _, dpred = loss(pred, labels, w)
    expected = _numerical_grad(lambda p: float(loss(p, labels, w)[0]), pred)
    np.testing.assert_allclose(dpred, expected, rtol=FD_RTOL, atol=FD_ATOL)


@pytest.fixture(scope="module")
def jax_results():
    """Every weighted case on JAX in one compiled function (XLA's compile time dominates, so
    once, at its lowest optimisation level): ``(value, hand-written dpred, jax.grad)``."""
    jax = pytest.importorskip("jax")
    ok, why = backend_class("jax").is_available()
    if not ok:
        pytest.skip(why)
    cases = {n: _case(n, dtype=np.float32) for n in CASES}
    with wf.use_backend("jax") as b:
        args = {
            n: (b.asarray(p), b.asarray(y), b.asarray(_weights(p).astype(np.float32)))
            for n, (_, p, y) in cases.items()
        }

        def run(args):
            def total(preds):  # each case's gradient is its own part of the sum's
                return sum(cases[n][0](preds[n], *args[n][1:])[0] for n in CASES)

            grads = jax.grad(total)({n: a[0] for n, a in args.items()})
            return {n: (*cases[n][0](*args[n]), grads[n]) for n in CASES}

        fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
        out = jax.jit(run).lower(args).compile(compiler_options=fast)(args)
    return {n: tuple(np.asarray(a) for a in out[n]) for n in CASES}


def test_gradient_matches_jax_grad(jax_results):
    """float32 on both sides: NumPy's hand-written gradient and JAX's own run of it against
    ``jax.grad``."""
    for name in CASES:
        loss, pred, labels = _case(name, dtype=np.float32)
        value, dpred = loss(pred, labels, _weights(pred).astype(np.float32))
        assert dpred.dtype == np.float32
        jvalue, jown, jgrad = jax_results[name]
        np.testing.assert_allclose(value, jvalue, rtol=JAX_RTOL, err_msg=name)
        np.testing.assert_allclose(dpred, jgrad, rtol=JAX_RTOL, atol=JAX_ATOL, err_msg=name)
        np.testing.assert_allclose(jown, jgrad, rtol=JAX_RTOL, atol=JAX_ATOL, err_msg=name)


def _torch_value(name, p, y):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tp, ty = torch.from_numpy(p), torch.from_numpy(y)
    return {
        "mse": lambda: F.mse_loss(tp, ty),
        "mae": lambda: F.l1_loss(tp, ty),
        "huber": lambda: F.huber_loss(tp, ty, delta=0.9),
        "poisson": lambda: F.poisson_nll_loss(tp, ty, log_input=False, eps=1e-7),
        "kld": lambda: F.kl_div(torch.log(tp), ty, reduction="batchmean"),
        "cosine": lambda: -F.cosine_similarity(tp, ty, dim=-1).mean(),
        "cosine-axis1": lambda: -F.cosine_similarity(tp, ty, dim=1).mean(),
        "cce-probs": lambda: F.nll_loss(torch.log(tp / tp.sum(-1, keepdim=True)), ty.argmax(-1)),
        "scce-probs": lambda: F.nll_loss(torch.log(tp), ty.long()),
        "scce-logits": lambda: F.cross_entropy(tp, ty.long()),
        "sce-soft": lambda: F.cross_entropy(tp, ty),
        "sce-seq": lambda: F.cross_entropy(tp.reshape(-1, 3), ty.long().reshape(-1)),
        "bce-probs": lambda: F.binary_cross_entropy(tp, ty),
        "bce-logits": lambda: F.binary_cross_entropy_with_logits(tp, ty),
    }[name]().item()


@pytest.mark.parametrize(
    "name",
    [c for c in CASES if c not in ("log_cosh", "hinge-01", "hinge-pm1", "squared_hinge")],
)
def test_value_matches_torch(name):
    loss, pred, labels = _case(name)
    np.testing.assert_allclose(loss(pred, labels)[0], _torch_value(name, pred, labels), rtol=1e-6)


def test_every_loss_runs_on_every_backend(backend, request):
    """The weighted losses on the backend's arrays, compiled by its jit (traced on JAX: no host
    read or value branch, hinge's 0/1 conversion included), agree with NumPy."""
    cases = {n: _case(n, dtype=np.float32) for n in CASES}
    weights = {n: _weights(p).astype(np.float32) for n, (_, p, _) in cases.items()}
    if backend.name == "jax":  # compiled once for the jax.grad test
        got = request.getfixturevalue("jax_results")
    else:
        args = {
            n: (backend.asarray(p), backend.asarray(y), backend.asarray(weights[n]))
            for n, (_, p, y) in cases.items()
        }
        got = backend.jit(lambda args: {n: cases[n][0](*a) for n, a in args.items()})(args)
    for n, (loss, pred, labels) in cases.items():
        value, grad = loss(pred, labels, weights[n])
        np.testing.assert_allclose(wf.to_numpy(got[n][0]), value, rtol=1e-5, err_msg=n)
        np.testing.assert_allclose(wf.to_numpy(got[n][1]), grad, rtol=1e-5, atol=1e-7, err_msg=n)


def test_every_loss_uses_only_the_standard_array_api():
    """On ``array_api_strict`` arrays (which refuse anything outside the standard) every loss,
    weighted, gives NumPy's numbers."""
    xps = pytest.importorskip("array_api_strict")
    for name in CASES:
        loss, pred, labels = _case(name)
        w = _weights(pred)
        value, grad = loss(*(xps.asarray(a) for a in (pred, labels, w)))
        ref_value, ref_grad = loss(pred, labels, w)
        np.testing.assert_allclose(np.asarray(value), ref_value, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-12, err_msg=name)


def test_stable_at_extreme_inputs():
    x = np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]])
    for loss in (L.LogCosh(), L.Huber(), L.MeanAbsoluteError(), L.BinaryCrossEntropy()):
        value, grad = loss(x, np.zeros_like(x) + (loss.name == "binary_cross_entropy"))
        assert np.isfinite(value) and np.isfinite(grad).all(), loss.name
    # log cosh at 1000 is 1000 - log 2; its gradient tanh.
    value, grad = L.LogCosh()(np.array([[1000.0]]), np.zeros((1, 1)))
    np.testing.assert_allclose([value, grad[0, 0]], [1000 - np.log(2), 1.0], rtol=1e-12)
    zero = L.CosineSimilarity()(np.zeros((1, 3)), np.ones((1, 3)))  # Keras: a zero vector gives 0
    assert zero[0] == 0 and np.isfinite(zero[1]).all()


def test_outputs_take_one_weight_for_all_or_one_per_output():
    loss = L.Outputs.of(["mse", "mae"], ("a", "b"), [1.0, 0.5])
    (_, pa, ya), (_, pb, yb) = _case("mse"), _case("mae", seed=3)
    w = _weights(pa)
    total, (ga, gb) = loss((pa, pb), (ya, yb), w)
    va, da = L.MeanSquaredError()(pa, ya, w)
    vb, db = L.MeanAbsoluteError()(pb, yb, w)
    np.testing.assert_allclose(total, va + 0.5 * vb, rtol=1e-12)
    np.testing.assert_allclose(gb, 0.5 * db, rtol=1e-12)
    total, _ = loss((pa, pb), (ya, yb), (w, None))
    np.testing.assert_allclose(total, va + 0.5 * L.MeanAbsoluteError()(pb, yb)[0], rtol=1e-12)
    with pytest.raises(ValueError, match=r"sample_weight: 3 entries for the model's 2 outputs"):
        loss((pa, pb), (ya, yb), (w, w, w))
