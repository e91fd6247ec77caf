"""Test helpers that work on arrays of every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from wframe.backends import to_numpy


def assert_close(actual, expected, *, rtol: float = 1e-6, atol: float = 0.0) -> None:
    """``numpy.testing.assert_allclose`` on arrays of any backend (copied to the host)."""
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), rtol=rtol, atol=atol)


def numerical_grad(f: Callable[[np.ndarray], Any], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar function ``f`` at every entry of host ``x``.

    Use float64: the truncation error is ~eps²·f''' and the round-off ~ulp(f)/eps, both far below
    1e-6 relative for entries of order 1e-2 or more.
    """
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += eps
        minus[i] -= eps
        g[i] = (float(f(plus)) - float(f(minus))) / (2 * eps)
    return g
