"""NumPy backend: jit is the identity, gradients are the layers' hand-written backprop."""

from __future__ import annotations

import math
import sys
import threading

import numpy
from numpy.lib.stride_tricks import sliding_window_view

from wframe.backends import fusion, numpy_ops, scipy_csr, special, threads
from wframe.backends.base import Backend, taps
from wframe.backends.numpy_xp import xp as numpy_xp

#: Fewest input channels for which the per-tap input gradient beats one GEMM + col2im (cin=1:
#: 1.3 vs 1.8 ms, cin=2: 8.5 vs 4.0 ms on 64x24x24x32 -> 26x26xcin).
_TAP_GEMM_MIN_CIN = 2
_SINGLE_OR_DOUBLE = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
#: Rounds of distinct-index adds in scatter_add before the rest goes through add.at.
_SCATTER_ROUNDS = 5


#: The hot chains of small models in fewer NumPy calls (:mod:`.numpy_ops`).
fusion.FUSED[numpy_xp] = numpy_ops.Fused()


class NumpyBackend(Backend):
    # NumPy >= 2.1 implements the array API in its main namespace (array_api_compat's wrappers
    # cost up to a microsecond a call, which small models feel); numpy_xp is that namespace with
    # direct reductions.
    name = "numpy"
    xp = numpy_xp
    on_host = True

    def host_threads(self, work):
        return threads.limited(work)

    def gather(self, a, idx, buffers=None):
        if buffers is None or type(a) is not numpy.ndarray:
            return super().gather(a, idx)
        key = (len(idx), a.shape[1:], a.dtype)
        out = buffers.get(key)
        if out is None:
            out = buffers[key] = numpy.empty((len(idx), *a.shape[1:]), dtype=a.dtype)
        # The method (numpy.take's wrapper costs 1 us), mode="clip": with out=, the default
        # "raise" gathers into a temporary and copies it (a 256x784 batch: 76 us, 27 here).
        return a.take(idx, axis=0, out=out, mode="clip")

    def scatter_add(self, shape, idx, values):
        # In rounds: each adds every row's next occurrence with one fancy-indexed add (its
        # indices are distinct); what is left after a few rounds (a padding id repeated many
        # times) goes through add.at on flat indices (its 1-D fast path). Occurrences add in
        # order, as add.at. 10k x 128 rows, 8192 ids: 1.4 ms; add.at on rows 13, bincount 6.5.
        if type(values) is not numpy.ndarray or type(idx) is not numpy.ndarray:
            return super().scatter_add(shape, idx, values)
        width, n = math.prod(shape[1:]), len(idx)
        acc = values if values.dtype in _SINGLE_OR_DOUBLE else values.astype(numpy.float32)
        flat = numpy.reshape(acc, (n, width))
        idx = idx.astype(numpy.intp, copy=False)
        out = numpy.zeros((shape[0], width), dtype=acc.dtype)
        owner, rest = numpy.full(shape[0], n, dtype=numpy.intp), numpy.arange(n)
        for _ in range(_SCATTER_ROUNDS):
            if not rest.size:
                break
            ids = idx[rest]
            owner[ids] = n
            numpy.minimum.at(owner, ids, rest)  # each row's earliest remaining occurrence
            now = owner[ids] == rest
            out[ids[now]] += flat[rest[now]]
            rest = rest[~now]
        if rest.size:
            cells = (idx[rest, None] * width + numpy.arange(width)).reshape(-1)
            numpy.add.at(out.reshape(-1), cells, flat[rest].reshape(-1))
        return out.reshape(shape).astype(values.dtype, copy=False)

    def sparse_matmul(self, x, data, indices, indptr, shape):
        # SciPy's CSR product of W.T and x.T (its matrix-vector loop for one row): 784x1024
        # at 95% sparsity, batch 1, one thread: 32 us where the dense product takes 56.
        if type(x) is not numpy.ndarray or type(data) is not numpy.ndarray:
            return super().sparse_matmul(x, data, indices, indptr, shape)
        matrix = scipy_csr.csr_matrix(data, indices, indptr, tuple(shape))
        if x.shape[0] == 1:
            return (matrix @ x[0])[None, :]
        return (matrix @ x.T).T

    def erf(self, x):
        # Each of Cody's ranges on its own entries only (gathered by index: boolean masks are
        # 5x slower), in float64 (so float32 rounds correctly), with in-place Horner steps:
        # 1M float32 in ~25 ms, where the generic code, all three ranges everywhere, takes 130.
        if type(x) is not numpy.ndarray or not (x.dtype.kind == "f" or x.dtype.name == "bfloat16"):
            return super().erf(x)
        flat = numpy.reshape(x, -1)
        a = numpy.abs(flat.astype(numpy.float64))
        out = numpy.empty_like(a)
        idx = numpy.flatnonzero(a <= special.SMALL)
        t = a[idx]
        out[idx] = _ratio_inplace(t * t, special.R1) * t
        idx = numpy.flatnonzero((a > special.SMALL) & (a <= special.MIDDLE))
        t = a[idx]
        erfc = _ratio_inplace(t, special.R2)
        erfc *= numpy.exp(-(t * t))
        out[idx] = (0.5 - erfc) + 0.5
        idx = numpy.flatnonzero(~(a <= special.MIDDLE))  # NaN too
        if idx.size:
            t = numpy.minimum(a[idx], special.ONE)  # erf is 1 beyond, to float64 rounding
            inv = 1.0 / (t * t)
            erfc = (special.INV_SQRT_PI - _ratio_inplace(inv, special.R3) * inv) / t
            out[idx] = (0.5 - erfc * numpy.exp(-(t * t))) + 0.5
        numpy.copysign(out, flat, out=out)
        return numpy.reshape(out.astype(x.dtype, copy=False), x.shape)

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
        cols = _scratch((n, ho, wo, kh, kw, c), x.dtype)
        numpy.copyto(cols, view.transpose(0, 1, 2, 4, 5, 3))
        return numpy.reshape(cols, (n, ho, wo, kh * kw * c))

    def _first_max_share(self, equal, dy6):
        # In place on ``equal`` (a temporary of the caller's) and one mixed bool x float
        # multiply: 15 ms where the generic stacks and astype take 25 (128x24x24x64, 2x2).
        if type(equal) is not numpy.ndarray or dy6.dtype.kind != "f":
            return super()._first_max_share(equal, dy6)
        kh, kw = equal.shape[2], equal.shape[4]
        seen = equal[:, :, 0, :, 0, :].copy()
        for t in range(1, kh * kw):
            e = equal[:, :, t // kw, :, t % kw, :]
            numpy.greater(e, seen, out=e)  # e and not seen
            if t < kh * kw - 1:
                numpy.logical_or(seen, e, out=seen)
        return numpy.multiply(equal, dy6)

    def conv2d_transpose(self, dy, W, in_shape, strides, padding, dilation):
        # One GEMM per kernel tap into one scratch buffer, added onto the positions the tap
        # read: the adds read it contiguously, where col2im of the single GEMM's (.., kh*kw*cin)
        # rows reads runs of cin and took 3x longer (128x24x24x64 -> 26x26x32: 75 ms, was 115).
        # With few input channels the tap GEMMs are matrix-vector products: one GEMM then; half
        # precision goes through xp.matmul's float32 accumulation.
        kh, kw, cin, cout = W.shape
        single = dy.dtype in _SINGLE_OR_DOUBLE and W.dtype == dy.dtype
        if type(dy) is not numpy.ndarray or not single or cin < _TAP_GEMM_MIN_CIN:
            return super().conv2d_transpose(dy, W, in_shape, strides, padding, dilation)
        n, ho, wo, _ = dy.shape
        (top, bottom), (left, right) = padding
        h, w = in_shape[1], in_shape[2]
        dy2 = numpy.reshape(dy, (n * ho * wo, cout))
        out = numpy.zeros((n, h + top + bottom, w + left + right, cin), dtype=dy.dtype)
        buf = numpy.empty((n * ho * wo, cin), dtype=dy.dtype)
        part = buf.reshape(n, ho, wo, cin)
        for i, j, rows, columns in taps(ho, wo, (kh, kw), strides, dilation):
            numpy.matmul(dy2, W[i, j].T, out=buf)
            out[:, rows, columns, :] += part
        return out[:, top : top + h, left : left + w, :]

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
        return not counts or all(
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

    def sgd_tree_inplace(self, params, grads, lr) -> bool:
        # sgd_inplace's common case (no momentum, leaves of at most _BIG entries) in one pass
        # over the trees, checked as fusable checks first: a small MLP's step 13 us less.
        nd, pairs, rates = numpy.ndarray, [], {}
        try:
            if len(grads) != len(params):
                return False
            for k, layer in params.items():
                sub = grads[k]
                if len(sub) != len(layer):
                    return False
                for name, p in layer.items():
                    g, dtype = sub[name], p.dtype
                    if type(p) is not nd or type(g) is not nd or g.dtype != dtype:
                        return False
                    if g.shape != p.shape or p.size > _BIG or not p.flags.writeable:
                        return False
                    rate = rates.get(dtype)
                    if rate is None:
                        if dtype.kind != "f":
                            return False
                        rate = rates[dtype] = _constants(dtype, lr)[0]
                    pairs.append((p, g, rate))
        except (AttributeError, KeyError, TypeError):  # not two-level dicts of arrays
            return False
        for p, g, rate in pairs:
            p -= numpy.multiply(g, rate)
        return True

    def sgd_inplace(self, groups, lr, momentum=None, nesterov=False) -> None:
        """``p -= lr * g`` in place on each ``(p, g)``; with momentum, on each ``(p, g, trace)``:
        ``trace = g + momentum * trace``, ``p -= lr * trace`` (Nesterov: ``lr * (g + m * trace)``).
        """
        consts: dict = {}
        for p, g, *trace in groups:
            c = consts.get(p.dtype)
            if c is None:
                c = consts[p.dtype] = _constants(p.dtype, lr, momentum or 0.0)
            lr_, m = c
            if not trace and p.size <= _BIG:  # the common case in two calls, as by hand
                p -= numpy.multiply(g, lr_)
                continue
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


#: Arrays this big come from :func:`_scratch`'s cache: glibc maps each allocation over 32 MiB
#: fresh from the kernel, which zeroes it page by page (an 85 MB im2col took 28 ms, 10 ms into
#: a reused buffer).
_SCRATCH_MIN_BYTES = 32 << 20
_scratch_cache = threading.local()


def _scratch(shape, dtype) -> numpy.ndarray:
    """An uninitialised array of ``shape``: a cached buffer for big ones, reused only when
    nothing outside the cache references it any more (no array, view or closure a caller holds
    is ever overwritten); per thread, the last few shapes."""
    dtype = numpy.dtype(dtype)
    if math.prod(shape) * dtype.itemsize < _SCRATCH_MIN_BYTES:
        return numpy.empty(shape, dtype)
    cache = getattr(_scratch_cache, "buffers", None)
    if cache is None:
        cache = _scratch_cache.buffers = {}
    key = (tuple(shape), dtype)
    buf = cache.pop(key, None)
    # Popped from the cache, a free buffer has two references: ``buf`` and getrefcount's argument.
    if buf is None or sys.getrefcount(buf) > 2:
        buf = numpy.empty(shape, dtype)
    cache[key] = buf  # most recent last
    while len(cache) > 4:
        del cache[next(iter(cache))]
    return buf


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
    # Hyper-parameters as 0-d arrays of ``dtype``, made once per process (the first 256 sets:
    # a scheduled rate makes a new one each step) and never written to.
    key = (dtype, *values)
    try:
        found = _CONSTANTS.get(key)
    except TypeError:  # an unhashable value (an array)
        return [numpy.asarray(v, dtype) for v in values]
    if found is None:
        found = [numpy.asarray(v, dtype) for v in values]
        for a in found:
            a.flags.writeable = False
        if len(_CONSTANTS) < 256:
            _CONSTANTS[key] = found
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


def _ratio_inplace(t, coefficients):
    """:func:`wframe.backends.special.ratio` with in-place steps on its own temporaries."""
    p, q = coefficients
    num, den = p[0] * t, t.copy()
    for a, b in zip(p[1:-1], q[1:-1], strict=True):
        num += a
        num *= t
        den += b
        den *= t
    num += p[-1]
    den += q[-1]
    num /= den
    return num
