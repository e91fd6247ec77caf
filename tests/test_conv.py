"""Conv2D, MaxPool2D, AvgPool2D and GlobalAvgPool2D.

* Hand-written backprop against central finite differences (NumPy, float64, rtol 1e-6) for every
  option combination, and against ``jax.grad`` of the same forward on JAX (float32, rtol 1e-5).
* Forward values against PyTorch (``torch.nn.functional``; "same" emulated with explicit pads
  computed here from TensorFlow's formula) on every backend.
* Output shapes, parameter counts, errors, array-API-only code, and a CNN trained by ``fit``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import wframe as wf
from wframe.layers import AvgPool2D, Conv2D, Dense, GlobalAvgPool2D, MaxPool2D
from wframe.testing import assert_close, numerical_grad

FD_RTOL = 1e-6
FD_ATOL = 1e-9
JAX_RTOL = 1e-5
# Conv outputs and kernel gradients are sums of tens of float32 products: NumPy and XLA add them
# in different orders, so entries agree to a few ulp of the largest entry, not of themselves.
JAX_ATOL = 1e-6

IN_SHAPE = (2, 7, 6, 3)  # H != W and odd/even sizes catch axis mix-ups and asymmetric "same"
CONV_OPTIONS = [
    pytest.param(s, p, d, id=f"s{s}-{p}-d{d}")
    for s, p, d in itertools.product([1, 2], ["valid", "same"], [1, 2])
]
ACTIVATIONS = ["linear", "relu", "tanh"]
POOL_OPTIONS = [
    pytest.param(pool, strides, padding, id=f"p{pool}-s{strides}-{padding}")
    for (pool, strides), padding in itertools.product(
        [(2, None), (3, 2), (3, 1), ((2, 3), (1, 2))], ["valid", "same"]
    )
]
POOLS = {"max": MaxPool2D, "avg": AvgPool2D}


# ----------------------------------------------------------------------------- helpers


def _host_params(params) -> dict:
    return {k: np.asarray(wf.to_numpy(v)) for k, v in params.items()}


def _conv_case(strides, padding, dilation, use_bias, activation, dtype="float64"):
    """A Conv2D(4, (3, 2)), params with a random bias, an input and a cotangent.

    For relu the seed is the first whose pre-activations all stay 1e-4 away from the kink, so
    that no finite-difference step crosses it.
    """
    layer = Conv2D(
        4,
        (3, 2),
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        activation=activation,
        use_bias=use_bias,
    )
    with wf.use_backend("numpy"):
        params, _, out_shape = layer.init(0, (None, *IN_SHAPE[1:]), dtype=dtype)
    params = _host_params(params)
    for seed in range(50):
        rng = np.random.default_rng(seed)
        if use_bias:
            params["b"] = (rng.standard_normal(4) * 0.5).astype(dtype)
        x = rng.standard_normal(IN_SHAPE).astype(dtype)
        with wf.use_backend("numpy"):
            z = Conv2D(
                4,
                (3, 2),
                strides=strides,
                padding=padding,
                dilation_rate=dilation,
                use_bias=use_bias,
            ).forward(params, {}, x)[0]
        if activation != "relu" or np.abs(z).min() > 1e-4:
            break
    dy = rng.standard_normal(z.shape).astype(dtype)
    assert z.shape[1:] == out_shape[1:]
    return layer, params, x, dy


def _distinct_input(shape, dtype="float64", seed=0):
    """Entries in [-1, 1), at least 2 / size apart (far more than a finite-difference step), so
    no step changes a window's maximum; small values keep the difference quotients' round-off
    low."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) * (2.0 / size) - 1.0).astype(dtype)


def _check_against_fd(layer, params, x, dy):
    def objective(p, v):
        return np.sum(layer.forward(p, {}, v, train=True)[0] * dy)

    _, _, backprop = layer.forward(params, {}, x, train=True)
    dx, grads = backprop(dy, input_grad=True)
    assert sorted(grads) == sorted(params)
    for name in params:

        def f(v, name=name):
            return objective({**params, name: v}, x)

        assert_close(grads[name], numerical_grad(f, params[name]), rtol=FD_RTOL, atol=FD_ATOL)
    assert_close(dx, numerical_grad(lambda v: objective(params, v), x), rtol=FD_RTOL, atol=FD_ATOL)
    dx_none, grads_again = backprop(dy, input_grad=False)
    assert dx_none is None
    for name in params:
        assert_close(grads_again[name], grads[name], rtol=0)


def _check_against_jax(jax, layer, params, x, dy):
    """NumPy float32 backprop vs ``jax.grad`` of the same forward on the jax backend."""
    with wf.use_backend("numpy"):
        y, _, backprop = layer.forward(params, {}, x, train=True)
        dx, grads = backprop(dy)
    assert dx.dtype == np.float32
    with wf.use_backend("jax") as b:
        jparams = {k: b.asarray(v) for k, v in params.items()}
        jx, jdy = b.asarray(x), b.asarray(dy)

        def objective(p, v):
            return b.xp.sum(layer.forward(p, {}, v, train=True)[0] * jdy)

        def forward_and_grads(p, v):  # one compilation, not one per primitive
            return layer.forward(p, {}, v)[0], jax.grad(objective, argnums=(0, 1))(p, v)

        jy, (jgrads, jdx) = jax.jit(forward_and_grads)(jparams, jx)
    assert jdx.dtype == np.float32

    def close(a, ref):
        scale = max(1.0, float(np.abs(wf.to_numpy(ref)).max()))
        assert_close(a, ref, rtol=JAX_RTOL, atol=JAX_ATOL * scale)

    close(y, jy)
    assert sorted(jgrads) == sorted(grads)
    for name in params:
        close(grads[name], jgrads[name])
    close(dx, jdx)


def _tf_same_pads(size, window, stride, dilation=1):
    """TensorFlow's "same": output ceil(size / stride), the odd pad pixel after."""
    span = (window - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


# ----------------------------------------------------------------------------- gradients
@pytest.fixture
def _numpy():
    with wf.use_backend("numpy"):
        yield


@pytest.mark.usefixtures("_numpy")
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("strides", "padding", "dilation"), CONV_OPTIONS)
def test_conv2d_backprop_matches_finite_differences(
    strides, padding, dilation, use_bias, activation
):
    _check_against_fd(*_conv_case(strides, padding, dilation, use_bias, activation))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("strides", "padding", "dilation"), CONV_OPTIONS)
def test_conv2d_backprop_matches_jax_grad(jax, strides, padding, dilation, use_bias, activation):
    case = _conv_case(strides, padding, dilation, use_bias, activation, dtype="float32")
    _check_against_jax(jax, *case)


@pytest.mark.usefixtures("_numpy")
@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize(("pool", "strides", "padding"), POOL_OPTIONS)
def test_pool_backprop_matches_finite_differences(op, pool, strides, padding):
    layer = POOLS[op](pool, strides, padding)
    x = _distinct_input(IN_SHAPE)
    y = layer.forward({}, {}, x)[0]
    assert y.shape[1:] == layer.init(0, (None, *IN_SHAPE[1:]))[2][1:]
    dy = np.random.default_rng(1).standard_normal(y.shape)
    _check_against_fd(layer, {}, x, dy)


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize(("pool", "strides", "padding"), POOL_OPTIONS)
def test_pool_backprop_matches_jax_grad(jax, op, pool, strides, padding):
    layer = POOLS[op](pool, strides, padding)
    x = _distinct_input(IN_SHAPE, "float32")
    with wf.use_backend("numpy"):
        y = layer.forward({}, {}, x)[0]
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    _check_against_jax(jax, layer, {}, x, dy)


@pytest.mark.usefixtures("_numpy")
def test_global_avg_pool_backprop_matches_finite_differences():
    x = np.random.default_rng(0).standard_normal(IN_SHAPE)
    dy = np.random.default_rng(1).standard_normal((IN_SHAPE[0], IN_SHAPE[3]))
    layer = GlobalAvgPool2D()
    assert_close(layer.forward({}, {}, x)[0], x.mean(axis=(1, 2)), rtol=1e-12)
    _check_against_fd(layer, {}, x, dy)


def test_global_avg_pool_backprop_matches_jax_grad(jax):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(IN_SHAPE).astype(np.float32)
    dy = rng.standard_normal((IN_SHAPE[0], IN_SHAPE[3])).astype(np.float32)
    _check_against_jax(jax, GlobalAvgPool2D(), {}, x, dy)


@pytest.mark.usefixtures("_numpy")
def test_max_pool_gradient_goes_to_the_first_maximum_like_torch():
    torch = pytest.importorskip("torch")
    # Few distinct values: most windows hold tied maxima; overlapping windows (stride 1) too.
    x = np.random.default_rng(0).integers(0, 3, (2, 6, 7, 2)).astype(np.float64)
    for pool, strides in [(2, None), (3, 1), (3, 2)]:
        layer = MaxPool2D(pool, strides)
        y, _, backprop = layer.forward({}, {}, x)
        dy = np.random.default_rng(1).standard_normal(y.shape)
        dx = backprop(dy)[0]
        tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
        ty = torch.nn.functional.max_pool2d(tx, pool, strides or pool)
        ty.backward(torch.from_numpy(dy.transpose(0, 3, 1, 2).copy()))
        assert_close(dx, tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-12)
    # All-equal windows: the top-left entry of each window receives everything.
    dx = MaxPool2D(2).forward({}, {}, np.zeros((1, 4, 4, 1)))[2](np.ones((1, 2, 2, 1)))[0]
    expected = np.zeros((1, 4, 4, 1))
    expected[0, ::2, ::2, 0] = 1.0
    assert_close(dx, expected, rtol=0)


# ----------------------------------------------------------------------------- torch oracle
def _torch_nchw(torch, a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def _torch_pads(padding, hw, window, strides, dilation=(1, 1)):
    """F.pad's (left, right, top, bottom) for Keras ``padding``."""
    if padding == "valid":
        return (0, 0, 0, 0)
    top, bottom = _tf_same_pads(hw[0], window[0], strides[0], dilation[0])
    left, right = _tf_same_pads(hw[1], window[1], strides[1], dilation[1])
    return (left, right, top, bottom)


@pytest.mark.parametrize(("strides", "padding", "dilation"), CONV_OPTIONS)
def test_conv2d_matches_torch(backend, strides, padding, dilation):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    layer = Conv2D(5, (3, 2), strides=strides, padding=padding, dilation_rate=dilation)
    params, _, _ = layer.init(0, (None, *IN_SHAPE[1:]))
    rng = np.random.default_rng(0)
    params["b"] = backend.asarray(rng.standard_normal(5), dtype="float32")
    x = rng.standard_normal(IN_SHAPE).astype(np.float32)
    y = layer.forward(params, {}, backend.asarray(x))[0]

    W, b = (np.array(wf.to_numpy(params[k])) for k in ("W", "b"))  # writable copies
    pads = _torch_pads(padding, IN_SHAPE[1:3], (3, 2), (strides,) * 2, (dilation,) * 2)
    ty = F.conv2d(
        F.pad(_torch_nchw(torch, x), pads),
        torch.from_numpy(np.ascontiguousarray(W.transpose(3, 2, 0, 1))),  # (cout, cin, kh, kw)
        torch.from_numpy(b),
        stride=strides,
        dilation=dilation,
    )
    assert_close(y, ty.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize(("pool", "strides", "padding"), POOL_OPTIONS)
def test_pool_matches_torch(backend, op, pool, strides, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    layer = POOLS[op](pool, strides, padding)
    x = np.random.default_rng(0).standard_normal(IN_SHAPE).astype(np.float32)
    y = layer.forward({}, {}, backend.asarray(x))[0]

    window, steps = layer.pool_size, layer.strides
    pads = _torch_pads(padding, IN_SHAPE[1:3], window, steps)
    tx = _torch_nchw(torch, x)
    if op == "max":
        ty = F.max_pool2d(F.pad(tx, pads, value=-float("inf")), window, steps)
    else:  # Keras "same" averages only the real pixels: sum over the window / their count
        sums = F.avg_pool2d(F.pad(tx, pads), window, steps, divisor_override=1)
        count = F.avg_pool2d(F.pad(torch.ones_like(tx), pads), window, steps, divisor_override=1)
        ty = sums / count
    assert_close(y, ty.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_same_padding_is_asymmetric_like_tensorflow():
    # 6 wide, kernel 3, stride 2: TF pads 0 left and 1 right (PyTorch would pad 1 and 1).
    x = np.arange(6.0).reshape(1, 1, 6, 1)
    layer = Conv2D(1, (1, 3), strides=2, padding="same", use_bias=False)
    W = np.ones((1, 3, 1, 1))
    with wf.use_backend("numpy"):
        y = layer.forward({"W": W}, {}, x)[0]
    assert_close(y[0, 0, :, 0], np.array([0 + 1 + 2, 2 + 3 + 4, 4 + 5 + 0]), rtol=0)


# ----------------------------------------------------------------------------- shapes, params
@pytest.mark.parametrize(
    ("layer", "out"),
    [
        (Conv2D(4, 3), (5, 4, 4)),
        (Conv2D(4, 3, padding="same"), (7, 6, 4)),
        (Conv2D(4, 3, strides=2), (3, 2, 4)),
        (Conv2D(4, 3, strides=2, padding="same"), (4, 3, 4)),
        (Conv2D(4, (3, 2), dilation_rate=2), (3, 4, 4)),
        (Conv2D(4, 3, strides=(2, 1), dilation_rate=(1, 2), padding="same"), (4, 6, 4)),
        (MaxPool2D(), (3, 3, 3)),
        (MaxPool2D(padding="same"), (4, 3, 3)),
        (AvgPool2D(3, 1), (5, 4, 3)),
        (AvgPool2D(3, 2, "same"), (4, 3, 3)),
        (GlobalAvgPool2D(), (3,)),
    ],
    ids=lambda v: repr(v) if isinstance(v, tuple) else None,
)
def test_output_shapes(backend, layer, out):
    params, _, shape = layer.init(0, (None, *IN_SHAPE[1:]))
    assert shape == (None, *out)
    x = backend.asarray(np.ones(IN_SHAPE, np.float32))
    y = layer.forward(params, {}, x)[0]
    assert tuple(y.shape) == (IN_SHAPE[0], *out)
    assert wf.backends.array_namespace(y) is backend.xp


@pytest.mark.parametrize("size", [8, 28, 64])
def test_conv_param_count_does_not_depend_on_image_size(size):
    model = wf.Sequential([Conv2D(8, 3, padding="same"), Conv2D(16, (3, 5))])
    model.build((None, size, size, 3))
    assert model.count_params() == (3 * 3 * 3 * 8 + 8) + (3 * 5 * 8 * 16 + 16)
    assert model.params["conv2d_0"]["W"].shape == (3, 3, 3, 8)
    assert model.params["conv2d_1"]["b"].shape == (16,)
    text = model.summary(print_fn=lambda s: None)
    assert "conv2d_0 (Conv2D)" in text and f"(None, {size}, {size}, 8)" in text


def test_layer_names_and_hyper_parameters_as_keras():
    model = wf.Sequential(
        [Conv2D(2, 3), MaxPool2D(), Conv2D(2, 1), AvgPool2D(), GlobalAvgPool2D(), Dense(2)]
    )
    assert [layer.name for layer in model.layers] == [
        "conv2d_0",
        "max_pool2d_0",
        "conv2d_1",
        "avg_pool2d_0",
        "global_avg_pool2d_0",
        "dense_0",
    ]
    layer = Conv2D(8, 3)
    assert (layer.kernel_size, layer.strides, layer.dilation_rate) == ((3, 3), (1, 1), (1, 1))
    assert (layer.padding, layer.use_bias, layer.activation) == ("valid", True, None)
    assert MaxPool2D(3).strides == (3, 3) and AvgPool2D(2, 1).strides == (1, 1)
    assert Conv2D(8, 3, padding="SAME").padding == "same"


# ----------------------------------------------------------------------------- errors
def test_conv_rejects_2d_inputs():
    model = wf.Sequential([Conv2D(4, 3)])
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d_0' expects 4-D inputs .*\(None, 64\)"):
        model.build((None, 64))
    layer = Conv2D(4, 3, name="c")
    params, _, _ = layer.init(0, (None, 8, 8, 1))
    with pytest.raises(ValueError, match=r"Conv2D 'c' expects 4-D inputs .*\(5, 64\)"):
        layer.forward(params, {}, np.ones((5, 64), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2D expects 4-D inputs .*\(5, 64\)"):
        MaxPool2D().forward({}, {}, np.ones((5, 64)))


def test_conv_rejects_a_channel_mismatch():
    layer = Conv2D(4, 3, name="c")
    params, _, _ = layer.init(0, (None, 8, 8, 3))
    with pytest.raises(
        ValueError,
        match=r"Conv2D 'c' expects inputs with 3 channels \(W has shape \(3, 3, 3, 4\)\), "
        r"got array of shape \(2, 8, 8, 5\)",
    ):
        layer.forward(params, {}, np.ones((2, 8, 8, 5), np.float32))


def test_window_larger_than_the_input_is_an_error_with_valid_padding():
    with pytest.raises(
        ValueError,
        match=r"Conv2D 'conv2d_0': kernel 5x5 is larger than the input 4x4 with padding='valid'",
    ):
        wf.Sequential([Conv2D(4, 5)]).build((None, 4, 4, 1))
    with pytest.raises(ValueError, match=r"kernel 3x3 \(dilated to 5x5\) is larger than .* 4x6"):
        Conv2D(4, 3, dilation_rate=2).init(0, (None, 4, 6, 1))
    with pytest.raises(ValueError, match=r"MaxPool2D: pool 3x3 is larger than the input 2x2"):
        MaxPool2D(3).init(0, (None, 2, 2, 1))
    # "same" pads instead.
    assert Conv2D(4, 5, padding="same").init(0, (None, 4, 4, 1))[2] == (None, 4, 4, 4)
    assert MaxPool2D(3, padding="same").init(0, (None, 2, 2, 1))[2] == (None, 1, 1, 1)


def test_bad_hyper_parameters_are_errors():
    with pytest.raises(ValueError, match=r"Conv2D: padding must be 'valid' or 'same', got 'full'"):
        Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match=r"AvgPool2D: padding must be .* got 'causal'"):
        AvgPool2D(padding="causal")
    with pytest.raises(ValueError, match=r"strides must be .* got 'same'; did you mean padding"):
        Conv2D(4, 3, "same")
    with pytest.raises(ValueError, match=r"kernel_size must be a positive int .* got \(3, 0\)"):
        Conv2D(4, (3, 0))
    with pytest.raises(ValueError, match=r"filters must be a positive int, got 0"):
        Conv2D(0, 3)
    with pytest.raises(ValueError, match=r"Unknown activation 'rleu'"):
        Conv2D(4, 3, activation="rleu")


# ----------------------------------------------------------------------------- array API
def test_conv_layers_run_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    model = wf.Sequential(
        [
            Conv2D(3, 3, strides=2, padding="same", dilation_rate=1, activation="tanh"),
            MaxPool2D(2, 1, "same"),
            Conv2D(4, 2, dilation_rate=2),
            AvgPool2D(2, 1, "same"),
            GlobalAvgPool2D(),
        ],
        dtype="float64",
    )
    x = _distinct_input((2, 9, 8, 2))
    dy = np.random.default_rng(1).standard_normal((2, 4))
    with wf.use_backend("numpy"):
        model.build(x.shape)
        y, _, backprop = model.apply(model.params, {}, x, train=True)
        dx, grads = backprop(dy)
        strict = {k: {n: xps.asarray(a) for n, a in v.items()} for k, v in model.params.items()}
        sy, _, sbackprop = model.apply(strict, {}, xps.asarray(x), train=True)
        sdx, sgrads = sbackprop(xps.asarray(dy))
    assert isinstance(sdx, type(xps.asarray(0.0)))
    assert_close(np.asarray(sy), y, rtol=1e-12)
    assert_close(np.asarray(sdx), dx, rtol=1e-12)
    for layer in grads:
        for name in grads[layer]:
            assert_close(np.asarray(sgrads[layer][name]), grads[layer][name], rtol=1e-12)


# ----------------------------------------------------------------------------- models
def bars(n=128, size=8, seed=0):
    """Noisy images of one vertical (class 0) or horizontal (class 1) bar at a random place."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, size, size, 1))
    at = rng.integers(0, size, n)
    for i in range(n):
        if y[i]:
            x[i, at[i], :, 0] += 1.0
        else:
            x[i, :, at[i], 0] += 1.0
    return x.astype(np.float32), y


def small_cnn(seed=0, dtype="float32"):
    return wf.Sequential(
        [
            Conv2D(4, 3, padding="same", activation="relu", kernel_init="he_normal"),
            MaxPool2D(),
            Conv2D(6, 3, strides=2, padding="same", activation="tanh"),
            AvgPool2D(padding="same"),
            GlobalAvgPool2D(),
            Dense(2),
        ],
        seed=seed,
        dtype=dtype,
    )


def test_small_cnn_trains_with_fit(backend):
    x, y = bars()
    model = small_cnn()
    hist = model.fit(x, y, epochs=6, batch_size=16, optimizer=wf.optimizers.adam(1e-2), verbose=0)
    losses = hist.history["loss"]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
    assert model.evaluate(x, y)["accuracy"] > 0.8


def test_cnn_value_and_grad_matches_jax(jax):
    x, y = bars(16)
    with wf.use_backend("numpy"):
        value, grads = small_cnn().value_and_grad(x, y)
    with wf.use_backend("jax"):
        jvalue, jgrads = small_cnn().value_and_grad(x, y)
    assert_close(value, jvalue, rtol=JAX_RTOL)
    assert grads.keys() == jgrads.keys()
    for layer in grads:
        for name in grads[layer]:
            scale = max(1.0, float(np.abs(wf.to_numpy(jgrads[layer][name])).max()))
            assert_close(
                grads[layer][name], jgrads[layer][name], rtol=JAX_RTOL, atol=JAX_ATOL * scale
            )
