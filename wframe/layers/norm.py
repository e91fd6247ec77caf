"""Normalization layers: BatchNorm (running statistics in ``state``), LayerNorm and RMSNorm.

On half-precision inputs (the mixed-precision policies) they compute in float32 and return the
input's dtype (:func:`wframe.precision.in_float32`); running statistics stay float32.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

from wframe import initializers, precision
from wframe.backends import array_namespace
from wframe.layers.base import Layer


def _normalize(x, axes, epsilon):
    """``(xhat, mean, var, inv)`` over ``axes`` (kept as size-1 axes), biased variance."""
    xp = array_namespace(x)
    mean = xp.mean(x, axis=axes, keepdims=True)
    xc = x - mean
    var = xp.mean(xc * xc, axis=axes, keepdims=True)
    inv = 1.0 / xp.sqrt(var + epsilon)
    return xc * inv, mean, var, inv


def _normalize_backprop(dxhat, xhat, inv, axes):
    """VJP of ``xhat = (x - mean(x)) / sqrt(var(x) + eps)`` through the batch statistics.

    With ``m`` reduced entries: ``dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``
    (the two means are the gradients through ``mean`` and ``var``).
    """
    xp = array_namespace(dxhat)
    m1 = xp.mean(dxhat, axis=axes, keepdims=True)
    m2 = xp.mean(dxhat * xhat, axis=axes, keepdims=True)
    return inv * (dxhat - m1 - xhat * m2)


@dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch normalization over every axis but ``axis`` (Keras ``BatchNormalization``).

    ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta``. With ``train=True`` ``mean`` and
    ``var`` are the batch statistics (biased variance) and the returned state holds the new
    running averages ``momentum * running + (1 - momentum) * batch`` (the biased batch variance
    for ``var``, as Keras 3; PyTorch uses the unbiased one and ``momentum_torch = 1 - momentum``).
    With ``train=False`` the running statistics are used and the state is unchanged.

    Args:
      momentum: weight of the old running statistics, in [0, 1].
      epsilon: added to the variance before the square root.
      axis: the channel axis (-1: features of Dense outputs, channels of NHWC images).
      center: learn the offset ``beta``.
      scale: learn the scale ``gamma``.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    momentum: float = 0.99
    epsilon: float = 1e-3
    axis: int = -1
    center: bool = True
    scale: bool = True

    def __post_init__(self):
        if not _is_real(self.momentum) or not 0 <= self.momentum <= 1:
            raise ValueError(f"{self.label}: momentum must be in [0, 1], got {self.momentum!r}")
        if not _is_real(self.epsilon) or not self.epsilon > 0:
            raise ValueError(f"{self.label}: epsilon must be positive, got {self.epsilon!r}")
        if not isinstance(self.axis, int) or isinstance(self.axis, bool):
            raise ValueError(f"{self.label}: axis must be an int, got {self.axis!r}")

    def _channel_axis(self, ndim: int, shape: tuple) -> int:
        if ndim < 2:
            raise ValueError(
                f"{self.label} expects inputs with a batch axis and at least one more axis, "
                f"got shape {shape}"
            )
        if not -ndim <= self.axis < ndim or self.axis % ndim == 0:
            raise ValueError(
                f"{self.label}: axis={self.axis} must name a non-batch axis of {ndim}-D inputs, "
                f"got shape {shape}"
            )
        return self.axis % ndim

    def init(self, key, in_shape, *, dtype="float32"):
        shape = tuple(in_shape)
        channels = shape[self._channel_axis(len(shape), shape)]
        if channels is None:
            raise ValueError(f"{self.label} needs a known size for axis {self.axis}, got {shape}")
        params = {}
        if self.scale:
            params["gamma"] = initializers.get("ones")(key, (channels,), dtype)
        if self.center:
            params["beta"] = initializers.get("zeros")(key, (channels,), dtype)
        state = {
            "mean": initializers.get("zeros")(key, (channels,), dtype),
            "var": initializers.get("ones")(key, (channels,), dtype),
        }
        return params, state, shape

    def forward(self, params, state, x, *, train=False, key=None):
        if precision.is_half(x.dtype):
            return precision.in_float32(self._forward, params, state, x, train=train)
        return self._forward(params, state, x, train=train)

    def _forward(self, params, state, x, *, train):
        shape = tuple(x.shape)
        ax = self._channel_axis(len(shape), shape)
        channels = state["mean"].shape[0]
        if shape[ax] != channels:
            raise ValueError(
                f"{self.label} was built for {channels} channels on axis {self.axis}, got array "
                f"of shape {shape}"
            )
        xp = array_namespace(x)
        axes = tuple(i for i in range(len(shape)) if i != ax)
        bshape = tuple(channels if i == ax else 1 for i in range(len(shape)))
        gamma = xp.reshape(params["gamma"], bshape) if self.scale else None
        if train:
            xhat, mean, var, inv = _normalize(x, axes, self.epsilon)
            m = self.momentum
            new_state = {
                "mean": m * state["mean"] + (1.0 - m) * xp.reshape(mean, (channels,)),
                "var": m * state["var"] + (1.0 - m) * xp.reshape(var, (channels,)),
            }
        else:
            inv = 1.0 / xp.sqrt(xp.reshape(state["var"], bshape) + self.epsilon)
            xhat = (x - xp.reshape(state["mean"], bshape)) * inv
            new_state = state
        y = xhat * gamma if self.scale else xhat
        if self.center:
            y = y + xp.reshape(params["beta"], bshape)

        def backprop(dy, input_grad=True):
            grads = {}
            if self.scale:
                grads["gamma"] = xp.sum(dy * xhat, axis=axes)
            if self.center:
                grads["beta"] = xp.sum(dy, axis=axes)
            if not input_grad:
                return None, grads
            dxhat = dy * gamma if self.scale else dy
            if train:
                return _normalize_backprop(dxhat, xhat, inv, axes), grads
            return dxhat * inv, grads

        return y, new_state, backprop


def _check_axis(layer: Layer) -> None:
    """``layer.axis`` as an int or a tuple of ints (a list becomes a tuple), else a ValueError."""
    axis = layer.axis
    if isinstance(axis, list):
        axis = tuple(axis)
        object.__setattr__(layer, "axis", axis)
    items = axis if isinstance(axis, tuple) else (axis,)
    if not items or not all(isinstance(a, int) and not isinstance(a, bool) for a in items):
        raise ValueError(
            f"{layer.label}: axis must be an int or a non-empty tuple of ints (the feature "
            f"axes, -1 for the last), got {axis!r}"
        )


def _feature_axes(layer: Layer, shape: tuple) -> tuple[int, ...]:
    """The normalized axes of inputs of ``shape``, sorted and non-negative, or a ValueError:
    ``layer.axis`` must name distinct axes of (batch, ...) inputs, none of them the batch axis."""
    ndim = len(shape)
    items = layer.axis if isinstance(layer.axis, tuple) else (layer.axis,)
    axes = tuple(sorted({a % ndim for a in items if -ndim <= a < ndim})) if ndim else ()
    if ndim < 2 or len(axes) != len(items) or 0 in axes:
        raise ValueError(
            f"{layer.label} expects inputs (batch, ..., features) whose axis={layer.axis} names "
            f"distinct non-batch axes, got shape {shape}"
        )
    return axes


def _feature_shape(layer: Layer, shape: tuple) -> tuple[int, ...]:
    """The sizes of the normalized axes of ``shape``: the shape of the layer's params."""
    features = tuple(shape[a] for a in _feature_axes(layer, shape))
    if any(f is None for f in features):
        raise ValueError(
            f"{layer.label} needs known sizes for axis={layer.axis}, got input shape {shape}"
        )
    return features


class _Features(NamedTuple):
    """Where a LayerNorm/RMSNorm meets its input: the normalized ``axes``, the others
    (``batch_axes``, summed over for the params' gradients) and the params' broadcast
    shape (``None``: the last axis alone, where they broadcast as they are)."""

    axes: tuple[int, ...]
    batch_axes: tuple[int, ...]
    bshape: tuple[int, ...] | None


@functools.cache
def _last_axis(ndim: int) -> _Features:
    """The common case: the last axis of ``ndim``-D inputs."""
    return _Features((ndim - 1,), tuple(range(ndim - 1)), None)


def _features_of(layer: Layer, params, x) -> _Features:
    """:class:`_Features` for ``x``, after checking its sizes there against the params'."""
    shape = tuple(x.shape)
    ndim = len(shape)
    built = None
    for p in params.values():  # they all have the features' shape
        built = tuple(p.shape)
        break
    if layer.axis == -1 and ndim >= 2 and (built is None or shape[-1:] == built):
        return _last_axis(ndim)
    axes = _feature_axes(layer, shape)
    if built is not None and tuple(shape[a] for a in axes) != built:
        want = built[0] if layer.axis == -1 else built
        raise ValueError(
            f"{layer.label} expects inputs (batch, ..., {want})"
            + ("" if layer.axis == -1 else f" with sizes {built} on axis={layer.axis}")
            + f", got array of shape {shape}"
        )
    batch_axes = tuple(i for i in range(ndim) if i not in axes)
    if axes == (ndim - 1,):
        return _Features(axes, batch_axes, None)
    return _Features(axes, batch_axes, tuple(shape[i] if i in axes else 1 for i in range(ndim)))


@dataclass(frozen=True)
class LayerNorm(Layer):
    """Layer normalization over the feature axes of each example (Keras ``LayerNormalization``,
    PyTorch ``LayerNorm``), with learned ``gamma`` and ``beta`` of the features' shape.

    ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta`` with the mean and (biased) variance
    of each example over ``axis``; the same in training and inference. Inputs of any rank >= 2.

    Args:
      axis: the axis or tuple of axes to normalize over (not the batch axis); -1, the last
        axis, as Keras.
      epsilon: added to the variance before the square root (PyTorch's default 1e-5; Keras'
        is 1e-3).
      center: learn the offset ``beta``.
      scale: learn the scale ``gamma``.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    axis: int | tuple[int, ...] = -1
    epsilon: float = 1e-5
    center: bool = True
    scale: bool = True

    def __post_init__(self):
        _check_axis(self)
        if not _is_real(self.epsilon) or not self.epsilon > 0:
            raise ValueError(f"{self.label}: epsilon must be positive, got {self.epsilon!r}")

    def init(self, key, in_shape, *, dtype="float32"):
        shape = tuple(in_shape)
        features = _feature_shape(self, shape)
        params = {}
        if self.scale:
            params["gamma"] = initializers.get("ones")(key, features, dtype)
        if self.center:
            params["beta"] = initializers.get("zeros")(key, features, dtype)
        return params, {}, shape

    def forward(self, params, state, x, *, train=False, key=None):
        if precision.is_half(x.dtype):
            return precision.in_float32(self._forward, params, state, x)
        return self._forward(params, state, x)

    def _forward(self, params, state, x):
        axes, batch_axes, bshape = _features_of(self, params, x)
        xp = array_namespace(x)
        xhat, _, _, inv = _normalize(x, axes, self.epsilon)
        gamma = params.get("gamma")
        if gamma is not None and bshape is not None:
            gamma = xp.reshape(gamma, bshape)
        y = xhat * gamma if self.scale else xhat
        if self.center:
            beta = params["beta"]
            y = y + (beta if bshape is None else xp.reshape(beta, bshape))

        def backprop(dy, input_grad=True):
            grads = {}
            if self.scale:
                grads["gamma"] = xp.sum(dy * xhat, axis=batch_axes)
            if self.center:
                grads["beta"] = xp.sum(dy, axis=batch_axes)
            if not input_grad:
                return None, grads
            dxhat = dy * gamma if self.scale else dy
            return _normalize_backprop(dxhat, xhat, inv, axes), grads

        return y, state, backprop


@dataclass(frozen=True)
class RMSNorm(Layer):
    """Root-mean-square normalization (Zhang and Sennrich, 2019; Keras ``RMSNormalization``,
    PyTorch ``RMSNorm``), with a learned ``scale`` of the features' shape, initialized to ones.

    ``y = x / sqrt(mean(x**2) + epsilon) * scale`` with the mean of each example over ``axis``:
    no centering, no offset. Inputs of any rank >= 2; ``RMSNormalization`` is the same class.

    Args:
      axis: the axis or tuple of axes to normalize over (not the batch axis); -1, the last.
      epsilon: added to the mean square before the square root (Keras' default).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    axis: int | tuple[int, ...] = -1
    epsilon: float = 1e-6

    def __post_init__(self):
        _check_axis(self)
        if not _is_real(self.epsilon) or not self.epsilon > 0:
            raise ValueError(f"{self.label}: epsilon must be positive, got {self.epsilon!r}")

    @property
    def kind(self) -> str:
        return "rms_norm"  # not the automatic "r_m_s_norm"

    def init(self, key, in_shape, *, dtype="float32"):
        shape = tuple(in_shape)
        scale = initializers.get("ones")(key, _feature_shape(self, shape), dtype)
        return {"scale": scale}, {}, shape

    def forward(self, params, state, x, *, train=False, key=None):
        if precision.is_half(x.dtype):
            return precision.in_float32(self._forward, params, state, x)
        return self._forward(params, state, x)

    def _forward(self, params, state, x):
        axes, batch_axes, bshape = _features_of(self, params, x)
        xp = array_namespace(x)
        inv = 1.0 / xp.sqrt(xp.mean(x * x, axis=axes, keepdims=True) + self.epsilon)
        xhat = x * inv
        scale = params["scale"] if bshape is None else xp.reshape(params["scale"], bshape)

        def backprop(dy, input_grad=True):
            grads = {"scale": xp.sum(dy * xhat, axis=batch_axes)}
            if not input_grad:
                return None, grads
            # Through inv = (mean(x^2) + eps)^-1/2: dx = inv * (g - xhat * mean(g * xhat)).
            g = dy * scale
            return inv * (g - xhat * xp.mean(g * xhat, axis=axes, keepdims=True)), grads

        return xhat * scale, state, backprop


#: Keras' name for :class:`RMSNorm` (the same class).
RMSNormalization = RMSNorm
#: Keras' names: the same classes.
BatchNormalization = BatchNorm
LayerNormalization = LayerNorm


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
