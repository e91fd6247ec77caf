"""Parameter-free layers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from wframe import activations
from wframe.backends import array_namespace
from wframe.layers.base import Layer


@dataclass(frozen=True)
class Activation(Layer):
    """Applies an activation function elementwise (``softmax`` over the last axis)."""

    activation: str | Callable = "relu"

    def __post_init__(self):
        activations.get(self.activation)

    def init(self, key, in_shape, *, dtype="float32"):
        return {}, {}, tuple(in_shape)

    def forward(self, params, state, x, *, train=False, key=None):
        y, act_backprop = activations.get(self.activation)(x)
        return y, state, lambda dy, input_grad=True: (act_backprop(dy), {})


@dataclass(frozen=True)
class Flatten(Layer):
    """Flattens every axis after the batch axis: (N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def init(self, key, in_shape, *, dtype="float32"):
        if len(in_shape) < 2:
            raise ValueError(f"{self.label} expects inputs with a batch axis, got shape {in_shape}")
        return {}, {}, (in_shape[0], math.prod(in_shape[1:]))

    def forward(self, params, state, x, *, train=False, key=None):
        xp = array_namespace(x)
        shape = tuple(x.shape)
        y = xp.reshape(x, (shape[0], math.prod(shape[1:])))
        return y, state, lambda dy, input_grad=True: (xp.reshape(dy, shape), {})
