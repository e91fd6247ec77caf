"""Parameter-free layers."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

from wframe import activations
from wframe.backends import array_namespace
from wframe.backends.fusion import FUSED
from wframe.layers.base import Layer
from wframe.random import random_bits


@dataclass(frozen=True)
class Activation(Layer):
    """Applies an activation function elementwise (``softmax`` over the last axis).

    Args:
      activation: a name from :mod:`wframe.activations` or an ``x -> (y, backprop)``
        callable.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    activation: str | Callable = "relu"

    def __post_init__(self):
        object.__setattr__(self, "_activation", activations.get(self.activation, self.label))

    def init(self, key, in_shape, *, dtype="float32"):
        return {}, {}, tuple(in_shape)

    def forward(self, params, state, x, *, train=False, key=None):
        y, act_backprop = self._activation(x)
        return y, state, lambda dy, input_grad=True: (act_backprop(dy), {})


@dataclass(frozen=True)
class Flatten(Layer):
    """Flattens every axis after the batch axis: (N, d1, d2, ...) -> (N, d1 * d2 * ...).

    Args:
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    def init(self, key, in_shape, *, dtype="float32"):
        if len(in_shape) < 2:
            raise ValueError(f"{self.label} expects inputs with a batch axis, got shape {in_shape}")
        return {}, {}, (in_shape[0], math.prod(in_shape[1:]))

    def forward(self, params, state, x, *, train=False, key=None):
        xp = array_namespace(x)
        shape = tuple(x.shape)
        y = xp.reshape(x, (shape[0], math.prod(shape[1:])))
        return y, state, lambda dy, input_grad=True: (xp.reshape(dy, shape), {})


@dataclass(frozen=True)
class Reshape(Layer):
    """Reshapes every example: (N, ...) -> (N, *target_shape), the batch axis kept (Keras).

    Args:
      target_shape: the shape of one example, a tuple of positive ints with at most one -1
        (the size that makes the number of values match).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    target_shape: tuple[int, ...]

    def __post_init__(self):
        target = self.target_shape
        ok = isinstance(target, (tuple, list)) and all(
            _is_int(d) and (d > 0 or d == -1) for d in target
        )
        if not ok or sum(d == -1 for d in target) > 1:
            raise ValueError(
                f"{self.label}: target_shape must be a tuple of positive ints (the shape of one "
                f"example, without the batch axis) with at most one -1, got {target!r}"
            )
        object.__setattr__(self, "target_shape", tuple(int(d) for d in target))

    def _resolve(self, shape: tuple) -> tuple:
        """``target_shape`` with its -1 resolved for inputs of ``shape`` (batch axis first)."""
        if len(shape) < 1:
            raise ValueError(f"{self.label} expects inputs with a batch axis, got shape {shape}")
        if any(d is None for d in shape[1:]):  # unknown sizes: the -1 stays unknown
            return tuple(None if d == -1 else d for d in self.target_shape)
        size, known = math.prod(shape[1:]), math.prod(d for d in self.target_shape if d != -1)
        fits = size % known == 0 if -1 in self.target_shape else size == known
        if not fits:
            raise ValueError(
                f"{self.label} cannot reshape inputs of shape {shape} ({size} values per "
                f"example) to target_shape {self.target_shape}; pick a target_shape whose "
                f"sizes multiply to {size}"
            )
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def init(self, key, in_shape, *, dtype="float32"):
        shape = tuple(in_shape)
        return {}, {}, (shape[0] if shape else None, *self._resolve(shape))

    def forward(self, params, state, x, *, train=False, key=None):
        xp = array_namespace(x)
        shape = tuple(x.shape)
        y = xp.reshape(x, (shape[0], *self._resolve(shape)))
        return y, state, lambda dy, input_grad=True: (xp.reshape(dy, shape), {})


@dataclass(frozen=True)
class Permute(Layer):
    """Permutes the axes after the batch axis (Keras): ``Permute((2, 1))`` swaps axes 1 and 2.

    Args:
      dims: a permutation of ``1 .. rank - 1`` (1-based; the batch axis 0 stays first).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    dims: tuple[int, ...]

    def __post_init__(self):
        dims = self.dims
        ok = isinstance(dims, (tuple, list)) and all(_is_int(d) for d in dims)
        if not ok or not dims or sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError(
                f"{self.label}: dims must be a permutation of 1..n, the non-batch axes numbered "
                f"from 1 (e.g. (2, 1) swaps the two axes after the batch axis), got {dims!r}"
            )
        object.__setattr__(self, "dims", tuple(int(d) for d in dims))

    def _check(self, shape: tuple) -> None:
        if len(shape) != len(self.dims) + 1:
            raise ValueError(
                f"{self.label} with dims={self.dims} expects {len(self.dims) + 1}-D inputs "
                f"(batch axis first), got shape {shape}"
            )

    def init(self, key, in_shape, *, dtype="float32"):
        shape = tuple(in_shape)
        self._check(shape)
        return {}, {}, (shape[0], *(shape[d] for d in self.dims))

    def forward(self, params, state, x, *, train=False, key=None):
        self._check(tuple(x.shape))
        xp = array_namespace(x)
        axes = (0, *self.dims)
        inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
        y = xp.permute_dims(x, axes)
        return y, state, lambda dy, input_grad=True: (xp.permute_dims(dy, inverse), {})


@dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: in training, zeroes each entry with probability ``rate``.

    Kept entries are scaled by ``1 / (1 - rate)`` so the expected output equals the input; in
    inference (``train=False``) and for ``rate == 0`` the layer is the identity. The mask comes
    from :func:`wframe.random.random_bits` on the array key the model passes in, so one key
    gives the same mask on NumPy, CuPy and JAX (also under ``jax.jit``).

    Args:
      rate: probability of dropping an entry, in [0, 1).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    rate: float = 0.5
    uses_key = True

    def __post_init__(self):
        ok = isinstance(self.rate, (int, float)) and not isinstance(self.rate, bool)
        if not ok or not 0 <= self.rate < 1:
            raise ValueError(f"{self.label}: rate must be a number in [0, 1), got {self.rate!r}")

    def init(self, key, in_shape, *, dtype="float32"):
        return {}, {}, tuple(in_shape)

    def forward(self, params, state, x, *, train=False, key=None):
        if not train or self.rate == 0:
            return x, state, lambda dy, input_grad=True: (dy, {})
        if key is None:
            raise ValueError(
                f"{self.label} draws a random mask when train=True and needs an array key "
                "(wframe.random.array_key(seed, step); Sequential.fit passes one), got key=None"
            )
        xp = array_namespace(x)
        # Compare the raw uint32 words with an integer threshold: P(keep) = 1 - rate to 2**-32,
        # exact on every backend, without a float conversion.
        threshold = min(round(self.rate * 2.0**32), 2**32 - 1)
        scale = 1.0 / (1.0 - self.rate)
        fused = FUSED.get(xp)  # the hash, the mask and the product in one kernel (CuPy)
        out = fused.dropout(x, key, threshold, scale) if fused is not None else None
        if out is None:
            keep = random_bits(key, x.shape) >= xp.asarray(threshold, dtype=xp.uint32)
            mask = xp.astype(keep, x.dtype) * scale
            out = x * mask, mask
        y, mask = out
        return y, state, lambda dy, input_grad=True: (dy * mask, {})


def _is_int(value) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
