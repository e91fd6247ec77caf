"""NumPy backend: jit is the identity, gradients are the layers' hand-written backprop."""

from __future__ import annotations

import numpy
from numpy.lib.stride_tricks import sliding_window_view

from wframe.backends.base import Backend
from wframe.backends.numpy_xp import xp as numpy_xp


class NumpyBackend(Backend):
    # NumPy >= 2.1 implements the array API in its main namespace (array_api_compat's wrappers
    # cost up to a microsecond a call, which small models feel); numpy_xp is that namespace with
    # direct reductions.
    name = "numpy"
    xp = numpy_xp

    def gather(self, a, idx, buffers=None):
        if buffers is None or type(a) is not numpy.ndarray:
            return super().gather(a, idx)
        key = (len(idx), a.shape[1:], a.dtype)
        out = buffers.get(key)
        if out is None:
            out = buffers[key] = numpy.empty((len(idx), *a.shape[1:]), dtype=a.dtype)
        return numpy.take(a, idx, axis=0, out=out)

    def im2col(self, x, window, strides, padding, dilation, *, fill=0.0):
        # A strided view of every window, copied once in the destination's order: about 5x
        # faster than stacking the kh*kw shifted slices (measured on 32x32x32x16, 3x3).
        if not isinstance(x, numpy.ndarray):  # e.g. array_api_strict arrays in the tests
            return super().im2col(x, window, strides, padding, dilation, fill=fill)
        (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
        if any(p for pair in padding for p in pair):
            x = numpy.pad(x, ((0, 0), *padding, (0, 0)), constant_values=fill)
        span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
        view = sliding_window_view(x, span, axis=(1, 2))[:, ::sh, ::sw, :, ::dh, ::dw]
        n, ho, wo, c = view.shape[:4]
        return numpy.reshape(view.transpose(0, 1, 2, 4, 5, 3), (n, ho, wo, kh * kw * c))

    # --- in-place optimizer kernels behind wframe.optimizers.fused ------------------------------
    # out= ufuncs into one scratch buffer per leaf: 12 passes per Adam leaf (14 with weight decay),
    # no temporaries. Scalars are 0-d arrays of the leaf's dtype: ufuncs take them ~2x faster.

    def fusable(self, groups, counts=()) -> bool:
        """Whether the ``*_inplace`` kernels may run: each group ``(param, grad, *state)`` is
        NumPy arrays of one shape and float dtype, all but the grad writeable, and each count a
        writeable 0-d integer array."""
        nd = numpy.ndarray
        for p, g, *state in groups:
            if type(p) is not nd or type(g) is not nd or p.dtype.kind != "f":
                return False
            shape, dtype = p.shape, p.dtype
            if g.shape != shape or g.dtype != dtype or not p.flags.writeable:
                return False
            for a in state:
                if type(a) is not nd or a.shape != shape or a.dtype != dtype:
                    return False
                if not a.flags.writeable:
                    return False
        return all(
            type(c) is nd and c.shape == () and c.dtype.kind in "iu" and c.flags.writeable
            for c in counts
        )

    def increment_inplace(self, count) -> int:
        """Add 1 to the 0-d integer array ``count``, saturating at its maximum; the new value."""
        top = (1 << (8 * count.dtype.itemsize - (count.dtype.kind == "i"))) - 1
        count[()] = new = min(int(count) + 1, top)
        return new

    def adam_inplace(self, groups, count, lr, b1, b2, eps, eps_root=0.0, weight_decay=0.0):
        """Adam's step ``count`` in place on each ``(p, g, mu, nu)``, as
        ``wframe.optimizers.adamw`` (bias corrections in float32, float64 for float64 leaves)."""
        consts: dict = {}
        for p, g, mu, nu in groups:
            c = consts.get(p.dtype)
            if c is None:
                # In float32 (float64 for float64 leaves) as the pure path: 1 - b2**t cancels on
                # the first steps, so host doubles would differ from it by 1e-5.
                w = numpy.float64 if p.dtype == numpy.float64 else numpy.float32
                t = w(count)
                c2 = 1 - b2**t
                r = numpy.sqrt(c2)
                step = (lr * (r / (1 - b1**t)), eps * r, eps_root * c2, lr * weight_decay)
                c = consts[p.dtype] = [
                    *_constants(p.dtype, b1, 1 - b1, b2, 1 - b2),
                    *(numpy.asarray(v, p.dtype) for v in step),
                ]
            if p.size <= _BIG:  # the common case, without _blocks' tuples
                _adam(p, g, mu, nu, numpy.empty_like(p), *c, eps_root, weight_decay)
            else:
                for block in _blocks(p, g, mu, nu):
                    _adam(*block, *c, eps_root, weight_decay)

    def sgd_inplace(self, groups, lr, momentum=None, nesterov=False) -> None:
        """``p -= lr * g`` in place on each ``(p, g)``; with momentum, on each ``(p, g, trace)``:
        ``trace = g + momentum * trace``, ``p -= lr * trace`` (Nesterov: ``lr * (g + m * trace)``).
        """
        consts: dict = {}
        for p, g, *trace in groups:
            c = consts.get(p.dtype)
            if c is None:
                c = consts[p.dtype] = [numpy.asarray(v, p.dtype) for v in (lr, momentum or 0.0)]
            lr_, m = c
            for p_, g_, *t, s in _blocks(p, g, *trace):
                if t:
                    t[0] *= m
                    t[0] += g_
                    numpy.multiply(t[0], m if nesterov else lr_, s)
                    if nesterov:
                        s += g_
                        s *= lr_
                else:
                    numpy.multiply(g_, lr_, s)
                p_ -= s


def _adam(p, g, mu, nu, s, b1, a1, b2, a2, lr_t, eps_t, root, decay, eps_root, weight_decay):
    if weight_decay:  # p - (lr wd) p, not p * (1 - lr wd): 1 - 1e-3 rounds to float32 with an
        numpy.multiply(p, decay, s)  # error of 1e-8, a drift of 1e-6 over 100 steps
        p -= s
    numpy.multiply(g, a1, s)
    mu *= b1
    mu += s
    numpy.multiply(g, g, s)
    s *= a2
    nu *= b2
    nu += s
    numpy.sqrt(numpy.add(nu, root, s) if eps_root else nu, s)
    s += eps_t
    numpy.divide(mu, s, s)
    s *= lr_t
    p -= s


_CONSTANTS: dict = {}


def _constants(dtype, *values):
    # Hyper-parameters as 0-d arrays of ``dtype``, made once per process and never written to.
    key = (dtype, *values)
    found = _CONSTANTS.get(key)
    if found is None:
        found = _CONSTANTS[key] = [numpy.asarray(v, dtype) for v in values]
    return found


_BIG = 1 << 20


def _blocks(*arrays):
    """``[(*arrays, scratch)]``; leaves over 1M elements as 64K-element blocks that stay in cache
    through the passes (1.5-1.9x faster at 4M-16M elements, slower below 1M)."""
    n, block = arrays[0].size, 1 << 16
    if n <= _BIG or not all(a.flags.c_contiguous for a in arrays):
        return ((*arrays, numpy.empty_like(arrays[0])),)
    flat, s = [numpy.reshape(a, -1) for a in arrays], numpy.empty(block, arrays[0].dtype)
    return [(*(f[i : i + block] for f in flat), s[: min(block, n - i)]) for i in range(0, n, block)]
