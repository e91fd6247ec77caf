"""What every schedule shares: the ``Schedule`` type, the count as a float array, the checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wframe.backends import array_namespace
from wframe.types import Array

Schedule = Callable[[Array], Array]


def as_count(count):
    """The count's namespace, the count in that namespace's default float dtype, the dtype."""
    if isinstance(count, (int, float, np.generic)):  # a host call such as schedule(17)
        count = np.asarray(count)
    xp = array_namespace(count)
    dt = xp.asarray(0.0).dtype  # float32 on JAX unless x64 is on
    return xp, xp.astype(count, dt), dt


def check(ok: bool, fn: str, expected: str, **received) -> None:
    """Raise ``ValueError`` naming ``fn``, what it ``expected`` and what it ``received``."""
    if not ok:
        got = ", ".join(f"{k}={v!r}" for k, v in received.items())
        raise ValueError(f"{fn}: expected {expected}. Received: {got}.")


def floor_div(xp, a, b):
    # floor(a / b), exact at multiples of b under jax.jit too, where XLA turns a division by a
    # constant into a product with its rounded reciprocal (optax's staircase then steps late).
    q = xp.floor(a / b)
    q = xp.where(q * b > a, q - 1, q)
    return xp.where((q + 1) * b <= a, q + 1, q)


def sorted_scales(fn: str, boundaries_and_scales) -> tuple[tuple, tuple]:
    """``(boundaries, scales)`` of ``{step: scale}`` in step order, the scales checked >= 0."""
    if not boundaries_and_scales:
        return (), ()
    boundaries, scales = zip(*sorted(boundaries_and_scales.items()), strict=True)
    ok = all(s >= 0.0 for s in scales)
    check(ok, fn, "scales >= 0", boundaries_and_scales=boundaries_and_scales)
    return boundaries, scales
