"""NumPy as wframe's array namespace: NumPy itself, with the hot reductions called directly.

NumPy >= 2.1 implements the array API in its main namespace, but ``numpy.sum`` and friends go
through Python wrappers that cost ~1.5 us a call, which a small model's step pays a dozen times.
This namespace is NumPy with ``sum``, ``max`` and ``min`` bound to the ufunc reductions they wrap
(same results, dtypes and errors).
"""

from __future__ import annotations

import types

import numpy as _np

xp = types.ModuleType("numpy", __doc__)
xp.__dict__.update({k: v for k, v in vars(_np).items() if not k.startswith("__")})
_add, _maximum, _minimum = _np.add.reduce, _np.maximum.reduce, _np.minimum.reduce


def _sum(x, /, *, axis=None, dtype=None, keepdims=False):
    return _add(x, axis=axis, dtype=dtype, keepdims=keepdims)


def _max(x, /, *, axis=None, keepdims=False):
    return _maximum(x, axis=axis, keepdims=keepdims)


def _min(x, /, *, axis=None, keepdims=False):
    return _minimum(x, axis=axis, keepdims=keepdims)


xp.sum, xp.max, xp.min = _sum, _max, _min
