"""wframe's NumPy namespace: its fast paths give exactly NumPy's results, dtypes and errors."""

from __future__ import annotations

import numpy as np
import pytest

from wframe.backends.numpy_xp import xp


def _same(got, want):
    """Equal values, dtype, shape and type (an ndarray stays one, a NumPy scalar stays one)."""
    assert type(got) is type(want)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    assert np.shape(got) == np.shape(want)
    np.testing.assert_array_equal(got, want)


A = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
CASES = [
    ("reshape", (A, (6, 4)), {}),
    ("reshape", (A, -1), {}),
    ("reshape", (A.transpose(2, 0, 1), (4, 6)), {}),  # not contiguous: a copy
    ("astype", (A, np.float64), {}),
    ("astype", (A, np.float32), {"copy": False}),
    ("astype", (A > 1, np.float32), {}),
    ("take", (A, np.array([1, 0, 1])), {"axis": 2}),
    ("take", (A, np.array([5, 0])), {}),
    ("argmax", (A,), {"axis": -1}),
    ("argmax", (A,), {"axis": 1, "keepdims": True}),
    ("argmax", (A,), {}),
    ("permute_dims", (A, (2, 0, 1)), {}),
    ("expand_dims", (A,), {"axis": -1}),
    ("expand_dims", (A,), {"axis": 0}),
    ("expand_dims", (A,), {"axis": 2}),
    ("expand_dims", (A,), {"axis": -4}),
    ("zeros_like", (A,), {}),
    ("zeros_like", (A,), {"dtype": np.int32}),
    ("zeros_like", (A.transpose(1, 0, 2),), {}),  # order "K": NumPy's own
    ("stack", ([np.float32(2), np.zeros((), np.float32)],), {}),
    ("stack", ([np.float32(2), np.zeros((), np.int64)],), {}),  # promoted as concatenate
    ("stack", ([np.ones((), bool), np.zeros((), bool)],), {}),
    ("stack", ([A[0], A[1]],), {"axis": 1}),
    ("full", ((), 32.0), {"dtype": np.float32}),
    ("full", ((), 3), {"dtype": np.dtype("float64")}),
    ("full", ((), 2.5), {}),
    ("full", ((2, 2), 1.5), {"dtype": np.float32}),
    ("full", ((), 300), {"dtype": np.int16}),
    ("mean", (A,), {}),
    ("mean", (A,), {"axis": 1}),
    ("mean", (A,), {"axis": (0, 2), "keepdims": True}),
    ("mean", (A.astype(np.float64),), {"axis": -1}),
    ("mean", (np.arange(7, dtype=np.int32),), {}),
    ("mean", (A.astype(np.float16),), {"axis": 0}),
]


@pytest.mark.parametrize(("name", "args", "kwargs"), CASES)
def test_fast_paths_are_numpy(name, args, kwargs):
    _same(getattr(xp, name)(*args, **kwargs), getattr(np, name)(*args, **kwargs))


def test_mean_rounds_as_numpy():
    # NumPy divides a float32 sum by the count as an intp: computed in float64, rounded back.
    a = np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32)
    for axis in (None, 0, 1):
        _same(xp.mean(a, axis=axis), np.mean(a, axis=axis))


def test_errors_are_numpy():
    with pytest.raises(np.exceptions.AxisError):
        xp.expand_dims(A, axis=4)
    with pytest.raises(ValueError):
        xp.reshape(A, (5, 5))
    with pytest.raises(IndexError):
        xp.take(A, np.array([99]), axis=0)
    with pytest.warns(RuntimeWarning):
        xp.mean(np.zeros((0,), np.float32))
