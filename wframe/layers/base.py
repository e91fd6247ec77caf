"""The layer contract: an immutable description with ``init`` and ``forward``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from wframe.types import Array, Key, Params, Shape, State


@dataclass(frozen=True)
class Layer:
    """A layer: a frozen dataclass of hyper-parameters; parameters live outside, in a dict.

    Subclasses implement

    * ``init(key, in_shape, *, dtype) -> (params, state, out_shape)``: ``in_shape`` and
      ``out_shape`` have ``None`` for the batch axis; ``params``/``state`` are dicts of arrays
      of the active backend (empty when the layer has none).
    * ``forward(params, state, x, *, train, key) -> (y, new_state, backprop)`` where
      ``backprop(dy, input_grad=True) -> (dx, grads)`` is the hand-written vector-Jacobian
      product (``dx`` is ``None`` when ``input_grad`` is false, which saves the first layer's
      input gradient). JAX differentiates ``forward`` instead and never calls ``backprop``.
    """

    name: str | None = field(default=None, kw_only=True)
    #: True for layers whose ``forward`` draws random numbers from ``key`` (Dropout): only they
    #: get a key, so deterministic models pay nothing for randomness.
    uses_key = False

    @property
    def kind(self) -> str:
        """snake_case class name, the stem of automatic layer names (``Dense`` -> ``dense``)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    @property
    def label(self) -> str:
        """``Dense 'dense_1'``: how error messages name this layer."""
        return f"{type(self).__name__} {self.name!r}" if self.name else type(self).__name__

    def init(self, key: Key, in_shape: Shape, *, dtype: str = "float32"):
        raise TypeError(f"{type(self).__name__} does not define init")

    def forward(self, params: Params, state: State, x: Array, *, train: bool, key: Any = None):
        raise TypeError(f"{type(self).__name__} does not define forward")

    def expect_rank(self, shape: Shape, rank: int, what: str) -> None:
        """Raise a ``ValueError`` naming the layer unless ``shape`` has ``rank`` axes."""
        if len(shape) != rank:
            raise ValueError(
                f"{self.label} expects {rank}-D inputs {what}, got shape {tuple(shape)}"
            )
