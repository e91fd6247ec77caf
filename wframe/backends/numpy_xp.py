"""NumPy as wframe's array namespace: NumPy itself, with the hot reductions called directly.

NumPy >= 2.1 implements the array API in its main namespace, but ``numpy.sum`` and friends go
through Python wrappers that cost ~1.5 us a call, which a small model's step pays a dozen times.
This namespace is NumPy with ``sum``, ``max`` and ``min`` bound to the ufunc reductions they wrap
(same results, dtypes and errors).

Half-precision arrays (float16, and ml_dtypes' bfloat16 of the mixed-precision policies) differ
in two places, both as XLA and GPUs compute them: ``matmul`` multiplies and accumulates in
float32 and rounds the result back (NumPy's own float16 matmul is ~200x slower than float32, and
ml_dtypes' bfloat16 matmul returns float32), and ``sum`` accumulates in float32 (as ``jnp.sum``;
NumPy adds bfloat16 in bfloat16, which stops counting at 256).

The other hot functions whose NumPy versions are Python wrappers around an ndarray method
(``reshape``, ``astype``, ``take``, ``argmax``, ``permute_dims``, ``expand_dims``, ``zeros_like``,
``mean``) call the method directly for plain ndarrays, and ``stack`` of 0-d arrays and ``full`` of
a 0-d float are one ``numpy.array`` call: 0.2-0.7 us where NumPy's take 1-4 (``mean`` 7). Any
other argument (another array type, an option the fast path does not cover) goes to NumPy's own
function, so results, dtypes and errors are NumPy's (tests/test_numpy_xp.py compares them).
"""

from __future__ import annotations

import types

import numpy as _np

xp = types.ModuleType("numpy", __doc__)
xp.__dict__.update({k: v for k, v in vars(_np).items() if not k.startswith("__")})
_add, _maximum, _minimum = _np.add.reduce, _np.maximum.reduce, _np.minimum.reduce
_np_matmul = _np.matmul


def _max(x, /, *, axis=None, keepdims=False):
    return _maximum(x, axis=axis, keepdims=keepdims)


def _min(x, /, *, axis=None, keepdims=False):
    return _minimum(x, axis=axis, keepdims=keepdims)


_HALF = ("float16", "bfloat16")


def _sum(x, /, *, axis=None, dtype=None, keepdims=False):
    if dtype is None and x.dtype.itemsize == 2 and x.dtype.name in _HALF:
        return _add(x, axis=axis, dtype=_np.float32, keepdims=keepdims).astype(x.dtype)
    return _add(x, axis=axis, dtype=dtype, keepdims=keepdims)


def _matmul(x1, x2, /):
    if x1.dtype.itemsize != 2 and x2.dtype.itemsize != 2:  # the common case, one test
        return _np_matmul(x1, x2)
    a, b = x1.dtype, x2.dtype
    if a.name not in _HALF and b.name not in _HALF:
        return _np_matmul(x1, x2)
    # float32 products of half inputs are exact; one rounding at the end, as on a GPU.
    out = a if a == b else _np.result_type(a, b)
    return _np_matmul(x1.astype(_np.float32), x2.astype(_np.float32)).astype(out)


xp.sum, xp.max, xp.min, xp.matmul = _sum, _max, _min, _matmul

# ---------------------------------------------------------------- the method-call fast paths
_nd = _np.ndarray
_intp = _np.intp
_np_reshape, _np_astype, _np_take, _np_argmax = _np.reshape, _np.astype, _np.take, _np.argmax
_np_stack, _np_full, _np_zeros_like, _np_mean = _np.stack, _np.full, _np.zeros_like, _np.mean
_np_expand_dims, _np_permute_dims, _np_array = _np.expand_dims, _np.permute_dims, _np.array
_SCALAR_TYPES = (_nd, _np.generic)
_FLOAT_KINDS = {
    t for name in ("float16", "float32", "float64") for t in (_np.dtype(name), getattr(_np, name))
}
_MEAN_DTYPES = {_np.dtype("float32"), _np.dtype("float64")}


def _reshape(x, /, shape=None, *args, **kwargs):
    if type(x) is _nd and shape is not None and not args and not kwargs:
        return x.reshape(shape)
    return _np_reshape(x, shape, *args, **kwargs)


def _astype(x, dtype, /, *, copy=True, device=None):
    if type(x) is _nd and device is None:
        return x.astype(dtype, copy=copy)
    return _np_astype(x, dtype, copy=copy, device=device)


def _take(x, indices, /, axis=None, out=None, mode="raise"):
    if type(x) is _nd:
        return x.take(indices, axis=axis, out=out, mode=mode)
    return _np_take(x, indices, axis=axis, out=out, mode=mode)


def _argmax(x, /, axis=None, out=None, *, keepdims=False):
    if type(x) is _nd and out is None:
        return x.argmax(axis=axis, keepdims=keepdims)
    return _np_argmax(x, axis=axis, out=out, keepdims=keepdims)


def _permute_dims(x, /, axes=None):
    if type(x) is _nd:
        return x.transpose(axes)
    return _np_permute_dims(x, axes)


def _expand_dims(x, /, axis=0):
    if type(x) is _nd and type(axis) is int and -x.ndim - 1 <= axis <= x.ndim:
        at = axis if axis >= 0 else axis + x.ndim + 1
        return x.reshape((*x.shape[:at], 1, *x.shape[at:]))
    return _np_expand_dims(x, axis)


def _zeros_like(x, /, dtype=None, *args, **kwargs):
    if type(x) is _nd and not args and not kwargs and x.flags.c_contiguous:
        return _np.zeros(x.shape, x.dtype if dtype is None else dtype)
    return _np_zeros_like(x, dtype, *args, **kwargs)


def _stack(arrays, /, axis=0, out=None, **kwargs):
    # 0-d arrays (a metric's statistics, a step's logged scalars): numpy.array promotes them
    # to one dtype as concatenate does.
    if axis == 0 and out is None and not kwargs and type(arrays) in (list, tuple) and arrays:
        if all(isinstance(a, _SCALAR_TYPES) and a.ndim == 0 for a in arrays):
            if all(a.dtype.kind in "biuf" for a in arrays):
                return _np_array(arrays)
    return _np_stack(arrays, axis=axis, out=out, **kwargs)


def _full(shape, fill_value, dtype=None, *args, **kwargs):
    if shape == () and not args and not kwargs and type(fill_value) in (float, int):
        if dtype is None or dtype in _FLOAT_KINDS:
            return _np_array(fill_value, dtype=dtype)
    return _np_full(shape, fill_value, dtype, *args, **kwargs)


def _mean(x, /, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
    # NumPy's own arithmetic (numpy/_core/_methods.py): the sum, then a division by the count
    # as an intp (so computed in float64 and rounded back, as NumPy does), float dtypes only.
    if type(x) is not _nd or dtype is not None or out is not None or kwargs or not x.size:
        return _np_mean(x, axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kwargs)
    if x.dtype not in _MEAN_DTYPES:
        return _np_mean(x, axis=axis, keepdims=keepdims)
    total = _add(x, axis=axis, keepdims=keepdims)
    count = _intp(x.size // max(total.size, 1))
    if type(total) is _nd:
        return _np.true_divide(total, count, out=total, casting="unsafe")
    return total.dtype.type(total / count)


xp.reshape, xp.astype, xp.take, xp.argmax = _reshape, _astype, _take, _argmax
xp.permute_dims, xp.expand_dims, xp.zeros_like = _permute_dims, _expand_dims, _zeros_like
xp.stack, xp.full, xp.mean = _stack, _full, _mean
