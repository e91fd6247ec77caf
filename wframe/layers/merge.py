"""Merge layers: one output from several inputs of one shape (Keras' ``Add``, ``Subtract``,
``Multiply``, ``Average``, ``Maximum``, ``Minimum``), called on a list of tensors in a graph.

``Concatenate(axis=...)`` merges too; it lives with the containers
(:class:`wframe.layers.Concatenate`), which it also is when given branches.
"""

from __future__ import annotations

from dataclasses import dataclass

from wframe.backends import array_namespace, backend_of
from wframe.layers.base import Layer


@dataclass(frozen=True)
class Merge(Layer):
    """Base of the elementwise merges: inputs of one shape, an output of that shape.

    ``x`` is a tuple of arrays; ``backprop(dy)`` returns one gradient per input.
    """

    #: How many inputs the merge takes (``None``: two or more).
    arity = None

    def init(self, key, in_shape, *, dtype="float32"):
        shapes = self.check_shapes(in_shape)
        return {}, {}, shapes[0]

    def check_shapes(self, in_shape) -> tuple:
        """The input shapes, checked: a tuple of at least two (or ``arity``) equal shapes."""
        multi = isinstance(in_shape, tuple) and in_shape and isinstance(in_shape[0], tuple)
        n = self.arity
        if not multi or len(in_shape) < 2 or (n is not None and len(in_shape) != n):
            got = len(in_shape) if multi else "one tensor"
            raise ValueError(
                f"{self.label} merges a list of {n or 'two or more'} tensors, got {got}; "
                f"call it as {type(self).__name__}()([a, b])"
            )
        shapes = [tuple(s) for s in in_shape]
        if any(s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(
                f"{self.label} merges tensors of one shape, got shapes {shapes}; reshape or "
                "project them (Dense, Reshape) to a common shape first"
            )
        return shapes

    def combine(self, xs, xp):
        """``(y, vjp)`` with ``vjp(dy) -> tuple`` of the inputs' gradients."""
        raise TypeError(f"{type(self).__name__} does not define combine")

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        if not isinstance(x, tuple):
            raise ValueError(f"{self.label} merges a tuple of arrays, got one array")
        self.check_shapes(tuple(tuple(a.shape) for a in x))
        y, grad = self.combine(x, array_namespace(x[0]))
        if not vjp:
            return y, state, None

        def backprop(dy, input_grad=True):
            return (grad(dy) if input_grad else None), {}

        return y, state, backprop


@dataclass(frozen=True)
class Add(Merge):
    """The sum of its inputs.

    Args:
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    def combine(self, xs, xp):
        y = xs[0]
        for a in xs[1:]:
            y = y + a
        return y, lambda dy: (dy,) * len(xs)


@dataclass(frozen=True)
class Subtract(Merge):
    """``a - b`` of its two inputs.

    Args:
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    arity = 2

    def combine(self, xs, xp):
        return xs[0] - xs[1], lambda dy: (dy, -dy)


@dataclass(frozen=True)
class Multiply(Merge):
    """The elementwise product of its inputs.

    Args:
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    def combine(self, xs, xp):
        y = xs[0]
        for a in xs[1:]:
            y = y * a

        def grad(dy):
            out = []
            for i in range(len(xs)):
                g = dy
                for j, a in enumerate(xs):
                    if j != i:
                        g = g * a
                out.append(g)
            return tuple(out)

        return y, grad


@dataclass(frozen=True)
class Average(Merge):
    """The mean of its inputs.

    Args:
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    def combine(self, xs, xp):
        y = xs[0]
        for a in xs[1:]:
            y = y + a
        share = 1.0 / len(xs)
        return y * share, lambda dy: (dy * share,) * len(xs)


@dataclass(frozen=True)
class Maximum(Merge):
    """The elementwise maximum; a tie sends the gradient to the first input holding it.

    Args:
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    def combine(self, xs, xp):
        return _extreme(xs, xp, xp.maximum, lambda a, b: a > b)


@dataclass(frozen=True)
class Minimum(Merge):
    """The elementwise minimum; a tie sends the gradient to the first input holding it.

    Args:
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    def combine(self, xs, xp):
        return _extreme(xs, xp, xp.minimum, lambda a, b: a < b)


def _extreme(xs, xp, op, better):
    y, which = xs[0], xp.zeros(xs[0].shape, dtype=xp.int32)
    # Differentiated (JAX), op would split a tie's gradient in two: a where gives it all to
    # the first input holding it, as the backward below does (NaN still wins, as in op).
    traced = backend_of(y).traced
    for i, a in enumerate(xs[1:], 1):
        wins = better(a, y)
        which = xp.where(wins, i, which)
        y = xp.where(wins | ((a != a) & (y == y)), a, y) if traced else op(y, a)

    def grad(dy):
        zero = xp.zeros_like(dy)
        return tuple(xp.where(which == i, dy, zero) for i in range(len(xs)))

    return y, grad
