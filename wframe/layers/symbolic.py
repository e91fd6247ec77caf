"""Symbolic tensors: what ``wf.Input`` returns and what calling a layer on them records.

A :class:`SymbolicTensor` holds a shape (``None`` for the batch axis), a dtype and where it
comes from: a model input, or output ``index`` of a :class:`Call` (a layer called on other
symbolic tensors with static options). ``wf.Model(inputs, outputs)`` reads the calls between
them (:mod:`wframe.layers.graph`); nothing is computed here but shapes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wframe.backends import use_backend
from wframe.layers import merge
from wframe.placeholders import shape_only
from wframe.types import Shape

_COUNTER = itertools.count()


@dataclass(frozen=True, eq=False)
class Call:
    """One call of ``layer`` on ``inputs`` (a symbolic tensor, or a tuple of them for a
    layer of several inputs) with static keyword ``options``."""

    layer: Any
    inputs: Any
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def tensors(self) -> tuple[SymbolicTensor, ...]:
        return self.inputs if isinstance(self.inputs, tuple) else (self.inputs,)


@dataclass(frozen=True, eq=False)
class SymbolicTensor:
    """A placeholder for an array in a graph under construction (Keras' ``KerasTensor``).

    Attributes:
      shape: the array's shape, ``None`` for the batch axis.
      dtype: its dtype name (``"float32"`` for a model's float dtype, ``"int32"`` for ids).
      name: the ``wf.Input``'s name, or ``None`` for a layer's output.
      call: the :class:`Call` that made it (``None`` for an input).
      index: which output of ``call`` it is (``None``: the call's only output).
    """

    shape: Shape
    dtype: str = "float32"
    name: str | None = None
    call: Call | None = None
    index: int | None = None
    #: Creation order: a graph's nodes run in the order their tensors were made.
    serial: int = field(default_factory=lambda: next(_COUNTER), repr=False)

    is_symbolic = True

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        source = f"input {self.name!r}" if self.call is None else self.call.layer.label
        return f"<SymbolicTensor shape={self.shape} dtype={self.dtype} from {source}>"

    def __array__(self, *args: Any, **kwargs: Any):
        raise TypeError(
            f"{self!r} is symbolic: it has no values until a model built from it runs; "
            "pass arrays to model.predict/fit instead"
        )

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} is symbolic and has no truth value")

    def record(self, layer: Any, inputs: Any, options: dict[str, Any]) -> Any:
        """``layer`` called on ``inputs`` (holding this tensor): see :func:`record`."""
        return record(layer, inputs, options)

    # a + b, a - b, a * b: the merge layers (Keras' operators on symbolic tensors)
    def __add__(self, other: Any) -> SymbolicTensor:
        return merge.Add()([self, other])

    def __radd__(self, other: Any) -> SymbolicTensor:
        return merge.Add()([other, self])

    def __sub__(self, other: Any) -> SymbolicTensor:
        return merge.Subtract()([self, other])

    def __rsub__(self, other: Any) -> SymbolicTensor:
        return merge.Subtract()([other, self])

    def __mul__(self, other: Any) -> SymbolicTensor:
        return merge.Multiply()([self, other])

    def __rmul__(self, other: Any) -> SymbolicTensor:
        return merge.Multiply()([other, self])


def Input(  # noqa: N802 (Keras' name)
    shape: Any, dtype: str = "float32", name: str | None = None, *, batch_size: Any = None
) -> SymbolicTensor:
    """A model input: a symbolic tensor of ``(batch, *shape)``.

    Args:
      shape: the shape of one example, without the batch axis (``(28, 28, 1)``, ``(T,)``).
      dtype: ``"float32"`` (the model's float dtype: a float64 model computes in float64) or an
        integer dtype (``"int32"``: token ids, never cast to float).
      name: the input's name, used by dict inputs (``fit({"tokens": ...})``); default
        ``input_0``, ``input_1``, ... in the model's input order.
      batch_size: accepted as in Keras and ignored: every wframe model takes any batch size.
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(
            f"Input: shape must be a tuple without the batch axis, e.g. (64,), got {shape!r}"
        )
    dims = []
    for i, d in enumerate(shape):
        ok = d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0)
        if not ok:
            raise ValueError(f"Input: shape[{i}] must be a positive int or None, got {d!r}")
        dims.append(None if d is None else int(d))
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        kind = None
    if kind not in ("f", "i", "u"):
        raise ValueError(f"Input: dtype must be a float or integer dtype name, got {dtype!r}")
    if name is not None and (not isinstance(name, str) or not name or "/" in name):
        raise ValueError(f"Input: name must be a non-empty str without '/', got {name!r}")
    return SymbolicTensor((None, *dims), np.dtype(dtype).name, name)


def is_symbolic(value: Any) -> bool:
    """Whether ``value`` is a symbolic tensor or a tuple holding one."""
    if isinstance(value, tuple):
        return any(is_symbolic(v) for v in value)
    return isinstance(value, SymbolicTensor)


def record(layer: Any, inputs: Any, options: dict[str, Any]) -> Any:
    """Call ``layer`` on symbolic ``inputs``: its output tensor(s), shapes from ``layer.init``
    under :func:`~wframe.placeholders.shape_only` (zero-memory placeholders: no param is drawn
    or allocated; the model draws its own)."""
    tensors = inputs if isinstance(inputs, tuple) else (inputs,)
    for i, t in enumerate(tensors):
        if not isinstance(t, SymbolicTensor):
            raise TypeError(
                f"{layer.label} was called on symbolic tensors and {type(t).__name__} (input "
                f"{i}); in a graph every input must come from wf.Input or another layer's output"
            )
    in_shape = tuple(t.shape for t in tensors) if isinstance(inputs, tuple) else inputs.shape
    try:
        with use_backend("numpy"), shape_only():  # shapes only: nothing drawn or allocated
            out = layer.init(0, in_shape, dtype="float32")[2]
    except (ValueError, TypeError) as e:
        what = ", ".join(repr(t) for t in tensors)
        raise type(e)(f"{layer.label} called on {what}: {e}") from None
    call = Call(layer, inputs, dict(options))
    dtype = "float32"
    if out and isinstance(out[0], tuple):  # several outputs
        return tuple(SymbolicTensor(tuple(s), dtype, None, call, i) for i, s in enumerate(out))
    return SymbolicTensor(tuple(out), dtype, None, call, None)
