"""Global pooling over the steps of a sequence or the pixels of an image, as in Keras.

``GlobalAvgPool1D`` and ``GlobalMaxPool1D`` reduce (N, L, C) to (N, C), ``GlobalMaxPool2D``
(N, H, W, C) to (N, C); ``keepdims=True`` keeps the reduced axes with length 1 (Keras 3).
``GlobalAvgPool2D`` lives in :mod:`wframe.layers.conv`.

The max's gradient goes to the **first** maximum of each channel (in row-major order for
images), as MaxPool2D's windows and PyTorch's ``adaptive_max_pool*d``. ``jax.grad`` of
``jnp.max`` would split ties evenly, so the forward picks the maximum by index
(``argmax`` then ``take_along_axis``) and autodiff routes the gradient the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wframe.backends import array_namespace
from wframe.layers.base import Layer

_AXES = {3: "(batch, steps, channels)", 4: "(batch, height, width, channels)"}


@dataclass(frozen=True)
class _GlobalPool(Layer):
    keepdims: bool = False

    #: Rank of the inputs: 3 for sequences, 4 for images.
    rank = 3

    def __post_init__(self):
        if not isinstance(self.keepdims, bool):
            raise ValueError(f"{self.label}: keepdims must be True or False, got {self.keepdims!r}")

    def init(self, key, in_shape, *, dtype="float32"):
        self.expect_rank(in_shape, self.rank, _AXES[self.rank])
        kept = (1,) * (self.rank - 2) if self.keepdims else ()
        return {}, {}, (in_shape[0], *kept, in_shape[-1])

    def _check(self, x):
        if x.ndim != self.rank:
            raise ValueError(
                f"{self.label} expects {self.rank}-D inputs {_AXES[self.rank]}, got array of "
                f"shape {tuple(x.shape)}"
            )

    def _out_shape(self, x):
        kept = (1,) * (self.rank - 2) if self.keepdims else ()
        return (x.shape[0], *kept, x.shape[-1])


@dataclass(frozen=True)
class _GlobalAvgPool(_GlobalPool):
    def forward(self, params, state, x, *, train=False, key=None):
        self._check(x)
        xp = array_namespace(x)
        shape = tuple(x.shape)
        size = math.prod(shape[1:-1])
        y = xp.sum(x, axis=tuple(range(1, self.rank - 1)), keepdims=self.keepdims) / size

        def backprop(dy, input_grad=True):
            if not input_grad:
                return None, {}
            share = xp.reshape(dy / size, (shape[0], *(1,) * (self.rank - 2), shape[-1]))
            return xp.broadcast_to(share, shape), {}

        return y, state, backprop


@dataclass(frozen=True)
class _GlobalMaxPool(_GlobalPool):
    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        self._check(x)
        xp = array_namespace(x)
        shape = tuple(x.shape)
        size = math.prod(shape[1:-1])
        flat = xp.reshape(x, (shape[0], size, shape[-1]))
        first = xp.argmax(flat, axis=1, keepdims=True)  # (N, 1, C): each channel's first max
        # The max by its index: equal to xp.max, and autodiff (JAX) differentiates it into the
        # first-maximum gradient that backprop computes.
        y = xp.reshape(xp.take_along_axis(flat, first, axis=1), self._out_shape(x))
        if not vjp:
            return y, state, None

        def backprop(dy, input_grad=True):
            if not input_grad:
                return None, {}
            hit = xp.reshape(xp.arange(size), (1, size, 1)) == first
            dflat = xp.astype(hit, dy.dtype) * xp.reshape(dy, (shape[0], 1, shape[-1]))
            return xp.reshape(dflat, shape), {}

        return y, state, backprop


@dataclass(frozen=True)
class GlobalAvgPool1D(_GlobalAvgPool):
    """Mean over the steps: (N, L, C) -> (N, C).

    Args:
      keepdims: keep the steps axis with length 1: (N, 1, C).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    kind = "global_avg_pool1d"


@dataclass(frozen=True)
class GlobalMaxPool1D(_GlobalMaxPool):
    """Max over the steps: (N, L, C) -> (N, C); the gradient goes to each channel's first
    maximum (PyTorch's ``adaptive_max_pool1d``, MaxPool1D's tie rule).

    Args:
      keepdims: keep the steps axis with length 1: (N, 1, C).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    kind = "global_max_pool1d"


@dataclass(frozen=True)
class GlobalMaxPool2D(_GlobalMaxPool):
    """Max over height and width: (N, H, W, C) -> (N, C); the gradient goes to each channel's
    first maximum in row-major order (PyTorch's ``adaptive_max_pool2d``, MaxPool2D's tie rule).

    Args:
      keepdims: keep the height and width axes with length 1: (N, 1, 1, C).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    rank = 4
    kind = "global_max_pool2d"


#: Keras' names (``keras.layers.GlobalMaxPooling2D``, ...): the same classes.
GlobalMaxPooling2D = GlobalMaxPool2D
GlobalAveragePooling1D = GlobalAvgPool1D
GlobalMaxPooling1D = GlobalMaxPool1D
