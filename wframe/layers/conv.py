"""Conv2D and 2-D pooling on NHWC inputs (batch, height, width, channels), as in Keras.

The arithmetic lives in the backend (:meth:`wframe.backends.Backend.conv2d_vjp`,
:meth:`~wframe.backends.Backend.pool2d_vjp`): im2col and one matmul on NumPy/CuPy and on JAX's
CPU, ``lax`` on JAX elsewhere (:data:`wframe.backends.jax.CONV2D`); pooling windows that tile
the input by a reshape. The layers turn Keras' ``padding="valid"/"same"`` into explicit pads,
with TensorFlow's "same": output size ``ceil(in / stride)``, the odd pad pixel at the
bottom/right.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from wframe import activations, initializers
from wframe.backends import array_namespace, backend_of
from wframe.layers.base import Layer
from wframe.random import split
from wframe.regularizers import Regularizer

_PADDINGS = ("valid", "same")


def _pair(layer: Layer, what: str, value: Any) -> tuple[int, int]:
    """An int or a pair of ints as a pair of positive ints, or a ValueError naming ``what``."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    ok = len(pair) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in pair
    )
    if ok:
        pair = tuple(int(v) for v in pair)
    if not ok:
        hint = f"; did you mean padding={value!r}?" if value in _PADDINGS else ""
        raise ValueError(
            f"{layer.label}: {what} must be a positive int or a pair of them, got {value!r}{hint}"
        )
    return pair


def _padding(layer: Layer, value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in _PADDINGS:
        raise ValueError(f"{layer.label}: padding must be 'valid' or 'same', got {value!r}")
    return value.lower()


def _geometry(layer: Layer, what: str, in_hw, window, strides, dilation, padding):
    """``(pads, out_hw)`` for ``window`` sliding over ``in_hw``; raises if it does not fit."""
    span = tuple((k - 1) * d + 1 for k, d in zip(window, dilation, strict=True))
    if padding == "valid":
        if any(s > n for s, n in zip(span, in_hw, strict=True)):
            dilated = f" (dilated to {span[0]}x{span[1]})" if span != tuple(window) else ""
            raise ValueError(
                f"{layer.label}: {what} {window[0]}x{window[1]}{dilated} is larger than the "
                f"input {in_hw[0]}x{in_hw[1]} with padding='valid'; use padding='same' or a "
                "smaller window"
            )
        pads = ((0, 0), (0, 0))
        out = tuple((n - s) // st + 1 for n, s, st in zip(in_hw, span, strides, strict=True))
        return pads, out
    out = tuple(-(-n // st) for n, st in zip(in_hw, strides, strict=True))  # ceil(n / stride)
    geometry = zip(out, strides, span, in_hw, strict=True)
    totals = [max((o - 1) * st + s - n, 0) for o, st, s, n in geometry]
    pads = tuple((t // 2, t - t // 2) for t in totals)
    return pads, out


def _warn_if_nchw(layer: Layer, in_shape: Any) -> None:
    """Warn when NHWC ``in_shape`` looks like a square NCHW image read the wrong way: a
    height of at most 4 (a channel count) and width == channels >= 8 (the image's sides)."""
    _, h, w, c = tuple(in_shape)
    if None not in (h, w, c) and h <= 4 and w == c >= 8:
        warnings.warn(
            f"{layer.label}: inputs of shape {tuple(in_shape)} look like NCHW images ({h} "
            f"channel(s) of {w}x{c} pixels, PyTorch's layout), but Conv2D takes NHWC (batch, "
            f"height, width, channels) as Keras does, so it reads {c} channels of {h}x{w} "
            "pixels; transpose the data with x.transpose(0, 2, 3, 1)",
            UserWarning,
            stacklevel=2,
        )


def _check_input(layer: Layer, x: Any) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{layer.label} expects 4-D inputs (batch, height, width, channels), got array of "
            f"shape {tuple(x.shape)}"
        )


@dataclass(frozen=True)
class Conv2D(Layer):
    """2-D convolution (cross-correlation, as Keras) over NHWC inputs.

    ``y = activation(conv(x, W) + b)`` with one kernel ``W`` of shape (kh, kw, cin, filters)
    shared by every output position, and ``b`` of shape (filters,).

    Args:
      filters: number of output channels.
      kernel_size: an int or an (h, w) pair.
      strides: an int or an (h, w) pair.
      padding: ``"valid"`` (no padding) or ``"same"`` (TensorFlow's: output size
        ``ceil(in / stride)``, the extra pad pixel at the bottom/right).
      dilation_rate: an int or an (h, w) pair: the spacing of the kernel taps.
      activation: a name from :mod:`wframe.activations` or an ``x -> (y, backprop)`` callable.
      use_bias: add the bias vector ``b``.
      kernel_init: initializer of ``W`` (Keras' fans for conv kernels); Glorot uniform.
      bias_init: initializer of ``b``.
      kernel_regularizer, bias_regularizer: penalties on ``W`` and ``b`` (``"l1"``, ``"l2"``,
        ``"l1_l2"`` or a :mod:`wframe.regularizers` instance), added to the training loss.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    filters: int
    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: str = "valid"
    dilation_rate: int | tuple[int, int] = 1
    activation: str | Callable | None = None
    use_bias: bool = True
    kernel_init: str | Callable = "glorot_uniform"
    bias_init: str | Callable = "zeros"
    kernel_regularizer: str | Regularizer | None = None
    bias_regularizer: str | Regularizer | None = None

    kind = "conv2d"

    def __post_init__(self):
        object.__setattr__(self, "filters", self.positive_int("filters", self.filters))
        object.__setattr__(self, "kernel_size", _pair(self, "kernel_size", self.kernel_size))
        object.__setattr__(self, "strides", _pair(self, "strides", self.strides))
        object.__setattr__(self, "dilation_rate", _pair(self, "dilation_rate", self.dilation_rate))
        object.__setattr__(self, "padding", _padding(self, self.padding))
        object.__setattr__(self, "_activation", activations.get(self.activation, self.label))
        initializers.get(self.kernel_init)
        initializers.get(self.bias_init)
        self._resolve_regularizers("kernel_regularizer", "bias_regularizer")

    def param_regularizers(self):
        bias = {"b": "bias_regularizer"} if self.use_bias else {}
        return self._regularizers(W="kernel_regularizer", **bias)

    def _geometry(self, in_hw):
        return _geometry(
            self, "kernel", in_hw, self.kernel_size, self.strides, self.dilation_rate, self.padding
        )

    def init(self, key, in_shape, *, dtype="float32"):
        self.expect_rank(in_shape, 4, "(batch, height, width, channels)")
        _warn_if_nchw(self, in_shape)
        _, out_hw = self._geometry(in_shape[1:3])
        kw, kb = split(key)
        shape = (*self.kernel_size, in_shape[3], self.filters)
        params = {"W": initializers.get(self.kernel_init)(kw, shape, dtype)}
        if self.use_bias:
            params["b"] = initializers.get(self.bias_init)(kb, (self.filters,), dtype)
        return params, {}, (in_shape[0], *out_hw, self.filters)

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        W = params["W"]
        _check_input(self, x)
        if x.shape[3] != W.shape[2]:
            raise ValueError(
                f"{self.label} expects inputs with {W.shape[2]} channels (W has shape "
                f"{tuple(W.shape)}), got array of shape {tuple(x.shape)}"
            )
        pads, _ = self._geometry(tuple(x.shape[1:3]))
        geometry = (self.strides, pads, self.dilation_rate)
        backend = backend_of(x, W)
        bias = params["b"] if self.use_bias else None
        if not vjp:  # nobody will call backprop: keep nothing for it
            z = backend.conv2d(x, W, *geometry)
            return activations.apply(self._activation, z, bias)[0], state, None
        z, conv_vjp = backend.conv2d_vjp(x, W, *geometry)
        # z + b and the activation: one kernel where the backend fuses them (CuPy).
        y, act_backprop = activations.apply(self._activation, z, bias)

        def backprop(dy, input_grad=True):
            dz = act_backprop(dy)
            xp = array_namespace(dz)
            dx, dW = conv_vjp(dz, input_grad)
            grads = {"W": dW}
            if self.use_bias:
                grads["b"] = xp.sum(dz, axis=(0, 1, 2))
            return dx, grads

        return y, state, backprop


@dataclass(frozen=True)
class _Pool2D(Layer):
    pool_size: int | tuple[int, int] = 2
    strides: int | tuple[int, int] | None = None
    padding: str = "valid"

    op = ""

    def __post_init__(self):
        pool = _pair(self, "pool_size", self.pool_size)
        object.__setattr__(self, "pool_size", pool)
        strides = pool if self.strides is None else _pair(self, "strides", self.strides)
        object.__setattr__(self, "strides", strides)
        object.__setattr__(self, "padding", _padding(self, self.padding))

    def _geometry(self, in_hw):
        return _geometry(self, "pool", in_hw, self.pool_size, self.strides, (1, 1), self.padding)

    def init(self, key, in_shape, *, dtype="float32"):
        self.expect_rank(in_shape, 4, "(batch, height, width, channels)")
        _, out_hw = self._geometry(in_shape[1:3])
        return {}, {}, (in_shape[0], *out_hw, in_shape[3])

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        _check_input(self, x)
        pads, _ = self._geometry(tuple(x.shape[1:3]))
        geometry = (self.pool_size, self.strides, pads, self.op)
        backend = backend_of(x)
        if not vjp:
            return backend.pool2d(x, *geometry), state, None
        y, pool_vjp = backend.pool2d_vjp(x, *geometry)

        def backprop(dy, input_grad=True):
            return (pool_vjp(dy) if input_grad else None), {}

        return y, state, backprop


@dataclass(frozen=True)
class MaxPool2D(_Pool2D):
    """Max over ``pool_size`` windows moved by ``strides`` (default: ``pool_size``).

    "same" padding never lets a padded position win; the gradient of each window goes to its
    first maximum (ties as PyTorch).

    Args:
      pool_size: an int or a ``(height, width)`` pair: the window.
      strides: an int or a pair; ``None`` (default) means ``pool_size``.
      padding: ``"valid"`` or ``"same"`` (TensorFlow's, as Conv2D).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    op = "max"
    kind = "max_pool2d"


@dataclass(frozen=True)
class AvgPool2D(_Pool2D):
    """Mean over ``pool_size`` windows moved by ``strides`` (default: ``pool_size``).

    With "same" padding the padded positions are left out of the mean (Keras/TensorFlow).

    Args:
      pool_size: an int or a ``(height, width)`` pair: the window.
      strides: an int or a pair; ``None`` (default) means ``pool_size``.
      padding: ``"valid"`` or ``"same"`` (TensorFlow's, as Conv2D).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    op = "avg"
    kind = "avg_pool2d"


@dataclass(frozen=True)
class GlobalAvgPool2D(Layer):
    """Mean over height and width: (N, H, W, C) -> (N, C), or (N, 1, 1, C) with
    ``keepdims=True`` (Keras 3).

    Args:
      keepdims: keep the pooled axes with size 1: ``(N, 1, 1, C)``.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    keepdims: bool = False

    kind = "global_avg_pool2d"

    def __post_init__(self):
        if not isinstance(self.keepdims, bool):
            raise ValueError(f"{self.label}: keepdims must be True or False, got {self.keepdims!r}")

    def init(self, key, in_shape, *, dtype="float32"):
        self.expect_rank(in_shape, 4, "(batch, height, width, channels)")
        kept = (1, 1) if self.keepdims else ()
        return {}, {}, (in_shape[0], *kept, in_shape[3])

    def forward(self, params, state, x, *, train=False, key=None):
        _check_input(self, x)
        xp = array_namespace(x)
        shape = tuple(x.shape)
        area = math.prod(shape[1:3])
        y = xp.sum(x, axis=(1, 2), keepdims=self.keepdims) / area

        def backprop(dy, input_grad=True):
            if not input_grad:
                return None, {}
            d = dy / area
            return xp.broadcast_to(d if self.keepdims else d[:, None, None, :], shape), {}

        return y, state, backprop


#: Keras' names (``keras.layers.MaxPooling2D``, ...): the same classes.
MaxPooling2D = MaxPool2D
AveragePooling2D = AvgPool2D
GlobalAveragePooling2D = GlobalAvgPool2D
