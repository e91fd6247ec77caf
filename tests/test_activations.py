"""Activations (wframe/activations.py) and the backends' ``erf``.

* The sigmoid's accuracy over the whole real line (tests/test_gradients.py checks the older
  activations' backprop against finite differences and ``jax.grad``).
* silu/swish, elu, selu, softplus, relu6, hard_sigmoid and gelu (exact and tanh forms): forward
  and backprop against PyTorch on every backend (through ``activations.apply``, so CuPy's fused
  kernels run where they exist), against ``jax.grad``, and against float64 finite differences.
* ``Backend.erf`` against ``scipy.special.erf`` over a wide range, tails and special values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import wframe as wf
from wframe import activations
from wframe.backends import backend_of, special
from wframe.backends.cupy import FUSED_ACTIVATIONS
from wframe.saving import layer_config, layer_from_config
from wframe.testing import assert_close, numerical_grad

# Half a unit in the last place of 1 (the absolute accuracy of ``(1 + tanh(x / 2)) / 2``) plus
# the rounding of the two final operations.
SIGMOID_ATOL = {np.float64: 1.2e-16, np.float32: 6.5e-8, np.float16: 5e-4}


def _inputs(dtype):
    big = float(np.finfo(dtype).max)
    x = np.concatenate([np.linspace(-120.0, 120.0, 240_001), [-big, big, -np.inf, np.inf]])
    return x.astype(dtype)


def _exact(x):
    with np.errstate(over="ignore"):  # exp(+large) = inf gives the exact limit 0
        return 1 / (1 + np.exp(-x.astype(np.longdouble)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16], ids=lambda d: d.__name__)
def test_sigmoid_is_accurate_everywhere_and_never_overflows(dtype):
    x = _inputs(dtype)
    y, backprop = wf.activations.sigmoid(x)  # filterwarnings=error: no overflow warnings
    slope = backprop(np.ones_like(x))
    assert y.dtype == slope.dtype == dtype
    exact = _exact(x)
    np.testing.assert_allclose(y.astype(np.longdouble), exact, rtol=0, atol=SIGMOID_ATOL[dtype])
    np.testing.assert_allclose(
        slope.astype(np.longdouble), exact * (1 - exact), rtol=0, atol=SIGMOID_ATOL[dtype]
    )
    assert y[-2] == 0 and y[-1] == 1 and slope[-2] == slope[-1] == 0
    assert np.all(np.diff(y[:-4]) >= 0) and y.min() >= 0 and y.max() <= 1
    assert y[x == 0] == 0.5


def test_sigmoid_has_finite_jax_gradients_at_extremes(jax):
    with wf.use_backend("jax") as b:
        for dtype in ("float32", "float16"):
            x = b.xp.asarray([-np.inf, -1e4, -30.0, 0.0, 30.0, 1e4, np.inf], dtype=dtype)
            grad = jax.grad(lambda v: b.xp.sum(wf.activations.sigmoid(v)[0]))(x)
            assert np.isfinite(np.asarray(grad, dtype=np.float32)).all()
            np.testing.assert_allclose(np.asarray(grad, dtype=np.float32)[3], 0.25)


# ----------------------------------------------------------------------------- new activations
# name -> the PyTorch function (called on a tensor); the names include Keras' aliases.
TORCH = {
    "silu": lambda F, t: F.silu(t),
    "swish": lambda F, t: F.silu(t),
    "elu": lambda F, t: F.elu(t),
    "selu": lambda F, t: F.selu(t),
    "softplus": lambda F, t: F.softplus(t),
    "relu6": lambda F, t: F.relu6(t),
    "hard_sigmoid": lambda F, t: F.hardsigmoid(t),
    "gelu": lambda F, t: F.gelu(t, approximate="none"),
    "gelu_approximate": lambda F, t: F.gelu(t, approximate="tanh"),
    "gelu_tanh": lambda F, t: F.gelu(t, approximate="tanh"),
}
NAMES = list(TORCH)
KINKS = (-3.0, 0.0, 3.0, 6.0)  # of relu6 (0, 6), hard_sigmoid (-3, 3), elu/selu (0)
RTOL, ATOL = 1e-5, 1e-6
FD_RTOL, FD_ATOL = 1e-6, 1e-9


def _act_inputs(shape, dtype, seed=0):
    """Normal draws scaled by 3 (every piece of each activation is hit), moved 0.05 away from
    the kinks, where the one-sided derivatives differ."""
    x = np.random.default_rng(seed).standard_normal(shape) * 3
    for k in KINKS:
        near = np.abs(x - k) < 0.05
        x[near] = k + np.where(x[near] < k, -0.05, 0.05)
    return x.astype(dtype)


@pytest.mark.parametrize("name", NAMES)
def test_activation_matches_torch(backend, name):
    torch = pytest.importorskip("torch")
    x, b = _act_inputs((6, 7), np.float32), _act_inputs((7,), np.float32, seed=1) * 0.1
    dy = np.random.default_rng(2).standard_normal((6, 7)).astype(np.float32)
    act = activations.get(name)
    # Through apply (z + b, then the activation): CuPy's fused kernel where it has one.
    y, backprop = activations.apply(act, backend.asarray(x), backend.asarray(b))
    dz = backprop(backend.asarray(dy))
    assert y.dtype == dz.dtype == backend.dtype("float32")

    tz = torch.from_numpy(x + b).requires_grad_(True)
    ty = TORCH[name](torch.nn.functional, tz)
    ty.backward(torch.from_numpy(dy))
    assert_close(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)
    assert_close(dz, tz.grad.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_activation_backprop_matches_finite_differences(name):
    x = _act_inputs((3, 5), np.float64)
    dy = np.random.default_rng(3).standard_normal((3, 5))
    act = activations.get(name)
    y, backprop = act(x)
    assert y.dtype == np.float64
    expected = numerical_grad(lambda v: np.sum(act(v)[0] * dy), x)
    assert_close(backprop(dy), expected, rtol=FD_RTOL, atol=FD_ATOL)


def test_activation_backprop_matches_jax_grad(jax, jit_as_users):
    x = _act_inputs((4, 5), np.float32)
    dy = np.random.default_rng(4).standard_normal((4, 5)).astype(np.float32)
    with wf.use_backend("jax") as b:
        xp = b.xp

        def all_activations(v, w):  # one compilation for every activation
            out = {}
            for name in NAMES:
                act = activations.get(name)
                out[name] = (act(v)[0], jax.grad(lambda u, act=act: xp.sum(act(u)[0] * w))(v))
            return out

        results = jit_as_users(all_activations)(b.asarray(x), b.asarray(dy))
    for name, (jy, jdx) in results.items():
        y, backprop = activations.get(name)(x)  # NumPy, the hand-written backward
        assert jdx.dtype == np.float32, name
        assert_close(jy, y, rtol=RTOL, atol=ATOL)
        assert_close(jdx, backprop(dy), rtol=RTOL, atol=ATOL)


def test_names_aliases_and_keras_definitions():
    assert activations.get("swish") is activations.get("SiLU") is activations.silu
    assert activations.get("gelu") is activations.gelu
    assert activations.get("gelu_tanh") is activations.get("gelu_approximate")
    x = np.array([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0])
    # Keras 3's hard_sigmoid: relu6(x + 3) / 6 (Keras 2's 0.2 x + 0.5 would give 0.2 at -1.5).
    np.testing.assert_allclose(
        activations.hard_sigmoid(x)[0], [0, 0, 0.25, 0.5, 0.75, 1, 1], rtol=1e-15
    )
    np.testing.assert_allclose(activations.relu6(x * 3)[0], [0, 0, 0, 0, 4.5, 6, 6])
    exact, approx = activations.gelu(x)[0], activations.gelu(x, approximate=True)[0]
    np.testing.assert_array_equal(approx, activations.gelu_approximate(x)[0])
    phi = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(exact, x * phi, rtol=1e-15, atol=1e-300)
    assert 1e-5 < np.max(np.abs(exact - approx)) < 1e-3  # two different functions
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    np.testing.assert_allclose(
        activations.selu(x)[0], scale * np.where(x > 0, x, alpha * np.expm1(x)), rtol=1e-15
    )


@pytest.mark.parametrize("name", NAMES)
def test_activation_is_finite_at_large_inputs(name):
    for dtype in (np.float64, np.float32, np.float16):
        x = np.array([-1e4, -1000.0, -30.0, -0.0, 30.0, 1000.0, 1e4], dtype=dtype)
        y, backprop = activations.get(name)(x)  # filterwarnings=error: no overflow warnings
        dx = backprop(np.ones_like(x))
        assert y.dtype == dx.dtype == dtype
        assert np.isfinite(y).all() and np.isfinite(dx).all(), (name, dtype, y, dx)
    # softplus: log(1 + e^x) without overflow, ~x above and ~e^x below.
    y = activations.softplus(np.array([-800.0, 800.0]))[0]
    np.testing.assert_array_equal(y, [0.0, 800.0])


def test_activation_names_round_trip_through_configs():
    for given in ("gelu", "gelu_tanh", "swish", "hard_sigmoid", activations.gelu_approximate):
        layer = wf.layers.Dense(3, activation=given)
        back = layer_from_config(layer_config(layer))
        assert back.activation == (given if isinstance(given, str) else given.__name__)
        assert activations.get(back.activation) is activations.get(given)
    assert layer_config(wf.layers.Dense(2, activation=activations.silu))["config"][
        "activation"
    ] == ("silu")


def test_exact_gelu_never_runs_the_tanh_kernel():
    # CuPy's fused "gelu" kernel is the tanh form: only gelu_approximate may map to it; the new
    # activations have no kernel and fall back to the generic code (None).
    assert FUSED_ACTIVATIONS["gelu_approximate"] == "gelu"
    assert "gelu" not in FUSED_ACTIVATIONS
    for name in ("silu", "elu", "selu", "softplus", "relu6", "hard_sigmoid"):
        assert name not in FUSED_ACTIVATIONS


# ----------------------------------------------------------------------------- erf
def _erf_inputs(dtype):
    tiny = np.finfo(dtype).tiny
    x = np.concatenate(
        [
            np.linspace(-7.0, 7.0, 20_001),
            np.geomspace(tiny, 30.0, 2_000),
            [0.46875, 0.47, 4.0, 4.0001, 5.9, 6.0, 6.1, 27.0, float(np.finfo(dtype).max)],
        ]
    ).astype(dtype)
    return np.concatenate([x, -x])


def _ulps(actual, exact, dtype):
    """|actual - exact| in units of the last place of ``exact`` rounded to ``dtype``."""
    spacing = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    return np.abs(np.asarray(actual, dtype=np.float64) - exact) / spacing


def test_erf_matches_scipy(backend):
    scipy_special = pytest.importorskip("scipy.special")
    for dtype in ("float32", "float64"):
        x = _erf_inputs(np.dtype(dtype))
        try:
            ax = backend.asarray(x, dtype=dtype)
        except ValueError:  # float64 on jax without 64-bit mode
            continue
        got = wf.to_numpy(backend.erf(ax))
        assert got.dtype == np.dtype(dtype)
        exact = scipy_special.erf(x.astype(np.float64))
        if dtype == "float64":
            np.testing.assert_allclose(got, exact, rtol=2e-15, atol=0)
        else:  # NumPy rounds a float64 result: half an ulp; JAX and CuPy's kernels a few ulps
            limit = 0.51 if backend.name == "numpy" else 4
            assert _ulps(got, exact, np.float32).max() <= limit
    special_values = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype=np.float32)
    got = wf.to_numpy(backend.erf(backend.asarray(special_values)))
    np.testing.assert_array_equal(got[:2], [1.0, -1.0])
    assert np.isnan(got[2]) and got[3] == 0 and got[4] == 0


def test_generic_erf_matches_scipy():
    # The xp code every other array-API library runs (the NumPy backend overrides it).
    scipy_special = pytest.importorskip("scipy.special")
    x = _erf_inputs(np.float64)
    np.testing.assert_allclose(special.erf(x), scipy_special.erf(x), rtol=2e-15, atol=0)
    x32 = _erf_inputs(np.float32)
    exact = scipy_special.erf(x32.astype(np.float64))
    assert special.erf(x32).dtype == np.float32
    assert _ulps(special.erf(x32), exact, np.float32).max() <= 4
    np.testing.assert_array_equal(special.erf(np.array([np.inf, -np.inf])), [1.0, -1.0])
    assert np.isnan(special.erf(np.array([np.nan]))).all()
    assert np.signbit(backend_of(x).erf(np.array([-0.0]))).all()


def test_erf_on_half_precision_and_array_api_strict():
    scipy_special = pytest.importorskip("scipy.special")
    x = np.linspace(-5, 5, 201)
    for dtype in (np.float16,):
        got = backend_of(x).erf(x.astype(dtype))
        assert got.dtype == dtype
        np.testing.assert_allclose(got, scipy_special.erf(x.astype(dtype)), atol=1e-3)
    xps = pytest.importorskip("array_api_strict")
    got = backend_of(xps.asarray(x)).erf(xps.asarray(x))
    assert isinstance(got, type(xps.asarray(0.0)))
    np.testing.assert_allclose(np.asarray(got), scipy_special.erf(x), rtol=2e-15, atol=0)
