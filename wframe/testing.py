"""Test helpers that work on arrays of every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from wframe.backends import to_numpy


def assert_close(actual, expected, *, rtol: float = 1e-6, atol: float = 0.0) -> None:
    """``numpy.testing.assert_allclose`` on arrays of any backend (copied to the host).

    Args:
      actual, expected: arrays of any backend (or NumPy, or nested sequences).
      rtol, atol: ``|actual - expected| <= atol + rtol * |expected|`` elementwise (defaults
        1e-6 and 0: the float64 finite-difference tolerance; loosen ``rtol`` for float32).

    Raises:
      AssertionError: listing the mismatched entries.
    """
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), rtol=rtol, atol=atol)


def numerical_grad(f: Callable[[np.ndarray], Any], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar function ``f`` at every entry of host ``x``.

    Use float64: the truncation error is ~eps²·f''' and the round-off ~ulp(f)/eps, both far below
    1e-6 relative for entries of order 1e-2 or more.

    Args:
      f: a function of an array shaped like ``x`` returning a scalar (anything ``float``
        takes: a Python number, or a 0-d array of any backend).
      x: the point, a NumPy array (not changed; each entry is perturbed in a copy).
      eps: the step (default 1e-6); ``2 * x.size`` calls of ``f`` in all.

    Returns:
      ``df/dx``, shaped and typed like ``x``.
    """
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += eps
        minus[i] -= eps
        g[i] = (float(f(plus)) - float(f(minus))) / (2 * eps)
    return g
