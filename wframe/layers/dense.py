"""Dense: ``y = activation(x @ W + b)`` with ``W`` of shape (in, out), on the last axis."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from wframe import activations, initializers
from wframe.backends import array_namespace
from wframe.backends.fusion import FUSED
from wframe.layers.base import Layer
from wframe.random import split
from wframe.regularizers import Regularizer


@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer on the last axis: inputs (batch, ..., features) of any rank >= 2
    give (batch, ..., units), the same ``W`` applied at every leading position (Keras ``Dense``,
    PyTorch ``nn.Linear``).

    Args:
      units: number of output features.
      activation: a name from :mod:`wframe.activations` or an ``x -> (y, backprop)`` callable.
      use_bias: add the bias vector ``b``.
      kernel_init: initializer of ``W`` (name or callable); Glorot uniform as in Keras.
      bias_init: initializer of ``b``.
      kernel_regularizer, bias_regularizer: penalties on ``W`` and ``b`` (``"l1"``, ``"l2"``,
        ``"l1_l2"`` or a :mod:`wframe.regularizers` instance), added to the training loss.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    units: int
    activation: str | Callable | None = None
    use_bias: bool = True
    kernel_init: str | Callable = "glorot_uniform"
    bias_init: str | Callable = "zeros"
    kernel_regularizer: str | Regularizer | None = None
    bias_regularizer: str | Regularizer | None = None

    selective_grads = True

    def __post_init__(self):
        object.__setattr__(self, "units", self.positive_int("units", self.units))
        # Resolved once (and unknown names fail here, at construction), not on every call.
        object.__setattr__(self, "_activation", activations.get(self.activation, self.label))
        initializers.get(self.kernel_init)
        initializers.get(self.bias_init)
        self._resolve_regularizers("kernel_regularizer", "bias_regularizer")

    def param_regularizers(self):
        bias = {"b": "bias_regularizer"} if self.use_bias else {}
        return self._regularizers(W="kernel_regularizer", **bias)

    def init(self, key, in_shape, *, dtype="float32"):
        shape = tuple(in_shape)
        if len(shape) < 2 or shape[-1] is None:
            raise ValueError(
                f"{self.label} expects inputs (batch, ..., features) of rank >= 2 with a known "
                f"number of features, got shape {shape}"
            )
        kw, kb = split(key)
        params = {"W": initializers.get(self.kernel_init)(kw, (shape[-1], self.units), dtype)}
        if self.use_bias:
            params["b"] = initializers.get(self.bias_init)(kb, (self.units,), dtype)
        return params, {}, (*shape[:-1], self.units)

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        W = params["W"]
        if x.ndim != 2:
            return self._forward_nd(params, state, x, vjp=vjp)
        if x.shape[1] != W.shape[0]:
            raise ValueError(
                f"{self.label} expects inputs of shape (batch, {W.shape[0]}), got array of "
                f"shape {tuple(x.shape)}"
            )
        xp = array_namespace(x)
        y, backprop = self._affine(xp, activations.kernel(self._activation, xp), params, x, vjp)
        return y, state, backprop

    def plan(self, xp, in_shape, train=True):
        shape = tuple(in_shape)
        if len(shape) != 2 or shape[-1] is None:  # other ranks: forward's reshaping (apply)
            return super().plan(xp, in_shape, train)
        act = activations.kernel(self._activation, xp)
        out_shape, general = (shape[0], self.units), functools.partial(self._affine, xp, act)
        # The backend's kernel where it has one (NumPy: float arrays, numpy_ops.ACTIVATIONS).
        kernel = getattr(FUSED.get(xp), "dense", None)
        kernel = None if kernel is None else kernel(self._activation, self.use_bias, general)
        return (general if kernel is None else kernel), out_shape

    def _affine(self, xp, act, params, x, vjp=True, key=None):
        """The 2-D forward on ``(batch, in)`` inputs, unchecked (:meth:`forward`'s and
        :meth:`plan`'s), ``act`` the activation's kernel: ``(y, backprop)``."""
        W = params["W"]
        z = xp.matmul(x, W)
        # z + b and the activation: one kernel where the backend fuses them (CuPy).
        y, act_backprop = act(z, params["b"] if self.use_bias else None)
        if not vjp:
            return y, None

        def backprop(dy, input_grad=True, need=None):
            dz = act_backprop(dy)
            grads = {}
            if need is None or "W" in need:
                grads["W"] = xp.matmul(x.mT, dz)
            if self.use_bias and (need is None or "b" in need):
                grads["b"] = xp.sum(dz, axis=0)
            return (xp.matmul(dz, W.mT) if input_grad else None), grads

        return y, backprop

    def _forward_nd(self, params, state, x, *, vjp):
        """Inputs of rank > 2: the 2-D forward on (positions, features), one GEMM for all
        leading axes, and back; ``W``'s gradient sums over every position."""
        n_in = params["W"].shape[0]
        if x.ndim < 2 or x.shape[-1] != n_in:
            raise ValueError(
                f"{self.label} expects inputs of shape (batch, ..., {n_in}), got array of "
                f"shape {tuple(x.shape)}"
            )
        xp = array_namespace(x)
        lead = tuple(x.shape[:-1])
        flat = xp.reshape(x, (math.prod(lead), n_in))
        y, state, back = self.forward(params, state, flat, vjp=vjp)
        y = xp.reshape(y, (*lead, self.units))
        if back is None:
            return y, state, None

        def backprop(dy, input_grad=True, need=None):
            dx, grads = back(xp.reshape(dy, (math.prod(lead), self.units)), input_grad, need)
            return (None if dx is None else xp.reshape(dx, tuple(x.shape))), grads

        return y, state, backprop
