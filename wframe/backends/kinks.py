"""Non-smooth functions whose autodiff gradient at a kink is the hand-written one's.

NumPy and CuPy train with the hand-written backward passes, which take PyTorch's conventions
at a kink: ``relu'(0) = 0``, ``|x|'(0) = 0``, a clip passes no gradient at its bounds. JAX
differentiates the forward instead, and there ``maximum`` splits a tie's gradient in two
(``relu'(0) = 0.5``) and ``abs``' is 1 at 0, so a pre-activation or a residual that is exactly
0 (a zero input row, zero-initialized weights, a zero-padded patch) trained differently on JAX.
On a traced backend each function here is a ``where`` whose branch not taken gets no gradient
(with its inputs made safe, so that no NaN leaks out of it); elsewhere it is the plain function,
which is faster (NumPy's ``where`` is several times ``maximum``'s cost). The values are the same.
NaN propagates through every one of them.
"""

from __future__ import annotations

from wframe.backends import backend_of
from wframe.backends.namespace import array_namespace
from wframe.types import Array


def _traced(x: Array) -> bool:
    return backend_of(x).traced


def maximum(x: Array, floor: float) -> Array:
    """``max(x, floor)``; its gradient is 0 where ``x <= floor`` (``relu``: ``maximum(x, 0)``).

    Args:
      x: the array.
      floor: a Python number.
    """
    xp = array_namespace(x)
    return xp.where(x <= floor, floor, x) if _traced(x) else xp.maximum(x, floor)


def clip(x: Array, low: float, high: float) -> Array:
    """``x`` clipped to ``[low, high]``; its gradient is 1 strictly inside, 0 at and beyond
    the bounds (the hand-written ``inside`` masks).

    Args:
      x: the array.
      low, high: Python numbers, ``low < high``.
    """
    xp = array_namespace(x)
    if not _traced(x):
        return xp.clip(x, low, high)
    return xp.where(x <= low, low, xp.where(x >= high, high, x))


def abs(x: Array) -> Array:  # noqa: A001 (the function it stands for)
    """``|x|``; its gradient is ``sign(x)``, 0 at 0.

    Args:
      x: the array.
    """
    xp = array_namespace(x)
    if not _traced(x):
        return xp.abs(x)
    return xp.where(x > 0, x, xp.where(x < 0, -x, 0 * x))


def softplus(x: Array, e: Array | None = None) -> Array:
    """``log(1 + exp(x))`` without overflow; its gradient is ``sigmoid(x)`` everywhere, 0.5 at
    0 (as ``max(x, 0) + log1p(exp(-|x|))``, whose two kinks at 0 autodiff would sum to 0).

    Args:
      x: the array.
      e: ``exp(-|x|)`` where the caller has it already (used off a traced backend, where it
        saves an ``exp``; a traced one fuses its own).
    """
    xp = array_namespace(x)
    if not _traced(x):
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)) if e is None else e)
    up = x > 0
    pos, neg = xp.where(up, x, 0 * x), xp.where(up, 0 * x, x)  # each branch's safe input
    return xp.where(up, pos + xp.log1p(xp.exp(-pos)), xp.log1p(xp.exp(neg)))
