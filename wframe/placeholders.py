"""Arrays that hold no memory, and a tally of the bytes they stand for.

Inside a :func:`shape_only` block every initializer of :mod:`wframe.initializers` returns a
:func:`placeholder`: a read-only NumPy view of a single zero, broadcast to the shape asked for
(it allocates nothing whatever the shape), and adds its bytes to the block's :class:`Tally`.
Running a model's ``init`` in such a block gives the names, shapes and dtypes of every array it
would make, without making them; with ``budget_bytes`` the first array past the budget raises
:class:`BudgetExceeded` at once, before the layer computes anything with it. A layer that does
arithmetic on a placeholder (LSTM setting its forget-gate bias) allocates that layer's real
size, which the budget has already bounded. Loaders use it to check a file's config against the
file before trusting it (:mod:`wframe.saving.expected`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import numpy as np

__all__ = ["BudgetExceeded", "Tally", "active", "is_placeholder", "placeholder", "shape_only"]


class BudgetExceeded(MemoryError):
    """The arrays asked for in a :func:`shape_only` block passed its ``budget_bytes``.

    Args:
      total: the bytes asked for so far, the offending array included.
      budget: the block's ``budget_bytes``.
      shape, dtype: of the array that passed it; all four are kept as attributes.
    """

    def __init__(self, total: int, budget: int, shape: tuple[int, ...], dtype: np.dtype):
        super().__init__(
            f"the arrays asked for take {total} bytes, more than the budget of {budget} bytes "
            f"(passed at an array of shape {shape} and dtype {dtype.name})"
        )
        self.total, self.budget, self.shape, self.dtype = total, budget, shape, dtype


class Tally:
    """What a :func:`shape_only` block has asked for: ``count`` arrays of ``total`` bytes
    (both start at 0).

    Args:
      budget: the block's limit in bytes, or ``None``: no limit.
      parent: the enclosing block's tally (``None`` for the outermost), which counts the same
        arrays against its own budget.
    """

    def __init__(self, budget: int | None, parent: Tally | None):
        self.budget, self.parent, self.total, self.count = budget, parent, 0, 0


_tally: ContextVar[Tally | None] = ContextVar("wframe_shape_only", default=None)


@contextlib.contextmanager
def shape_only(budget_bytes: int | None = None) -> Iterator[Tally]:
    """A block in which initializers return placeholders and count their bytes.

    The mode is per thread and per task (a ContextVar), so other threads draw real weights
    meanwhile; a nested block counts into the enclosing ones too (each checks its budget).

    Args:
      budget_bytes: raise :class:`BudgetExceeded` as soon as the arrays asked for in the
        block take more than this many bytes; ``None`` counts without a limit.

    Returns:
      A context manager giving the block's :class:`Tally`.

    Raises:
      ValueError: ``budget_bytes`` is not an int >= 0 or ``None``.
    """
    ok = budget_bytes is None or (
        isinstance(budget_bytes, (int, np.integer))
        and not isinstance(budget_bytes, bool)
        and budget_bytes >= 0
    )
    if not ok:
        raise ValueError(f"budget_bytes must be an int >= 0 or None, got {budget_bytes!r}")
    budget = None if budget_bytes is None else int(budget_bytes)
    tally = Tally(budget, _tally.get())
    token = _tally.set(tally)
    try:
        yield tally
    finally:
        _tally.reset(token)


def active() -> bool:
    """Whether a :func:`shape_only` block is running in this thread or task."""
    return _tally.get() is not None


def placeholder(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zero-memory stand-in for an array of ``shape`` and ``dtype``, counted in the running
    :func:`shape_only` blocks (outside one it is only made).

    Args:
      shape: a tuple of ints >= 0 (checked by the caller).
      dtype: a NumPy dtype or its name.

    Raises:
      BudgetExceeded: the running total passed a block's budget (nothing is made).
    """
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    tally = _tally.get()
    while tally is not None:
        tally.total, tally.count = tally.total + nbytes, tally.count + 1
        if tally.budget is not None and tally.total > tally.budget:
            raise BudgetExceeded(tally.total, tally.budget, tuple(shape), dt)
        tally = tally.parent
    return np.broadcast_to(np.zeros((), dt), shape)


def is_placeholder(a: Any) -> bool:
    """Whether ``a`` is a :func:`placeholder` (a read-only NumPy view, every stride 0): a
    loader checks that none is left in a model once the file's arrays replaced them.

    Args:
      a: any object; only a NumPy array can be one.
    """
    return (
        isinstance(a, np.ndarray)
        and a.base is not None
        and not a.flags.writeable
        and all(s == 0 for s in a.strides)
    )
