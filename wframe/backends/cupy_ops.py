"""The CuPy backend's fused operations: argument checks and launches of :mod:`cupy_kernels`.

Each function returns ``None`` for inputs its kernel does not cover (another dtype, a layout it
does not expect), and the caller runs the generic array-API code instead: that code is the
numerical reference, and the kernels compute the same expressions in the same order.
"""

from __future__ import annotations

import math

import numpy

from wframe.backends import cupy_kernels as K
from wframe.backends.cupy_graph import capturing
from wframe.backends.namespace import array_namespace

_I32, _I64, _U32 = numpy.int32, numpy.int64, numpy.uint32
_GELU_C = math.sqrt(2 / math.pi)


def _floats(cp, *arrays) -> bool:
    """CuPy arrays of one float dtype with kernels, all C-contiguous."""
    first = arrays[0]
    if not isinstance(first, cp.ndarray) or first.dtype.name not in K.CTYPES:
        return False
    return all(
        isinstance(a, cp.ndarray) and a.dtype == first.dtype and a.flags.c_contiguous
        for a in arrays
    )


def _key(cp, key):
    """The array key as the kernels read it (uint32, shape (2,), contiguous), or ``None``."""
    if not isinstance(key, cp.ndarray) or key.shape != (2,) or key.dtype != cp.uint32:
        return None
    return cp.ascontiguousarray(key)


# ------------------------------------------------------------------ activations, dropout
def bias_activation(cp, z, b, name: str, slope: float = 0.0):
    """``act(z + b)`` (``b=None``: ``act(z)``) and its backprop, for ``name`` in
    :data:`cupy_kernels.ACTIVATIONS` but ``linear``; ``None`` where it does not apply."""
    if name not in K.ACTIVATIONS[1:] or not _floats(cp, z):
        return None
    if b is not None and (b.shape != (z.shape[-1],) or not _floats(cp, z, b)):
        return None
    T, n, keep = z.dtype.type, z.size, name == "gelu"
    y = cp.empty_like(z)
    pre = cp.empty_like(z) if keep else y  # gelu's backward needs z + b
    bias = z if b is None else b
    args = (z, bias, _I64(max(z.shape[-1], 1)), _I32(b is not None), T(slope), y, pre, _I32(keep))
    K.launch("wf_bias_" + name, z.dtype, n, (*args, _I64(n)))

    def backprop(dy):
        if isinstance(dy, cp.ndarray) and dy.dtype == y.dtype and dy.shape == y.shape:
            dy, dx = cp.ascontiguousarray(dy), cp.empty_like(y)
            K.launch("wf_grad_" + name, y.dtype, n, (dy, y, pre, T(slope), dx, _I64(n)))
            return dx
        return _generic_grad(cp, name, dy, y, pre, slope)

    return y, backprop


def _generic_grad(cp, name, dy, y, pre, slope):
    # The formulas of wframe/activations.py, written out in the same order (the backends sit
    # below the numerics): a dy of another dtype promotes as there.
    xp = array_namespace(y)
    if name == "relu":
        return dy * xp.astype(y > 0, dy.dtype)
    if name == "sigmoid":
        return dy * (y * (1 - y))
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "leaky_relu":
        return xp.where(y > 0, dy, slope * dy)
    x = pre  # gelu, tanh approximation: d/dx 0.5 x (1 + tanh(c (x + 0.044715 x^3)))
    t = xp.tanh(_GELU_C * (x + 0.044715 * x * x * x))
    dinner = _GELU_C * (1 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner)


def dropout(cp, x, key, threshold: int, scale: float):
    """``(x * mask, mask)``, ``mask = scale`` where ``random_bits(key, x.shape) >= threshold``."""
    key = _key(cp, key)
    if key is None or not isinstance(x, cp.ndarray) or x.dtype.name not in K.CTYPES:
        return None
    if x.size > 2**32:
        return None
    x = cp.ascontiguousarray(x)
    y, mask = cp.empty_like(x), cp.empty_like(x)
    T = x.dtype.type
    args = (x, key, _U32(threshold), T(scale), y, mask, _I64(x.size))
    K.launch("wf_dropout", x.dtype, x.size, args)
    return y, mask


def random_bits(cp, key, shape):
    """:func:`wframe.random.random_bits` in one kernel, or ``None`` (the generic code raises)."""
    key = _key(cp, key)
    shape = tuple(int(d) for d in shape)
    n = int(numpy.prod(shape, dtype=numpy.int64)) if shape else 1
    if key is None or n > 2**32 or any(d < 0 for d in shape):
        return None
    out = cp.empty(shape, dtype=cp.uint32)
    K.launch("wf_random_bits", "float32", n, (key, out, _I64(n)))
    return out


# --------------------------------------------------------------------------------- losses
def softmax_cross_entropy(cp, logits, labels):
    """``(mean loss, dlogits)`` of :class:`wframe.losses.SoftmaxCrossEntropy` with logits."""
    if not _floats(cp, logits) or logits.ndim != 2 or not isinstance(labels, cp.ndarray):
        return None
    n, c = logits.shape
    if n == 0 or c == 0:
        return None
    T = logits.dtype.type
    grad, rows = cp.empty_like(logits), cp.empty(n, dtype=logits.dtype)
    if labels.shape == (n,) and labels.dtype.name in ("int32", "int64"):
        name = "wf_xent_i32" if labels.dtype.name == "int32" else "wf_xent_i64"
        args, sign = (logits, cp.ascontiguousarray(labels), grad, rows, _I64(c), T(1 / n)), 1
    elif labels.shape == (n, c) and labels.dtype == logits.dtype:
        args, sign = (logits, cp.ascontiguousarray(labels), grad, rows, _I64(c), T(n)), -1
        name = "wf_xent_soft"
    else:
        return None
    K.kernel(name, logits.dtype)((n,), (K.row_threads(c),), args)
    total = cp.sum(rows)
    return (total if sign > 0 else -total) / n, grad


# ------------------------------------------------------------------------------ col2im
def col2im(cp, cols, in_shape, window, strides, padding, dilation):
    """:meth:`Backend.col2im` in one kernel (C-contiguous float ``cols``), or ``None``."""
    n, h, w, c = (int(d) for d in in_shape)
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    if not _floats(cp, cols) or cols.ndim != 4 or cols.shape[3] != kh * kw * c:
        return None
    if cols.shape[0] != n:
        return None
    ho, wo = cols.shape[1], cols.shape[2]
    out = cp.empty((n, h, w, c), dtype=cols.dtype)
    dims = (h, w, c, ho, wo, kh, kw, sh, sw, dh, dw, padding[0][0], padding[1][0])
    K.launch("wf_col2im", cols.dtype, out.size, (cols, out, _I64(out.size), *map(_I32, dims)))
    return out


# --------------------------------------------------------------------------- optimizers
def fusable(cp, groups, counts) -> bool:
    """Each ``(param, grad, *state)`` float arrays of one shape, dtype and C layout; each count
    a 0-d int32 array (read and incremented on the device)."""
    for p, *rest in groups:
        if not _floats(cp, p, *rest) or any(a.shape != p.shape for a in rest):
            return False
    return all(isinstance(c, cp.ndarray) and c.shape == () and c.dtype == cp.int32 for c in counts)


def increment(cp, count, pred) -> None:
    K.kernel("wf_increment", "float32")((1,), (1,), (count, pred))


_VECTORS: dict = {}


def hyper(cp, dtype, values):
    """The kernels' hyper-parameter vector ``hp`` in ``dtype``. Python numbers are rounded to
    ``dtype`` once, as NumPy's in-place kernels round them, and the vector is cached; 0-d
    device arrays (injected hyper-parameters, schedules' values) are stacked on the device.
    Either way nothing is read on the host, and a vector made during a capture is not cached
    (its values exist only once the graph runs)."""
    if not any(isinstance(v, cp.ndarray) for v in values):
        key = (numpy.dtype(dtype).name, *(float(v) for v in values))
        found = _VECTORS.get(key)
        if found is None and not capturing():
            if len(_VECTORS) > 256:  # new floats at every step: keep a bounded cache
                _VECTORS.clear()
            found = _VECTORS[key] = cp.asarray(numpy.asarray(values, dtype=dtype))
        if found is not None:
            return found
    return cp.stack([_device(cp, dtype, v) for v in values])


def _device(cp, dtype, v):
    return v.astype(dtype) if isinstance(v, cp.ndarray) else cp.asarray(v, dtype=dtype)


def _on(cp, dtype, fn, *values):
    # fn of the values: in double on the host for numbers (as NumPy's path), else in dtype.
    if any(isinstance(v, cp.ndarray) for v in values):
        return fn(*(_device(cp, dtype, v) for v in values))
    return fn(*values)


def adam(cp, groups, count, pred, lr, b1, b2, eps, eps_root, weight_decay) -> None:
    if not isinstance(count, cp.ndarray):  # a host step number: the bias corrections of it
        count = cp.asarray(int(count), dtype=cp.int32)
    vectors: dict = {}
    for p, g, mu, nu in groups:
        dt = p.dtype
        hp = vectors.get(dt)
        if hp is None:
            one_minus = lambda v: 1 - v  # noqa: E731
            values = (
                b1,
                _on(cp, dt, one_minus, b1),
                b2,
                _on(cp, dt, one_minus, b2),
                lr,
                eps,
                eps_root,
                _on(cp, dt, lambda a, b: a * b, lr, weight_decay),
            )
            hp = vectors[dt] = hyper(cp, dt, values)
        K.launch("wf_adam", dt, p.size, (p, g, mu, nu, _I64(p.size), count, pred, hp))


def sgd(cp, groups, pred, lr, momentum, nesterov) -> None:
    vectors: dict = {}
    for p, g, *trace in groups:
        dt = p.dtype
        hp = vectors.get(dt)
        if hp is None:
            hp = vectors[dt] = hyper(cp, dt, (lr, 0.0 if momentum is None else momentum))
        tr = trace[0] if trace else p
        args = (p, g, tr, _I64(p.size), pred, hp, _I32(bool(trace)), _I32(bool(nesterov)))
        K.launch("wf_sgd", dt, p.size, args)


def rmsprop(cp, groups, pred, lr, decay, eps, eps_in_sqrt, momentum, nesterov) -> None:
    vectors: dict = {}
    for p, g, nu, *trace in groups:
        dt = p.dtype
        hp = vectors.get(dt)
        if hp is None:
            neg, one_minus = (lambda v: -v), (lambda v: 1 - v)
            values = (
                _on(cp, dt, one_minus, decay),
                decay,
                eps,
                _on(cp, dt, neg, lr),
                0.0 if momentum is None else momentum,
            )
            hp = vectors[dt] = hyper(cp, dt, values)
        tr = trace[0] if trace else p
        flags = (_I32(bool(eps_in_sqrt)), _I32(bool(trace)), _I32(bool(nesterov)))
        K.launch("wf_rmsprop", dt, p.size, (p, g, nu, tr, _I64(p.size), pred, hp, *flags))


# ------------------------------------------------------------------------------ cond
def select(cp, pred, a, b):
    """``where(pred, a, b)`` leaf by leaf; a leaf both branches return as the same object (a
    buffer updated in place under the predicate) is kept as it is."""
    if a is b:
        return a
    if isinstance(a, dict):
        return {k: select(cp, pred, v, b[k]) for k, v in a.items()}
    if isinstance(a, tuple) and hasattr(a, "_fields"):
        return type(a)(*(select(cp, pred, x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, (tuple, list)):
        return type(a)(select(cp, pred, x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        raise ValueError("cond: the branches return different structures (None in one only)")
    return cp.where(pred, a, b)
