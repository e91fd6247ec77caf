"""Test helpers that work on arrays of every backend."""

from __future__ import annotations

import numpy as np

from wframe.backends import to_numpy


def assert_close(actual, expected, *, rtol: float = 1e-6, atol: float = 0.0) -> None:
    """``numpy.testing.assert_allclose`` on arrays of any backend (copied to the host)."""
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), rtol=rtol, atol=atol)
