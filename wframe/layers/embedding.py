"""Embedding (integer ids -> learned vectors) and PositionEmbedding (learned positions).

``Embedding`` looks rows of its ``embeddings`` matrix up by id (a gather); its gradient is the
adjoint, a scatter-add of the output gradient's rows onto the ids' rows, where repeated ids add
up (:meth:`~wframe.backends.base.Backend.scatter_add`). ``PositionEmbedding`` is keras_hub's:
it returns the first ``T`` rows of its matrix broadcast to the input's shape and leaves the
adding to the model (``x + PositionEmbedding(T)(x)``, or a graph ``Add``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wframe import initializers
from wframe.backends import array_namespace, backend_of
from wframe.layers.base import Layer
from wframe.regularizers import Regularizer


@dataclass(frozen=True)
class Embedding(Layer):
    """Turns integer ids into dense vectors: rows of a learned ``(input_dim, output_dim)`` matrix.

    Inputs are integer ids of any shape ``(batch, ...)``; outputs are ``(batch, ...,
    output_dim)`` in the params' dtype. The ids get no gradient (``dx`` is ``None``); a
    ``wf.Sequential`` whose first layer is an Embedding feeds it int32 ids
    (:attr:`input_dtype`), never floats.

    Out-of-range ids (``< 0`` or ``>= input_dim``) raise a ``ValueError`` where the forward
    can read the ids' values (:meth:`~wframe.backends.base.Backend.concrete`): on NumPy, and
    on CuPy outside a CUDA-graph capture. On JAX nothing is checked (the forward is traced):
    such an id's output row is NaN (``jnp.take``'s ``"fill"`` mode; negative ids too, where
    ``jnp.take`` would wrap them) and its gradient is dropped, so the loss turns NaN and
    ``fit`` stops at that step with the last finite weights. In a replayed CUDA graph the row
    read for such an id is undefined.

    Args:
      input_dim: the vocabulary size, the largest id + 1.
      output_dim: the width of each vector.
      embeddings_initializer: name or callable; ``"uniform"`` is U(-0.05, 0.05), as Keras.
      embeddings_regularizer: a penalty on the matrix (``"l2"``, ... or a regularizer).
      mask_zero: Keras' flag that id 0 is padding. wframe propagates no masks yet, so it only
        reserves id 0 (``input_dim`` must then be at least 2, vocabulary size + 1): id 0 still
        looks up row 0 (not zeros, as in Keras) and following layers see every position.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    input_dim: int
    output_dim: int
    embeddings_initializer: str | Callable = "uniform"
    embeddings_regularizer: str | Regularizer | None = None
    mask_zero: bool = False

    selective_grads = True
    input_dtype = "int32"

    def __post_init__(self):
        object.__setattr__(self, "input_dim", self.positive_int("input_dim", self.input_dim))
        object.__setattr__(self, "output_dim", self.positive_int("output_dim", self.output_dim))
        if not isinstance(self.mask_zero, bool):
            raise ValueError(f"{self.label}: mask_zero must be a bool, got {self.mask_zero!r}")
        if self.mask_zero and self.input_dim < 2:
            raise ValueError(
                f"{self.label}: mask_zero=True reserves id 0 for padding, so input_dim must be at "
                f"least 2 (vocabulary size + 1), got input_dim={self.input_dim}"
            )
        _check_initializer(self, "embeddings_initializer")
        self._resolve_regularizers("embeddings_regularizer")

    def param_regularizers(self):
        return self._regularizers(embeddings="embeddings_regularizer")

    def init(self, key, in_shape, *, dtype="float32"):
        shape = tuple(in_shape)
        if len(shape) < 1:
            raise ValueError(f"{self.label} expects ids of shape (batch, ...), got shape {shape}")
        init = initializers.get(self.embeddings_initializer)
        params = {"embeddings": init(key, (self.input_dim, self.output_dim), dtype)}
        return params, {}, (*shape, self.output_dim)

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        W = params["embeddings"]
        xp = array_namespace(x)
        backend = backend_of(x)
        if x.ndim < 1 or not xp.isdtype(x.dtype, "integral"):
            raise ValueError(
                f"{self.label} takes integer ids of shape (batch, ...), got an array of dtype "
                f"{x.dtype} and shape {tuple(x.shape)}; convert float ids with x.astype('int32')"
            )
        ids = xp.reshape(x, (-1,))
        if backend.concrete(x):
            self._check_range(xp, ids)
        elif backend.traced:
            # jnp.take wraps negative ids; past the end they read NaN like the others.
            ids = xp.where(ids < 0, self.input_dim, ids)
        rows = backend.gather(W, ids)
        y = xp.reshape(rows, (*x.shape, W.shape[1]))
        if not vjp:
            return y, state, None

        def backprop(dy, input_grad=True, need=None):
            if need is not None and "embeddings" not in need:
                return None, {}
            flat = xp.reshape(dy, (ids.shape[0], W.shape[1]))
            return None, {"embeddings": backend.scatter_add(tuple(W.shape), ids, flat)}

        return y, state, backprop

    def _check_range(self, xp, ids) -> None:
        if ids.shape[0] == 0:
            return
        low, high = int(xp.min(ids)), int(xp.max(ids))
        if low < 0 or high >= self.input_dim:
            bad = low if low < 0 else high
            raise ValueError(
                f"{self.label} has input_dim={self.input_dim}, so ids must be in "
                f"[0, {self.input_dim - 1}], got id {bad}; raise input_dim to the vocabulary "
                "size (largest id + 1) or map unknown tokens to a valid id"
            )


@dataclass(frozen=True)
class PositionEmbedding(Layer):
    """A learned embedding per position (keras_hub's ``PositionEmbedding``).

    The layer RETURNS its position embeddings broadcast to the input's shape; it does not add
    them (the output does not depend on the input's values). Add them yourself::

        tokens = Embedding(vocab, 64)(ids)
        x = tokens + PositionEmbedding(sequence_length=128)(tokens)

    Inputs are ``(batch, ..., T, features)`` with ``T <= sequence_length``: the first ``T`` rows
    of ``embeddings`` (``(sequence_length, features)``) are used, or rows ``start_index`` to
    ``start_index + T`` when called as ``layer(x, start_index=k)`` (cached decoding). The input
    gets a zero gradient.

    Args:
      sequence_length: the longest sequence the layer embeds.
      initializer: initializer of the embeddings (name or callable), Glorot uniform as keras_hub.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    sequence_length: int
    initializer: str | Callable = "glorot_uniform"

    def __post_init__(self):
        length = self.positive_int("sequence_length", self.sequence_length)
        object.__setattr__(self, "sequence_length", length)
        _check_initializer(self, "initializer")

    def call_args(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """``layer(x)`` or ``layer(x, start_index=k)`` with a Python int ``k >= 0``."""
        start = kwargs.pop("start_index", 0)
        inputs, _ = super().call_args(*args, **kwargs)
        if _as_index(start) is None:
            raise ValueError(f"{self.label}: start_index must be an int >= 0, got {start!r}")
        return inputs, ({"start_index": _as_index(start)} if start else {})

    def _check_shape(self, shape: tuple, start: int = 0) -> None:
        if len(shape) < 3:
            raise ValueError(
                f"{self.label} expects inputs of shape (batch, ..., sequence, features), got "
                f"shape {shape}"
            )
        length = shape[-2]
        if length is not None and start + length > self.sequence_length:
            raise ValueError(
                f"{self.label} has sequence_length={self.sequence_length}, got inputs of shape "
                f"{shape} (positions {start} to {start + length - 1}); raise sequence_length"
            )

    def init(self, key, in_shape, *, dtype="float32"):
        shape = tuple(in_shape)
        self._check_shape(shape)
        if shape[-1] is None:
            raise ValueError(f"{self.label} needs a known number of features, got shape {shape}")
        init = initializers.get(self.initializer)
        return {"embeddings": init(key, (self.sequence_length, shape[-1]), dtype)}, {}, shape

    def forward(self, params, state, x, *, train=False, key=None, start_index=0):
        P = params["embeddings"]
        shape = tuple(x.shape)
        self._check_shape(shape, start_index)
        if shape[-1] != P.shape[1]:
            raise ValueError(
                f"{self.label} was built for {P.shape[1]} features, got inputs of shape {shape}"
            )
        xp = array_namespace(x)
        length = shape[-2]
        rows = P[start_index : start_index + length, :]
        y = xp.broadcast_to(rows, shape)
        lead = tuple(range(len(shape) - 2))

        def backprop(dy, input_grad=True):
            d = xp.sum(dy, axis=lead) if lead else dy
            parts = [d]
            if start_index:
                parts.insert(0, xp.zeros((start_index, P.shape[1]), dtype=d.dtype))
            if start_index + length < P.shape[0]:
                tail = P.shape[0] - start_index - length
                parts.append(xp.zeros((tail, P.shape[1]), dtype=d.dtype))
            grad = xp.concat(parts, axis=0) if len(parts) > 1 else d
            return (xp.zeros_like(x) if input_grad else None), {"embeddings": grad}

        return y, state, backprop


def _check_initializer(layer: Layer, field: str) -> None:
    """A bad initializer name fails at construction, naming the layer and the field."""
    try:
        initializers.get(getattr(layer, field))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{layer.label}: {field}: {e}") from None


def _as_index(value: Any) -> int | None:
    """``value`` as a Python int >= 0 (NumPy integers accepted), else ``None``."""
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)
    except TypeError:
        return None
    return number if number >= 0 else None
