"""Parameter-free layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wframe import activations
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
