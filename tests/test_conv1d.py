"""Conv1D, MaxPool1D, AvgPool1D and the global pools (GlobalAvgPool1D, GlobalMaxPool1D/2D).

* Hand-written backprop against central finite differences (NumPy, float64, rtol 1e-6) and
  against ``jax.grad`` of the same forward on JAX (float32, rtol 1e-5).
* Forward values and gradients against PyTorch (``torch.nn.functional.conv1d``,
  ``max_pool1d``, ``avg_pool1d``, ``adaptive_*``; "same" and "causal" emulated with explicit
  pads) on every backend: the hand-written backprop on NumPy/CuPy, ``jax.grad`` of the forward
  (what ``fit`` differentiates) on JAX. Ties in a global max go to the first maximum there too.
* Shapes, Keras names and defaults, errors, a model trained by ``fit`` on NumPy and JAX, files.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import wframe as wf
from wframe.layers import (
    AveragePooling1D,
    AvgPool1D,
    Conv1D,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool1D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    MaxPool1D,
    MaxPooling1D,
)
from wframe.saving.config import model_config
from wframe.testing import assert_close, numerical_grad

FD_RTOL, FD_ATOL = 1e-6, 1e-9
JAX_RTOL, JAX_ATOL = 1e-5, 1e-6
TORCH_RTOL, TORCH_ATOL = 1e-5, 1e-6

IN_SHAPE = (2, 7, 3)  # (batch, steps, channels); an odd length catches asymmetric "same"
CONV_OPTIONS = [
    pytest.param(s, p, d, id=f"s{s}-{p}-d{d}")
    for s, p, d in itertools.product([1, 2], ["valid", "same", "causal"], [1, 2])
]
POOL_OPTIONS = [
    pytest.param(pool, strides, padding, id=f"p{pool}-s{strides}-{padding}")
    for (pool, strides), padding in itertools.product(
        [(2, None), (3, 2), (3, 1)], ["valid", "same"]
    )
]
# The oracle tests run on every backend (each case a few JAX compilations): half the cases.
TORCH_CONV_OPTIONS = [CONV_OPTIONS[i] for i in (0, 3, 4, 7, 9, 10)]
TORCH_POOL_OPTIONS = [POOL_OPTIONS[i] for i in (0, 3, 4, 5)]
POOLS = {"max": MaxPool1D, "avg": AvgPool1D}
GLOBAL_POOLS = {
    "avg1d": (GlobalAvgPool1D, IN_SHAPE),
    "max1d": (GlobalMaxPool1D, IN_SHAPE),
    "max2d": (GlobalMaxPool2D, (2, 4, 3, 3)),
}


# ----------------------------------------------------------------------------- helpers
def _conv_case(strides, padding, dilation, dtype="float64", activation="tanh"):
    """A Conv1D(4, 3) with a random bias, an input and a cotangent, all on the host."""
    layer = Conv1D(
        4, 3, strides=strides, padding=padding, dilation_rate=dilation, activation=activation
    )
    with wf.use_backend("numpy"):
        params, _, out_shape = layer.init(0, (None, *IN_SHAPE[1:]), dtype=dtype)
    rng = np.random.default_rng(0)
    params = {"W": np.asarray(params["W"]), "b": (rng.standard_normal(4) * 0.5).astype(dtype)}
    x = rng.standard_normal(IN_SHAPE).astype(dtype)
    dy = rng.standard_normal((IN_SHAPE[0], *out_shape[1:])).astype(dtype)
    return layer, params, x, dy


def _distinct_input(shape, dtype="float64", seed=0):
    """Entries in [-1, 1) at least 2 / size apart: no finite-difference step changes a max."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) * (2.0 / size) - 1.0).astype(dtype)


def _cotangent(layer, x, seed=1):
    with wf.use_backend("numpy"):
        y = layer.forward({}, {}, x)[0]
    return np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)


def _check_against_fd(layer, params, x, dy):
    def objective(p, v):
        return np.sum(layer.forward(p, {}, v, train=True)[0] * dy)

    with wf.use_backend("numpy"):
        _, _, backprop = layer.forward(params, {}, x, train=True)
        dx, grads = backprop(dy)
        assert sorted(grads) == sorted(params)
        for name in params:

            def f(v, name=name):
                return objective({**params, name: v}, x)

            fd = numerical_grad(f, params[name])
            assert_close(grads[name], fd, rtol=FD_RTOL, atol=FD_ATOL)
        fd = numerical_grad(lambda v: objective(params, v), x)
        assert_close(dx, fd, rtol=FD_RTOL, atol=FD_ATOL)
        dx_none, again = backprop(dy, input_grad=False)
    assert dx_none is None
    for name in params:
        assert_close(again[name], grads[name], rtol=0)


def _vjp(backend, layer, params, x, dy):
    """``(y, dx, grads)`` of ``sum(y * dy)`` on ``backend`` (host arrays in): ``jax.grad`` of
    the forward where the backend differentiates (as fit does), the hand-written backprop
    elsewhere."""
    p = {k: backend.asarray(v) for k, v in params.items()}
    bx, bdy = backend.asarray(x), backend.asarray(dy)
    if not backend.has_autodiff:
        y, _, backprop = layer.forward(p, {}, bx, train=True)
        dx, grads = backprop(bdy)
        return y, dx, grads

    def objective(args):
        y = layer.apply(args[0], {}, args[1], train=True, vjp=False)[0]
        return backend.xp.sum(y * bdy), y

    # One compilation per case (eager JAX would compile each operation on its own).
    (_, y), (grads, dx) = backend.jit(backend.value_and_grad(objective, has_aux=True))((p, bx))
    return y, dx, grads


def _check_against_jax(layer, params, x, dy):
    """NumPy float32 backprop vs ``jax.grad`` of the same forward on the jax backend."""
    with wf.use_backend("numpy") as b:
        y, dx, grads = _vjp(b, layer, params, x, dy)
    with wf.use_backend("jax") as b:
        jy, jdx, jgrads = _vjp(b, layer, params, x, dy)
    assert jdx.dtype == np.float32 and dx.dtype == np.float32
    assert_close(y, jy, rtol=JAX_RTOL, atol=JAX_ATOL)
    assert_close(dx, jdx, rtol=JAX_RTOL, atol=JAX_ATOL)
    assert sorted(jgrads) == sorted(grads) == sorted(params)
    for name in params:
        assert_close(grads[name], jgrads[name], rtol=JAX_RTOL, atol=JAX_ATOL)


def _tf_same_pads(size, window, stride, dilation=1):
    """TensorFlow's "same": output ceil(size / stride), the odd pad step after."""
    span = (window - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def _torch_pads(padding, size, window, stride, dilation=1):
    """F.pad's (left, right) for Keras ``padding``."""
    if padding == "causal":
        return (dilation * (window - 1), 0)
    if padding == "same":
        return _tf_same_pads(size, window, stride, dilation)
    return (0, 0)


def _leaf(torch, a, order):
    """A float32 torch leaf from a host array, axes permuted by ``order`` (channels first)."""
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32).transpose(order)))
    return t.requires_grad_(True)


def _ncl(torch, a):
    return _leaf(torch, a, (0, 2, 1))


def _back(t):
    """Channels-first torch gradient back in wframe's channels-last layout."""
    g = t.grad.numpy()
    return g.transpose(0, 2, 1) if g.ndim == 3 else g.transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize(("strides", "padding", "dilation"), CONV_OPTIONS)
def test_conv1d_backprop_matches_finite_differences(strides, padding, dilation):
    _check_against_fd(*_conv_case(strides, padding, dilation))


def test_conv1d_without_bias_and_with_relu_matches_finite_differences():
    layer = Conv1D(4, 2, padding="causal", use_bias=False)
    with wf.use_backend("numpy"):
        params = {"W": np.asarray(layer.init(0, (None, 7, 3), dtype="float64")[0]["W"])}
        x = _distinct_input(IN_SHAPE)
        z = layer.forward(params, {}, x)[0]
        assert np.abs(z).min() > 1e-4  # no finite-difference step crosses relu's kink
    relu = Conv1D(4, 2, padding="causal", use_bias=False, activation="relu")
    _check_against_fd(relu, params, x, np.random.default_rng(1).standard_normal(z.shape))


@pytest.mark.parametrize(
    ("strides", "padding", "dilation"),
    [pytest.param(1, "same", 2, id="s1-same-d2"), pytest.param(2, "causal", 1, id="s2-causal")],
)
def test_conv1d_backprop_matches_jax_grad(jax, strides, padding, dilation):
    _check_against_jax(*_conv_case(strides, padding, dilation, dtype="float32"))


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize(("pool", "strides", "padding"), POOL_OPTIONS)
def test_pool1d_backprop_matches_finite_differences(op, pool, strides, padding):
    layer = POOLS[op](pool, strides, padding)
    x = _distinct_input(IN_SHAPE)
    _check_against_fd(layer, {}, x, _cotangent(layer, x))


@pytest.mark.parametrize("op", ["max", "avg"])
def test_pool1d_backprop_matches_jax_grad(jax, op):
    layer = POOLS[op](3, 2, "same")
    x = _distinct_input(IN_SHAPE, "float32")
    _check_against_jax(layer, {}, x, _cotangent(layer, x))


@pytest.mark.parametrize("keepdims", [False, True], ids=["flat", "keepdims"])
@pytest.mark.parametrize("kind", GLOBAL_POOLS)
def test_global_pool_backprop_matches_finite_differences(kind, keepdims):
    cls, shape = GLOBAL_POOLS[kind]
    layer = cls(keepdims=keepdims)
    x = _distinct_input(shape)
    _check_against_fd(layer, {}, x, _cotangent(layer, x))


@pytest.mark.parametrize("kind", GLOBAL_POOLS)
def test_global_pool_backprop_matches_jax_grad(jax, kind):
    cls, shape = GLOBAL_POOLS[kind]
    x = _distinct_input(shape, "float32")
    _check_against_jax(cls(), {}, x, _cotangent(cls(), x))


# ----------------------------------------------------------------------------- torch oracle
@pytest.mark.parametrize(("strides", "padding", "dilation"), TORCH_CONV_OPTIONS)
def test_conv1d_matches_torch(backend, strides, padding, dilation):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    layer, params, x, dy = _conv_case(strides, padding, dilation, "float32", activation=None)
    y, dx, grads = _vjp(backend, layer, params, x, dy)

    tx, tb = _ncl(torch, x), _leaf(torch, params["b"], (0,))
    tW = _leaf(torch, params["W"], (2, 1, 0))  # (filters, cin, k)
    pads = _torch_pads(padding, IN_SHAPE[1], 3, strides, dilation)
    ty = F.conv1d(F.pad(tx, pads), tW, tb, stride=strides, dilation=dilation)
    ty.backward(torch.from_numpy(np.ascontiguousarray(dy.transpose(0, 2, 1))))
    close = {"rtol": TORCH_RTOL, "atol": TORCH_ATOL}
    assert_close(y, ty.detach().numpy().transpose(0, 2, 1), **close)
    assert_close(dx, _back(tx), **close)
    assert_close(grads["W"], tW.grad.numpy().transpose(2, 1, 0), **close)
    assert_close(grads["b"], tb.grad.numpy(), **close)


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize(("pool", "strides", "padding"), TORCH_POOL_OPTIONS)
def test_pool1d_matches_torch(backend, op, pool, strides, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    layer = POOLS[op](pool, strides, padding)
    x = np.random.default_rng(0).standard_normal(IN_SHAPE).astype(np.float32)
    dy = _cotangent(layer, x)
    y, dx, _ = _vjp(backend, layer, {}, x, dy)

    window, step = layer.pool_size[0], layer.strides[0]
    pads = _torch_pads(padding, IN_SHAPE[1], window, step)
    tx = _ncl(torch, x)
    if op == "max":
        ty = F.max_pool1d(F.pad(tx, pads, value=-float("inf")), window, step)
    else:  # Keras "same" averages only the real steps: sum over the window / their count
        sums = F.avg_pool1d(F.pad(tx, pads), window, step) * window
        count = F.avg_pool1d(F.pad(torch.ones_like(tx), pads), window, step) * window
        ty = sums / count
    ty.backward(torch.from_numpy(np.ascontiguousarray(dy.transpose(0, 2, 1))))
    assert_close(y, ty.detach().numpy().transpose(0, 2, 1), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    assert_close(dx, _back(tx), rtol=TORCH_RTOL, atol=TORCH_ATOL)


@pytest.mark.parametrize(("pool", "strides"), [(2, None), (3, 1)], ids=["tiled", "overlapping"])
def test_max_pool1d_gradient_goes_to_the_first_maximum_like_torch(backend, pool, strides):
    torch = pytest.importorskip("torch")
    # Values in {0, 1, 2}: most windows hold their maximum twice or more.
    x = np.random.default_rng(0).integers(0, 3, (2, 9, 2)).astype(np.float32)
    layer = MaxPool1D(pool, strides)
    dy = _cotangent(layer, x)
    _, dx, _ = _vjp(backend, layer, {}, x, dy)
    tx = _ncl(torch, x)
    ty = torch.nn.functional.max_pool1d(tx, pool, strides or pool)
    ty.backward(torch.from_numpy(np.ascontiguousarray(dy.transpose(0, 2, 1))))
    assert_close(dx, _back(tx), rtol=TORCH_RTOL, atol=TORCH_ATOL)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("keepdims", [False, True], ids=["flat", "keepdims"])
@pytest.mark.parametrize("kind", GLOBAL_POOLS)
def test_global_pool_matches_torch(backend, kind, keepdims, ties):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    cls, shape = GLOBAL_POOLS[kind]
    layer = cls(keepdims=keepdims)
    rng = np.random.default_rng(0)
    # Ties: values in {0, 1, 2}, so most channels hold their maximum several times; the
    # gradient goes to the first (row-major) one, as PyTorch's and as MaxPool2D's.
    x = rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)
    x = x.astype(np.float32)
    dy = _cotangent(layer, x)
    y, dx, _ = _vjp(backend, layer, {}, x, dy)

    channels_first = (0, len(shape) - 1, *range(1, len(shape) - 1))
    tx = _leaf(torch, x, channels_first)
    pool = {"avg1d": F.adaptive_avg_pool1d, "max1d": F.adaptive_max_pool1d}
    ty = pool.get(kind, F.adaptive_max_pool2d)(tx, 1)  # (N, C, 1[, 1])
    ty.backward(torch.from_numpy(dy.reshape(ty.shape)))
    expected = ty.detach().numpy().reshape(shape[0], *(1,) * (len(shape) - 2), shape[-1])
    assert_close(y, expected if keepdims else expected.reshape(shape[0], -1), rtol=TORCH_RTOL)
    assert_close(dx, _back(tx), rtol=TORCH_RTOL, atol=TORCH_ATOL)


def test_causal_output_never_sees_a_later_step():
    layer = Conv1D(1, 3, padding="causal", dilation_rate=2, use_bias=False)
    x = np.zeros((1, 9, 1))
    x[0, 5, 0] = 1.0  # an impulse at step 5
    with wf.use_backend("numpy"):
        y = layer.forward({"W": np.ones((3, 1, 1))}, {}, x)[0]
    # Output t sums inputs t, t-2 and t-4: the impulse reaches outputs 5, 7 and 9 (past the end).
    assert_close(y[0, :, 0], np.array([0, 0, 0, 0, 0, 1, 0, 1, 0.0]), rtol=0)


# ----------------------------------------------------------------------------- shapes, names
@pytest.mark.parametrize(
    ("layer", "out"),
    [
        (Conv1D(4, 3), (5, 4)),
        (Conv1D(4, 3, padding="same"), (7, 4)),
        (Conv1D(4, 3, padding="causal", dilation_rate=3), (7, 4)),
        (Conv1D(4, 3, strides=2), (3, 4)),
        (Conv1D(4, 3, strides=2, padding="same"), (4, 4)),
        (Conv1D(4, 3, strides=2, padding="causal"), (4, 4)),
        (Conv1D(4, 2, dilation_rate=2), (5, 4)),
        (MaxPool1D(), (3, 3)),
        (MaxPool1D(padding="same"), (4, 3)),
        (AvgPool1D(3, 1), (5, 3)),
        (AvgPool1D(3, 2, "same"), (4, 3)),
        (GlobalAvgPool1D(), (3,)),
        (GlobalMaxPool1D(keepdims=True), (1, 3)),
    ],
    ids=lambda v: f"{v.kind}-{v.padding}" if hasattr(v, "padding") else None,
)
def test_output_shapes(backend, layer, out):
    params, _, shape = layer.init(0, (None, *IN_SHAPE[1:]))
    assert shape == (None, *out)
    y = layer.forward(params, {}, backend.asarray(np.ones(IN_SHAPE, np.float32)))[0]
    assert tuple(y.shape) == (IN_SHAPE[0], *out)
    assert wf.backends.array_namespace(y) is backend.xp


def test_global_max_pool2d_shapes():
    assert GlobalMaxPool2D().init(0, (None, 5, 4, 3))[2] == (None, 3)
    assert GlobalMaxPool2D(keepdims=True).init(0, (None, 5, 4, 3))[2] == (None, 1, 1, 3)
    y = GlobalMaxPool2D(keepdims=True).forward({}, {}, np.arange(24.0).reshape(1, 2, 4, 3))[0]
    assert_close(y, np.array([[[[21.0, 22.0, 23.0]]]]), rtol=0)


def test_layer_names_parameters_and_keras_defaults():
    model = wf.Sequential(
        [Conv1D(2, 3), MaxPool1D(), Conv1D(2, 1), AvgPool1D(), GlobalMaxPool1D(), Dense(2)]
    ).build((None, 16, 3))
    assert [layer.name for layer in model.layers] == [
        "conv1d_0",
        "max_pool1d_0",
        "conv1d_1",
        "avg_pool1d_0",
        "global_max_pool1d_0",
        "dense_0",
    ]
    assert model.params["conv1d_0"]["W"].shape == (3, 3, 2)
    assert model.count_params() == (3 * 3 * 2 + 2) + (2 * 2 + 2) + (2 * 2 + 2)
    layer = Conv1D(8, 3)
    assert (layer.kernel_size, layer.strides, layer.dilation_rate) == ((3,), (1,), (1,))
    assert (layer.padding, layer.use_bias, layer.activation) == ("valid", True, None)
    assert Conv1D(8, (5,), padding="CAUSAL").padding == "causal"
    assert MaxPool1D().pool_size == (2,) and MaxPool1D(3).strides == (3,)
    assert AvgPool1D(2, 1).strides == (1,) and GlobalMaxPool1D().keepdims is False
    assert MaxPooling1D is MaxPool1D and AveragePooling1D is AvgPool1D
    assert GlobalMaxPool2D().kind == "global_max_pool2d"


# ----------------------------------------------------------------------------- errors
def test_inputs_of_the_wrong_rank_name_the_layer():
    with pytest.raises(ValueError, match=r"Conv1D 'conv1d_0' expects 3-D inputs .*\(None, 64\)"):
        wf.Sequential([Conv1D(4, 3)]).build((None, 64))
    layer = Conv1D(4, 3, name="c")
    params, _, _ = layer.init(0, (None, 8, 2))
    with pytest.raises(
        ValueError, match=r"Conv1D 'c' expects 3-D inputs \(batch, steps, channels\), got array "
    ):
        layer.forward(params, {}, np.ones((2, 8, 8, 2), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool1D expects 3-D inputs .*\(5, 64\)"):
        MaxPool1D().forward({}, {}, np.ones((5, 64)))
    with pytest.raises(ValueError, match=r"GlobalMaxPool2D expects 4-D inputs .*\(2, 8, 3\)"):
        GlobalMaxPool2D().forward({}, {}, np.ones((2, 8, 3)))
    with pytest.raises(ValueError, match=r"GlobalAvgPool1D expects 3-D inputs"):
        GlobalAvgPool1D().init(0, (None, 4, 4, 3))


def test_a_channel_mismatch_names_the_kernel_shape():
    layer = Conv1D(4, 3, name="c")
    params, _, _ = layer.init(0, (None, 8, 3))
    with pytest.raises(
        ValueError,
        match=r"Conv1D 'c' expects inputs with 3 channels \(W has shape \(3, 3, 4\)\), got "
        r"array of shape \(2, 8, 5\)",
    ):
        layer.forward(params, {}, np.ones((2, 8, 5), np.float32))


def test_a_window_longer_than_the_input_needs_padding():
    with pytest.raises(
        ValueError,
        match=r"Conv1D 'conv1d_0': kernel 5 is larger than the input length 4 with "
        r"padding='valid'; use padding='same' or 'causal'",
    ):
        wf.Sequential([Conv1D(4, 5)]).build((None, 4, 1))
    with pytest.raises(ValueError, match=r"kernel 3 \(dilated to 5\) is larger than .* length 4"):
        Conv1D(4, 3, dilation_rate=2).init(0, (None, 4, 1))
    with pytest.raises(ValueError, match=r"MaxPool1D: pool 3 is larger than .* use padding='same'"):
        MaxPool1D(3).init(0, (None, 2, 1))
    assert Conv1D(4, 5, padding="causal").init(0, (None, 4, 1))[2] == (None, 4, 4)
    assert MaxPool1D(3, padding="same").init(0, (None, 2, 1))[2] == (None, 1, 1)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Conv1D(0, 3), r"Conv1D: filters must be a positive int, got 0"),
        (lambda: Conv1D(4, (3, 3)), r"Conv1D: kernel_size must be a positive int \(or a tuple"),
        (lambda: Conv1D(4, 2.5), r"kernel_size must be a positive int .* got 2\.5"),
        (lambda: Conv1D(4, "same"), r"got 'same'; did you mean padding='same'\?"),
        (lambda: Conv1D(4, 3, strides=0), r"strides must be a positive int"),
        (lambda: Conv1D(4, 3, dilation_rate=True), r"dilation_rate must be a positive int"),
        (lambda: Conv1D(4, 3, padding="full"), r"'valid' or 'same' or 'causal', got 'full'"),
        (lambda: MaxPool1D(2, padding="causal"), r"MaxPool1D: padding must be 'valid' or 'same'"),
        (lambda: AvgPool1D(0), r"AvgPool1D: pool_size must be a positive int"),
        (lambda: GlobalMaxPool1D(keepdims=1), r"GlobalMaxPool1D: keepdims must be True or False"),
        (lambda: Conv1D(4, 3, activation="nope"), r"nope"),
    ],
)
def test_bad_arguments_fail_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----------------------------------------------------------------------------- models
def _sequence_model():
    return wf.Sequential(
        [Conv1D(6, 3, padding="causal", activation="relu"), GlobalMaxPool1D(), Dense(3)], seed=3
    )


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 10, 2)).astype(np.float32)
    return x, (x[:, :, 0].max(axis=1) > 1.0).astype(np.int32) + (x[:, -1, 1] > 0)


def test_fit_agrees_on_numpy_and_jax(jax):
    x, y = _data()
    runs = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = _sequence_model()
            opt = wf.optimizers.adam(1e-2)
            history = model.fit(x, y, epochs=3, batch_size=8, optimizer=opt, seed=1, verbose=0)
            runs[name] = history.history["loss"], model.params
    (np_loss, np_params), (jax_loss, jax_params) = runs["numpy"], runs["jax"]
    assert np_loss[-1] < np_loss[0]
    np.testing.assert_allclose(jax_loss, np_loss, rtol=1e-4)
    for layer, params in np_params.items():
        for k, v in params.items():
            assert_close(jax_params[layer][k], v, rtol=1e-4, atol=1e-6)


MODELS = {
    "1d": lambda: wf.Sequential(
        [
            Conv1D(4, (3,), padding="causal", dilation_rate=2, kernel_regularizer="l2"),
            MaxPool1D(2, padding="same"),
            AvgPool1D(2, 1),
            Conv1D(3, 2, strides=2, padding="same", activation="tanh", use_bias=False),
            GlobalAvgPool1D(keepdims=True),
            Flatten(),
            Dense(2),
        ],
        seed=2,
    ),
    "1d-max": _sequence_model,
    "2d": lambda: wf.Sequential(
        [Conv2D(3, 2), GlobalMaxPool2D(keepdims=True), Flatten(), Dense(2)], seed=2
    ),
}


@pytest.mark.parametrize("kind", MODELS)
def test_save_and_load_model(backend, tmp_path, kind):
    model = MODELS[kind]()
    shape = (6, 5, 4, 3) if kind == "2d" else (6, 10, 2)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    model.build((None, *shape[1:]))
    wf.save_model(model, tmp_path / "m.safetensors")
    loaded = wf.load_model(tmp_path / "m.safetensors")
    assert model_config(loaded) == model_config(model)
    assert [type(a) for a in loaded.layers] == [type(a) for a in model.layers]
    for a, b in zip(loaded.layers, model.layers, strict=True):
        assert a == b
    np.testing.assert_array_equal(wf.to_numpy(loaded.predict(x)), wf.to_numpy(model.predict(x)))


def test_conv1d_stack_runs_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    layers = [Conv1D(4, 3, padding="same"), MaxPool1D(3, 2, "same"), GlobalMaxPool1D()]
    model = wf.Sequential(layers, seed=0, dtype="float64").build((None, *IN_SHAPE[1:]))
    x = _distinct_input(IN_SHAPE)
    dy = np.random.default_rng(1).standard_normal((IN_SHAPE[0], 4))
    strict_params = {
        k: {n: xps.asarray(np.asarray(a)) for n, a in p.items()} for k, p in model.params.items()
    }
    with wf.use_backend("numpy"):
        y, _, backprop = model.apply(model.params, {}, x, train=True)
        dx, grads = backprop(dy)
        sy, _, sbackprop = model.apply(strict_params, {}, xps.asarray(x), train=True)
        sdx, sgrads = sbackprop(xps.asarray(dy))
    assert type(sdx) is type(xps.asarray(0.0))
    assert_close(np.asarray(sy), y, rtol=1e-12)
    assert_close(np.asarray(sdx), dx, rtol=1e-12)
    for k in grads:
        for n in grads[k]:
            assert_close(np.asarray(sgrads[k][n]), grads[k][n], rtol=1e-12)
